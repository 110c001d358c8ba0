// Optimizers against hand-computed updates (one and two steps), and gradient clipping by
// norm and by value below, at and above the threshold and on a zero gradient.
#include <gtest/gtest.h>

#include <cmath>

#include "bptt/clip.h"
#include "bptt/error.h"
#include "bptt/optimizer.h"

namespace bptt {
namespace {

// A 1-layer RNN with V = 1, H = 1: six scalar tensors. The hand-computed checks read
// decoder.weight; every tensor gets the same treatment.
ModelConfig Tiny() { return LanguageModel(*FindCell("rnn-tanh"), 1, 0, 1, 1, 0.0); }

ModelParams<double> Filled(double value) {
  auto p = ModelParams<double>::Zeros(Tiny());
  p.ForEach([value](const std::string&, Mat<double>& m) { m.setConstant(value); });
  return p;
}

double DecoderWeight(const ModelParams<double>& p) { return p.decoder_weight(0, 0); }

struct Steps {
  double w1, w2;  // weight after one and two steps, from w0 = 1 with gradients g1 = 0.5, g2 = -0.25
};

Steps TwoSteps(const OptimizerOptions& o, double lr) {
  auto params = Filled(1.0);
  OptimizerState<double> state;
  OptimizerStep(o, lr, params, Filled(0.5), state);
  const double w1 = DecoderWeight(params);
  OptimizerStep(o, lr, params, Filled(-0.25), state);
  EXPECT_EQ(state.step, 2);
  return {w1, DecoderWeight(params)};
}

TEST(Optimizer, PlainSgd) {
  OptimizerOptions o;
  o.type = OptimizerType::kSgd;
  const Steps s = TwoSteps(o, 0.1);
  EXPECT_DOUBLE_EQ(s.w1, 1.0 - 0.1 * 0.5);
  EXPECT_DOUBLE_EQ(s.w2, 0.95 + 0.1 * 0.25);
}

TEST(Optimizer, SgdMomentumAndNesterov) {
  OptimizerOptions o;
  o.type = OptimizerType::kSgd;
  o.momentum = 0.9;
  Steps s = TwoSteps(o, 0.1);
  // buf1 = 0.5, w1 = 1 - 0.05; buf2 = 0.9*0.5 - 0.25 = 0.2, w2 = 0.95 - 0.02
  EXPECT_DOUBLE_EQ(s.w1, 0.95);
  EXPECT_NEAR(s.w2, 0.93, 1e-15);
  o.nesterov = true;
  s = TwoSteps(o, 0.1);
  // step1: g + 0.9*buf1 = 0.5 + 0.45 = 0.95 -> w1 = 0.905; step2: -0.25 + 0.9*0.2 = -0.07 -> w2 = 0.912
  EXPECT_NEAR(s.w1, 0.905, 1e-15);
  EXPECT_NEAR(s.w2, 0.912, 1e-15);
}

TEST(Optimizer, Adagrad) {
  OptimizerOptions o;
  o.type = OptimizerType::kAdagrad;
  o.eps = 1e-10;
  const Steps s = TwoSteps(o, 0.1);
  const double w1 = 1.0 - 0.1 * 0.5 / (std::sqrt(0.25) + 1e-10);
  const double w2 = w1 + 0.1 * 0.25 / (std::sqrt(0.25 + 0.0625) + 1e-10);
  EXPECT_NEAR(s.w1, w1, 1e-15);
  EXPECT_NEAR(s.w2, w2, 1e-15);
}

TEST(Optimizer, Rmsprop) {
  OptimizerOptions o;
  o.type = OptimizerType::kRmsprop;
  o.rms_decay = 0.95;
  const Steps s = TwoSteps(o, 0.01);
  const double v1 = 0.05 * 0.25, v2 = 0.95 * v1 + 0.05 * 0.0625;
  const double w1 = 1.0 - 0.01 * 0.5 / (std::sqrt(v1) + 1e-8);
  const double w2 = w1 + 0.01 * 0.25 / (std::sqrt(v2) + 1e-8);
  EXPECT_NEAR(s.w1, w1, 1e-15);
  EXPECT_NEAR(s.w2, w2, 1e-15);
}

TEST(Optimizer, Adam) {
  OptimizerOptions o;  // Adam, beta1 0.9, beta2 0.999, eps 1e-8
  const Steps s = TwoSteps(o, 0.002);
  // Step 1: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25: w1 = 1 - 0.002 * 0.5 / (0.5 + 1e-8).
  const double w1 = 1.0 - 0.002 * 0.5 / (0.5 + 1e-8);
  const double m2 = 0.9 * 0.05 + 0.1 * -0.25, v2 = 0.999 * 0.00025 + 0.001 * 0.0625;
  const double w2 = w1 - 0.002 * (m2 / (1 - 0.81)) / (std::sqrt(v2 / (1 - 0.998001)) + 1e-8);
  EXPECT_NEAR(s.w1, w1, 1e-15);
  EXPECT_NEAR(s.w2, w2, 1e-15);
}

TEST(Optimizer, DecoupledWeightDecaySparesBiases) {
  OptimizerOptions o;
  o.type = OptimizerType::kSgd;
  o.weight_decay = 0.5;
  ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 2, 0, 2, 1, 0.0);
  auto params = ModelParams<double>::Zeros(config);
  params.ForEach([](const std::string&, Mat<double>& m) { m.setConstant(1.0); });
  auto grads = ModelParams<double>::Zeros(config);
  OptimizerState<double> state;
  OptimizerStep(o, 0.1, params, grads, state);
  EXPECT_DOUBLE_EQ(params.decoder_weight(0, 0), 0.95);  // 1 - 0.1 * 0.5 * 1
  EXPECT_DOUBLE_EQ(params.decoder_bias(0, 0), 1.0);
}

TEST(Optimizer, WeightDecayFollowsTheTensorsRoleNotItsShape) {
  // H = 1 and V = 1: every weight matrix has one column, like a bias. Weights decay; biases and
  // the layer norms' gains and biases (rnn.ln_*) do not.
  OptimizerOptions o;
  o.type = OptimizerType::kSgd;
  o.weight_decay = 0.5;
  ModelConfig config = LanguageModel(*FindCell("lstm"), 1, 0, 1, 1);
  config.layer_norm = true;
  auto params = ModelParams<double>::Zeros(config);
  params.ForEach([](const std::string&, Mat<double>& m) { m.setConstant(1.0); });
  auto grads = ModelParams<double>::Zeros(config);
  OptimizerState<double> state;
  OptimizerStep(o, 0.1, params, grads, state);
  int norms = 0;
  params.ForEachTensor([&norms](const TensorInfo& tensor, const Mat<double>& m) {
    const std::string& name = tensor.name;
    const bool norm = name.starts_with("rnn.ln_"), bias = !norm && name.find("bias") != std::string::npos;
    norms += norm;
    EXPECT_EQ(m.cols(), 1) << name;
    EXPECT_DOUBLE_EQ(m(0, 0), bias || norm ? 1.0 : 0.95) << name;
    const bool gain = norm && name.find("weight") != std::string::npos;
    EXPECT_EQ(tensor.role, gain   ? TensorRole::kNormGain
                           : norm ? TensorRole::kNormBias
                           : bias ? TensorRole::kBias
                                  : TensorRole::kWeight)
        << name;
  });
  EXPECT_EQ(norms, 6);
}

TEST(Optimizer, RefusesAStateThatDoesNotFit) {
  // An Adam state with one buffer per tensor (as a tampered checkpoint could hold) is an error,
  // not a read past the end of the second.
  OptimizerOptions adam;
  const ModelConfig config = LanguageModel(*FindCell("gru"), 3, 0, 2, 1);
  auto params = ModelParams<double>::Zeros(config), grads = params;
  OptimizerState<double> state;
  OptimizerStep(adam, 0.1, params, grads, state);
  ASSERT_EQ(state.slot2.size(), state.slot1.size());
  state.slot2.clear();
  EXPECT_THROW(OptimizerStep(adam, 0.1, params, grads, state), Error);
  state.slot2 = state.slot1;
  state.slot2.back().resize(2, 2);
  EXPECT_THROW(CheckOptimizerState(adam, params, state), Error);
}

TEST(Optimizer, SaysWhetherTheUpdatedWeightsAreFinite) {
  OptimizerOptions sgd;
  sgd.type = OptimizerType::kSgd;
  const ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 2, 0, 2, 1);
  auto params = ModelParams<float>::Zeros(config), grads = params;
  OptimizerState<float> state;
  grads.layers[0].tensor("weight_hh")(1, 0) = 1.0f;
  EXPECT_TRUE(OptimizerStep(sgd, 0.1, params, grads, state));
  grads.layers[0].tensor("weight_hh")(1, 0) = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(OptimizerStep(sgd, 0.1, params, grads, state));
}

