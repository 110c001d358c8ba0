// Weight averaging: a running average of the weights that training visits, kept beside them.
// While the weights still move at the end of a run (a constant rate, SGD), the average of its
// last stretch can generalise better than its last point (Polyak & Juditsky 1992; Merity et al.
// 2017 average an LSTM language model's weights); after a rate annealed to zero it can lag
// behind (docs/regularisation.md measures one such case). It costs one copy of the parameters
// and an elementwise update per step.
//
// After the n-th optimizer step, with weights theta_n:
//
//   a_n = a_{n-1} + w_n (theta_n - a_{n-1}),      a_1 = theta_1
//   ema:DECAY   w_n = (1 - DECAY) / (1 - DECAY^n)
//   asgd:N      w_n = 1 / n, counting from the step the trigger fires (none before)
//
// which is the exponential moving average of decay DECAY with the bias of its zero start removed
// (as Adam's moments): theta_k weighs (1 - DECAY) DECAY^(n-k) / (1 - DECAY^n), so the weights of
// every step count and the first steps do not dominate. asgd:N is the triggered uniform average
// of Merity et al. 2017's NT-ASGD (the averaging alone, with whichever optimizer trains): at each
// validation before the trigger, if the weights' loss is above the lowest of the losses validated
// more than N validations before it, averaging starts with the next step. Once averaging, the
// average is the model that `bptt train` validates and keeps as best.safetensors;
// latest.safetensors keeps the weights that training continues from and the average beside
// them, so a resumed run carries it on exactly.
//
//   WeightAverage average;
//   average.Update(options.average, params);       // after each optimizer step
//   double loss = EvaluateLoss(config, average.params, ...);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/model.h"

namespace bptt {

enum class AverageKind { kNone, kEma, kAsgd };

// What `--average` asks for: "off", "ema:DECAY" with DECAY in (0, 1), or "asgd:N" with N >= 1.
struct AverageOptions {
  AverageKind kind = AverageKind::kNone;
  double decay = 0.999;  // ema
  int nonmono = 5;       // asgd: N

  bool enabled() const { return kind != AverageKind::kNone; }
};

// "off", "ema:0.999" (the shortest text that reads back to the same decay), "asgd:5"; and back:
// throws bptt::Error naming `flag` ("--average must be off, ema:DECAY with DECAY in (0, 1) or
// asgd:N with N >= 1, got 'x'").
std::string AverageName(const AverageOptions& options);
AverageOptions ParseAverage(std::string_view text, std::string_view flag);

// The average, how many steps it holds, and (asgd) the trigger's state.
struct WeightAverage {
  ModelParams<float> params;    // a_n; empty before the first update
  int64_t updates = 0;          // n
  bool triggered = false;       // asgd: the trigger fired (ema: unused, always averaging)
  std::vector<double> history;  // asgd: the validation losses seen before the trigger

  // a_n from a_{n-1} and the weights after step n (see above); asgd before the trigger: nothing.
  // `weights` must have the model's shapes.
  void Update(const AverageOptions& options, const ModelParams<float>& weights);
  // asgd before the trigger: records the weights' validation loss, and fires the trigger when it
  // is above the lowest of those more than N validations old. Otherwise nothing.
  void Observe(const AverageOptions& options, double val_loss);
};

}  // namespace bptt
