// Memory-bounded BPTT (model.h ModelCache::checkpoint_steps): for every cell of the registry,
// plain and layer-normalised, with dropout, residual connections, an embedding, a dense input
// with a regression head, the training regularisers (variational dropout, weight drop, AR, TAR),
// recurrent dropout and zoneout, and the feedback-alignment rules, the chunk run in segments of K steps
// (K = 1, 3, a K that does not divide T, T - 1, T and sqrt(T)) gives the same outputs, final
// state, gradients and initial-state gradient as the chunk run with every step kept: bit for bit
// in float on 1 and 3 threads (where the float products run on bptt's kernels), and to
// rounding in double. The sizes are odd, so that a segment's steps sit at other alignments in
// its buffers than in the whole chunk's. The same with fewer segment starts kept than segments
// (recompute.h): the recomputations its schedule says, no more starts kept than its slots, its
// costs the least over every schedule of its form; and what --memory-budget plans. The memory
// the options save: model_test.cc.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/recompute.h"
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
  int64_t recomputed = 0;      // the segments the first Backward recomputed
  int most_kept = 0;           // the most segment starts kept at once, over both Backwards
  int64_t scheduled = -1;      // with fewer slots than segments: the schedule's G(S, m)
};

template <typename S>
ChunkRun<S> RunChunk(const Case& k, int checkpoint_steps, int threads, int slots = 0) {
  const ModelConfig& c = k.config;
  Rng rng(11);
  ModelParams<S> params = ModelParams<S>::Zeros(c);
  Initialize(c, InitOptions{}, rng, params);
  const FeedbackMatrices<S> feedback = FeedbackMatrices<S>::Draw(k.rule, c, rng);
  const Batch<S> batch = RandomBatch<S>(c, rng);
  const State<S> initial = RandomState<S>(c, rng), dfinal = RandomState<S>(c, rng);
  ModelCache<S> cache;
  cache.checkpoint_steps = checkpoint_steps;
  cache.checkpoint_slots = slots;
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
  run.recomputed = cache.recomputed_segments;
  if (cache.schedule.segments() > 0)
    run.scheduled = cache.schedule.Recomputations(cache.schedule.segments(), cache.schedule.slots());
  Backward(c, params, batch, cache, doutputs, &dfinal, run.grads_again, nullptr, compute, &feedback);
  run.most_kept = cache.most_kept_starts;
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

// (K, m): segments of K steps (S = ceil(11 / K) of them) with at most m of their starts kept.
const std::pair<int, int> kSchedules[] = {{1, 1}, {1, 3}, {1, 6}, {2, 2}, {3, 2}, {4, 1}};

TEST(CheckpointSlots, ScheduledRecomputationGivesTheGradientOfTheWholeChunkBitForBitInFloat) {
  const double tolerance = LargeFloatProductsHere() ? 0 : 1e-5;
  for (const Case& k : Cases()) {
    for (const int threads : {1, 3}) {
      const ChunkRun<float> whole = RunChunk<float>(k, 0, threads);
      for (const auto& [K, m] : kSchedules) {
        const std::string what = k.name + ", K " + std::to_string(K) + ", " + std::to_string(m) + " slots, " +
                                 std::to_string(threads) + " threads";
        const ChunkRun<float> scheduled = RunChunk<float>(k, K, threads, m);
        ExpectSameRun(scheduled, whole, tolerance, what);
        // The sweep recomputes what the schedule says, and keeps no more starts than its slots.
        const int S = (kT + K - 1) / K;
        ASSERT_EQ(scheduled.scheduled >= 0, m < S) << what;
        if (m < S) {
          EXPECT_EQ(scheduled.recomputed, scheduled.scheduled) << what;
          EXPECT_LE(scheduled.most_kept, m) << what;
        } else {
          EXPECT_EQ(scheduled.recomputed, S - 1) << what;
        }
      }
    }
  }
}

TEST(CheckpointSlots, ScheduledRecomputationGivesTheGradientOfTheWholeChunkInDouble) {
  for (const Case& k : Cases()) {
    const ChunkRun<double> whole = RunChunk<double>(k, 0, 2);
    for (const auto& [K, m] : kSchedules)
      ExpectSameRun(RunChunk<double>(k, K, 2, m), whole, 1e-12,
                    k.name + ", K " + std::to_string(K) + ", " + std::to_string(m) + " slots");
  }
}

// The least recomputed segments of a sweep of the whole chunk (recompute.h G) by exhaustive
// search over every schedule of that form: every split at every level, without the table.
int64_t LeastForwards(int n, int m);  // F: a sweep starting with nothing in the buffers
int64_t LeastSpine(int n, int m) {    // G
  if (n == 1) return 0;
  if (m == 1) return static_cast<int64_t>(n) * (n - 1) / 2;
  if (m >= n) return n - 1;
  int64_t best = -1;
  for (int y = 1; y < n; ++y) {
    const int64_t c = LeastSpine(n - y, m - 1) + LeastForwards(y, m);
    if (best < 0 || c < best) best = c;
  }
  return best;
}
int64_t LeastForwards(int n, int m) {
  if (n == 1) return 1;
  if (m == 1) return static_cast<int64_t>(n) * (n + 1) / 2;
  if (m >= n) return 2 * n - 1;
  int64_t best = -1;
  for (int y = 1; y < n; ++y) {
    const int64_t c = y + LeastForwards(n - y, m - 1) + LeastForwards(y, m);
    if (best < 0 || c < best) best = c;
  }
  return best;
}

TEST(RecomputeSchedule, CostsAreTheLeastOverEverySchedule) {
  const RecomputeSchedule schedule(13, 12);
  for (int n = 1; n <= 13; ++n)
    for (int m = 1; m <= 12; ++m) EXPECT_EQ(schedule.Recomputations(n, m), LeastSpine(n, m)) << n << " " << m;
  // Known values: one slot recomputes each segment from the start; more slots, fewer.
  EXPECT_EQ(schedule.Recomputations(13, 1), 78);
  EXPECT_EQ(schedule.Recomputations(3, 2), 2);
  EXPECT_EQ(schedule.Recomputations(13, 12), 12);
  for (int m = 1; m < 12; ++m) EXPECT_GE(schedule.Recomputations(13, m), schedule.Recomputations(13, m + 1));
  EXPECT_THROW(RecomputeSchedule(5, 5), Error);
  EXPECT_THROW(RecomputeSchedule(5, 0), Error);
  EXPECT_THROW(RecomputeSchedule(kMaxScheduledSegments + 1, 3), Error);
}

TEST(MemoryBudget, PlanIsTheFewestForwardStepsThatFit) {
  const ModelConfig c = LanguageModel(*FindCell("lstm"), 40, 0, 64, 2);
  const int T = 200, B = 4, slots = 2;
  const uint64_t plain = EstimateTrainingBytes(c, T, B, slots);
  // Every segment length and every number of kept starts, searched without the planner.
  const RecomputeSchedule table(T, T - 1);
  const auto best_within = [&](uint64_t budget) {
    MemoryPlan best;
    if (static_cast<double>(plain) <= kBudgetShare * static_cast<double>(budget)) return MemoryPlan{0, 0, plain, T};
    for (int K = 1; K < T; ++K) {
      const int S = (T + K - 1) / K;
      for (int m = 1; m <= S; ++m) {
        const int kept = m == S ? 0 : m;
        const uint64_t bytes = EstimateTrainingBytes(c, T, B, slots, Precision::kFloat32, K, kept);
        if (static_cast<double>(bytes) > kBudgetShare * static_cast<double>(budget)) continue;
        const int64_t steps = T + (kept == 0 ? S - 1 : table.Recomputations(S, m)) * K;
        if (best.forward_steps == 0 || steps < best.forward_steps ||
            (steps == best.forward_steps && bytes < best.bytes))
          best = {K, kept, bytes, steps};
      }
    }
    return best;
  };
  const uint64_t least = EstimateTrainingBytes(c, T, B, slots, Precision::kFloat32, 1, 1);
  int64_t before = std::numeric_limits<int64_t>::max();
  for (const double f : {0.0, 0.01, 0.03, 0.1, 0.3, 0.6, 0.9, 1.0}) {
    // From the least budget that fits (the estimate at most kBudgetShare of it) to plain BPTT's.
    const uint64_t budget =
        static_cast<uint64_t>((static_cast<double>(least) + f * static_cast<double>(plain - least)) / kBudgetShare) + 1;
    const MemoryPlan plan = PlanMemory(c, T, B, slots, Precision::kFloat32, budget);
    const MemoryPlan best = best_within(budget);
    const std::string what = "budget " + std::to_string(budget);
    EXPECT_LE(static_cast<double>(plan.bytes), kBudgetShare * static_cast<double>(budget)) << what;
    EXPECT_EQ(plan.bytes, EstimateTrainingBytes(c, T, B, slots, Precision::kFloat32, plan.checkpoint_steps, plan.slots))
        << what;
    EXPECT_EQ(plan.forward_steps, best.forward_steps) << what;
    EXPECT_LE(plan.forward_steps, before) << what << ": a larger budget never costs more steps";
    before = plan.forward_steps;
  }
  const MemoryPlan roomy = PlanMemory(c, T, B, slots, Precision::kFloat32, plain * 2);
  EXPECT_EQ(roomy.checkpoint_steps, 0);
  EXPECT_EQ(roomy.forward_steps, T);
  // Below the least: the error says the budget that fits, and that budget does.
  try {
    PlanMemory(c, T, B, slots, Precision::kFloat32, least);
    ADD_FAILURE() << "a budget with no room beside the least estimate was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--memory-budget"), std::string::npos) << what;
    const size_t at = what.find("at least ");
    ASSERT_NE(at, std::string::npos) << what;
    const uint64_t needed = std::stoull(what.substr(at + 9));
    EXPECT_GT(needed, least) << what;
    EXPECT_EQ(PlanMemory(c, T, B, slots, Precision::kFloat32, needed).bytes, least) << what;
    EXPECT_THROW(PlanMemory(c, T, B, slots, Precision::kFloat32, needed - 2), Error) << what;
  }
}

