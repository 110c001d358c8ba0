// Optimizers: SGD with (Nesterov) momentum, Adagrad, RMSProp and Adam, each with optional
// decoupled weight decay (Loshchilov & Hutter 2019), following PyTorch's update rules.
//
// The optimizer's state is plain data (OptimizerState: a step count and up to two buffers per
// parameter tensor, in ModelParams::ForEach order) so checkpoints save it for exact resume.
//
//   OptimizerState<float> state;   // empty: initialised on the first step
//   bool finite = OptimizerStep(options, lr, params, grads, state, threads);
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "bptt/model.h"

namespace bptt {

enum class OptimizerType { kSgd, kAdagrad, kRmsprop, kAdam };

std::string_view OptimizerName(OptimizerType type);         // "sgd", "adagrad", "rmsprop", "adam"
std::optional<OptimizerType> ParseOptimizer(std::string_view name);

struct OptimizerOptions {
  OptimizerType type = OptimizerType::kAdam;
  double momentum = 0.0;       // SGD: buf = momentum * buf + g
  bool nesterov = false;       // SGD: step along g + momentum * buf
  double beta1 = 0.9;          // Adam: first-moment decay
  double beta2 = 0.999;        // Adam: second-moment decay
  double rms_decay = 0.99;     // RMSProp: v = rms_decay * v + (1 - rms_decay) g^2 (char-rnn used 0.95)
  double eps = 1e-8;           // Adam, RMSProp, Adagrad: added to the root of the second moment
  double weight_decay = 0.0;   // decoupled: w -= lr * weight_decay * w on weights (not biases nor norms: cell.h TensorRole)
};

// slot1: momentum buffer (SGD), sum of squares (Adagrad), mean square (RMSProp), first moment (Adam).
// slot2: second moment (Adam). Each holds one tensor per parameter tensor.
template <typename S>
struct OptimizerState {
  int64_t step = 0;
  std::vector<Mat<S>> slot1;
  std::vector<Mat<S>> slot2;
};

// Number of state buffers per parameter tensor for an optimizer (0, 1 or 2).
int OptimizerSlots(const OptimizerOptions& options);

// Throws bptt::Error unless the state's buffers fit the parameters and the optimizer's slots.
template <typename S>
void CheckOptimizerState(const OptimizerOptions& options, const ModelParams<S>& params, const OptimizerState<S>& state);

// One update of params by grads with learning rate lr, each tensor on one of `threads` threads.
// Returns whether every updated weight is finite (checked in the same pass). An empty state is
// initialised; a state whose buffers do not match the parameters or the optimizer's slots throws
// bptt::Error.
template <typename S>
bool OptimizerStep(const OptimizerOptions& options, double lr, ModelParams<S>& params,
                   const ModelParams<S>& grads, OptimizerState<S>& state, int threads = 1);

}  // namespace bptt
