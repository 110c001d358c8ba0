// Gradient check: a model's backpropagated gradient against central differences, tensor by
// tensor, in double precision — and the claim that makes backpropagation worth having, measured:
// one reverse-mode pass gives every derivative for about the cost of a forward pass, where finite
// differences need two forward passes per parameter.
//
// The loss is the model's training loss on a batch (the head's loss over its scored positions,
// loss.h), from the zero state. For each checked element w_k:
//
//   numeric   n = (L(w_k + h) - L(w_k - h)) / 2h                    h = step
//   error     |a - n| / max(|a|, |n|, floor)                         a = the backpropagated value
//
// the formula of tests/gradient_check.h: the floor holds elements whose true derivative is below
// it (dead units, gradients that have decayed over many steps) to floor * error absolute, since a
// central difference of a loss of order 1 carries about 1e-16 / h of rounding whatever the
// derivative. With `sample` = 0 every element is checked; otherwise `sample` elements per tensor,
// drawn from `seed`.
//
// Costs: backward_s is the wall time of one forward and backward pass over the batch (what
// reverse mode needs for every derivative at once), forward_s that of one forward pass,
// fd_s_per_parameter the measured time of the two forward passes one central difference takes,
// and ratio = fd_s_per_parameter * parameters / backward_s, what finite differences would cost
// for all the parameters relative to one backward pass.
//
//   GradCheckReport r = GradCheck(config, params.Cast<double>(), batch, GradCheckOptions{});
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "bptt/batch.h"
#include "bptt/model.h"

namespace bptt {

struct GradCheckOptions {
  int sample = 0;        // elements checked per tensor; 0 = all
  double step = 1e-5;    // h of the central difference
  double floor = 1e-4;   // of the relative error's denominator
  uint64_t seed = 1;     // which elements are sampled
  int threads = 1;
};

struct TensorCheck {
  std::string name;            // PyTorch's name of the tensor
  int64_t elements = 0;        // in the tensor
  int64_t checked = 0;         // of them, compared
  double max_rel_error = 0;
};

struct GradCheckReport {
  std::vector<TensorCheck> tensors;  // ModelParams::ForEach order
  double max_rel_error = 0;          // over every tensor
  int64_t parameters = 0;
  int64_t checked = 0;
  double loss = 0;
  double forward_s = 0;
  double backward_s = 0;             // one forward and backward pass
  double fd_s_per_parameter = 0;     // two forward passes, measured over the checked elements
  double ratio = 0;                  // fd_s_per_parameter * parameters / backward_s

  // The JSON of `bptt gradcheck --json`: max_rel_error (overall and per tensor), backward_s,
  // forward_s, fd_s_per_parameter, parameters, checked, ratio, loss.
  nlohmann::json ToJson() const;
};

// Throws bptt::Error when the batch does not fit the model or an option is out of range.
GradCheckReport GradCheck(const ModelConfig& config, ModelParams<double> params, const Batch<double>& batch,
                          const GradCheckOptions& options);

}  // namespace bptt
