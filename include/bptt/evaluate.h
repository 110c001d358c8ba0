// Evaluation: how well a model predicts held-out text, in nats per symbol.
//
// A range of n symbols is read as B contiguous streams of Ls = (n - 1) / B inputs (BatchStream
// with allow_partial, corpus.h), T timesteps at a time, with the state carried from chunk to
// chunk and no dropout. Every input predicts the symbol after it, so B * Ls symbols are scored:
//
//   loss = (1 / (B Ls)) sum_{b, t} -log softmax(z_{b,t})[y_{b,t}]        nats per symbol
//   bits per symbol = loss / ln 2,  perplexity = exp(loss)
//
// With B = 1 this is the one-stream loss over the whole text that papers, PyTorch and every
// anchor report: each symbol is predicted from everything before it. With B > 1 each stream
// starts from the zero state, so the first symbols of every stream are predicted with less
// context: a faster approximation, a little above the one-stream loss. `bptt eval` scores one
// stream unless asked otherwise; the trainer's validation uses B streams for speed.
//
//   EncodedFile file = EncodeFile(path, checkpoint.vocab);
//   TextEvaluation result = EvaluateFile(config, params, std::move(file), vocab, 1, 256, threads);
//
// ScoreStepwise and EvaluateFileStepwise score text the way `bptt sample` runs the model.
//
// Each function that reads or scores a whole text takes `between_chunks`, called between its
// pieces of work (a chunk of T steps, 1024 stepwise symbols, 1 MiB of the file): it may throw to
// abandon the work (the Python module raises KeyboardInterrupt from there on Ctrl-C).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/corpus.h"
#include "bptt/dynamic_evaluation.h"
#include "bptt/model.h"
#include "bptt/stepper.h"
#include "bptt/vocab.h"

namespace bptt {

// Mean nats per symbol over `range` of `corpus`, laid out as B streams and run T timesteps at
// a time (the state carried, no dropout) on `threads` threads. Throws bptt::Error if the range
// is shorter than B + 1 symbols.
double EvaluateLoss(const ModelConfig& config, const ModelParams<float>& params,
                    const EncodedCorpus& corpus, SymbolRange range, int B, int T, int threads,
                    const std::function<void()>& between_chunks = {});

// The nats summed over the symbols that the streams of `share` (of the same B-stream layout)
// predict, and their count: the part of EvaluateLoss that one process of a distributed run
// computes. Over shares that make up the B streams the sums add up to EvaluateLoss's (to
// rounding). An empty share is no stream: {0, 0}.
struct LossSum {
  double nats = 0;
  uint64_t symbols = 0;

  // Adds a chunk of `symbols` scored at `mean` nats each. Every evaluation sums through here, so
  // that the same chunks give the same bits whichever evaluation scored them.
  void Add(double mean, uint64_t symbols);
  double Mean() const { return nats / static_cast<double>(symbols); }
};
LossSum EvaluateLossSum(const ModelConfig& config, const ModelParams<float>& params, const EncodedCorpus& corpus,
                        SymbolRange range, int B, int T, int threads, StreamShare share,
                        const std::function<void()>& between_chunks = {});

// A text file as ids of a given vocabulary.
struct EncodedFile {
  std::vector<int32_t> ids;                  // the symbols found in the vocabulary, in order
  uint64_t unknown = 0;                      // symbols not in the vocabulary: left out, or
                                             //   encoded as "<unk>" when the vocabulary has it
  std::vector<std::string> unknown_symbols;  // the distinct ones, in order of first appearance
                                             //   (at most kMaxListed)
  static constexpr size_t kMaxListed = 20;
};

// The symbols of `text` as ids of the vocabulary, as EncodeFile reads a file; errors name `source`.
EncodedFile EncodeText(std::string_view text, const Vocab& vocab, const std::string& source = "text",
                       const std::function<void()>& between_chunks = {});

// Cuts the file into symbols with the vocabulary's tokenizer options (Segmenter, reading it in
// pieces) and looks each up with Vocab::Find. Throws bptt::Error naming the path if it is not
// a readable, non-empty text file (CheckTextFile) or is not valid UTF-8 (unless the vocabulary
// replaces invalid bytes).
EncodedFile EncodeFile(const std::filesystem::path& path, const Vocab& vocab,
                       const std::function<void()>& between_chunks = {});

struct TextEvaluation {
  double nats_per_symbol = 0;
  double bits_per_symbol = 0;  // nats / ln 2 (bits per character for a character vocabulary)
  double perplexity = 0;       // exp(nats)
  uint64_t symbols = 0;        // symbols scored: B * Ls (see above)
  uint64_t streams = 1;        // B
  uint64_t unknown = 0;        // as in EncodedFile
  std::vector<std::string> unknown_symbols;
  std::string method;          // how it was scored: "one stream", "N streams from the zero state
                               //   (an approximation)", "stepwise, <precision>" or "one stream,
                               //   dynamic (<rule>, segments of k, ...)"
  // Dynamic evaluation: nats_per_symbol is the dynamic score, and this the trained weights' own
  // over the same segments (the static score).
  std::optional<double> static_nats_per_symbol;
  uint64_t statistics_symbols = 0;  // dynamic, rms rule: symbols the gradient statistics came from
};

// How `bptt eval` scores a text.
struct EvalOptions {
  int batch = 1;      // B streams side by side (EvaluateFile); 1 = the one-stream loss
  int seq_len = 256;  // T timesteps per chunk
  int threads = 0;     // 0: every core (with precision: chosen as it runs, as `bptt sample` does)
  std::optional<Precision> precision;  // score one stream a symbol at a time in this precision
                                       //   (EvaluateFileStepwise) instead
  DynamicOptions dynamic;              // adapt the weights as the text is scored
                                       //   (dynamic_evaluation.h): one stream in segments of
                                       //   dynamic.segment symbols

