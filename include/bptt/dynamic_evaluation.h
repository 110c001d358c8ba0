// Dynamic evaluation (Krause et al. 2018): scoring a text while a copy of the weights adapts to
// it, so that what the text has shown so far (a name, a style, a pattern the training data did
// not have) helps predict the rest of it.
//
// The text is one stream read in segments s_1, s_2, ... of k symbols, the recurrent state carried
// from segment to segment. Each segment is first scored with the current weights theta_{i-1}
// (that score is the dynamic result), then the gradient g_i of its mean loss (nats per symbol) is
// taken by BPTT over the segment, truncated at its start, and the weights take one step:
//
//   sgd:  theta_i = theta_{i-1} - eta g_i                       + lambda (theta_0 - theta_{i-1})
//   rms:  theta_i = theta_{i-1} - eta g_i / (sqrt(MS) + eps)    + min(lambda r, 1) (theta_0 - theta_{i-1})
//         r = sqrt(MS) / mean(sqrt(MS))     (elementwise; the mean over every parameter)
//
// theta_0 are the trained weights, towards which the adapted ones decay at rate lambda. MS is the
// mean square of the segment gradients at theta_0 over a stretch of text (the training text, or
// the first symbols of the scored text itself when no other is given), gathered before scoring
// begins: the rms rule moves each parameter in units of its usual gradient and decays fastest
// the parameters whose gradients are largest. eps = kDynamicEpsilon.
//
// The state after a segment is the one its scoring pass reached (with theta_{i-1}); each segment
// costs one forward and one backward pass. There is no dropout and nothing random: the same
// text, options and threads give the same numbers. The trained weights are only read: the
// adapted copy lives in the DynamicAdapter (and a checkpoint on disk is never written).
//
//   DynamicAdapter adapter(config, params, options, threads);
//   adapter.GatherStatistics(stats_ids);                       // rms only
//   double nats = adapter.Score(ids).nats_per_symbol;          // the weights adapt as it scores
//   ModelParams<float> adapted = adapter.weights();
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "bptt/batch.h"
#include "bptt/model.h"

namespace bptt {

template <typename Options>
struct OptionSpec;  // options.h

// How each segment's gradient moves the weights (see above).
enum class DynamicRule { kSgd, kRms };
std::string_view DynamicRuleName(DynamicRule rule);                        // "sgd", "rms"
DynamicRule ParseDynamicRule(std::string_view name, std::string_view flag);  // throws bptt::Error

// eps of the rms rule: keeps the step of a parameter whose gradient was always zero in the
// statistics (a symbol they never showed) finite.
inline constexpr double kDynamicEpsilon = 1e-5;

// The options of dynamic evaluation, shared by `bptt eval` and `bptt sample` (and their Python
// keywords): --dynamic, --dynamic-segment, --dynamic-rule, --dynamic-lr, --dynamic-decay,
// --dynamic-stats, --dynamic-stats-symbols.
struct DynamicOptions {
  bool enabled = false;          // adapt the weights as the text is read
  int segment = 50;              // k: symbols per segment, one update after each
  DynamicRule rule = DynamicRule::kRms;
  double lr = 3e-4;              // eta (rms; sgd wants larger steps, ~0.1 on a char-level LSTM)
  double decay = 0.001;          // lambda, in [0, 1]
  std::string stats_file;        // rms: the text MS is gathered from ("" = the scored text)
  int64_t stats_symbols = 100000;  // rms: at most this many of its first symbols

  // Throws bptt::Error naming the flag ("--dynamic-decay must be in [0, 1], got 2").
  void Validate() const;
};

// The rows of DynamicOptions (options.h), for the tables of the commands that take them. Each
// --dynamic-* row is refused without --dynamic; --dynamic-stats and --dynamic-stats-symbols
// also with --dynamic-rule sgd.
std::span<const OptionSpec<DynamicOptions>> DynamicOptionSpecs();

// A human description: "rms, segments of 50, lr 0.0003, decay 0.001".
std::string DynamicDescription(const DynamicOptions& options);

// The result of scoring a text dynamically.
struct DynamicScore {
  double nats_per_symbol = 0;  // mean over the scored symbols, each scored before its segment's update
  uint64_t symbols = 0;        // symbols scored: n - 1 of n ids
  uint64_t segments = 0;       // updates made
};

// The adapted copy of a model's weights and what adapting needs: the trained weights, the
// gradient statistics, the state, the cache. One text at a time.
class DynamicAdapter {
 public:
  // `trained` is copied (theta_0 and the starting weights); `options.enabled` is not required.
  // Throws bptt::Error for invalid options or a model that is not a language model.
  DynamicAdapter(const ModelConfig& config, const ModelParams<float>& trained, const DynamicOptions& options,
                 int threads);

  // rms: MS from the first options.stats_symbols of `ids` in segments of k at theta_0, the state
  // carried; returns the symbols used. Must be called before Score with the rms rule. Throws
  // bptt::Error if `ids` has fewer than two symbols.
  uint64_t GatherStatistics(std::span<const int32_t> ids, const std::function<void()>& between_chunks = {});

  // Scores ids[1..] from the zero state, adapting after each segment as above. The weights stay
  // adapted afterwards (weights()); a second text continues from them. Throws bptt::Error if
  // `ids` has fewer than two symbols, (rms) before GatherStatistics, or when the updates diverge
  // (a segment's loss is not finite).
  DynamicScore Score(std::span<const int32_t> ids, const std::function<void()>& between_chunks = {});

  const ModelParams<float>& weights() const { return weights_; }
  const ModelParams<float>& trained() const { return trained_; }

 private:
  // Runs one segment from the carried state with the current weights, leaves the gradient of its
  // mean loss in grads_, carries the state on, and returns the segment's mean nats.
  double Segment(const Batch<float>& batch);

  ModelConfig config_;
  DynamicOptions options_;
  int threads_;
  ModelParams<float> trained_;   // theta_0
  ModelParams<float> weights_;   // theta_i
  ModelParams<float> grads_;     // g_i
  ModelParams<float> rms_;       // rms: sqrt(MS)
  ModelParams<float> decay_;     // rms: min(lambda r, 1)
  bool have_statistics_ = false;
  State<float> state_;
  ModelCache<float> cache_;
  Mat<float> doutputs_;
};

}  // namespace bptt
