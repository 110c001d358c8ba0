// The online gradient algorithms (credit.h) against exact BPTT, in double, for every cell of the
// registry: RTRL equal to BPTT's gradient to 1e-10 (plain and layer-normalised, one-hot and dense
// input, from a random state, and over two chunks with its sensitivities carried); UORO unbiased,
// its mean over N draws converging to BPTT's gradient within a bound that shrinks as 1/sqrt(N);
// SnAp-1, SnAp-2, RFLO and e-prop exact where their approximation drops nothing (one step, two for
// SnAp-2; a unit-diagonal, zero or dense recurrent matrix; a cell without one) and not exact
// elsewhere; the combinations they do not define refused, and RTRL's memory refused with the
// amount it needs.
// Training with --credit: RTRL's first update is BPTT's, its later ones carry the sensitivities.
#include "bptt/credit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bptt/init.h"
#include "bptt/checkpoint.h"
#include "bptt/loss.h"
#include "bptt/trainer.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

constexpr int kV = 4, kD = 3, kH = 3;

ModelConfig OneLayer(const Cell& cell, bool dense, bool layer_norm = false) {
  ModelConfig c = LanguageModel(cell, kV, 0, kH, 1);
  if (dense) {
    c.vocab_size = 0;
    c.input_size = kD;
    c.head = Head::kRegression;
    c.output_size = 2;
  }
  c.layer_norm = layer_norm;
  c.Validate();
  return c;
}

ModelParams<double> Params(const ModelConfig& c, uint64_t seed) {
  ModelParams<double> params = ModelParams<double>::Zeros(c);
  Rng rng(seed);
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = 0.8;
  Initialize(c, init, rng, params);
  return params;
}

Batch<double> RandomBatch(const ModelConfig& c, int T, int B, uint64_t seed) {
  Rng rng(seed);
  Batch<double> batch;
  batch.T = T;
  batch.B = B;
  if (c.dense_input()) {
    batch.dense.resize(c.input_size, T * B);
    for (Eigen::Index i = 0; i < batch.dense.size(); ++i) batch.dense(i) = rng.Uniform(-1, 1);
    batch.values.resize(c.output_size, T * B);
    for (Eigen::Index i = 0; i < batch.values.size(); ++i) batch.values(i) = rng.Uniform(-1, 1);
  } else {
    batch.ids.resize(T * B);
    batch.classes.resize(T * B);
    for (Eigen::Index i = 0; i < T * B; ++i) {
      batch.ids(i) = static_cast<int32_t>(rng.Below(c.vocab_size));
      batch.classes(i) = static_cast<int32_t>(rng.Below(c.output_size));
    }
  }
  return batch;
}

State<double> RandomState(const ModelConfig& c, int B, uint64_t seed) {
  Rng rng(seed);
  State<double> s = State<double>::Zeros(c, B);
  for (auto* part : {&s.h, &s.c})
    for (Mat<double>& m : *part)
      for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = rng.Uniform(-0.5, 0.5);
  return s;
}

// BPTT's gradient of the chunk's loss from `initial`.
ModelParams<double> Exact(const ModelConfig& c, const ModelParams<double>& params, const Batch<double>& batch,
                          const State<double>& initial) {
  ModelCache<double> cache;
  Forward(c, params, batch, initial, cache, Compute{1});
  Mat<double> doutputs;
  HeadLoss(c, cache.outputs, batch, &doutputs, 1);
  ModelParams<double> grads = ModelParams<double>::Zeros(c);
  Backward(c, params, batch, cache, doutputs, nullptr, grads, nullptr, Compute{1});
  return grads;
}

ModelParams<double> Online(Credit credit, const ModelConfig& c, const ModelParams<double>& params,
                           const Batch<double>& batch, const State<double>& initial, uint64_t seed = 1) {
  ModelParams<double> grads = ModelParams<double>::Zeros(c);
  ModelCache<double> cache;
  OnlineCredit<double> online(credit, c, batch.B, seed);
  OnlineGradient(c, params, batch, initial, cache, online, grads, Compute{1});
  return grads;
}

// Every gradient tensor of the model as one vector.
Mat<double> Flat(const ModelParams<double>& g) {
  std::vector<double> v;
  g.ForEach([&](const std::string&, const Mat<double>& m) { v.insert(v.end(), m.data(), m.data() + m.size()); });
  return Eigen::Map<Mat<double>>(v.data(), static_cast<Eigen::Index>(v.size()), 1);
}

