#include "bptt/evaluate.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>

#include "bptt/error.h"
#include "bptt/loss.h"

namespace bptt {

LossSum EvaluateLossSum(const ModelConfig& config, const ModelParams<float>& params, const EncodedCorpus& corpus,
                        SymbolRange range, int B, int T, int threads, StreamShare share) {
  LossSum sum;
  if (share.size() == 0) return sum;
  BatchStream stream(corpus, range, B, T, /*allow_partial=*/true, share);
  State<float> state = State<float>::Zeros(config, share.size());
  ModelCache<float> cache;
  Batch<float> batch;
  batch.B = share.size();
  while (const int steps = stream.Next(batch.ids, batch.classes)) {
    batch.T = steps;
    Forward(config, params, batch, state, cache, threads);
    const auto n = static_cast<uint64_t>(steps) * static_cast<uint64_t>(batch.B);
    sum.nats += SoftmaxCrossEntropy<float>(cache.outputs, batch.classes, nullptr, threads) * static_cast<double>(n);
    sum.symbols += n;
    FinalState(config, cache, state);
  }
  return sum;
}

double EvaluateLoss(const ModelConfig& config, const ModelParams<float>& params,
                    const EncodedCorpus& corpus, SymbolRange range, int B, int T, int threads) {
  if (B < 1) throw Error("evaluation needs at least one stream, got B = " + std::to_string(B));
  const LossSum sum = EvaluateLossSum(config, params, corpus, range, B, T, threads, {0, B});
  return sum.nats / static_cast<double>(sum.symbols);
}

namespace {

// Receives the symbols of a text: each as its id, the unknown ones counted and listed.
SymbolSink Collect(EncodedFile& file, const Vocab& vocab) {
  return [&file, &vocab](std::string_view symbol) {
    if (const std::optional<int32_t> id = vocab.Find(symbol)) {
      file.ids.push_back(*id);
      return;
    }
    ++file.unknown;
    if (vocab.unknown_id() >= 0) file.ids.push_back(vocab.unknown_id());
    auto& listed = file.unknown_symbols;
    if (listed.size() < EncodedFile::kMaxListed && std::find(listed.begin(), listed.end(), symbol) == listed.end())
      listed.emplace_back(symbol);
  };
}

}  // namespace

EncodedFile EncodeText(std::string_view text, const Vocab& vocab, const std::string& source) {
  EncodedFile file;
  const SymbolSink add = Collect(file, vocab);
  Segmenter segmenter(vocab.options(), source);
  segmenter.Feed(text, add);
  segmenter.Finish(add);
  return file;
}

EncodedFile EncodeFile(const std::filesystem::path& path, const Vocab& vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open");
  EncodedFile file;
  const SymbolSink add = Collect(file, vocab);
  Segmenter segmenter(vocab.options(), path.string());
  std::string piece(size_t{1} << 20, '\0');
  while (in) {
    in.read(piece.data(), static_cast<std::streamsize>(piece.size()));
    const auto got = static_cast<size_t>(in.gcount());
    if (got == 0) break;
    segmenter.Feed(std::string_view(piece.data(), got), add);
  }
  if (in.bad()) throw Error(path.string() + ": read error");
  segmenter.Finish(add);
  return file;
}

TextEvaluation EvaluateFile(const ModelConfig& config, const ModelParams<float>& params, EncodedFile file,
                            const Vocab& vocab, int B, int T, int threads) {
  TextEvaluation result;
  result.unknown = file.unknown;
  result.unknown_symbols = std::move(file.unknown_symbols);
  const size_t n = file.ids.size();
  if (n < 2)
    throw Error("only " + std::to_string(n) + " symbol" + (n == 1 ? "" : "s") +
                " in the vocabulary; evaluation needs at least 2");
  // Streams of at least T inputs where the text allows, so that few symbols are scored from a
  // cold state and at most B - 1 are left at the end.
  const size_t streams = std::clamp<size_t>((n - 1) / static_cast<size_t>(std::max(T, 1)), 1, static_cast<size_t>(std::max(B, 1)));
  B = static_cast<int>(streams);
  const EncodedCorpus corpus(std::move(file.ids), vocab);
  result.nats_per_symbol = EvaluateLoss(config, params, corpus, {0, n}, B, T, threads);
  result.bits_per_symbol = result.nats_per_symbol / std::numbers::ln2;
  result.perplexity = std::exp(result.nats_per_symbol);
  result.symbols = static_cast<uint64_t>(B) * ((n - 1) / static_cast<uint64_t>(B));
  result.streams = static_cast<uint64_t>(B);
  return result;
}

double ScoreStepwise(Stepper& stepper, std::span<const int32_t> ids) {
  if (ids.size() < 2) throw Error("scoring needs at least two symbols, got " + std::to_string(ids.size()));
  const Eigen::Index V = stepper.config().output_size;
  // The logits of up to kChunk steps side by side, scored by the training loss a chunk at a time.
  constexpr Eigen::Index kChunk = 1024;
  Mat<float> logits(V, kChunk);
  Ids targets(kChunk);
  Eigen::Index filled = 0;
  double total = 0;
  const auto score = [&] {
    if (filled == kChunk) total += kChunk * SoftmaxCrossEntropy(logits, targets);
    else total += filled * SoftmaxCrossEntropy<float>(logits.leftCols(filled), targets.head(filled));
    filled = 0;
  };
  std::span<const float> z = stepper.Prime(ids.first(1));
  for (size_t t = 1; t < ids.size(); ++t) {
    logits.col(filled) = Eigen::Map<const Eigen::VectorXf>(z.data(), V);
    targets(filled++) = ids[t];
    if (filled == kChunk) score();
    if (t + 1 < ids.size()) z = stepper.Step(ids[t]);
  }
  if (filled > 0) score();
  return total / static_cast<double>(ids.size() - 1);
}

TextEvaluation EvaluateFileStepwise(const ModelConfig& config, ModelParams<float> params, EncodedFile file,
                                    Precision precision, int threads) {
  TextEvaluation result;
  result.unknown = file.unknown;
  result.unknown_symbols = std::move(file.unknown_symbols);
  Stepper stepper(config, std::move(params));
  stepper.Configure(precision, threads);
  result.nats_per_symbol = ScoreStepwise(stepper, file.ids);
  result.bits_per_symbol = result.nats_per_symbol / std::numbers::ln2;
  result.perplexity = std::exp(result.nats_per_symbol);
  result.symbols = file.ids.size() - 1;
  return result;
}

void EvalOptions::Validate() const {
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  if (seq_len < 1) throw Error("--seq-len must be positive, got " + std::to_string(seq_len));
  if (threads < 0) throw Error("--threads must not be negative, got " + std::to_string(threads));
  if (precision && batch != 1)
    throw Error("--precision scores one stream a symbol at a time; it cannot be combined with --batch");
}

TextEvaluation Evaluate(const ModelConfig& config, const ModelParams<float>& params, const Vocab& vocab,
                        EncodedFile file, const EvalOptions& options) {
  options.Validate();
  if (!config.language_model())
    throw Error("bptt eval scores text with a language model; this model was trained on a task");
  if (options.precision) {
    TextEvaluation r = EvaluateFileStepwise(config, params, std::move(file), *options.precision, options.threads);
    r.method = std::string("stepwise, ") + std::string(PrecisionName(*options.precision));
    return r;
  }
  const int threads = options.threads > 0 ? options.threads : std::max(1, omp_get_num_procs());
  TextEvaluation r = EvaluateFile(config, params, std::move(file), vocab, options.batch, options.seq_len, threads);
  r.method = r.streams == 1 ? std::string("one stream")
                            : std::to_string(r.streams) + " streams from the zero state (an approximation)";
  return r;
}

nlohmann::json EvaluationJson(const TextEvaluation& r) {
  return {{"nats_per_symbol", r.nats_per_symbol}, {"bpc", r.bits_per_symbol}, {"perplexity", r.perplexity},
          {"symbols", r.symbols}, {"unknown", r.unknown}, {"streams", r.streams}, {"method", r.method}};
}

}  // namespace bptt
