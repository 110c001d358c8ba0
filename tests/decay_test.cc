// Gradient-decay measurement against closed forms and finite differences, and its outputs:
//   - a 1-unit linear RNN (ReLU with positive pre-activations) with recurrent weight w gives
//     exactly w^k at lag k, for the gradient, the Jacobian and the fitted summary;
//   - a chain of sigmoids stays under 0.25^k (1 unit, w = 1), and a 16-unit sigmoid RNN under
//     its Pascanu bound (γ σ_max)^k;
//   - an LSTM whose forget gate is forced open and other gates shut keeps dL/dc at 1;
//   - ‖∂h_s/∂h_{s-k}‖₂ by power iteration agrees with the largest singular value of the
//     Jacobian from central differences of the forward pass, for every cell (and the
//     layer-normalised LSTM and GRU) and both layers;
//   - the options are checked, and a computation can be abandoned between its chunks.
#include "bptt/decay.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <Eigen/SVD>
#include <cmath>
#include <tuple>

#include "bptt/error.h"
#include "bptt/init.h"
#include "decay_internal.h"
#include "test_util.h"

namespace bptt {
namespace {

// The products here are small (H <= 16, B <= 8): one thread, so that the test time does not
// depend on how busy the other cores are (OpenMP threads waiting for a busy core cost seconds).
const bool kSingleThreaded = [] {
  omp_set_num_threads(1);
  Eigen::setNbThreads(1);
  return true;
}();

ModelParams<double> Fresh(const ModelConfig& config, InitScheme scheme, double scale, uint64_t seed = 7) {
  InitOptions init;
  init.scheme = scheme;
  init.scale = scale;
  Rng rng(seed);
  auto params = ModelParams<double>::Zeros(config);
  Initialize(config, init, rng, params);
  return params;
}

// h_t = relu(W_ih x_t + b + w h_{t-1}) with every weight and bias positive and h_0 = 0, so
// every pre-activation is positive, the unit is linear and ∂h_s/∂h_{s-k} = w^k exactly.
class LinearRnn : public testing::TestWithParam<double> {};

TEST_P(LinearRnn, GivesExactPowersOfTheRecurrentWeight) {
  const double w = GetParam();
  const ModelConfig config = LanguageModel(*FindCell("rnn-relu"), 3, 0, 1, 1, 0.0);
  auto params = ModelParams<double>::Zeros(config);
  params.layers[0].weight_ih() << 0.3, 0.5, 0.7;
  params.layers[0].tensor("weight_hh")(0, 0) = w;
  params.layers[0].tensor("bias_ih")(0) = 0.1;
  params.layers[0].tensor("bias_hh")(0) = 0.05;
  params.decoder_weight << 1.0, -0.5, 0.25;
  Rng rng(3);
  const int T = 200;
  const Batch<double> data = UniformInputs(3, T, 4, rng);
  DecayOptions options;
  const DecayReport r = MeasureDecay("linear", config, params, data, options);

  const DecayCurve* h = r.Find(0, "h");
  const DecayCurve* jacobian = r.Find(0, "jacobian");
  ASSERT_NE(h, nullptr);
  ASSERT_NE(jacobian, nullptr);
  ASSERT_EQ(h->lags.size(), static_cast<size_t>(T));
  EXPECT_EQ(r.Find(0, "c"), nullptr);
  for (int k = 0; k < T; ++k) {
    const double expected = std::pow(w, k);
    EXPECT_NEAR(h->relative[k], expected, 1e-12 * expected) << "lag " << k;
    // Every sequence scales by the same w^k, so the quartiles do too.
    EXPECT_NEAR(h->q1[k], expected * h->q1[0], 1e-12 * expected * h->q1[0]) << "lag " << k;
    EXPECT_NEAR(h->q3[k], expected * h->q3[0], 1e-12 * expected * h->q3[0]) << "lag " << k;
  }
  EXPECT_EQ(jacobian->lags.front(), 0);
  EXPECT_EQ(jacobian->lags.back(), T - 1);
  for (size_t i = 0; i < jacobian->lags.size(); ++i) {
    const double expected = std::pow(w, jacobian->lags[i]);
    EXPECT_NEAR(jacobian->median[i], expected, 1e-12 * expected) << "lag " << jacobian->lags[i];
    EXPECT_NEAR(jacobian->q1[i], expected, 1e-12 * expected);
    EXPECT_NEAR(jacobian->q3[i], expected, 1e-12 * expected);
  }

  const LayerDecay& ld = r.layers[0];
  EXPECT_NEAR(ld.h.decay_factor, w, 1e-10);
  EXPECT_NEAR(ld.jacobian.decay_factor, w, 1e-10);
  EXPECT_EQ(ld.h.explodes, w > 1);
  if (w < 1) {
    EXPECT_NEAR(ld.h.half_life, std::log(2.0) / -std::log(w), 1e-6);
    int first = 0;
    while (std::pow(w, first) >= 1e-6) ++first;
    EXPECT_EQ(ld.h.lag_below, first);
  } else {
    EXPECT_TRUE(std::isinf(ld.h.half_life));
    EXPECT_EQ(ld.h.lag_below, -1);
  }
  EXPECT_NEAR(ld.sigma_max, w, 1e-14);
  EXPECT_NEAR(ld.spectral_radius, w, 1e-14);
  EXPECT_NEAR(ld.pascanu_bound, w, 1e-14);  // γ = 1 for ReLU
}

INSTANTIATE_TEST_SUITE_P(Weights, LinearRnn, testing::Values(0.5, 0.9, 1.02));

TEST(SigmoidChain, StaysUnderAQuarterPerStep) {
  // One unit with w = 1: each step multiplies the gradient by sigmoid'(a_t) <= 1/4.
  const ModelConfig config = LanguageModel(*FindCell("rnn-sigmoid"), 5, 0, 1, 1, 0.0);
  auto params = Fresh(config, InitScheme::kUniform, 1.0);
  params.layers[0].tensor("weight_hh")(0, 0) = 1.0;
  Rng rng(5);
  DecayOptions options;
  const DecayReport r = MeasureDecay("sigmoid", config, params, UniformInputs(5, 120, 6, rng), options);
  const DecayCurve* h = r.Find(0, "h");
  ASSERT_NE(h, nullptr);
  for (size_t k = 1; k < h->lags.size(); ++k) {
    const double bound = std::pow(0.25, static_cast<double>(k));
    if (bound < 1e-290) break;
    EXPECT_GT(h->relative[k], 0.0) << "lag " << k;
    EXPECT_LE(h->relative[k], bound * (1 + 1e-12)) << "lag " << k;
  }
  EXPECT_DOUBLE_EQ(r.layers[0].pascanu_bound, 0.25);
  EXPECT_LT(r.layers[0].h.decay_factor, 0.25);
  EXPECT_LE(r.layers[0].h.lag_below, 10);  // 0.25^10 ≈ 1e-6
}

TEST(SigmoidRnn, StaysUnderThePascanuBound) {
  const ModelConfig config = LanguageModel(*FindCell("rnn-sigmoid"), 7, 0, 16, 1, 0.0);
  const auto params = Fresh(config, InitScheme::kUniform, 0.5);
  Rng rng(11);
  DecayOptions options;
  options.jacobian_lags = 12;
  const DecayReport r = MeasureDecay("sigmoid", config, params, UniformInputs(7, 60, 8, rng), options);
  const double bound = r.layers[0].pascanu_bound;
  ASSERT_GT(bound, 0.1);
  ASSERT_LT(bound, 1.0);
  EXPECT_NEAR(bound, 0.25 * r.layers[0].sigma_max, 1e-15);
  EXPECT_LE(r.layers[0].spectral_radius, r.layers[0].sigma_max * (1 + 1e-12));
  for (const char* quantity : {"h", "jacobian"}) {
    const DecayCurve* c = r.Find(0, quantity);
    ASSERT_NE(c, nullptr);
    for (size_t i = 0; i < c->lags.size(); ++i)
      EXPECT_LE(c->relative[i], std::pow(bound, c->lags[i]) * (1 + 1e-9)) << quantity << " lag " << c->lags[i];
  }
}

TEST(Lstm, OpenForgetGateKeepsTheCellGradient) {
  // f = sigmoid(30 + ...) = 1 - O(1e-13); i, o = sigmoid(-30 + ...) = O(1e-13): dc_{t-1} = f dc_t
  // and every other path is 1e-13 smaller, so dL/dc stays at its lag-0 value.
  const ModelConfig config = LanguageModel(*FindCell("lstm"), 6, 0, 4, 1, 0.0);
  auto params = Fresh(config, InitScheme::kOrthogonal, 0.0);
  const Eigen::Index H = config.hidden_size;
  auto& bias = params.layers[0].tensor("bias_ih");
  bias.middleRows(0, H).setConstant(-30);      // i shut
  bias.middleRows(H, H).setConstant(30);       // f open
  bias.middleRows(3 * H, H).setConstant(-30);  // o shut
  Rng rng(13);
  DecayOptions options;
  options.jacobian_lags = 0;
  const DecayReport r = MeasureDecay("lstm", config, params, UniformInputs(6, 150, 3, rng), options);
  const DecayCurve* c = r.Find(0, "c");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->lags.size(), 150u);
  EXPECT_GT(c->median[0], 0.0);
  for (size_t k = 0; k < c->lags.size(); ++k) EXPECT_NEAR(c->relative[k], 1.0, 1e-9) << "lag " << k;
  EXPECT_NEAR(r.layers[0].c.decay_factor, 1.0, 1e-9);
  EXPECT_EQ(r.layers[0].c.lag_below, -1);
  EXPECT_EQ(r.Find(0, "jacobian"), nullptr);
  EXPECT_TRUE(std::isnan(r.layers[0].pascanu_bound));
}

// σ_max of ∂h^l_s/∂h^l_{s-k} from the Jacobian built column by column with central
// differences: the forward pass is split at step s - k, layer l's state perturbed there.
double FiniteDifferenceSigma(const ModelConfig& config, const ModelParams<double>& params, const Ids& inputs,
                             int s, int k, int layer) {
  const Eigen::Index H = config.hidden_size;
  State<double> at = State<double>::Zeros(config, 1);
  ModelCache<double> cache;
  Batch<double> first;
  first.T = s - k;
  first.B = 1;
  first.ids = inputs.head(s - k);
  Forward(config, params, first, at, cache, 1);
  FinalState(config, cache, at);
  Batch<double> rest;
  rest.T = k;
  rest.B = 1;
  rest.ids = inputs.segment(s - k, k);
  constexpr double kStep = 1e-6;
  Mat<double> J(H, H);
  for (Eigen::Index j = 0; j < H; ++j) {
    Mat<double> h[2];
    for (int side = 0; side < 2; ++side) {
      State<double> perturbed = at;
      perturbed.h[layer](j, 0) += side == 0 ? kStep : -kStep;
      Forward(config, params, rest, perturbed, cache, 1);
      h[side] = cache.layers[layer].h().col(k);
    }
    J.col(j) = (h[0] - h[1]) / (2 * kStep);
  }
  return Eigen::JacobiSVD<Mat<double>>(J).singularValues()(0);
}

TEST(Jacobian, AgreesWithFiniteDifferences) {
  // (cell, layer norm, zoneout): zoneout's expectation on h (and c), as the measurement runs it.
  std::vector<std::tuple<const Cell*, bool, bool>> variants;
  for (const Cell* cell : Cells()) {
    variants.emplace_back(cell, false, false);
    variants.emplace_back(cell, false, true);
    if (cell->layer_norm()) variants.emplace_back(cell, true, false);
  }
  for (const auto& [cell, layer_norm, zoneout] : variants) {
    SCOPED_TRACE(std::string(cell->name) + (layer_norm ? " layer norm" : "") + (zoneout ? " zoneout" : ""));
    ModelConfig config = LanguageModel(*cell, 6, 0, 4, 2);
    config.layer_norm = layer_norm;
    config.zoneout = zoneout ? 0.3 : 0.0;
    config.zoneout_cell = zoneout && cell->cell_state ? 0.2 : 0.0;
    auto params = Fresh(config, InitScheme::kUniform, 0.9, 21);
    for (auto& layer : params.layers) layer.tensor("bias_ih").array() += 0.3;  // keep ReLU units alive
    Rng ln_rng(5);  // layer norms away from gain 1, bias 0
    params.ForEachTensor([&](const TensorInfo& tensor, Mat<double>& m) {
      if (!IsNorm(tensor.role)) return;
      const double base = tensor.role == TensorRole::kNormGain ? 1.0 : 0.0;
      for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = base + ln_rng.Uniform(-0.4, 0.4);
    });
    Rng rng(23);
    const int T = 10;
    const Batch<double> data = UniformInputs(6, T, 1, rng);
    DecayOptions options;
    options.jacobian_lags = T;  // every lag
    options.power_iterations = 2000;
    options.power_tolerance = 1e-14;
    const DecayReport r = MeasureDecay("small", config, params, data, options);
    for (int layer = 0; layer < 2; ++layer) {
      const DecayCurve* jacobian = r.Find(layer, "jacobian");
      ASSERT_NE(jacobian, nullptr);
      ASSERT_EQ(jacobian->lags.size(), static_cast<size_t>(T));
      for (int k = 1; k < T; ++k) {
        const double numeric = FiniteDifferenceSigma(config, params, data.ids, T, k, layer);
        const double analytic = jacobian->median[k];
        EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(numeric, 1e-4)) << "layer " << layer << " lag " << k;
      }
    }
    // The same sequence first among three, the Jacobian measured on the first only (a cache cut
    // down to its first sequences): the same norms.
    Batch<double> three = UniformInputs(6, T, 3, rng);
    for (int t = 0; t < T; ++t) {
      three.ids(3 * t) = data.ids(t);
      three.classes(3 * t) = data.classes(t);
    }
    options.jacobian_batch = 1;
    const DecayReport first = MeasureDecay("first of three", config, params, three, options);
    for (int layer = 0; layer < 2; ++layer)
      for (int k = 1; k < T; ++k) {
        const double alone = r.Find(layer, "jacobian")->median[k];
        EXPECT_NEAR(first.Find(layer, "jacobian")->median[k], alone, 1e-9 * alone) << "layer " << layer << " lag " << k;
      }
  }
}