// max |a - b| over every tensor, relative to the largest |b|.
double MaxRelativeDifference(const ModelParams<double>& a, const ModelParams<double>& b) {
  const Mat<double> fa = Flat(a), fb = Flat(b);
  EXPECT_EQ(fa.size(), fb.size());
  return (fa - fb).cwiseAbs().maxCoeff() / fb.cwiseAbs().maxCoeff();
}

std::string Label(const ModelConfig& c) {
  return std::string(c.cell->name) + (c.dense_input() ? " dense" : " one-hot") + (c.layer_norm ? " layer norm" : "");
}

std::vector<ModelConfig> EveryCell() {
  std::vector<ModelConfig> configs;
  for (const Cell* cell : Cells())
    for (const bool dense : {false, true}) {
      configs.push_back(OneLayer(*cell, dense));
      if (cell->layer_norm()) configs.push_back(OneLayer(*cell, dense, true));
    }
  return configs;
}

TEST(CreditTest, RtrlEqualsBpttForEveryCell) {
  for (const ModelConfig& c : EveryCell()) {
    const ModelParams<double> params = Params(c, 3);
    const Batch<double> batch = RandomBatch(c, 6, 2, 4);
    const State<double> initial = RandomState(c, 2, 5);
    EXPECT_LE(MaxRelativeDifference(Online(Credit::kRtrl, c, params, batch, initial), Exact(c, params, batch, initial)),
              1e-10)
        << Label(c);
  }
}

// RTRL follows a stack whole: two layers (with residual connections, with layer norm, on a dense
// input under a regression head), and an embedding, its gradient BPTT's to 1e-10 for every cell,
// from a random state.
TEST(CreditTest, RtrlEqualsBpttOnAStackForEveryCell) {
  for (const Cell* cell : Cells()) {
    for (const int variant : {0, 1, 2, 3, 4}) {
      ModelConfig c = variant == 4 ? OneLayer(*cell, true) : LanguageModel(*cell, kV, variant == 3 ? 2 : 0, kH, 2);
      if (variant == 1) c.residual = true;
      if (variant == 2) {
        if (!cell->layer_norm()) continue;
        c.layer_norm = true;
      }
      if (variant == 3) c.layers = 1;  // an embedding under one layer
      if (variant == 4) c.layers = 2;
      c.Validate();
      const std::string label = std::string(cell->name) + " variant " + std::to_string(variant);
      ASSERT_EQ(CreditRefusal(Credit::kRtrl, c), "") << label;
      const ModelParams<double> params = Params(c, 31);
      const Batch<double> batch = RandomBatch(c, 5, 2, 32);
      const State<double> initial = RandomState(c, 2, 33);
      EXPECT_LE(MaxRelativeDifference(Online(Credit::kRtrl, c, params, batch, initial), Exact(c, params, batch, initial)),
                1e-10)
          << label;
    }
  }
}

// RTRL's sensitivities carried from one chunk to the next: two chunks of 4 steps (equally many
// positions, so the whole chunk's mean loss is their mean) sum to BPTT over the 8 steps; on one
// layer and on a stack under an embedding.
TEST(CreditTest, RtrlCarriesItsSensitivitiesAcrossChunks) {
  for (const char* name : {"lstm", "gru", "rnn-tanh", "lstm stack"}) {
    const bool stack = std::string(name) == "lstm stack";
    const ModelConfig c = stack ? LanguageModel(*FindCell("lstm"), kV, 2, kH, 2) : OneLayer(*FindCell(name), false);
    const ModelParams<double> params = Params(c, 6);
    const Batch<double> whole = RandomBatch(c, 8, 2, 7);
    const State<double> initial = RandomState(c, 2, 8);
    ModelParams<double> grads = ModelParams<double>::Zeros(c);
    State<double> state = initial;
    OnlineCredit<double> online(Credit::kRtrl, c, 2, 1);
    for (int part = 0; part < 2; ++part) {
      Batch<double> chunk;
      chunk.T = 4;
      chunk.B = 2;
      chunk.ids = whole.ids.segment(part * 8, 8);
      chunk.classes = whole.classes.segment(part * 8, 8);
      ModelCache<double> cache;
      OnlineGradient(c, params, chunk, state, cache, online, grads, Compute{1});
      FinalState(c, cache, state);
    }
    ModelParams<double> exact = Exact(c, params, whole, initial);
    exact.ForEach([](const std::string&, Mat<double>& m) { m *= 2; });
    EXPECT_LE(MaxRelativeDifference(grads, exact), 1e-10) << name;
  }
}

