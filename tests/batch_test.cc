// Slices of a batch (batch.h), what each rank of a distributed run trains on: the shares of the
// ranks make up the batch; a BatchStream's share holds the whole chunk's columns of its streams;
// the slices' losses and gradients, dropout on (and recurrent dropout and zoneout), sum to the
// whole batch's (in double, to 1e-12);
// a slice of a masked batch is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "bptt/batch.h"
#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/rng.h"

namespace bptt {
namespace {

TEST(StreamShare, TheRanksSharesMakeUpTheBatch) {
  for (int B : {1, 2, 5, 32, 33})
    for (int n = 1; n <= B; ++n) {
      int next = 0;
      for (int r = 0; r < n; ++r) {
        const StreamShare s = StreamShare::OfRank(B, r, n);
        EXPECT_EQ(s.begin, next) << "B=" << B << " n=" << n << " r=" << r;
        EXPECT_GE(s.size(), B / n);
        EXPECT_LE(s.size(), B / n + 1);
        next = s.end;
      }
      EXPECT_EQ(next, B);
    }
}

TEST(StreamShare, ABatchStreamShareReadsItsStreamsColumns) {
  std::vector<int32_t> ids(200);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const EncodedCorpus corpus(std::move(ids));
  const int B = 5, T = 3;
  BatchStream whole(corpus, {0, 200}, B, T);
  BatchStream part(corpus, {0, 200}, B, T, false, StreamShare{2, 4});
  Ids wi, wt, pi, pt;
  for (int k = 0; k < 4; ++k) {
    ASSERT_EQ(whole.Next(wi, wt), T);
    ASSERT_EQ(part.Next(pi, pt), T);
    ASSERT_EQ(pi.size(), 2 * T);
    for (int t = 0; t < T; ++t)
      for (int b = 2; b < 4; ++b) {
        EXPECT_EQ(pi[t * 2 + b - 2], wi[t * B + b]);
        EXPECT_EQ(pt[t * 2 + b - 2], wt[t * B + b]);
      }
  }
  EXPECT_THROW(BatchStream(corpus, {0, 200}, B, T, false, StreamShare{4, 6}), Error);
  EXPECT_THROW(BatchStream(corpus, {0, 200}, B, T, false, StreamShare{2, 2}), Error);
}

// Positions t*B + b of `ids` for b in [first, first + count), as t*count + (b - first).
Ids Columns(const Ids& ids, int T, int B, int first, int count) {
  Ids out(static_cast<Eigen::Index>(T) * count);
  for (int t = 0; t < T; ++t)
    for (int b = 0; b < count; ++b) out[t * count + b] = ids[t * B + first + b];
  return out;
}

constexpr int kV = 6, kH = 5;

void ExpectSlicesSumToTheWholeBatch(const ModelConfig& config) {
  const int V = kV, T = 4, B = 5;
  Rng rng(11);
  ModelParams<double> params = ModelParams<double>::Zeros(config);
  Initialize(config, InitOptions(), rng, params);
  Batch<double> whole;
  whole.T = T;
  whole.B = B;
  whole.ids = Ids(T * B);
  whole.classes = Ids(T * B);
  for (int j = 0; j < T * B; ++j) {
    whole.ids[j] = static_cast<int32_t>(rng.Below(V));
    whole.classes[j] = static_cast<int32_t>(rng.Below(V));
  }
  State<double> initial = State<double>::Zeros(config, B);
  for (auto* part : {&initial.h, &initial.c})
    for (Mat<double>& m : *part) m.setRandom();

  // Forward, loss and backward of `batch` from `from`, dropout drawn from Rng(5).
  const auto run = [&](const Batch<double>& batch, const State<double>& from, ModelParams<double>& grads) {
    Rng dropout(5);
    ModelCache<double> cache;
    Forward(config, params, batch, from, cache, 1, &dropout);
    Mat<double> doutputs;
    const double loss = HeadLoss(config, cache.outputs, batch, &doutputs, 1) + cache.activation_penalty;
    Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, 1);
    return loss;
  };
  ModelParams<double> expected = ModelParams<double>::Zeros(config);
  const double whole_loss = run(whole, initial, expected);