  // Throws bptt::Error naming the flag ("--batch must be positive, got 0").
  void Validate() const;
};

template <typename Options>
struct OptionSpec;  // options.h

// The options of `bptt eval` and the Python module's Model.eval (--batch, --seq-len, --threads,
// --precision, and the --dynamic-* rows of DynamicOptionSpecs), declared once (options.h).
// --seq-len is refused with --precision, which runs one symbol at a time, and with --dynamic,
// which reads segments of --dynamic-segment; --batch and --precision are refused with --dynamic.
std::span<const OptionSpec<EvalOptions>> EvalOptionSpecs();

// Scores encoded text with a language model: EvaluateFile, or EvaluateFileStepwise when
// options.precision is set, or with dynamic evaluation when options.dynamic.enabled (the
// gradient statistics of its rms rule read from options.dynamic.stats_file, or from the text
// itself; the static score from EvaluateFile with one stream and T = the segment length, so that
// with a learning rate of 0 the two are equal to the bit), with `method` filled in. Throws bptt::Error for invalid options, a
// model that is not a language model, or a text of fewer than two symbols the vocabulary knows
// ("has 3 symbols, 1 of them in the model's vocabulary; scoring needs at least 2").
TextEvaluation Evaluate(const ModelConfig& config, const ModelParams<float>& params, const Vocab& vocab,
                        EncodedFile file, const EvalOptions& options,
                        const std::function<void()>& between_chunks = {});

// The object `bptt eval --json` prints: nats_per_symbol, bpc, perplexity, symbols, unknown,
// streams, method; with dynamic evaluation also static_nats_per_symbol, static_bpc and
// statistics_symbols.
nlohmann::json EvaluationJson(const TextEvaluation& evaluation);

// Evaluates encoded text with EvaluateLoss: T timesteps per chunk and B streams, or fewer so
// that each stream has at least T inputs (one stream for a text of T symbols or less). Throws
// bptt::Error if fewer than two symbols remain.
TextEvaluation EvaluateFile(const ModelConfig& config, const ModelParams<float>& params, EncodedFile file,
                            const Vocab& vocab, int B, int T, int threads,
                            const std::function<void()>& between_chunks = {});

// Mean nats per symbol of predicting ids[1..] one symbol at a time from the zero state, the
// first symbol run as the prime and each later one as a step of the stepper's precision: the
// cost of a precision on real text, through the same path as sampling. Throws bptt::Error if
// `ids` has fewer than two symbols.
double ScoreStepwise(Stepper& stepper, std::span<const int32_t> ids, const std::function<void()>& between_chunks = {});

// Evaluates encoded text with ScoreStepwise in `precision` on `threads` threads (as
// Stepper::Configure) (n - 1 symbols scored). What a reduced sampling precision costs is the
// difference from kFloat32.
TextEvaluation EvaluateFileStepwise(const ModelConfig& config, ModelParams<float> params, EncodedFile file,
                                    Precision precision, int threads = 1,
                                    const std::function<void()>& between_chunks = {});

}  // namespace bptt