// UORO's estimate is unbiased, and its mean over N draws converges to BPTT's gradient as
// 1/sqrt(N): D draws split into D/N disjoint groups of N, the root-mean-square error of the
// groups' means stays within 3 sqrt(tr Σ / N) (Σ the draws' covariance, estimated from all D; a
// bias b would add |b|^2 under the root whatever N), and falls by at least 2 from N = 16 to 256
// (4 expected).
TEST(CreditTest, UoroMeanConvergesToBptt) {
  constexpr int kDraws = 4096;
  for (const Cell* cell : Cells()) {
    const ModelConfig c = OneLayer(*cell, false);
    const ModelParams<double> params = Params(c, 9);
    const Batch<double> batch = RandomBatch(c, 4, 1, 10);
    const State<double> initial = RandomState(c, 1, 11);
    const Mat<double> exact = Flat(Exact(c, params, batch, initial));
    Mat<double> draws(exact.size(), kDraws);
    for (int d = 0; d < kDraws; ++d) draws.col(d) = Flat(Online(Credit::kUoro, c, params, batch, initial, StreamSeed(12, d)));
    const Mat<double> mean = draws.rowwise().mean();
    const double variance = (draws.colwise() - mean.col(0)).squaredNorm() / (kDraws - 1);  // tr Σ
    ASSERT_GT(variance, 0) << cell->name << ": one draw is not random";
    std::vector<double> rms;
    for (const int n : {16, 64, 256, 1024, 4096}) {
      double sum = 0;
      for (int group = 0; group < kDraws / n; ++group)
        sum += (draws.middleCols(group * n, n).rowwise().mean() - exact).squaredNorm();
      rms.push_back(std::sqrt(sum / (kDraws / n)));
      EXPECT_LE(rms.back(), 3 * std::sqrt(variance / n)) << cell->name << " N = " << n;
    }
    EXPECT_GT(rms[0] / rms[2], 2.0) << cell->name;
  }
}

// SnAp-1, RFLO and e-prop keep each parameter's sensitivity on its own unit's state and J's
// unit-diagonal blocks: exact after one step (M_1 = I_1) with any weights, exact over a chunk when
// the recurrent matrix is unit-diagonal (SnAp-1) or zero (RFLO, e-prop: then only the leak is
// left), and not exact otherwise.
TEST(CreditTest, DiagonalTracesAreExactWhereTheyDropNothing) {
  for (const Cell* cell : Cells()) {
    for (const Credit credit : {Credit::kSnap1, Credit::kRflo, Credit::kEprop}) {
      for (const bool dense : {false, true}) {
        const ModelConfig c = OneLayer(*cell, dense);
        if (!CreditRefusal(credit, c).empty()) continue;
        const std::string label = Label(c) + " " + std::string(CreditName(credit));
        ModelParams<double> params = Params(c, 13);
        const State<double> initial = RandomState(c, 2, 14);
        const Batch<double> one = RandomBatch(c, 1, 2, 15), chunk = RandomBatch(c, 6, 2, 16);
        EXPECT_LE(MaxRelativeDifference(Online(credit, c, params, one, initial), Exact(c, params, one, initial)), 1e-10)
            << label << " one step";
        if (cell->recurrent_matrix()) {
          EXPECT_GT(MaxRelativeDifference(Online(credit, c, params, chunk, initial), Exact(c, params, chunk, initial)),
                    1e-6)
              << label << " general weights";
          Mat<double>& w_hh = params.layers[0][kWeightHhSlot];
          for (Eigen::Index r = 0; r < w_hh.rows(); ++r)
            for (Eigen::Index k = 0; k < w_hh.cols(); ++k)
              if (credit != Credit::kSnap1 || k != r % kH) w_hh(r, k) = 0;
        }
        EXPECT_LE(MaxRelativeDifference(Online(credit, c, params, chunk, initial), Exact(c, params, chunk, initial)),
                  1e-10)
            << label << (credit == Credit::kSnap1 ? " unit-diagonal" : " no") << " recurrent matrix";
      }
    }
  }
}