  ModelParams<double> summed = ModelParams<double>::Zeros(config);
  double summed_loss = 0;
  const int ranks = 2;
  for (int r = 0; r < ranks; ++r) {
    const StreamShare s = StreamShare::OfRank(B, r, ranks);
    Batch<double> slice;
    slice.T = T;
    slice.B = s.size();
    slice.first = s.begin;
    slice.whole = B;
    slice.ids = Columns(whole.ids, T, B, s.begin, s.size());
    slice.classes = Columns(whole.classes, T, B, s.begin, s.size());
    State<double> from = State<double>::Zeros(config, s.size());
    for (size_t l = 0; l < initial.h.size(); ++l) {
      from.h[l] = initial.h[l].middleCols(s.begin, s.size());
      if (config.cell->cell_state) from.c[l] = initial.c[l].middleCols(s.begin, s.size());
    }
    ModelParams<double> grads = ModelParams<double>::Zeros(config);
    summed_loss += run(slice, from, grads);
    summed.ForEach([&](const std::string& name, Mat<double>& m) {
      grads.ForEach([&](const std::string& other, const Mat<double>& g) {
        if (other == name) m += g;
      });
    });
  }
  EXPECT_NEAR(summed_loss, whole_loss, 1e-12 * whole_loss);
  expected.ForEach([&](const std::string& name, const Mat<double>& e) {
    summed.ForEach([&](const std::string& other, const Mat<double>& m) {
      if (other != name) return;
      EXPECT_LE((m - e).norm(), 1e-12 * std::max(1.0, e.norm())) << name;
      EXPECT_GT(e.norm(), 0) << name;
    });
  });
}

TEST(BatchSlice, SlicesLossesAndGradientsSumToTheWholeBatchs) {
  ExpectSlicesSumToTheWholeBatch(LanguageModel(*FindCell("lstm"), kV, 0, kH, 2, /*dropout=*/0.3));
}

// Every training regulariser of the model (model.h ModelConfig), AR and TAR counted in the loss.
TEST(BatchSlice, WithEveryModelRegulariserSumToTheWholeBatchs) {
  ModelConfig config = LanguageModel(*FindCell("lstm"), kV, 0, kH, 2, /*dropout=*/0.3);
  config.input_dropout = 0.3;
  config.output_dropout = 0.2;
  config.variational = true;
  config.weight_drop = 0.3;
  config.ar = 1;
  config.tar = 2;
  ExpectSlicesSumToTheWholeBatch(config);
}

// The masks of the time loops follow the same rule: a slice draws the whole batch's values.
TEST(BatchSlice, WithRecurrentDropoutAndZoneoutSumToTheWholeBatchs) {
  for (const char* name : {"lstm", "gru"}) {
    SCOPED_TRACE(name);
    ModelConfig config = LanguageModel(*FindCell(name), kV, 0, kH, 2, /*dropout=*/0.3);
    config.recurrent_dropout = 0.3;
    config.zoneout = 0.3;
    config.zoneout_cell = config.cell->cell_state ? 0.2 : 0.0;
    ExpectSlicesSumToTheWholeBatch(config);
  }
}

TEST(BatchSlice, ASliceOfAMaskedBatchIsRefused) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 3, 0, 2, 1);
  Batch<double> slice;
  slice.T = 1;
  slice.B = 1;
  slice.whole = 2;
  slice.classes = Ids::Zero(1);
  slice.scored = Mask::Ones(1);
  const Mat<double> outputs = Mat<double>::Zero(3, 1);
  EXPECT_THROW(HeadLoss<double>(config, outputs, slice, nullptr, 1), Error);
}

}  // namespace
}  // namespace bptt
