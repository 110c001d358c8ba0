#include "bptt/dynamic_evaluation.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/loss.h"
#include "bptt/options.h"

namespace bptt {

std::string_view DynamicRuleName(DynamicRule rule) { return rule == DynamicRule::kSgd ? "sgd" : "rms"; }

DynamicRule ParseDynamicRule(std::string_view name, std::string_view flag) {
  if (name == "sgd") return DynamicRule::kSgd;
  if (name == "rms") return DynamicRule::kRms;
  throw Error(std::string(flag) + " must be sgd or rms, got '" + std::string(name) + "'");
}

void DynamicOptions::Validate() const {
  if (segment < 1) throw Error("--dynamic-segment must be positive, got " + std::to_string(segment));
  if (!(lr >= 0)) throw Error("--dynamic-lr must be at least 0, got " + std::to_string(lr));
  if (!(decay >= 0 && decay <= 1)) throw Error("--dynamic-decay must be in [0, 1], got " + std::to_string(decay));
  if (stats_symbols < 2)
    throw Error("--dynamic-stats-symbols must be at least 2, got " + std::to_string(stats_symbols));
}

std::span<const OptionSpec<DynamicOptions>> DynamicOptionSpecs() {
  using D = DynamicOptions;
  constexpr OnResume kNone = OnResume::kNone;
  const char* group = "Dynamic evaluation (Krause et al. 2018)";
  const auto needs_dynamic = [](const D& d) { return d.enabled ? "" : "applies only with --dynamic"; };
  const auto needs_rms = [](const D& d) {
    return !d.enabled ? "applies only with --dynamic"
                      : d.rule != DynamicRule::kRms ? "applies only with --dynamic-rule rms" : "";
  };
  static const std::vector<OptionSpec<D>> specs = {
      Field<D>(kAnyCommand, "dynamic", "", group,
               "adapt a copy of the weights to the text as it is read: each segment is scored, then the weights "
               "take one gradient step on it (the checkpoint is not changed)",
               kNone, [](D& d) -> auto& { return d.enabled; }),
      Restrict(Field<D>(kAnyCommand, "dynamic-segment", "", group,
                        "symbols per segment (k): one update after each, the state carried across", kNone,
                        [](D& d) -> auto& { return d.segment; }),
               needs_dynamic),
      Restrict(Choice<D>(kAnyCommand, "dynamic-rule", "", group,
                         "sgd: theta -= lr g; rms: theta -= lr g / (sqrt(MS) + 1e-5), MS the mean square of the "
                         "segment gradients in --dynamic-stats, and the decay scaled by sqrt(MS) / its mean",
                         kNone, [](D& d) -> auto& { return d.rule; }, DynamicRuleName,
                         [](const std::string& v, const std::string& f) { return ParseDynamicRule(v, f); }),
               needs_dynamic),
      Restrict(Field<D>(kAnyCommand, "dynamic-lr", "", group, "learning rate of each update (eta)", kNone,
                        [](D& d) -> auto& { return d.lr; }),
               needs_dynamic),
      Restrict(Field<D>(kAnyCommand, "dynamic-decay", "", group,
                        "decay towards the trained weights at each update (lambda, in [0, 1])", kNone,
                        [](D& d) -> auto& { return d.decay; }),
               needs_dynamic),
      Restrict(Field<D>(kAnyCommand, "dynamic-stats", "", group,
                        "text file the gradient statistics MS of the rms rule are gathered from, at the trained "
                        "weights (the training text; default: the first symbols of the text being read)",
                        kNone, [](D& d) -> auto& { return d.stats_file; }),
               needs_rms),
      Restrict(Field<D>(kAnyCommand, "dynamic-stats-symbols", "", group,
                        "symbols of the statistics' text read for MS (its first ones)", kNone,
                        [](D& d) -> auto& { return d.stats_symbols; }),
               needs_rms),
  };
  return specs;
}

std::string DynamicDescription(const DynamicOptions& o) {
  std::ostringstream out;
  out << DynamicRuleName(o.rule) << ", segments of " << o.segment << ", lr " << o.lr << ", decay " << o.decay;
  return out.str();
}

namespace {

std::vector<Mat<float>*> Tensors(ModelParams<float>& params) {
  std::vector<Mat<float>*> out;
  params.ForEach([&out](const std::string&, Mat<float>& m) { out.push_back(&m); });
  return out;
}

// Calls f(batch) for each segment of one stream over the first `inputs` inputs of ids: inputs
// ids[at, at + steps), targets ids[at + 1, at + steps + 1), steps = k or fewer at the end.
template <typename F>
void ForEachSegment(std::span<const int32_t> ids, int k, size_t inputs, const std::function<void()>& between_chunks,
                    F f) {
  Batch<float> batch;
  batch.B = 1;
  for (size_t at = 0; at < inputs; at += static_cast<size_t>(k)) {
    if (between_chunks) between_chunks();
    const auto steps = static_cast<Eigen::Index>(std::min(static_cast<size_t>(k), inputs - at));
    batch.T = steps;
    batch.ids = Eigen::Map<const Ids>(ids.data() + at, steps);
    batch.classes = Eigen::Map<const Ids>(ids.data() + at + 1, steps);
    f(batch);
  }
}

}  // namespace

DynamicAdapter::DynamicAdapter(const ModelConfig& config, const ModelParams<float>& trained,
                               const DynamicOptions& options, int threads)
    : config_(config), options_(options), threads_(threads), trained_(trained), weights_(trained) {
  options_.Validate();
  CheckThreads(threads, 1);
  if (!config.language_model())
    throw Error("dynamic evaluation adapts a language model; this model was trained on a task");
  grads_ = ModelParams<float>::Zeros(config);
  state_ = State<float>::Zeros(config, 1);
}

double DynamicAdapter::Segment(const Batch<float>& batch) {
  Forward(config_, weights_, batch, state_, cache_, threads_);
  const double nats = SoftmaxCrossEntropy<float>(cache_.outputs, batch.classes, Mask(), &doutputs_, threads_);
  FinalState(config_, cache_, state_);  // before Backward, which may reuse the cache's buffers
  grads_.SetZero();
  Backward(config_, weights_, batch, cache_, doutputs_, nullptr, grads_, nullptr, threads_);
  return nats;
}

uint64_t DynamicAdapter::GatherStatistics(std::span<const int32_t> ids, const std::function<void()>& between_chunks) {
  if (ids.size() < 2)
    throw Error("the gradient statistics need a text of at least 2 symbols, got " + std::to_string(ids.size()));
  const size_t inputs = std::min(ids.size() - 1, static_cast<size_t>(options_.stats_symbols - 1));
  // At theta_0, from the zero state; the weights being adapted are left as they are.
  const ModelParams<float> adapted = weights_;
  weights_ = trained_;
  state_.SetZero();
  ModelParams<double> sum = ModelParams<double>::Zeros(config_);
  std::vector<Mat<double>*> sums;
  sum.ForEach([&sums](const std::string&, Mat<double>& m) { sums.push_back(&m); });
  const std::vector<Mat<float>*> g = Tensors(grads_);
  uint64_t segments = 0;
  ForEachSegment(ids, options_.segment, inputs, between_chunks, [&](const Batch<float>& batch) {
    Segment(batch);
    for (size_t i = 0; i < g.size(); ++i) *sums[i] += g[i]->cast<double>().cwiseAbs2();
    ++segments;
  });
  // sqrt(MS), its mean over every parameter, and the decay rates min(lambda r, 1).
  rms_ = ModelParams<float>::Zeros(config_);
  decay_ = ModelParams<float>::Zeros(config_);
  const std::vector<Mat<float>*> rms = Tensors(rms_), decay = Tensors(decay_);
  double total = 0, count = 0;
  for (size_t i = 0; i < sums.size(); ++i) {
    const Mat<double> root = (*sums[i] / static_cast<double>(segments)).cwiseSqrt();
    *rms[i] = root.cast<float>();
    total += root.sum();
    count += static_cast<double>(root.size());
  }
  const double mean = total / count;
  for (size_t i = 0; i < sums.size(); ++i) {
    if (mean > 0)
      *decay[i] = (rms[i]->cast<double>() * (options_.decay / mean)).cwiseMin(1.0).cast<float>();
    else
      decay[i]->setConstant(static_cast<float>(options_.decay));
  }
  weights_ = adapted;
  state_.SetZero();
  have_statistics_ = true;
  return inputs;
}

DynamicScore DynamicAdapter::Score(std::span<const int32_t> ids, const std::function<void()>& between_chunks) {
  if (ids.size() < 2) throw Error("scoring needs at least two symbols, got " + std::to_string(ids.size()));
  if (options_.rule == DynamicRule::kRms && !have_statistics_)
    throw Error("the rms rule of dynamic evaluation needs the gradient statistics first (GatherStatistics)");
  state_.SetZero();
  const std::vector<Mat<float>*> theta = Tensors(weights_), theta0 = Tensors(trained_), g = Tensors(grads_);
  const std::vector<Mat<float>*> rms = options_.rule == DynamicRule::kRms ? Tensors(rms_) : std::vector<Mat<float>*>();
  const std::vector<Mat<float>*> decay =
      options_.rule == DynamicRule::kRms ? Tensors(decay_) : std::vector<Mat<float>*>();
  const auto lr = static_cast<float>(options_.lr), lambda = static_cast<float>(options_.decay);
  const auto eps = static_cast<float>(kDynamicEpsilon);
  DynamicScore score;
  LossSum sum;
  ForEachSegment(ids, options_.segment, ids.size() - 1, between_chunks, [&](const Batch<float>& batch) {
    const double nats = Segment(batch);
    if (!std::isfinite(nats))
      throw Error("dynamic evaluation diverged at symbol " + std::to_string(sum.symbols + 1) +
                  " (the adapted weights predict it with probability 0); a lower --dynamic-lr keeps it stable");
    sum.Add(nats, static_cast<uint64_t>(batch.T));
    for (size_t i = 0; i < theta.size(); ++i) {
      auto w = theta[i]->array();
      if (options_.rule == DynamicRule::kSgd)
        w += lambda * (theta0[i]->array() - w) - lr * g[i]->array();
      else
        w += decay[i]->array() * (theta0[i]->array() - w) - lr * g[i]->array() / (rms[i]->array() + eps);
    }
    ++score.segments;
  });
  score.symbols = sum.symbols;
  score.nats_per_symbol = sum.Mean();
  return score;
}

}  // namespace bptt