// SnAp-2 keeps a parameter's sensitivity on the state entries it reaches within two steps: with a
// dense recurrent matrix (or none) that drops nothing and it is RTRL, for every cell; with a sparse
// one (unit v reads h_v and h_{v-1} alone, a ring) it is exact over two steps from M_0 = 0, where
// nothing has yet left the pattern, and not over twelve, where h_u reaches h_{u+2}; carried into
// a chunk whose pattern has shrunk, it keeps nothing off the new one.
TEST(CreditTest, SnapTwoIsExactWhereItsPatternDropsNothing) {
  for (const ModelConfig& c : EveryCell()) {
    if (!CreditRefusal(Credit::kSnap2, c).empty()) {
      EXPECT_TRUE(c.layer_norm) << Label(c);
      continue;
    }
    ModelParams<double> params = Params(c, 13);
    const State<double> initial = RandomState(c, 2, 14);
    const Batch<double> two = RandomBatch(c, 2, 2, 15), chunk = RandomBatch(c, 12, 2, 16);
    EXPECT_LE(MaxRelativeDifference(Online(Credit::kSnap2, c, params, chunk, initial), Exact(c, params, chunk, initial)),
              1e-10)
        << Label(c) << " dense";
    if (!c.cell->recurrent_matrix()) continue;
    Mat<double>& w_hh = params.layers[0][kWeightHhSlot];
    for (Eigen::Index r = 0; r < w_hh.rows(); ++r)
      for (Eigen::Index k = 0; k < w_hh.cols(); ++k)
        if (k != r % kH && k != (r % kH + kH - 1) % kH) w_hh(r, k) = 0;
    params.layers[0].tensor("bias_ih").array() += 0.5;  // ReLU units on, so that the ring carries credit
    EXPECT_LE(MaxRelativeDifference(Online(Credit::kSnap2, c, params, two, initial), Exact(c, params, two, initial)),
              1e-10)
        << Label(c) << " ring, two steps";
    EXPECT_GT(MaxRelativeDifference(Online(Credit::kSnap2, c, params, chunk, initial), Exact(c, params, chunk, initial)),
              1e-6)
        << Label(c) << " ring, twelve steps";
    // Carried into a chunk whose pattern has shrunk (the dense matrix pruned to the ring since),
    // M keeps nothing off the new pattern: a parameter of unit u, nothing beyond h_u, h_{u+1}.
    {
      ModelParams<double> dense = Params(c, 13);
      dense.layers[0].tensor("bias_ih").array() += 0.5;
      OnlineCredit<double> online(Credit::kSnap2, c, 2, 1);
      const auto off_pattern = [&] {
        Eigen::Index q = 0, count = 0;
        params.layers[0].ForEach([&](const ParamDecl&, const Mat<double>& m) {
          for (Eigen::Index col = 0; col < m.cols(); ++col)
            for (Eigen::Index row = 0; row < m.rows(); ++row, ++q)
              for (Eigen::Index k = 0; k < online.N; ++k) {
                const Eigen::Index u = row % kH, v = k % kH;
                if (v != u && v != (u + 1) % kH && online.sensitivity[0](k, q) != 0) ++count;
              }
        });
        EXPECT_EQ(q, online.P);
        return count;
      };
      ModelCache<double> cache;
      State<double> state = initial;
      ModelParams<double> grads = ModelParams<double>::Zeros(c);
      OnlineGradient(c, dense, two, state, cache, online, grads, Compute{1});
      FinalState(c, cache, state);
      EXPECT_GT(off_pattern(), 0) << Label(c);
      OnlineGradient(c, params, two, state, cache, online, grads, Compute{1});
      EXPECT_EQ(off_pattern(), 0) << Label(c);
    }
    // SnAp-1 on the same ring drops the second step too.
    EXPECT_GT(MaxRelativeDifference(Online(Credit::kSnap1, c, params, two, initial), Exact(c, params, two, initial)),
              1e-6)
        << Label(c) << " ring, two steps, snap1";
  }
}

