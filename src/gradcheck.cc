#include "bptt/gradcheck.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/rng.h"

namespace bptt {

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The elements of an n-element tensor to check: all, or `sample` distinct ones.
std::vector<Eigen::Index> Elements(Eigen::Index n, int sample, Rng& rng) {
  std::vector<Eigen::Index> out;
  if (sample <= 0 || sample >= n) {
    for (Eigen::Index k = 0; k < n; ++k) out.push_back(k);
    return out;
  }
  std::set<Eigen::Index> picked;
  while (static_cast<int>(picked.size()) < sample) picked.insert(static_cast<Eigen::Index>(rng.Below(static_cast<uint64_t>(n))));
  return {picked.begin(), picked.end()};
}

}  // namespace

nlohmann::json GradCheckReport::ToJson() const {
  nlohmann::json per_tensor = nlohmann::json::object();
  for (const TensorCheck& t : tensors)
    per_tensor[t.name] = {{"max_rel_error", t.max_rel_error}, {"elements", t.elements}, {"checked", t.checked}};
  return {{"max_rel_error", {{"overall", max_rel_error}, {"tensors", per_tensor}}},
          {"parameters", parameters},
          {"checked", checked},
          {"loss", loss},
          {"forward_s", forward_s},
          {"backward_s", backward_s},
          {"fd_s_per_parameter", fd_s_per_parameter},
          {"ratio", ratio}};
}

GradCheckReport GradCheck(const ModelConfig& config, ModelParams<double> params, const Batch<double>& batch,
                          const GradCheckOptions& o) {
  config.Validate();
  if (!(o.step > 0) || !(o.floor > 0) || o.sample < 0 || o.threads < 1)
    throw Error("gradcheck: the step and floor must be positive, --sample not negative, --threads positive");
  const State<double> zero = State<double>::Zeros(config, batch.B);
  ModelCache<double> cache;
  const auto loss = [&] {
    Forward(config, params, batch, zero, cache, o.threads);
    return HeadLoss<double>(config, cache.outputs, batch, nullptr, o.threads);
  };

  GradCheckReport r;
  // The backpropagated gradient, timed as reverse mode runs it: one forward, one backward (the
  // best of three, as is the forward pass alone).
  ModelParams<double> grads = ModelParams<double>::Zeros(config);
  Mat<double> doutputs;
  r.backward_s = r.forward_s = 1e300;
  for (int repeat = 0; repeat < 3; ++repeat) {
    grads.SetZero();
    Clock::time_point start = Clock::now();
    Forward(config, params, batch, zero, cache, o.threads);
    r.loss = HeadLoss<double>(config, cache.outputs, batch, &doutputs, o.threads);
    Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, o.threads);
    r.backward_s = std::min(r.backward_s, Since(start));
    start = Clock::now();
    loss();
    r.forward_s = std::min(r.forward_s, Since(start));
  }

  std::vector<const Mat<double>*> analytic;
  grads.ForEach([&analytic](const std::string&, const Mat<double>& g) { analytic.push_back(&g); });
  Rng rng(o.seed);
  size_t k = 0;
  double fd_seconds = 0;
  params.ForEach([&](const std::string& name, Mat<double>& w) {
    const Mat<double>& a = *analytic[k++];
    TensorCheck t{name, w.size(), 0, 0};
    for (const Eigen::Index e : Elements(w.size(), o.sample, rng)) {
      const double saved = w(e);
      const Clock::time_point fd_start = Clock::now();
      w(e) = saved + o.step;
      const double up = loss();
      w(e) = saved - o.step;
      const double down = loss();
      fd_seconds += Since(fd_start);
      w(e) = saved;
      const double n = (up - down) / (2 * o.step);
      const double error = std::abs(a(e) - n) / std::max({std::abs(a(e)), std::abs(n), o.floor});
      t.max_rel_error = std::max(t.max_rel_error, error);
      ++t.checked;
    }
    r.max_rel_error = std::max(r.max_rel_error, t.max_rel_error);
    r.parameters += t.elements;
    r.checked += t.checked;
    r.tensors.push_back(std::move(t));
  });
  r.fd_s_per_parameter = r.checked > 0 ? fd_seconds / static_cast<double>(r.checked) : 0;
  r.ratio = r.backward_s > 0 ? r.fd_s_per_parameter * static_cast<double>(r.parameters) / r.backward_s : 0;
  return r;
}

}  // namespace bptt
