// Every cell of the registry proven against central differences in double precision: each in a
// 2-layer language model (one-hot input, softmax at every step) over T = 7 steps with B = 3,
// a non-zero initial state and a loss that also depends on the final state; the same at sizes
// that cross the kernels' panel and column-block boundaries (H = 70, B = 11, T = 5, one-hot and
// dense input) and with one stream (B = 1: the steps split between the threads by rows). Also
// the chain rule through the engine on a circuit small enough to do by hand, and truncated BPTT:
// two chunks with the state carried equal one long chunk. (Inputs and heads:
// head_gradient_test.cc; options: option_gradient_test.cc; threads and precisions:
// precision_gradient_test.cc.)
#include <gtest/gtest.h>

#include "gradient_check.h"

namespace bptt {
namespace {

using namespace test;

TEST(ChainRule, SeedExampleThroughTheEngine) {
  // f = (x + y) * z at x = -2, y = 5, z = -4, computed by a 1-unit ReLU RNN over one step:
  // q = relu(W_ih[:, 0] + W_hh h_0 + b) = x + y with W_ih = x, h_0 = y, W_hh = 1, b = 0,
  // and f = z * h_1 as the loss on the final state (dL/dh_1 = z, no output term).
  const ModelConfig config = LanguageModel(*FindCell("rnn-relu"), 1, 0, 1, 1);
  auto params = ModelParams<double>::Zeros(config);
  params.layers[0].weight_ih()(0, 0) = -2;  // x
  params.layers[0].tensor("weight_hh")(0, 0) = 1;
  State<double> initial = State<double>::Zeros(config, 1);
  initial.h[0](0, 0) = 5;  // y
  const double z = -4;
  Batch<double> batch;
  batch.T = batch.B = 1;
  batch.ids = Ids::Zero(1);
  ModelCache<double> cache;
  Forward(config, params, batch, initial, cache, 1);
  State<double> final_state = State<double>::Zeros(config, 1);
  FinalState(config, cache, final_state);
  const double q = final_state.h[0](0, 0);
  EXPECT_DOUBLE_EQ(z * q, -12.0);  // f

  auto grads = ModelParams<double>::Zeros(config);
  State<double> dfinal = State<double>::Zeros(config, 1), dinitial = State<double>::Zeros(config, 1);
  dfinal.h[0](0, 0) = z;
  const Mat<double> no_output_gradient = Mat<double>::Zero(1, 1);
  Backward(config, params, batch, cache, no_output_gradient, &dfinal, grads, &dinitial, 1);
  EXPECT_DOUBLE_EQ(grads.layers[0].weight_ih()(0, 0), -4.0);  // df/dx = z
  EXPECT_DOUBLE_EQ(dinitial.h[0](0, 0), -4.0);               // df/dy = z
  EXPECT_DOUBLE_EQ(q, 3.0);                                   // df/dz = x + y
}

class CellGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(CellGradient, EveryTensorMatchesCentralDifferences) { CheckModelGradient(GetParam()); }

std::vector<GradCase> CellCases() {
  std::vector<GradCase> cases;
  for (const Cell* cell : Cells()) {
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep});
    // Across the kernels' 32-row panels and 8-column blocks, forward and backward.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 11, 5, 0.0, 8});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 70, 11, 5, 0.0, 8});
    // One stream on the analytic pass's 2 threads: the steps split by rows (StepShare).
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 1, 5, 0.0, 8});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllCells, CellGradient, ::testing::ValuesIn(CellCases()), GradCaseName);

class TruncatedBptt : public ::testing::TestWithParam<const Cell*> {};

TEST_P(TruncatedBptt, TwoChunksWithCarriedStateEqualOneChunk) {
  const Cell& cell = *GetParam();
  const Eigen::Index T = 8, B = 2;
  const ModelConfig config = LanguageModel(cell, 6, 0, 5, 2);
  Rng rng(99);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  Batch<double> whole_batch;
  whole_batch.T = T;
  whole_batch.B = B;
  whole_batch.ids = RandomIds(T * B, 6, rng);
  State<double> initial = State<double>::Zeros(config, B);
  for (auto& h : initial.h) h = RandomMat(5, B, rng);
  for (auto& c : initial.c) c = RandomMat(5, B, rng);

  ModelCache<double> whole;
  Forward(config, params, whole_batch, initial, whole, 1);
  State<double> whole_final = State<double>::Zeros(config, B);
  FinalState(config, whole, whole_final);

  ModelCache<double> part;
  State<double> state = initial;
  Mat<double> outputs(6, T * B);
  for (int chunk = 0; chunk < 2; ++chunk) {
    Batch<double> piece;
    piece.T = T / 2;
    piece.B = B;
    piece.ids = whole_batch.ids.segment(chunk * (T / 2) * B, (T / 2) * B);
    Forward(config, params, piece, state, part, 1);
    FinalState(config, part, state);
    outputs.middleCols(chunk * (T / 2) * B, (T / 2) * B) = part.outputs;
  }
  EXPECT_LE((outputs - whole.outputs).cwiseAbs().maxCoeff(), 1e-13);
  for (int l = 0; l < config.layers; ++l) {
    EXPECT_LE((state.h[l] - whole_final.h[l]).cwiseAbs().maxCoeff(), 1e-13);
    if (cell.cell_state) {
      EXPECT_LE((state.c[l] - whole_final.c[l]).cwiseAbs().maxCoeff(), 1e-13);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, TruncatedBptt, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

}  // namespace
}  // namespace bptt
