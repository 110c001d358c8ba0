#include "bptt/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "bptt/error.h"

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

template <typename S>
void CheckOptimizerState(const OptimizerOptions& o, const ModelParams<S>& params, const OptimizerState<S>& state) {
  std::vector<const Mat<S>*> w;
  params.ForEach([&w](const std::string&, const Mat<S>& m) { w.push_back(&m); });
  const int slots = OptimizerSlots(o);
  const auto matches = [&w](const std::vector<Mat<S>>& slot, bool used) {
    if (slot.size() != (used ? w.size() : 0)) return false;
    for (size_t k = 0; k < slot.size(); ++k)
      if (slot[k].rows() != w[k]->rows() || slot[k].cols() != w[k]->cols()) return false;
    return true;
  };
  if (state.step < 0 || !matches(state.slot1, slots >= 1) || !matches(state.slot2, slots == 2))
    throw Error("the optimizer state (" + std::to_string(state.slot1.size() + state.slot2.size()) +
                " buffers) does not match the model and the " + std::string(OptimizerName(o.type)) + " optimizer (" +
                std::to_string(slots) + " buffers per tensor)");
}

// Per tensor w with gradient g (PyTorch's rules):
//   SGD       buf = momentum buf + g;  w -= lr (nesterov ? g + momentum buf : buf)   (buf = g if momentum = 0)
//   Adagrad   s += g^2;                w -= lr g / (sqrt(s) + eps)
//   RMSProp   v = a v + (1 - a) g^2;   w -= lr g / (sqrt(v) + eps)
//   Adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//             w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Decoupled weight decay first: w -= lr wd w, for weights only (biases are not decayed).
template <typename S>
bool OptimizerStep(const OptimizerOptions& o, double lr, ModelParams<S>& params,
                   const ModelParams<S>& grads, OptimizerState<S>& state, int threads) {
  std::vector<const Mat<S>*> g;
  grads.ForEach([&g](const std::string&, const Mat<S>& m) { g.push_back(&m); });
  std::vector<Mat<S>*> w;
  std::vector<bool> decay;
  params.ForEachTensor([&](const TensorInfo& tensor, Mat<S>& m) {
    w.push_back(&m);
    decay.push_back(tensor.role == TensorRole::kWeight);
  });
  const int slots = OptimizerSlots(o);
  if (state.step == 0 && state.slot1.empty() && state.slot2.empty()) {
    for (size_t k = 0; k < w.size() && slots >= 1; ++k) {
      state.slot1.push_back(Mat<S>::Zero(w[k]->rows(), w[k]->cols()));
      if (slots == 2) state.slot2.push_back(Mat<S>::Zero(w[k]->rows(), w[k]->cols()));
    }
  }
  CheckOptimizerState(o, params, state);
  // The count saturates rather than overflow (a checkpoint may say anything); Adam's bias
  // correction is 1 long before.
  if (state.step < std::numeric_limits<int64_t>::max()) ++state.step;
  const S rate = static_cast<S>(lr), eps = static_cast<S>(o.eps);
  const double t = static_cast<double>(state.step);

  std::vector<char> finite(w.size(), 1);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (size_t k = 0; k < w.size(); ++k) {
    auto wk = w[k]->array();
    const auto gk = g[k]->array();
    if (o.weight_decay != 0.0 && decay[k]) wk *= static_cast<S>(1.0 - lr * o.weight_decay);
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
    finite[k] = wk.isFinite().all();
  }
  return std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; });
}

template void CheckOptimizerState<float>(const OptimizerOptions&, const ModelParams<float>&,
                                         const OptimizerState<float>&);
template void CheckOptimizerState<double>(const OptimizerOptions&, const ModelParams<double>&,
                                          const OptimizerState<double>&);
template bool OptimizerStep<float>(const OptimizerOptions&, double, ModelParams<float>&,
                                   const ModelParams<float>&, OptimizerState<float>&, int);
template bool OptimizerStep<double>(const OptimizerOptions&, double, ModelParams<double>&,
                                    const ModelParams<double>&, OptimizerState<double>&, int);

}  // namespace bptt
