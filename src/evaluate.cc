#include "bptt/evaluate.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>

#include "bptt/error.h"
#include "bptt/options.h"
#include "bptt/loss.h"

namespace bptt {

LossSum EvaluateLossSum(const ModelConfig& config, const ModelParams<float>& params, const EncodedCorpus& corpus,
                        SymbolRange range, int B, int T, int threads, StreamShare share,
                        const std::function<void()>& between_chunks) {
  LossSum sum;
  if (share.size() == 0) return sum;
  BatchStream stream(corpus, range, B, T, /*allow_partial=*/true, share);
  State<float> state = State<float>::Zeros(config, share.size());
  ModelCache<float> cache;
  Batch<float> batch;
  batch.B = share.size();
  while (const int steps = stream.Next(batch.ids, batch.classes)) {
    if (between_chunks) between_chunks();
    batch.T = steps;
    Forward(config, params, batch, state, cache, threads);
    const auto n = static_cast<uint64_t>(steps) * static_cast<uint64_t>(batch.B);
    sum.Add(SoftmaxCrossEntropy<float>(cache.outputs, batch.classes, nullptr, threads), n);
    FinalState(config, cache, state);
  }
  return sum;
}

double EvaluateLoss(const ModelConfig& config, const ModelParams<float>& params,
                    const EncodedCorpus& corpus, SymbolRange range, int B, int T, int threads,
                    const std::function<void()>& between_chunks) {
  if (B < 1) throw Error("evaluation needs at least one stream, got B = " + std::to_string(B));
  return EvaluateLossSum(config, params, corpus, range, B, T, threads, {0, B}, between_chunks).Mean();
}

void LossSum::Add(double mean, uint64_t n) {
  nats += mean * static_cast<double>(n);
  symbols += n;
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

EncodedFile EncodeText(std::string_view text, const Vocab& vocab, const std::string& source,
                       const std::function<void()>& between_chunks) {
  EncodedFile file;
  const SymbolSink add = Collect(file, vocab);
  Segmenter segmenter(vocab.options(), source);
  constexpr size_t kPiece = size_t{1} << 20;  // the symbols do not depend on where the pieces end
  for (size_t at = 0; at < text.size(); at += kPiece) {
    if (between_chunks) between_chunks();
    segmenter.Feed(text.substr(at, kPiece), add);
  }
  segmenter.Finish(add);
  return file;
}

EncodedFile EncodeFile(const std::filesystem::path& path, const Vocab& vocab,
                       const std::function<void()>& between_chunks) {
  CheckTextFile(path);
  EncodedFile file;
  const SymbolSink add = Collect(file, vocab);
  Segmenter segmenter(vocab.options(), path.string());
  ReadInPieces(path, [&](std::string_view piece) {
    if (between_chunks) between_chunks();
    segmenter.Feed(piece, add);
  });
  segmenter.Finish(add);
  return file;
}

TextEvaluation EvaluateFile(const ModelConfig& config, const ModelParams<float>& params, EncodedFile file,
                            const Vocab& vocab, int B, int T, int threads,
                            const std::function<void()>& between_chunks) {
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
  result.nats_per_symbol = EvaluateLoss(config, params, corpus, {0, n}, B, T, threads, between_chunks);
  result.bits_per_symbol = result.nats_per_symbol / std::numbers::ln2;
  result.perplexity = std::exp(result.nats_per_symbol);
  result.symbols = static_cast<uint64_t>(B) * ((n - 1) / static_cast<uint64_t>(B));
  result.streams = static_cast<uint64_t>(B);
  return result;
}

double ScoreStepwise(Stepper& stepper, std::span<const int32_t> ids, const std::function<void()>& between_chunks) {
  if (ids.size() < 2) throw Error("scoring needs at least two symbols, got " + std::to_string(ids.size()));
  const Eigen::Index V = stepper.config().output_size;
  // The logits of up to kChunk steps side by side, scored by the training loss a chunk at a time.
  constexpr Eigen::Index kChunk = 1024;
  Mat<float> logits(V, kChunk);
  Ids targets(kChunk);
  Eigen::Index filled = 0;
  double total = 0;
  const auto score = [&] {
    if (between_chunks) between_chunks();
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
                                    Precision precision, int threads,
                                    const std::function<void()>& between_chunks) {
  TextEvaluation result;
  result.unknown = file.unknown;
  result.unknown_symbols = std::move(file.unknown_symbols);
  Stepper stepper(config, std::move(params));
  stepper.Configure(precision, threads);
  result.nats_per_symbol = ScoreStepwise(stepper, file.ids, between_chunks);
  result.bits_per_symbol = result.nats_per_symbol / std::numbers::ln2;
  result.perplexity = std::exp(result.nats_per_symbol);
  result.symbols = file.ids.size() - 1;
  return result;
}

void EvalOptions::Validate() const {
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  if (seq_len < 1) throw Error("--seq-len must be positive, got " + std::to_string(seq_len));
  CheckThreads(threads, 0);
  if (precision && batch != 1)
    throw Error("--precision scores one stream a symbol at a time; it cannot be combined with --batch");
  if (dynamic.enabled) {
    dynamic.Validate();
    if (batch != 1) throw Error("--dynamic adapts to one stream; it cannot be combined with --batch");
    if (precision) throw Error("--dynamic runs float products; it cannot be combined with --precision");
  }
}

std::span<const OptionSpec<EvalOptions>> EvalOptionSpecs() {
  using E = EvalOptions;
  constexpr OnResume kNone = OnResume::kNone;
  const char* group = "Evaluation";
  static const std::vector<OptionSpec<E>> specs = [&] {
    std::vector<OptionSpec<E>> rows = {
      Restrict(Field<E>(kAnyCommand, "batch", "", group,
               "streams evaluated side by side (B). 1: the whole file as one stream, the loss papers and PyTorch "
               "report; N > 1: N streams each from the zero state, faster and a little above it (the output says so)",
               kNone, [](E& e) -> auto& { return e.batch; }),
               [](const E& e) { return e.dynamic.enabled ? "does not apply with --dynamic, which reads one stream" : ""; }),
      Restrict(Field<E>(kAnyCommand, "seq-len", "", group,
                        "timesteps per chunk (T); the state is carried across chunks", kNone,
                        [](E& e) -> auto& { return e.seq_len; }),
               [](const E& e) {
                 return e.precision ? "does not apply with --precision, which scores one symbol at a time"
                        : e.dynamic.enabled ? "does not apply with --dynamic, which reads segments of --dynamic-segment"
                                            : "";
               }),
      Threads<E>(kAnyCommand, "", group,
                 "threads for the products (0 = every core; with --precision, chosen as it runs as in bptt sample)",
                 kNone, [](E& e) -> auto& { return e.threads; }, 0),
      Choice<E>(kAnyCommand, "precision", "", group,
                "score as `bptt sample --precision` runs: one stream, one symbol at a time, with fp32, bf16 or int8 "
                "products; compare the three to see what a reduced precision costs",
                kNone, [](E& e) -> auto& { return e.precision; }, PrecisionName,
                [](const std::string& v, const std::string& f) { return ParsePrecision(v, f); }),
    };
    for (OptionSpec<E>& row : Nest<E>(DynamicOptionSpecs(), kAnyCommand, "", [](E& e) -> auto& { return e.dynamic; }))
      rows.push_back(std::move(row));
    return rows;
  }();
  return specs;
}

namespace {

// Dynamic evaluation of the text (dynamic_evaluation.h), and the static score over the same
// segments.
TextEvaluation EvaluateDynamic(const ModelConfig& config, const ModelParams<float>& params, const Vocab& vocab,
                               EncodedFile file, const DynamicOptions& options, int threads,
                               const std::function<void()>& between_chunks) {
  DynamicAdapter adapter(config, params, options, threads);
  std::string statistics;
  uint64_t statistics_symbols = 0;
  if (options.rule == DynamicRule::kRms) {
    if (options.stats_file.empty()) {
      statistics_symbols = adapter.GatherStatistics(file.ids, between_chunks) + 1;
      statistics = "; statistics from its first " + std::to_string(statistics_symbols) + " symbols";
    } else {
      EncodedFile stats;
      try {
        stats = EncodeFile(options.stats_file, vocab, between_chunks);
        statistics_symbols = adapter.GatherStatistics(stats.ids, between_chunks) + 1;
      } catch (const Error& e) {
        throw Error("--dynamic-stats " + options.stats_file + ": " + e.what());
      }
      statistics = "; statistics from the first " + std::to_string(statistics_symbols) + " symbols of " +
                   options.stats_file;
    }
  }
  const DynamicScore dynamic = adapter.Score(file.ids, between_chunks);
  TextEvaluation r = EvaluateFile(config, params, std::move(file), vocab, 1, options.segment, threads, between_chunks);
  r.static_nats_per_symbol = r.nats_per_symbol;
  r.nats_per_symbol = dynamic.nats_per_symbol;
  r.bits_per_symbol = r.nats_per_symbol / std::numbers::ln2;
  r.perplexity = std::exp(r.nats_per_symbol);
  r.statistics_symbols = statistics_symbols;
  r.method = "one stream, dynamic (" + DynamicDescription(options) + statistics + ")";
  return r;
}

}  // namespace

TextEvaluation Evaluate(const ModelConfig& config, const ModelParams<float>& params, const Vocab& vocab,
                        EncodedFile file, const EvalOptions& options, const std::function<void()>& between_chunks) {
  options.Validate();
  if (!config.language_model())
    throw Error("bptt eval scores text with a language model; this model was trained on a task");
  if (file.ids.size() < 2) {
    const uint64_t known = file.ids.size() - (vocab.unknown_id() >= 0 ? std::min<uint64_t>(file.unknown, file.ids.size()) : 0);
    const uint64_t total = file.ids.size() + (vocab.unknown_id() >= 0 ? 0 : file.unknown);
    throw Error("has " + std::to_string(total) + " symbol" + (total == 1 ? "" : "s") + ", " + std::to_string(known) +
                " of them in the model's vocabulary; scoring needs at least 2");
  }
  if (options.precision) {
    TextEvaluation r =
        EvaluateFileStepwise(config, params, std::move(file), *options.precision, options.threads, between_chunks);
    r.method = std::string("stepwise, ") + std::string(PrecisionName(*options.precision));
    return r;
  }
  const int threads = options.threads > 0 ? options.threads : std::max(1, omp_get_num_procs());
  if (options.dynamic.enabled)
    return EvaluateDynamic(config, params, vocab, std::move(file), options.dynamic, threads, between_chunks);
  TextEvaluation r =
      EvaluateFile(config, params, std::move(file), vocab, options.batch, options.seq_len, threads, between_chunks);
  r.method = r.streams == 1 ? std::string("one stream")
                            : std::to_string(r.streams) + " streams from the zero state (an approximation)";
  return r;
}

nlohmann::json EvaluationJson(const TextEvaluation& r) {
  nlohmann::json j = {{"nats_per_symbol", r.nats_per_symbol}, {"bpc", r.bits_per_symbol}, {"perplexity", r.perplexity},
                      {"symbols", r.symbols}, {"unknown", r.unknown}, {"streams", r.streams}, {"method", r.method}};
  if (r.static_nats_per_symbol) {
    j["static_nats_per_symbol"] = *r.static_nats_per_symbol;
    j["static_bpc"] = *r.static_nats_per_symbol / std::numbers::ln2;
    j["statistics_symbols"] = r.statistics_symbols;
  }
  return j;
}

}  // namespace bptt
