// Weight averaging: a running average of the weights that training visits, kept beside them.
// The average of the last stretch of a run generalises better than its last point (Polyak &
// Juditsky 1992; Merity et al. 2017 average the weights of an LSTM language model), and costs
// one copy of the parameters and an elementwise update per step.
//
// After the n-th optimizer step, with weights theta_n:
//
//   a_n = a_{n-1} + w_n (theta_n - a_{n-1}),      a_1 = theta_1
//   ema:DECAY   w_n = (1 - DECAY) / (1 - DECAY^n)
//
// which is the exponential moving average of decay DECAY with the bias of its zero start removed
// (as Adam's moments): theta_k weighs (1 - DECAY) DECAY^(n-k) / (1 - DECAY^n), so the weights of
// every step count and the first steps do not dominate. The average is the model that training
// validates and keeps as best.safetensors when averaging is on (trainer.h); latest.safetensors
// keeps the weights that training continues from and the average beside them, so a resumed run
// carries it on exactly.
//
//   WeightAverage average;
//   average.Update(options.average, params);       // after each optimizer step
//   double loss = EvaluateLoss(config, average.params, ...);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bptt/model.h"

namespace bptt {

enum class AverageKind { kNone, kEma };

// What `--average` asks for: "off", or "ema:DECAY" with DECAY in (0, 1).
struct AverageOptions {
  AverageKind kind = AverageKind::kNone;
  double decay = 0.999;  // ema

  bool enabled() const { return kind != AverageKind::kNone; }
};

// "off", "ema:0.999" (the shortest text that reads back to the same decay); and back: throws
// bptt::Error naming `flag` ("--average must be off or ema:DECAY with DECAY in (0, 1), got 'x'").
std::string AverageName(const AverageOptions& options);
AverageOptions ParseAverage(std::string_view text, std::string_view flag);

// The average and how many steps it holds.
struct WeightAverage {
  ModelParams<float> params;  // a_n; empty before the first update
  int64_t updates = 0;        // n

  // a_n from a_{n-1} and the weights after step n (see above). `weights` must have the model's shapes.
  void Update(const AverageOptions& options, const ModelParams<float>& weights);
};

}  // namespace bptt
