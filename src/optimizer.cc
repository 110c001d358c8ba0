#include "bptt/optimizer.h"

#include <cmath>

namespace bptt {

namespace {
constexpr std::pair<OptimizerType, std::string_view> kOptimizerNames[] = {
    {OptimizerType::kSgd, "sgd"}, {OptimizerType::kAdagrad, "adagrad"},
    {OptimizerType::kRmsprop, "rmsprop"}, {OptimizerType::kAdam, "adam"}};
}  // namespace

std::string_view OptimizerName(OptimizerType type) {
  for (const auto& [t, name] : kOptimizerNames)
    if (t == type) return name;
  return "?";
}

std::optional<OptimizerType> ParseOptimizer(std::string_view name) {
  for (const auto& [t, n] : kOptimizerNames)
    if (n == name) return t;
  return std::nullopt;
}

int OptimizerSlots(const OptimizerOptions& options) {
  switch (options.type) {
    case OptimizerType::kSgd: return options.momentum != 0.0 ? 1 : 0;
    case OptimizerType::kAdam: return 2;
    default: return 1;
  }
}

// Per tensor w with gradient g (PyTorch's rules):
//   SGD       buf = momentum buf + g;  w -= lr (nesterov ? g + momentum buf : buf)   (buf = g if momentum = 0)
//   Adagrad   s += g^2;                w -= lr g / (sqrt(s) + eps)
//   RMSProp   v = a v + (1 - a) g^2;   w -= lr g / (sqrt(v) + eps)
//   Adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//             w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Decoupled weight decay first: w -= lr wd w, for matrices only (biases are not decayed).
template <typename S>
void OptimizerStep(const OptimizerOptions& o, double lr, ModelParams<S>& params,
                   const ModelParams<S>& grads, OptimizerState<S>& state) {
  std::vector<const Mat<S>*> g;
  grads.ForEach([&g](const std::string&, const Mat<S>& m) { g.push_back(&m); });
  std::vector<Mat<S>*> w;
  params.ForEach([&w](const std::string&, Mat<S>& m) { w.push_back(&m); });
  const int slots = OptimizerSlots(o);
  if (state.slot1.size() != (slots >= 1 ? w.size() : 0)) {
    state.slot1.clear();
    state.slot2.clear();
    for (size_t k = 0; k < w.size() && slots >= 1; ++k) {
      state.slot1.push_back(Mat<S>::Zero(w[k]->rows(), w[k]->cols()));
      if (slots == 2) state.slot2.push_back(Mat<S>::Zero(w[k]->rows(), w[k]->cols()));
    }
  }
  ++state.step;
  const S rate = static_cast<S>(lr), eps = static_cast<S>(o.eps);
  const double t = static_cast<double>(state.step);

#pragma omp parallel for schedule(dynamic)
  for (size_t k = 0; k < w.size(); ++k) {
    auto wk = w[k]->array();
    const auto gk = g[k]->array();
    if (o.weight_decay != 0.0 && w[k]->cols() > 1) wk *= static_cast<S>(1.0 - lr * o.weight_decay);
    switch (o.type) {
      case OptimizerType::kSgd:
        if (slots == 0) {
          wk -= rate * gk;
        } else {
          auto buf = state.slot1[k].array();
          const S mu = static_cast<S>(o.momentum);
          buf = (state.step == 1) ? gk.eval() : (mu * buf + gk).eval();
          if (o.nesterov) wk -= rate * (gk + mu * buf);
          else wk -= rate * buf;
        }
        break;
      case OptimizerType::kAdagrad: {
        auto s = state.slot1[k].array();
        s += gk.square();
        wk -= rate * gk / (s.sqrt() + eps);
        break;
      }
      case OptimizerType::kRmsprop: {
        auto v = state.slot1[k].array();
        const S a = static_cast<S>(o.rms_decay);
        v = a * v + (S(1) - a) * gk.square();
        wk -= rate * gk / (v.sqrt() + eps);
        break;
      }
      case OptimizerType::kAdam: {
        auto m = state.slot1[k].array();
        auto v = state.slot2[k].array();
        const S b1 = static_cast<S>(o.beta1), b2 = static_cast<S>(o.beta2);
        m = b1 * m + (S(1) - b1) * gk;
        v = b2 * v + (S(1) - b2) * gk.square();
        const S step_size = static_cast<S>(lr / (1.0 - std::pow(o.beta1, t)));
        const S root_bc2 = static_cast<S>(std::sqrt(1.0 - std::pow(o.beta2, t)));
        wk -= step_size * m / (v.sqrt() / root_bc2 + eps);
        break;
      }
    }
  }
}

template void OptimizerStep<float>(const OptimizerOptions&, double, ModelParams<float>&,
                                   const ModelParams<float>&, OptimizerState<float>&);
template void OptimizerStep<double>(const OptimizerOptions&, double, ModelParams<double>&,
                                    const ModelParams<double>&, OptimizerState<double>&);

}  // namespace bptt