TEST(CreditTest, RefusesWhatAnAlgorithmDoesNotDefine) {
  const Cell& lstm = *FindCell("lstm");
  ModelConfig two = LanguageModel(lstm, kV, 0, kH, 2);
  EXPECT_NE(ErrorOf([&] { OnlineCredit<double>(Credit::kUoro, two, 1, 1); }).find("--layers 1"), std::string::npos);
  ModelConfig embed = LanguageModel(lstm, kV, 2, kH, 1);
  EXPECT_NE(CreditRefusal(Credit::kUoro, embed).find("--embed 0"), std::string::npos);
  EXPECT_EQ(CreditRefusal(Credit::kRtrl, two), "");
  EXPECT_EQ(CreditRefusal(Credit::kRtrl, embed), "");
  // bptt credit measures one layer on its input.
  EXPECT_NE(ErrorOf([&] { CompareCredit(two, Params(two, 1), RandomBatch(two, 2, 1, 2), CreditOptions{}); })
                .find("bptt credit measures the algorithms on one recurrent layer"),
            std::string::npos);
  EXPECT_NE(CreditRefusal(Credit::kSnap1, OneLayer(lstm, false, true)).find("layer normalisation"), std::string::npos);
  EXPECT_NE(CreditRefusal(Credit::kSnap2, OneLayer(lstm, false, true)).find("layer normalisation"), std::string::npos);
  EXPECT_EQ(CreditRefusal(Credit::kRtrl, OneLayer(lstm, false, true)), "");
  EXPECT_NE(CreditRefusal(Credit::kEprop, OneLayer(*FindCell("gru"), false)).find("cell state"), std::string::npos);
  EXPECT_NE(CreditRefusal(Credit::kRflo, OneLayer(lstm, false)).find("eprop"), std::string::npos);
  EXPECT_NE(CreditRefusal(Credit::kRflo, OneLayer(*FindCell("rnn-tanh"), false)).find("only through weight_hh"),
            std::string::npos);
  EXPECT_EQ(CreditRefusal(Credit::kRflo, OneLayer(*FindCell("mingru"), false)), "");
  EXPECT_EQ(CreditRefusal(Credit::kEprop, OneLayer(lstm, false)), "");
  EXPECT_NE(ErrorOf([&] { OnlineCredit<double>(Credit::kBptt, OneLayer(lstm, false), 1, 1); }).find("not an online"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseCredit("bp", "--credit"); }).find("--credit 'bp' is not one of bptt, rtrl"),
            std::string::npos);
}

// RTRL's sensitivities for an LSTM of 512 units on 65 symbols: N = 1024 state entries times
// P = 4*512*(65+512) + 2*2048 parameters, 8 bytes each, for 4 streams: about 48 GiB.
TEST(CreditTest, RefusesRtrlThatDoesNotFitAndSaysWhatItNeeds) {
  const ModelConfig c = LanguageModel(*FindCell("lstm"), 65, 0, 512, 1);
  const double P = 4.0 * 512 * (65 + 512) + 2 * 2048, N = 1024;
  EXPECT_DOUBLE_EQ(CreditBytes(Credit::kRtrl, c, 1, 4, 8), (4 * N * P + N * (N + P)) * 8);
  const std::string error = ErrorOf([&] { CheckCredit(Credit::kRtrl, c, 4, 8, uint64_t{24} << 30); });
  const std::string need = std::to_string(static_cast<uint64_t>((4 * N * P + N * (N + P)) * 8 / (1 << 20))) + " MiB";
  EXPECT_NE(error.find("rtrl needs " + need), std::string::npos) << error;
  EXPECT_NE(error.find("24576 MiB are available"), std::string::npos) << error;
  EXPECT_EQ(ErrorOf([&] { CheckCredit(Credit::kUoro, c, 4, 8, uint64_t{24} << 30); }), "");
}