TEST(LogSpacedLags, StartAtZeroEndAtTheLastLagAndIncrease) {
  const std::vector<int> lags = LogSpacedLags(999, 24);
  EXPECT_EQ(lags.front(), 0);
  EXPECT_EQ(lags.back(), 999);
  EXPECT_LE(lags.size(), 26u);
  for (size_t i = 1; i < lags.size(); ++i) EXPECT_LT(lags[i - 1], lags[i]);
  EXPECT_EQ(LogSpacedLags(5, 24), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(LogSpacedLags(5, 0), (std::vector<int>{0}));
}

TEST(DecayOptions, RefuseValuesOutOfRange) {
  const auto error_of = [](auto change) {
    DecayOptions o;
    change(o);
    return test::ErrorOf([&] { o.Validate(); });
  };
  EXPECT_EQ(error_of([](DecayOptions&) {}), "");
  EXPECT_EQ(error_of([](DecayOptions& o) { o.threads = 0; }), "--threads must be in [1, 1024], got 0");
  EXPECT_EQ(error_of([](DecayOptions& o) { o.threads = 5000; }), "--threads must be in [1, 1024], got 5000");
  EXPECT_EQ(error_of([](DecayOptions& o) { o.power_iterations = 0; }), "--power-iterations must be positive");
  EXPECT_EQ(error_of([](DecayOptions& o) { o.clip_norm = std::nan(""); }), "--clip-norm must be positive");
  EXPECT_EQ(error_of([](DecayOptions& o) { o.loss_step = -1; }),
            "--loss-step must be 0 (the last step) or positive, got -1");
}

// A hook that throws between chunks abandons the measurement there (the Python module's Ctrl-C).
TEST(MeasureDecay, StopsWhenTheHookBetweenChunksThrows) {
  const ModelConfig config = LanguageModel(*FindCell("lstm"), 5, 0, 4, 2);
  const auto params = Fresh(config, InitScheme::kOrthogonal, 0);
  Rng rng(3);
  const Batch<double> data = UniformInputs(5, 30, 2, rng);
  DecayOptions options;
  options.jacobian_lags = 8;
  int calls = 0;
  EXPECT_NO_THROW(MeasureDecay("lstm", config, params, data, options, [&calls] { ++calls; }));
  EXPECT_GE(calls, 2 * 8);  // every lag of both layers
  struct Stop {};
  int left = 3;
  EXPECT_THROW(MeasureDecay("lstm", config, params, data, options, [&left] {
                 if (--left == 0) throw Stop();
               }),
               Stop);
  EXPECT_EQ(left, 0);
}

}  // namespace
}  // namespace bptt
