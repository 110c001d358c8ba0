// Memory-bounded BPTT (model.h ModelCache::checkpoint_steps): for every cell of the registry,
// plain and layer-normalised, with dropout, residual connections, an embedding, a dense input
// with a regression head, the training regularisers (variational dropout, weight drop, AR, TAR),
// recurrent dropout and zoneout, and the feedback-alignment rules, the chunk run in segments of K steps
// (K = 1, 3, a K that does not divide T, T - 1, T and sqrt(T)) gives the same outputs, final
// state, gradients and initial-state gradient as the chunk run with every step kept: bit for bit
// in float on 1 and 3 threads (where the float products run on bptt's kernels), and to
// rounding in double. The sizes are odd, so that a segment's steps sit at other alignments in
// its buffers than in the whole chunk's. The memory the option saves: model_test.cc.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/rng.h"
#include "kernels/sgemm.h"

namespace bptt {
namespace {

constexpr int kT = 11, kB = 3, kH = 13;

struct Case {
  ModelConfig config;
  Feedback rule = Feedback::kBptt;
  std::string name;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const Cell* cell : Cells()) {
    const std::string name(cell->name);
    cases.push_back({LanguageModel(*cell, 7, 0, kH, 2), Feedback::kBptt, name + " one-hot"});
    if (cell->layer_norm()) {
      ModelConfig c = LanguageModel(*cell, 7, 0, kH, 2);
      c.layer_norm = true;
      cases.push_back({c, Feedback::kBptt, name + " layer norm"});
    }
    ModelConfig c = LanguageModel(*cell, 7, 5, kH, 3, 0.3);
    c.residual = true;
    cases.push_back({c, Feedback::kBptt, name + " embedding, dropout, residual"});
    c = LanguageModel(*cell, 0, 0, kH, 2);
    c.input_size = 6;
    c.head = Head::kRegression;
    c.output_size = 2;
    cases.push_back({c, Feedback::kBptt, name + " dense, regression"});
    // The training regularisers: variational dropout on the input, between and on the output,
    // weight drop, AR and TAR; and per-step input and output dropout with AR and TAR.
    c = LanguageModel(*cell, 7, 5, kH, 2, 0.3);
    c.input_dropout = 0.2;
    c.output_dropout = 0.3;
    c.variational = true;
    if (cell->recurrent_matrix()) c.weight_drop = 0.4;
    c.ar = 2;
    c.tar = 1;
    cases.push_back({c, Feedback::kBptt, name + " variational, weight drop, AR, TAR"});
    c = LanguageModel(*cell, 7, 0, kH, 2);
    c.input_dropout = 0.3;
    c.output_dropout = 0.2;
    c.residual = true;
    c.tar = 3;
    cases.push_back({c, Feedback::kBptt, name + " input and output dropout, residual, TAR"});
    // The regularisers of the time loop (masks drawn once per chunk), with layer norm where the
    // cell has it.
    c = LanguageModel(*cell, 7, 0, kH, 2, 0.2);
    c.recurrent_dropout = cell->recurrent_matrix() ? 0.3 : 0.0;
    c.zoneout = 0.25;
    c.zoneout_cell = cell->cell_state ? 0.2 : 0.0;
    c.layer_norm = cell->layer_norm();
    cases.push_back({c, Feedback::kBptt, name + " recurrent dropout, zoneout"});
  }
  for (const Feedback rule : {Feedback::kFa, Feedback::kDfa}) {
    cases.push_back({LanguageModel(*FindCell("lstm"), 7, 0, kH, 2, 0.2), rule,
                     "lstm " + std::string(FeedbackName(rule))});
    ModelConfig c = LanguageModel(*FindCell("gru"), 7, 0, kH, 2);
    c.weight_drop = 0.3;
    c.ar = 1;
    cases.push_back({c, rule, "gru weight drop, AR, " + std::string(FeedbackName(rule))});
  }
  return cases;
}

template <typename S>
Batch<S> RandomBatch(const ModelConfig& c, Rng& rng) {
  Batch<S> batch;
  batch.T = kT;
  batch.B = kB;
  if (c.dense_input()) {
    batch.dense.resize(c.input_size, kT * kB);
    for (Eigen::Index i = 0; i < batch.dense.size(); ++i) batch.dense(i) = static_cast<S>(rng.Uniform(-1, 1));
  } else {
    batch.ids.resize(kT * kB);
    for (Eigen::Index i = 0; i < batch.ids.size(); ++i) batch.ids(i) = static_cast<int32_t>(rng.Below(c.vocab_size));
  }
  if (c.head == Head::kRegression) {
    batch.values.resize(c.output_size, kT * kB);
    for (Eigen::Index i = 0; i < batch.values.size(); ++i) batch.values(i) = static_cast<S>(rng.Uniform(-1, 1));
  } else {
    batch.classes.resize(kT * kB);
    for (Eigen::Index i = 0; i < batch.classes.size(); ++i)
      batch.classes(i) = static_cast<int32_t>(rng.Below(c.output_size));
  }
  return batch;
}

template <typename S>
State<S> RandomState(const ModelConfig& c, Rng& rng) {
  State<S> s = State<S>::Zeros(c, kB);
  for (auto* part : {&s.h, &s.c})
    for (Mat<S>& m : *part)
      for (Eigen::Index i = 0; i < m.size(); ++i) m(i) = static_cast<S>(rng.Uniform(-0.5, 0.5));
  return s;
}

// Everything a training step computes from one chunk.
template <typename S>
struct ChunkRun {
  Mat<S> outputs;
  State<S> final_state, dinitial;
  ModelParams<S> grads;
  ModelParams<S> grads_again;  // a second Backward over the same cache (as Align does)
};

template <typename S>
ChunkRun<S> RunChunk(const Case& k, int checkpoint_steps, int threads) {
  const ModelConfig& c = k.config;
  Rng rng(11);
  ModelParams<S> params = ModelParams<S>::Zeros(c);
  Initialize(c, InitOptions{}, rng, params);
  const FeedbackMatrices<S> feedback = FeedbackMatrices<S>::Draw(k.rule, c, rng);
  const Batch<S> batch = RandomBatch<S>(c, rng);
  const State<S> initial = RandomState<S>(c, rng), dfinal = RandomState<S>(c, rng);
  ModelCache<S> cache;
  cache.checkpoint_steps = checkpoint_steps;
  Rng dropout(12);
  const Compute compute{threads};
  Forward(c, params, batch, initial, cache, compute, &dropout);
  Mat<S> doutputs;
  HeadLoss(c, cache.outputs, batch, &doutputs, threads);
  ChunkRun<S> run;
  run.outputs = cache.outputs;
  run.final_state = State<S>::Zeros(c, kB);
  run.dinitial = State<S>::Zeros(c, kB);
  run.grads = ModelParams<S>::Zeros(c);
  run.grads_again = ModelParams<S>::Zeros(c);
  Backward(c, params, batch, cache, doutputs, &dfinal, run.grads, &run.dinitial, compute, &feedback);
  Backward(c, params, batch, cache, doutputs, &dfinal, run.grads_again, nullptr, compute, &feedback);
  FinalState(c, cache, run.final_state);
  return run;
}

// Every tensor of two runs: equal bit for bit (tolerance 0), or to a relative tolerance.
template <typename S>
void ExpectSame(const Mat<S>& a, const Mat<S>& b, double tolerance, const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows()) << what;
  ASSERT_EQ(a.cols(), b.cols()) << what;
  if (tolerance == 0) {
    for (Eigen::Index i = 0; i < a.size(); ++i)
      ASSERT_EQ(a(i), b(i)) << what << " element " << i << " differs";
  } else {
    const double scale = std::max(1.0, static_cast<double>(b.cwiseAbs().maxCoeff()));
    EXPECT_LE(static_cast<double>((a - b).cwiseAbs().maxCoeff()), tolerance * scale) << what;
  }
}