TEST(MemoryBudget, Sizes) {
  EXPECT_EQ(ParseBytes("65536", "--memory-budget"), 65536u);
  EXPECT_EQ(ParseBytes("512M", "--memory-budget"), 512u << 20);
  EXPECT_EQ(ParseBytes("512MiB", "--memory-budget"), 512u << 20);
  EXPECT_EQ(ParseBytes("2kb", "--memory-budget"), 2048u);
  EXPECT_EQ(ParseBytes("1.5G", "--memory-budget"), 3u << 29);
  EXPECT_EQ(ParseBytes("2T", "--memory-budget"), uint64_t{2} << 40);
  for (const char* bad : {"", "M", "abc", "-1", "0.0", "5X", "1e9", "12MM", "0x10"}) {
    try {
      ParseBytes(bad, "--memory-budget");
      ADD_FAILURE() << "'" << bad << "' was read as a size";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--memory-budget"), std::string::npos) << e.what();
    }
  }
  for (const uint64_t b : {uint64_t{1000}, uint64_t{2048}, uint64_t{640} << 20, uint64_t{3} << 30, uint64_t{1536} << 20})
    EXPECT_EQ(ParseBytes(BytesText(b), "--memory-budget"), b) << BytesText(b);
  EXPECT_EQ(BytesText(uint64_t{2} << 30), "2G");
  EXPECT_EQ(BytesText(uint64_t{1536} << 20), "1536M");
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
