// The heads and losses of sequence models (sequences.h) proven against central differences in
// double precision: the absolute and Huber regression errors alone, mean pooling alone, and
// every cell of the registry in a 2-layer model with dense input and sequences of different
// lengths (padding that must not count) under each head: a class from the last step, a class
// from the mean over the steps, a class at every step, values from the last step (absolute
// error), values from the mean (Huber) and the next H values at every step (a forecast). And the
// slices of a batch (distributed training) that sum to the whole batch's loss and gradient with
// a mask and with pooling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "bptt/cell.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/rng.h"
#include "gradient_check.h"

namespace bptt {
namespace {

using test::CheckTensor;
using test::kMaxRelError;
using test::RandomMat;

// B sequences of lengths `lengths` (T the longest) of D features, padded at the end with values
// that must not matter, scored at every step within their lengths or at their last; with
// `pooled`, each sequence's target is the same at every step (that of its first scored step).
Batch<double> MakeBatch(const std::vector<int>& lengths, int D, Head head, int O, bool every_step, bool pooled,
                        Rng& rng) {
  Batch<double> b;
  b.B = static_cast<Eigen::Index>(lengths.size());
  b.T = *std::max_element(lengths.begin(), lengths.end());
  const Eigen::Index TB = b.T * b.B;
  b.dense = RandomMat(D, TB, rng, 1.0);
  b.scored = Mask::Zero(TB);
  if (head == Head::kSoftmax) {
    b.classes.resize(TB);
    for (Eigen::Index j = 0; j < TB; ++j) b.classes(j) = static_cast<int32_t>(rng.Below(static_cast<uint64_t>(O)));
  } else {
    b.values = RandomMat(O, TB, rng, 2.0);
  }
  for (Eigen::Index s = 0; s < b.B; ++s) {
    const int L = lengths[static_cast<size_t>(s)];
    for (Eigen::Index t = 0; t < b.T; ++t) {
      const Eigen::Index j = t * b.B + s;
      if (t >= L) b.dense.col(j).setConstant(1e3);  // padding: never read by anything scored
      if (every_step ? t < L : t == L - 1) b.scored(j) = 1;
    }
    if (pooled)
      for (Eigen::Index t = 1; t < L; ++t) {
        if (head == Head::kSoftmax) b.classes(t * b.B + s) = b.classes(s);
        else b.values.col(t * b.B + s) = b.values.col(s);
      }
  }
  return b;
}

TEST(RegressionError, AbsoluteAndHuberAgainstCentralDifferences) {
  Rng rng(3);
  const Eigen::Index O = 3, N = 8;
  Mat<double> p = RandomMat(O, N, rng, 2.0);
  const Mat<double> t = RandomMat(O, N, rng, 2.0);
  // No residual within a difference step of a kink: 0 (both), +-delta (Huber).
  for (Eigen::Index k = 0; k < p.size(); ++k)
    for (double kink : {0.0, 0.7, -0.7})
      if (std::abs(p(k) - t(k) - kink) < 1e-3) p(k) += 0.01;
  Mask scored = Mask::Ones(N);
  scored(2) = scored(5) = 0;
  for (const RegressionLoss loss : {RegressionLoss::kAbsolute, RegressionLoss::kHuber, RegressionLoss::kSquared}) {
    Mat<double> d;
    const double value = RegressionError(loss, 0.7, p, t, scored, &d, 1);
    EXPECT_GT(value, 0);
    EXPECT_EQ(d.col(2).norm(), 0.0);  // unscored positions get no gradient
    EXPECT_LT(CheckTensor(p, d, [&] { return RegressionError<double>(loss, 0.7, p, t, scored, nullptr, 1); }), kMaxRelError)
        << RegressionLossName(loss);
  }
  // Huber is half the squared error within delta, and |r| - delta/2 times delta beyond it.
  Mat<double> a(1, 2), b(1, 2);
  a << 0.5, 3.0;
  b << 0.0, 0.0;
  EXPECT_DOUBLE_EQ(RegressionError<double>(RegressionLoss::kHuber, 1.0, a, b, Mask(), nullptr, 1), (0.125 + 2.5) / 2);
  EXPECT_DOUBLE_EQ(RegressionError<double>(RegressionLoss::kAbsolute, 1.0, a, b, Mask(), nullptr, 1), 3.5 / 2);
}

TEST(MeanPooling, AveragesEachSequencesScoredOutputs) {
  Rng rng(4);
  const ModelConfig config{.cell = &DefaultCell(), .input_size = 2, .hidden_size = 3, .layers = 1,
                           .head = Head::kSoftmax, .output_size = 4, .pooling = Pooling::kMean};
  Batch<double> batch = MakeBatch({3, 1, 4}, 2, Head::kSoftmax, 4, true, true, rng);
  Mat<double> outputs = RandomMat(4, batch.T * batch.B, rng, 1.0);
  std::vector<Eigen::Index> first;
  const Mat<double> pooled = PoolOutputs(outputs, batch, &first);
  EXPECT_LT((pooled.col(0) - (outputs.col(0) + outputs.col(3) + outputs.col(6)) / 3).norm(), 1e-15);
  EXPECT_LT((pooled.col(1) - outputs.col(1)).norm(), 1e-15);
  EXPECT_EQ(first, (std::vector<Eigen::Index>{0, 1, 2}));
  Mat<double> d;
  HeadLoss(config, outputs, batch, &d, 1);
  EXPECT_LT(CheckTensor(outputs, d, [&] { return HeadLoss<double>(config, outputs, batch, nullptr, 1); }), kMaxRelError);
  // Padding gets no gradient.
  EXPECT_EQ(d.col(1 * 3 + 1).norm(), 0.0);
}

struct HeadCase {
  const char* name;
  Head head;
  int O;
  Pooling pooling;
  bool every_step;  // scored at every step within the length (else the last)
  RegressionLoss loss = RegressionLoss::kSquared;
};

// Every parameter of the model, through the head's loss, against central differences.
void CheckModel(const Cell& cell, const HeadCase& c) {
  SCOPED_TRACE(std::string(cell.name) + ", " + c.name);
  Rng rng(11);
  ModelConfig config{.cell = &cell, .input_size = 3, .hidden_size = 5, .layers = 2, .head = c.head, .output_size = c.O,
                     .pooling = c.pooling, .regression_loss = c.loss, .huber_delta = 0.4};
  config.Validate();
  auto params = ModelParams<double>::Zeros(config);
  InitOptions init;
  Initialize(config, init, rng, params);
  params.ForEachTensor([&rng](const TensorInfo&, Mat<double>& m) { m += RandomMat(m.rows(), m.cols(), rng, 0.1); });
  const Batch<double> batch = MakeBatch({4, 2, 5}, 3, c.head, c.O, c.every_step, c.pooling == Pooling::kMean, rng);
  const State<double> zero = State<double>::Zeros(config, batch.B);
  ModelCache<double> cache;
  const auto loss = [&] {
    Forward(config, params, batch, zero, cache, 1);
    return HeadLoss<double>(config, cache.outputs, batch, nullptr, 1);
  };
  Forward(config, params, batch, zero, cache, 1);
  Mat<double> doutputs;
  const double value = HeadLoss(config, cache.outputs, batch, &doutputs, 1);
  ASSERT_TRUE(std::isfinite(value));
  auto grads = ModelParams<double>::Zeros(config);
  Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, 1);
  std::vector<Mat<double>*> analytic;
  grads.ForEachTensor([&](const TensorInfo&, Mat<double>& m) { analytic.push_back(&m); });
  size_t k = 0;
  params.ForEachTensor([&](const TensorInfo& tensor, Mat<double>& m) {
    EXPECT_LT(CheckTensor(m, *analytic[k++], loss), kMaxRelError) << tensor.name;
  });
  // The loss does not see the padding: changing it leaves the loss as it was.
  Batch<double> moved = batch;
  for (Eigen::Index j = 0; j < moved.dense.cols(); ++j)
    if (moved.dense(0, j) == 1e3) moved.dense.col(j).setConstant(-7);
  Forward(config, params, moved, zero, cache, 1);
  EXPECT_NEAR(HeadLoss<double>(config, cache.outputs, moved, nullptr, 1), value, 1e-14);
}

TEST(SequenceHeads, EveryCellAndHeadAgainstCentralDifferences) {
  const HeadCase cases[] = {
      {"classify, last step", Head::kSoftmax, 4, Pooling::kLast, false},
      {"classify, mean over steps", Head::kSoftmax, 4, Pooling::kMean, true},
      {"label every step", Head::kSoftmax, 3, Pooling::kNone, true},
      {"regress, last step, absolute error", Head::kRegression, 2, Pooling::kLast, false, RegressionLoss::kAbsolute},
      {"regress, mean over steps, Huber", Head::kRegression, 2, Pooling::kMean, true, RegressionLoss::kHuber},
      {"forecast H = 2 of D = 3 at every step, squared error", Head::kRegression, 6, Pooling::kNone, true},
  };
  for (const Cell* cell : Cells())
    for (const HeadCase& c : cases) CheckModel(*cell, c);
}

// Slices of a batch (one per rank) sum to the whole batch's loss and gradient: with a mask that
// scores sequences of different lengths (whole_scored), and with mean pooling.
TEST(SequenceHeads, SlicesSumToTheWholeBatch) {
  for (const Pooling pooling : {Pooling::kNone, Pooling::kMean}) {
    SCOPED_TRACE(PoolingName(pooling));
    Rng rng(5);
    const ModelConfig config{.cell = &DefaultCell(), .input_size = 2, .hidden_size = 4, .layers = 1,
                             .head = Head::kRegression, .output_size = 2, .pooling = pooling,
                             .regression_loss = RegressionLoss::kHuber, .huber_delta = 0.5};
    const Batch<double> whole = MakeBatch({3, 5, 1, 4}, 2, Head::kRegression, 2, true, pooling == Pooling::kMean, rng);
    const Mat<double> outputs = RandomMat(2, whole.T * whole.B, rng, 1.0);
    Mat<double> dwhole;
    const double loss = HeadLoss(config, outputs, whole, &dwhole, 1);
    double sum = 0;
    for (const auto& [first, count] : {std::pair<Eigen::Index, Eigen::Index>{0, 1}, {1, 3}}) {
      Batch<double> slice;
      slice.T = whole.T;
      slice.B = count;
      slice.first = first;
      slice.whole = whole.B;
      slice.whole_scored = ScoredCount(whole);
      slice.values.resize(2, whole.T * count);
      slice.scored.resize(whole.T * count);
      Mat<double> part(2, whole.T * count);
      for (Eigen::Index t = 0; t < whole.T; ++t)
        for (Eigen::Index b = 0; b < count; ++b) {
          const Eigen::Index from = t * whole.B + first + b, to = t * count + b;
          slice.values.col(to) = whole.values.col(from);
          slice.scored(to) = whole.scored(from);
          part.col(to) = outputs.col(from);
        }
      Mat<double> dpart;
      sum += HeadLoss(config, part, slice, &dpart, 1);
      for (Eigen::Index t = 0; t < whole.T; ++t)
        for (Eigen::Index b = 0; b < count; ++b)
          EXPECT_LT((dpart.col(t * count + b) - dwhole.col(t * whole.B + first + b)).norm(), 1e-15);
    }
    EXPECT_NEAR(sum, loss, 1e-14);
  }
  // A slice with a mask and no whole count is refused.
  Rng rng(6);
  const ModelConfig config{.cell = &DefaultCell(), .input_size = 2, .hidden_size = 4, .layers = 1,
                           .head = Head::kSoftmax, .output_size = 3};
  Batch<double> slice = MakeBatch({2, 2}, 2, Head::kSoftmax, 3, false, false, rng);
  slice.whole = 4;
  EXPECT_THROW(HeadLoss<double>(config, RandomMat(3, slice.T * slice.B, rng, 1.0), slice, nullptr, 1), Error);
}

}  // namespace
}  // namespace bptt