TEST(Optimizer, ParsesNames) {
  EXPECT_EQ(ParseOptimizer("adam"), OptimizerType::kAdam);
  EXPECT_EQ(ParseOptimizer("rmsprop"), OptimizerType::kRmsprop);
  EXPECT_FALSE(ParseOptimizer("adamw").has_value());
  EXPECT_EQ(OptimizerName(OptimizerType::kAdagrad), "adagrad");
}

// Gradients of a 1-layer RNN, V = H = 1: six scalars; with all equal to g, ||g|| = sqrt(6) |g|.
TEST(Clip, ByNormBelowAtAboveAndZero) {
  const double root6 = std::sqrt(6.0);
  for (double norm : {1.0, 2.0, 4.0}) {
    auto g = Filled(norm / root6);
    const double before = ClipGradNorm(g, 2.0);
    EXPECT_NEAR(before, norm, 1e-12);
    const double expected = norm > 2.0 ? 2.0 : norm;
    EXPECT_NEAR(GradNorm(g), expected, 1e-12) << norm;
    EXPECT_NEAR(g.decoder_bias(0, 0), expected / root6, 1e-12);
  }
  auto zero = Filled(0.0);
  EXPECT_EQ(ClipGradNorm(zero, 2.0), 0.0);
  EXPECT_EQ(GradNorm(zero), 0.0);
}

TEST(Clip, ByValueClampsEachElement) {
  auto g = Filled(0.0);
  g.layers[0].weight_ih()(0, 0) = 3.0;
  g.layers[0].tensor("weight_hh")(0, 0) = -7.0;
  g.decoder_bias(0, 0) = 0.5;
  g.decoder_weight(0, 0) = 1.0;  // exactly at the threshold
  const double before = ClipGradValue(g, 1.0);
  EXPECT_NEAR(before, std::sqrt(9.0 + 49.0 + 0.25 + 1.0), 1e-12);
  EXPECT_EQ(g.layers[0].weight_ih()(0, 0), 1.0);
  EXPECT_EQ(g.layers[0].tensor("weight_hh")(0, 0), -1.0);
  EXPECT_EQ(g.decoder_bias(0, 0), 0.5);
  EXPECT_EQ(g.decoder_weight(0, 0), 1.0);
  auto zero = Filled(0.0);
  EXPECT_EQ(ClipGradValue(zero, 1.0), 0.0);
  EXPECT_EQ(GradNorm(zero), 0.0);
}

}  // namespace
}  // namespace bptt