TEST(CreditTest, CompareCreditReportsEveryDefinedAlgorithm) {
  const ModelConfig c = OneLayer(*FindCell("gru"), false);
  CreditOptions options;
  options.uoro_draws = 50;
  const CreditReport r = CompareCredit(c, Params(c, 17), RandomBatch(c, 5, 2, 18), options);
  std::vector<std::string> names;
  for (const CreditRow& row : r.rows) names.push_back(row.algorithm);
  EXPECT_EQ(names, (std::vector<std::string>{"bptt", "rtrl", "uoro", "uoro x50", "snap1", "snap2", "rflo"}));
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(r.refused[0].rfind("eprop: ", 0), 0u);
  for (const CreditRow& row : r.rows) {
    ASSERT_EQ(row.tensors.size(), 5u) << row.algorithm;  // 4 tensors and the layer
    EXPECT_EQ(row.tensors.back().name, "layer 0");
    EXPECT_GT(row.bytes, 0);
  }
  // The lag profile: lags 0 .. min(16, T - 1); at lag 0 the credit crosses no step, where every
  // algorithm but UORO is exact.
  for (const CreditRow& row : r.rows) {
    if (row.algorithm == "bptt") {
      EXPECT_TRUE(row.lag_cosine.empty());
      continue;
    }
    ASSERT_EQ(row.lag_cosine.size(), 5u) << row.algorithm;
    ASSERT_EQ(row.lag_rel_error.size(), 5u) << row.algorithm;
    if (row.algorithm.starts_with("uoro")) continue;
    EXPECT_NEAR(row.lag_cosine[0], 1.0, 1e-12) << row.algorithm;
    EXPECT_LT(row.lag_rel_error[0], 1e-10) << row.algorithm;
    // SnAp-2 on a dense weight_hh is RTRL.
    if (row.algorithm == "rtrl" || row.algorithm == "snap2")
      EXPECT_LT(*std::max_element(row.lag_rel_error.begin(), row.lag_rel_error.end()), 1e-10) << row.algorithm;
    else EXPECT_GT(row.lag_rel_error[4], 1e-6) << row.algorithm;
  }
  EXPECT_NEAR(r.rows[1].tensors.back().cosine, 1.0, 1e-12);
  EXPECT_LT(r.rows[1].tensors.back().rel_error, 1e-10);
  EXPECT_LT(r.rows[2].tensors.back().cosine, 1.0 - 1e-6);  // one UORO draw is not the gradient
  const nlohmann::json j = r.ToJson();
  EXPECT_EQ(j["algorithms"].size(), 7u);
  EXPECT_EQ(j["algorithms"][1]["algorithm"], "rtrl");
  EXPECT_TRUE(j["algorithms"][1]["tensors"].contains("rnn.weight_hh_l0"));
  EXPECT_EQ(j["algorithms"][4]["lag_cosine"].size(), 5u);
  EXPECT_NE(ErrorOf([&] {
              CreditOptions o;
              o.algorithms = {Credit::kEprop};
              CompareCredit(c, Params(c, 17), RandomBatch(c, 5, 2, 18), o);
            }).find("eprop"),
            std::string::npos);
}

class CreditTrainingTest : public test::TempDirTest {
 protected:
  TrainOptions Options(Credit credit, int steps) {
    std::string text;
    for (int k = 0; k < 200; ++k) text += k % 3 ? "abcab\n" : "abd\n";
    TrainOptions o;
    o.corpus = {Write("corpus.txt", text).string()};
    o.out = (dir_ / (std::string(CreditName(credit)) + std::to_string(steps))).string();
    o.model.cell = FindCell("gru");
    o.model.hidden_size = 6;
    o.model.layers = 1;
    o.batch = 2;
    o.seq_len = 5;
    o.max_steps = steps;
    o.threads = 1;
    o.credit = credit;
    return o;
  }
  ModelParams<float> Trained(const TrainOptions& o) {
    std::ostringstream log;
    EXPECT_EQ(Train(o, log, false).steps, o.max_steps) << log.str();
    return LoadCheckpoint(std::filesystem::path(o.out) / "latest.safetensors").params;
  }
};

// From zero sensitivities RTRL's gradient over the first chunk is BPTT's (to float rounding);
// from the second chunk on it carries the sensitivities across the chunk boundary, where BPTT
// truncates.
TEST_F(CreditTrainingTest, RtrlTakesBpttsFirstStepAndThenCarriesItsSensitivities) {
  const auto difference = [](const ModelParams<float>& a, const ModelParams<float>& b) {
    return MaxRelativeDifference(a.Cast<double>(), b.Cast<double>());
  };
  EXPECT_LE(difference(Trained(Options(Credit::kRtrl, 1)), Trained(Options(Credit::kBptt, 1))), 1e-5);
  EXPECT_GT(difference(Trained(Options(Credit::kRtrl, 4)), Trained(Options(Credit::kBptt, 4))), 1e-4);
  for (const Credit credit : {Credit::kUoro, Credit::kSnap1, Credit::kRflo}) {
    const ModelParams<float> p = Trained(Options(credit, 3));
    EXPECT_TRUE(p.AllFinite()) << CreditName(credit);
  }
}

