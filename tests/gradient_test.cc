// Gradients proven against central differences in double precision: the softmax
// cross-entropy alone, and every cell type in a 2-layer model (one-hot and embedding input)
// over T = 7 steps with B = 3, a non-zero initial state and a loss that also depends on the
// final state. Also: truncated BPTT with the state carried equals one long chunk.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>

#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"

namespace bptt {
namespace {

constexpr double kStep = 1e-5;       // central-difference step
constexpr double kMaxRelError = 1e-6;

// Relative error of analytic a against numeric n, |a - n| / max(|a|, |n|, kFloor).
// A central difference of a loss of size ~1 in double carries a rounding error of about
// 1e-16 / kStep ~ 1e-11 whatever the true derivative, so for elements below kFloor (dead ReLU
// units, unused embedding rows, gradients that have decayed through many steps) the error is
// measured against kFloor: such elements must agree to 1e-10 absolute.
constexpr double kFloor = 1e-4;
double RelError(double a, double n) {
  return std::abs(a - n) / std::max({std::abs(a), std::abs(n), kFloor});
}

// Checks d loss / d x for every element of x against central differences; returns max error.
double CheckTensor(Mat<double>& x, const Mat<double>& analytic, const std::function<double()>& loss) {
  double worst = 0;
  for (Eigen::Index k = 0; k < x.size(); ++k) {
    const double saved = x(k);
    x(k) = saved + kStep;
    const double up = loss();
    x(k) = saved - kStep;
    const double down = loss();
    x(k) = saved;
    worst = std::max(worst, RelError(analytic(k), (up - down) / (2 * kStep)));
  }
  return worst;
}

Ids RandomIds(Eigen::Index n, int V, Rng& rng) {
  Ids ids(n);
  for (Eigen::Index j = 0; j < n; ++j) ids(j) = static_cast<int32_t>(rng.Below(V));
  return ids;
}

Mat<double> RandomMat(Eigen::Index r, Eigen::Index c, Rng& rng, double scale = 0.5) {
  Mat<double> m(r, c);
  for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = rng.Uniform(-scale, scale);
  return m;
}

TEST(ChainRule, SeedExampleThroughTheEngine) {
  // f = (x + y) * z at x = -2, y = 5, z = -4, computed by a 1-unit ReLU RNN over one step:
  // q = relu(W_ih[:, 0] + W_hh h_0 + b) = x + y with W_ih = x, h_0 = y, W_hh = 1, b = 0,
  // and f = z * h_1 as the loss on the final state (dL/dh_1 = z, no logits term).
  ModelConfig config{CellType::kRnnRelu, 1, 0, 1, 1, 0.0};
  auto params = ModelParams<double>::Zeros(config);
  params.layers[0].weight_ih(0, 0) = -2;  // x
  params.layers[0].weight_hh(0, 0) = 1;
  State<double> initial = State<double>::Zeros(config, 1);
  initial.h[0](0, 0) = 5;  // y
  const double z = -4;
  Ids inputs(1);
  inputs << 0;
  ModelCache<double> cache;
  Forward(config, params, inputs, 1, 1, initial, cache);
  State<double> final_state = State<double>::Zeros(config, 1);
  FinalState(config, cache, final_state);
  const double q = final_state.h[0](0, 0);
  EXPECT_DOUBLE_EQ(z * q, -12.0);  // f

  auto grads = ModelParams<double>::Zeros(config);
  State<double> dfinal = State<double>::Zeros(config, 1), dinitial = State<double>::Zeros(config, 1);
  dfinal.h[0](0, 0) = z;
  const Mat<double> no_logit_gradient = Mat<double>::Zero(1, 1);
  Backward(config, params, inputs, cache, no_logit_gradient, &dfinal, grads, &dinitial);
  EXPECT_DOUBLE_EQ(grads.layers[0].weight_ih(0, 0), -4.0);  // df/dx = z
  EXPECT_DOUBLE_EQ(dinitial.h[0](0, 0), -4.0);             // df/dy = z
  EXPECT_DOUBLE_EQ(q, 3.0);                                 // df/dz = x + y
}

TEST(SoftmaxCrossEntropy, MatchesCentralDifferences) {
  Rng rng(7);
  Mat<double> logits = RandomMat(6, 9, rng, 3.0);
  const Ids targets = RandomIds(9, 6, rng);
  Mat<double> dlogits;
  const double loss = SoftmaxCrossEntropy(logits, targets, &dlogits);
  // Direct formula for the value.
  double expected = 0;
  for (Eigen::Index j = 0; j < 9; ++j)
    expected += std::log(logits.col(j).array().exp().sum()) - logits(targets(j), j);
  EXPECT_NEAR(loss, expected / 9, 1e-14);
  const double err = CheckTensor(logits, dlogits, [&] { return SoftmaxCrossEntropy(logits, targets); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "softmax cross-entropy: max relative error " << err << "\n";
}

struct GradCase {
  CellType cell;
  int embed;
};

class ModelGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGradient, EveryTensorMatchesCentralDifferences) {
  const auto [cell, embed] = GetParam();
  const Eigen::Index T = 7, B = 3;
  ModelConfig config{cell, 5, embed, 4, 2, 0.0};
  Rng rng(1234 + static_cast<int>(cell));
  ModelParams<double> params;
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = cell == CellType::kRnnRelu ? 0.6 : 0.8;
  Initialize(config, init, rng, params);
  const bool lstm = cell == CellType::kLstm;

  State<double> initial = State<double>::Zeros(config, B), wfinal = State<double>::Zeros(config, B);
  for (int l = 0; l < config.layers; ++l) {
    initial.h[l] = RandomMat(4, B, rng);
    wfinal.h[l] = RandomMat(4, B, rng);
    if (lstm) {
      initial.c[l] = RandomMat(4, B, rng);
      wfinal.c[l] = RandomMat(4, B, rng);
    }
  }
  const Ids inputs = RandomIds(T * B, 5, rng), targets = RandomIds(T * B, 5, rng);

  // loss = CE(logits, targets) + sum(wfinal.h * h_T) + sum(wfinal.c * c_T)
  ModelCache<double> cache;
  State<double> final_state = State<double>::Zeros(config, B);
  auto loss = [&]() {
    Forward(config, params, inputs, T, B, initial, cache);
    FinalState(config, cache, final_state);
    double value = SoftmaxCrossEntropy(cache.logits, targets);
    for (int l = 0; l < config.layers; ++l) {
      value += (wfinal.h[l].array() * final_state.h[l].array()).sum();
      if (lstm) value += (wfinal.c[l].array() * final_state.c[l].array()).sum();
    }
    return value;
  };

  Forward(config, params, inputs, T, B, initial, cache);
  Mat<double> dlogits;
  SoftmaxCrossEntropy(cache.logits, targets, &dlogits);
  auto grads = ModelParams<double>::Zeros(config);
  State<double> dinitial = State<double>::Zeros(config, B);
  Backward(config, params, inputs, cache, dlogits, &wfinal, grads, &dinitial);

  std::vector<Mat<double>*> analytic;
  grads.ForEach([&](const std::string&, Mat<double>& g) { analytic.push_back(&g); });
  size_t k = 0;
  params.ForEach([&](const std::string& name, Mat<double>& w) {
    const double err = CheckTensor(w, *analytic[k++], loss);
    EXPECT_LE(err, kMaxRelError) << name;
    std::cout << CellName(cell) << (embed ? " embed " : " one-hot ") << name << ": max relative error " << err << "\n";
  });
  for (int l = 0; l < config.layers; ++l) {
    const double err_h = CheckTensor(initial.h[l], dinitial.h[l], loss);
    EXPECT_LE(err_h, kMaxRelError) << "h0 layer " << l;
    std::cout << CellName(cell) << " h0_l" << l << ": max relative error " << err_h << "\n";
    if (lstm) {
      const double err_c = CheckTensor(initial.c[l], dinitial.c[l], loss);
      EXPECT_LE(err_c, kMaxRelError) << "c0 layer " << l;
      std::cout << CellName(cell) << " c0_l" << l << ": max relative error " << err_c << "\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllCells, ModelGradient,
    ::testing::Values(GradCase{CellType::kRnnTanh, 0}, GradCase{CellType::kRnnSigmoid, 0},
                      GradCase{CellType::kRnnRelu, 0}, GradCase{CellType::kLstm, 0},
                      GradCase{CellType::kGru, 0}, GradCase{CellType::kRnnTanh, 3},
                      GradCase{CellType::kLstm, 3}, GradCase{CellType::kGru, 3}),
    [](const auto& info) {
      std::string name(CellName(info.param.cell));
      for (auto& ch : name)
        if (ch == '-') ch = '_';
      return name + (info.param.embed ? "_embed" : "_onehot");
    });

class TruncatedBptt : public ::testing::TestWithParam<CellType> {};

TEST_P(TruncatedBptt, TwoChunksWithCarriedStateEqualOneChunk) {
  const CellType cell = GetParam();
  const Eigen::Index T = 8, B = 2;
  ModelConfig config{cell, 6, 0, 5, 2, 0.0};
  Rng rng(99);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  const Ids inputs = RandomIds(T * B, 6, rng);
  State<double> initial = State<double>::Zeros(config, B);
  for (auto& h : initial.h) h = RandomMat(5, B, rng);
  for (auto& c : initial.c) c = RandomMat(5, B, rng);

  ModelCache<double> whole;
  Forward(config, params, inputs, T, B, initial, whole);
  State<double> whole_final = State<double>::Zeros(config, B);
  FinalState(config, whole, whole_final);

  ModelCache<double> part;
  State<double> state = initial;
  Mat<double> logits(6, T * B);
  for (int chunk = 0; chunk < 2; ++chunk) {
    const Ids piece = inputs.segment(chunk * (T / 2) * B, (T / 2) * B);
    Forward(config, params, piece, T / 2, B, state, part);
    FinalState(config, part, state);
    logits.middleCols(chunk * (T / 2) * B, (T / 2) * B) = part.logits;
  }
  EXPECT_LE((logits - whole.logits).cwiseAbs().maxCoeff(), 1e-13);
  for (int l = 0; l < config.layers; ++l) {
    EXPECT_LE((state.h[l] - whole_final.h[l]).cwiseAbs().maxCoeff(), 1e-13);
    if (cell == CellType::kLstm) {
      EXPECT_LE((state.c[l] - whole_final.c[l]).cwiseAbs().maxCoeff(), 1e-13);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, TruncatedBptt,
                         ::testing::Values(CellType::kRnnTanh, CellType::kRnnSigmoid, CellType::kRnnRelu,
                                           CellType::kLstm, CellType::kGru));

}  // namespace
}  // namespace bptt