template <typename S>
void ExpectSameRun(const ChunkRun<S>& a, const ChunkRun<S>& b, double tolerance, const std::string& what) {
  ExpectSame(a.outputs, b.outputs, tolerance, what + ": outputs");
  for (size_t l = 0; l < b.final_state.h.size(); ++l) {
    ExpectSame(a.final_state.h[l], b.final_state.h[l], tolerance, what + ": final h");
    ExpectSame(a.dinitial.h[l], b.dinitial.h[l], tolerance, what + ": dL/dh_0");
  }
  for (size_t l = 0; l < b.final_state.c.size(); ++l) {
    ExpectSame(a.final_state.c[l], b.final_state.c[l], tolerance, what + ": final c");
    ExpectSame(a.dinitial.c[l], b.dinitial.c[l], tolerance, what + ": dL/dc_0");
  }
  std::vector<const Mat<S>*> expected;
  b.grads.ForEach([&](const std::string&, const Mat<S>& m) { expected.push_back(&m); });
  size_t i = 0;
  a.grads.ForEach([&](const std::string& name, const Mat<S>& m) { ExpectSame(m, *expected[i++], tolerance, what + ": " + name); });
  i = 0;
  a.grads_again.ForEach(
      [&](const std::string& name, const Mat<S>& m) { ExpectSame(m, *expected[i++], tolerance, what + ": again " + name); });
}

const int kSteps[] = {1, 3, 4, kT - 1, kT, kAutoCheckpointSteps};

TEST(CheckpointSteps, SegmentsGiveTheGradientOfTheWholeChunkBitForBitInFloat) {
  // Bit for bit where the products' sums run in a fixed order (sgemm.h); to rounding elsewhere.
  const double tolerance = LargeFloatProductsHere() ? 0 : 1e-5;
  for (const Case& k : Cases()) {
    for (const int threads : {1, 3}) {
      const ChunkRun<float> whole = RunChunk<float>(k, 0, threads);
      for (const int K : kSteps) {
        const ChunkRun<float> segmented = RunChunk<float>(k, K, threads);
        ExpectSameRun(segmented, whole, tolerance,
                      k.name + ", K " + std::to_string(K) + ", " + std::to_string(threads) + " threads");
      }
    }
  }
}

TEST(CheckpointSteps, SegmentsGiveTheGradientOfTheWholeChunkInDouble) {
  for (const Case& k : Cases()) {
    const ChunkRun<double> whole = RunChunk<double>(k, 0, 2);
    for (const int K : kSteps) ExpectSameRun(RunChunk<double>(k, K, 2), whole, 1e-12, k.name + ", K " + std::to_string(K));
  }
}

TEST(CheckpointSteps, SegmentLengths) {
  EXPECT_EQ(SegmentSteps(0, 100), 100);
  EXPECT_EQ(SegmentSteps(7, 100), 7);
  EXPECT_EQ(SegmentSteps(500, 100), 100);
  EXPECT_EQ(SegmentSteps(kAutoCheckpointSteps, 4096), 64);
  EXPECT_EQ(SegmentSteps(kAutoCheckpointSteps, 10), 3);
  EXPECT_EQ(SegmentSteps(kAutoCheckpointSteps, 1), 1);
  EXPECT_THROW(SegmentSteps(-5, 100), Error);
}

}  // namespace
}  // namespace bptt
