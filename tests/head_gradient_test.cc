// The heads and inputs proven against central differences in double precision: the losses
// alone (softmax cross-entropy, with a mask, and mean squared error), and every cell of the
// registry in a 2-layer model with every input (one-hot, embedding, dense) and every head
// (softmax at every step, softmax on a mask, regression on a mask, classification at the last
// step), over T = 7 steps with B = 3. Also that a batch's symbols and classes must fit the model.
// (The cells alone: cell_gradient_test.cc.)
#include <gtest/gtest.h>

#include "bptt/error.h"
#include "gradient_check.h"

namespace bptt {
namespace {

using namespace test;

TEST(Forward, RefusesSymbolsAndClassesOutsideTheModel) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 4, 0, 3, 1);
  const auto params = ModelParams<double>::Zeros(config);
  Batch<double> batch;
  batch.T = 2;
  batch.B = 1;
  batch.ids = Ids::Zero(2);
  batch.ids(1) = 4;
  ModelCache<double> cache;
  EXPECT_THROW(Forward(config, params, batch, State<double>::Zeros(config, 1), cache, 1), Error);
  batch.ids(1) = 3;
  Forward(config, params, batch, State<double>::Zeros(config, 1), cache, 1);
  Ids targets = Ids::Zero(2);
  targets(0) = -1;
  EXPECT_THROW(SoftmaxCrossEntropy(cache.outputs, targets), Error);
  Mask scored = Mask::Zero(2);
  scored(1) = 1;
  EXPECT_NO_THROW(SoftmaxCrossEntropy<double>(cache.outputs, targets, scored, nullptr, 1));  // not scored: any value
}

TEST(SoftmaxCrossEntropy, MatchesCentralDifferences) {
  Rng rng(7);
  Mat<double> logits = RandomMat(6, 9, rng, 3.0);
  const Ids targets = RandomIds(9, 6, rng);
  Mat<double> dlogits;
  const double loss = SoftmaxCrossEntropy(logits, targets, &dlogits);
  double expected = 0;
  for (Eigen::Index j = 0; j < 9; ++j)
    expected += std::log(logits.col(j).array().exp().sum()) - logits(targets(j), j);
  EXPECT_NEAR(loss, expected / 9, 1e-14);
  const double err = CheckTensor(logits, dlogits, [&] { return SoftmaxCrossEntropy(logits, targets); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "softmax cross-entropy: max relative error " << err << "\n";
}

TEST(SoftmaxCrossEntropy, MaskedPositionsAreNeitherScoredNorDifferentiated) {
  Rng rng(8);
  Mat<double> logits = RandomMat(5, 8, rng, 3.0);
  Ids targets = RandomIds(8, 5, rng);
  Mask scored(8);
  scored << 0, 1, 1, 0, 0, 1, 0, 1;
  targets(0) = -7;  // an unscored position may hold any value
  Mat<double> d;
  const double loss = SoftmaxCrossEntropy<double>(logits, targets, scored, &d, 1);
  double expected = 0;
  for (Eigen::Index j = 0; j < 8; ++j)
    if (scored(j)) expected += std::log(logits.col(j).array().exp().sum()) - logits(targets(j), j);
  EXPECT_NEAR(loss, expected / 4, 1e-14);
  for (Eigen::Index j = 0; j < 8; ++j)
    if (!scored(j)) {
      EXPECT_EQ(d.col(j).cwiseAbs().maxCoeff(), 0.0) << j;
    }
  const double err =
      CheckTensor(logits, d, [&] { return SoftmaxCrossEntropy<double>(logits, targets, scored, nullptr, 1); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "masked softmax cross-entropy: max relative error " << err << "\n";
}

TEST(MeanSquaredError, MatchesItsFormulaAndCentralDifferences) {
  Rng rng(9);
  Mat<double> p = RandomMat(2, 6, rng, 2.0);
  const Mat<double> t = RandomMat(2, 6, rng, 2.0);
  Mask scored(6);
  scored << 1, 0, 1, 1, 0, 1;
  Mat<double> d;
  const double loss = MeanSquaredError<double>(p, t, scored, &d, 1);
  double expected = 0;
  for (Eigen::Index j = 0; j < 6; ++j)
    if (scored(j)) expected += (p.col(j) - t.col(j)).squaredNorm();
  EXPECT_NEAR(loss, expected / (4 * 2), 1e-15);
  for (Eigen::Index j = 0; j < 6; ++j)
    if (!scored(j)) {
      EXPECT_EQ(d.col(j).cwiseAbs().maxCoeff(), 0.0) << j;
    }
  const double err = CheckTensor(p, d, [&] { return MeanSquaredError<double>(p, t, scored, nullptr, 1); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "mean squared error: max relative error " << err << "\n";
}

class HeadGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(HeadGradient, EveryTensorMatchesCentralDifferences) { CheckModelGradient(GetParam()); }

// Every input with every head; one-hot input with softmax at every step is the cells' own case.
std::vector<GradCase> HeadCases() {
  std::vector<GradCase> cases;
  for (const Cell* cell : Cells())
    for (const Input input : {Input::kOneHot, Input::kEmbed, Input::kDense})
      for (const Scoring scoring : {Scoring::kEveryStep, Scoring::kMasked, Scoring::kLastStep, Scoring::kRegression})
        if (input != Input::kOneHot || scoring != Scoring::kEveryStep) cases.push_back({cell->name, input, scoring});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllCells, HeadGradient, ::testing::ValuesIn(HeadCases()), GradCaseName);

}  // namespace
}  // namespace bptt