TEST_F(CreditTrainingTest, RefusesWhatItCannotTrain) {
  std::ostringstream log;
  TrainOptions two = Options(Credit::kSnap1, 1);
  two.model.layers = 2;
  EXPECT_NE(ErrorOf([&] { Train(two, log, false); }).find("--credit: snap1 is defined here for one recurrent layer"),
            std::string::npos);
  TrainOptions fa = Options(Credit::kRtrl, 1);
  fa.feedback = Feedback::kFa;
  EXPECT_NE(ErrorOf([&] { Train(fa, log, false); }).find("--feedback fa applies to bptt"), std::string::npos);
  TrainOptions segments = Options(Credit::kUoro, 1);
  segments.checkpoint_steps = 2;
  EXPECT_NE(ErrorOf([&] { Train(segments, log, false); }).find("--checkpoint-steps"), std::string::npos);
  // The online forward pass draws no regulariser's masks and its gradient holds no penalty.
  for (const auto& [field, flag] : std::vector<std::pair<double ModelConfig::*, std::string>>{
           {&ModelConfig::input_dropout, "--input-dropout"}, {&ModelConfig::output_dropout, "--output-dropout"},
           {&ModelConfig::weight_drop, "--weight-drop"}, {&ModelConfig::recurrent_dropout, "--recurrent-dropout"},
           {&ModelConfig::zoneout, "--zoneout"}, {&ModelConfig::zoneout_cell, "--zoneout-cell"},
           {&ModelConfig::ar, "--ar"}, {&ModelConfig::tar, "--tar"}}) {
    TrainOptions regularised = Options(Credit::kRtrl, 1);
    regularised.model.cell = FindCell("lstm");
    regularised.model.*field = 0.2;
    const std::string error = ErrorOf([&] { Train(regularised, log, false); });
    EXPECT_NE(error.find("--credit rtrl trains without the regularisers of bptt: " + flag), std::string::npos) << error;
  }
}

// The checkpoint keeps what the algorithm carries (sensitivities, UORO's factors and signs), so a
// run cut at step 3 and resumed ends with the bytes of an uninterrupted one; the state carried
// across the cut is not zero (the corpus's chunks carry state, and the algorithm with it).
TEST_F(CreditTrainingTest, AResumedRunEndsWithTheBytesOfAnUninterruptedOne) {
  for (const Credit credit : Credits()) {
    if (credit == Credit::kBptt) continue;
    SCOPED_TRACE(CreditName(credit));
    std::ostringstream log;
    TrainOptions o = Options(credit, 7);
    o.eval_every = 3;  // the metrics' window restarts at the cut, and so does it here
    o.log_every = 1;
    if (credit == Credit::kEprop) o.model.cell = FindCell("lstm");
    if (credit == Credit::kRtrl) {  // a stack, followed whole
      o.model.layers = 2;
      o.model.embed_size = 3;
    }
    ASSERT_EQ(Train(o, log, false).steps, 7) << log.str();
    TrainOptions first = o;
    first.out += "_cut";
    first.max_steps = 3;
    ASSERT_EQ(Train(first, log, false).steps, 3) << log.str();
    const Checkpoint cut = LoadCheckpoint(std::filesystem::path(first.out) / "latest.safetensors",
                                          CheckpointUse::kResume);
    ASSERT_TRUE(cut.training->credit.has_value());
    const OnlineCredit<float>& carried = *cut.training->credit;
    EXPECT_EQ(carried.credit, credit);
    EXPECT_GT(credit == Credit::kUoro ? carried.param_factor.norm() : carried.sensitivity[1].norm(), 0.0f);
    ASSERT_EQ(Resume(first.out, {{"max-steps", 7}}, log, false).steps, 7) << log.str();
    EXPECT_TRUE(test::FileBytes(std::filesystem::path(o.out) / "latest.safetensors") ==
                test::FileBytes(std::filesystem::path(first.out) / "latest.safetensors"));
    // A model load reads none of it.
    EXPECT_FALSE(LoadCheckpoint(std::filesystem::path(o.out) / "latest.safetensors").training->credit.has_value());
  }
}

}  // namespace
}  // namespace bptt
