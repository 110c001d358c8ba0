// Block pruning (prune.h): the cubic ramp; which matrices are pruned; a step prunes exactly the
// asked fraction of blocks, those of least norm, keeps them pruned through later updates and
// never unprunes; a pruner rebuilt from the weights continues as the original; and training
// with --prune holds the fraction, chooses best.safetensors among fully pruned models, keeps
// the average pruned, and resumes mid-ramp to the byte of an uninterrupted run.
#include "bptt/prune.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/rng.h"
#include "bptt/trainer.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;

int64_t Blocks(const Mat<float>& m) { return ((m.rows() + 15) / 16) * ((m.cols() + 3) / 4); }

// The fraction that Step leaves: floor(s * blocks) of them.
double Expected(const Mat<float>& m, double s) {
  return std::floor(s * static_cast<double>(Blocks(m))) / static_cast<double>(Blocks(m));
}

ModelParams<float> Initialized(const ModelConfig& config, uint64_t seed) {
  ModelParams<float> p = ModelParams<float>::Zeros(config);
  Rng rng(seed);
  Initialize(config, InitOptions{}, rng, p);
  return p;
}

TEST(PruneTest, TargetRampsCubicallyFromStartToEnd) {
  PruneOptions o{.sparsity = 0.8, .start = 0.2, .end = 0.6};
  EXPECT_EQ(PruneTarget(o, 0.0), 0.0);
  EXPECT_EQ(PruneTarget(o, 0.19), 0.0);
  EXPECT_EQ(PruneTarget(o, 0.2), 0.0);
  EXPECT_NEAR(PruneTarget(o, 0.4), 0.8 * (1 - 0.125), 1e-12);  // halfway: 1 - (1/2)^3
  EXPECT_EQ(PruneTarget(o, 0.6), 0.8);
  EXPECT_EQ(PruneTarget(o, 1.0), 0.8);
  double last = 0;
  for (int k = 0; k <= 100; ++k) {
    const double s = PruneTarget(o, k / 100.0);
    EXPECT_GE(s, last);
    last = s;
  }
  EXPECT_EQ(PruneTarget(PruneOptions{}, 0.9), 0.0);  // off
  PruneOptions at_once{.sparsity = 0.5, .start = 0.3, .end = 0.3};
  EXPECT_EQ(PruneTarget(at_once, 0.29), 0.0);
  EXPECT_EQ(PruneTarget(at_once, 0.3), 0.5);
}

TEST(PruneTest, RefusesBadValuesNamingTheFlag) {
  EXPECT_NE(ErrorOf([] { PruneOptions{.sparsity = 1.0}.Validate(); }).find("--prune must be in [0, 1)"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { PruneOptions{.sparsity = -0.1}.Validate(); }).find("--prune "), std::string::npos);
  EXPECT_NE(ErrorOf([] { PruneOptions{.sparsity = 0.5, .start = 1.5}.Validate(); }).find("--prune-start"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { PruneOptions{.sparsity = 0.5, .start = 0.5, .end = 0.4}.Validate(); }).find("--prune-end"),
            std::string::npos);
  EXPECT_NO_THROW((PruneOptions{.sparsity = 0.9, .start = 0, .end = 1}.Validate()));
}

TEST(PruneTest, PrunesTheRecurrentLayersMatricesThatAStepMultiplies) {
  {  // one-hot input: layer 0's W_ih is a gather, left dense
    const ModelConfig config = LanguageModel(*FindCell("lstm"), 7, 0, 10, 2);
    ModelParams<float> p = ModelParams<float>::Zeros(config);
    const std::vector<Mat<float>*> ms = PrunedMatrices(config, p);
    ASSERT_EQ(ms.size(), 3u);
    EXPECT_EQ(ms[0], &p.layers[0][kWeightHhSlot]);
    EXPECT_EQ(ms[1], &p.layers[1].weight_ih());
    EXPECT_EQ(ms[2], &p.layers[1][kWeightHhSlot]);
  }
  {  // an embedding: its layer-0 product is pruned
    const ModelConfig config = LanguageModel(*FindCell("gru"), 7, 5, 10, 1);
    ModelParams<float> p = ModelParams<float>::Zeros(config);
    const std::vector<Mat<float>*> ms = PrunedMatrices(config, p);
    ASSERT_EQ(ms.size(), 2u);
    EXPECT_EQ(ms[0], &p.layers[0].weight_ih());
  }
  {  // a cell without a recurrent matrix
    const ModelConfig config = LanguageModel(*FindCell("mingru"), 7, 0, 10, 2);
    ModelParams<float> p = ModelParams<float>::Zeros(config);
    const std::vector<Mat<float>*> ms = PrunedMatrices(config, p);
    ASSERT_EQ(ms.size(), 1u);
    EXPECT_EQ(ms[0], &p.layers[1].weight_ih());
  }
}

// Hidden 21: (84, 21) matrices, so the last row and column of blocks are partial.
TEST(PruneTest, AStepPrunesTheBlocksOfLeastNormAndKeepsThemPruned) {
  const ModelConfig config = LanguageModel(*FindCell("lstm"), 7, 0, 21, 2);
  ModelParams<float> p = Initialized(config, 3);
  BlockPruner pruner(config, p);
  EXPECT_EQ(pruner.sparsity(), 0.0);
  const Mat<float> ih0 = p.layers[0].weight_ih(), decoder = p.decoder_weight;
  const Mat<float> before = p.layers[1][kWeightHhSlot];
  pruner.Step(p, 0.4);
  const Mat<float>& hh = p.layers[1][kWeightHhSlot];
  for (Mat<float>* m : PrunedMatrices(config, p)) EXPECT_EQ(BlockSparsity(*m), Expected(*m, 0.4));
  EXPECT_EQ(p.layers[0].weight_ih(), ih0);  // not pruned
  EXPECT_EQ(p.decoder_weight, decoder);
  // Every pruned block's norm (before) is at most every kept block's; kept blocks are unchanged.
  float pruned_max = 0, kept_min = INFINITY;
  for (Eigen::Index j = 0; j < (hh.cols() + 3) / 4; ++j)
    for (Eigen::Index i = 0; i < (hh.rows() + 15) / 16; ++i) {
      const Eigen::Index r = 16 * i, k = 4 * j, rows = std::min<Eigen::Index>(16, hh.rows() - r),
                         cols = std::min<Eigen::Index>(4, hh.cols() - k);
      const float norm = before.block(r, k, rows, cols).squaredNorm();
      if ((hh.block(r, k, rows, cols).array() == 0).all()) {
        pruned_max = std::max(pruned_max, norm);
      } else {
        kept_min = std::min(kept_min, norm);
        EXPECT_EQ(hh.block(r, k, rows, cols), before.block(r, k, rows, cols));
      }
    }
  EXPECT_LE(pruned_max, kept_min);

  // An update moves every weight; the next step zeroes the same blocks again and, asked for
  // less, prunes no fewer.
  const Mat<float> pruned = hh;
  p.layers[1][kWeightHhSlot].array() += 0.01f;
  pruner.Step(p, 0.1);
  EXPECT_EQ(BlockSparsity(hh), Expected(hh, 0.4));
  EXPECT_TRUE(((hh.array() == 0) == (pruned.array() == 0)).all());
  pruner.Step(p, 0.75);
  for (Mat<float>* m : PrunedMatrices(config, p)) EXPECT_EQ(BlockSparsity(*m), Expected(*m, 0.75));
  EXPECT_TRUE(((pruned.array() == 0) <= (hh.array() == 0)).all());  // the first ones stay pruned

  // A pruner rebuilt from the weights (a resumed run) continues as the original.
  ModelParams<float> q = p;
  BlockPruner rebuilt(config, q);
  EXPECT_EQ(rebuilt.sparsity(), pruner.sparsity());
  for (ModelParams<float>* m : {&p, &q}) m->layers[1][kWeightHhSlot].array() -= 0.02f;
  pruner.Step(p, 0.9);
  rebuilt.Step(q, 0.9);
  EXPECT_EQ(p.layers[1][kWeightHhSlot], q.layers[1][kWeightHhSlot]);
  EXPECT_EQ(p.layers[1].weight_ih(), q.layers[1].weight_ih());

  // Apply zeroes the same blocks of other weights (the average).
  ModelParams<float> other = Initialized(config, 4);
  pruner.Apply(other);
  EXPECT_TRUE(((other.layers[1][kWeightHhSlot].array() == 0) == (hh.array() == 0)).all());
}

class PruneTrainingTest : public test::TempDirTest {
 protected:
  // Hidden 21: (84, 21) matrices, their last row and column of blocks partial.
  TrainOptions Options(const std::string& run) {
    TrainOptions o = test::SmallRun(dir_, run);
    o.model.hidden_size = 21;
    o.prune = {.sparsity = 0.8, .start = 0.25, .end = 0.5};
    o.average = ParseAverage("ema:0.9", "--average");
    return o;
  }
  std::ostringstream log_;
};

TEST_F(PruneTrainingTest, HoldsTheFractionAndResumesMidRampExactly) {
  const TrainOptions o = Options("whole");
  ASSERT_EQ(Train(o, log_, false).steps, 24);
  // The same run stopped at step 10 (fraction 10/24, mid-ramp) and resumed.
  TrainOptions cut = Options("cut");
  int steps = 0;
  TrainHooks hooks;
  hooks.stop = [&steps] { return ++steps == 10; };
  const TrainResult first = Train(cut, log_, false, hooks);
  ASSERT_EQ(first.end, TrainEnd::kInterrupted);
  ASSERT_EQ(first.steps, 10);
  const Checkpoint mid = LoadCheckpoint(fs::path(cut.out) / "latest.safetensors", CheckpointUse::kResume);
  const double mid_sparsity = BlockSparsity(mid.params.layers[1][kWeightHhSlot]);
  EXPECT_GT(mid_sparsity, 0.0);
  EXPECT_LT(mid_sparsity, 0.8 - 0.05);
  ASSERT_EQ(Resume(cut.out, nlohmann::json::object(), log_, false).steps, 24);
  for (const char* file : {"latest.safetensors", "best.safetensors"})
    EXPECT_EQ(test::FileBytes(fs::path(o.out) / file), test::FileBytes(fs::path(cut.out) / file)) << file;

  Checkpoint latest = LoadCheckpoint(fs::path(o.out) / "latest.safetensors", CheckpointUse::kResume);
  Checkpoint best = LoadCheckpoint(fs::path(o.out) / "best.safetensors");
  ASSERT_TRUE(latest.training->average.has_value());
  for (ModelParams<float>* p : {&latest.params, &best.params, &latest.training->average->params}) {
    const std::vector<Mat<float>*> ms = PrunedMatrices(latest.config, *p);
    ASSERT_EQ(ms.size(), 3u);
    for (Mat<float>* m : ms) EXPECT_EQ(BlockSparsity(*m), Expected(*m, 0.8));
    EXPECT_EQ(BlockSparsity(p->layers[0].weight_ih()), 0.0);  // one-hot: not pruned
  }
  // best.safetensors comes from a validation after the ramp's end: the step that became step 13
  // started at 12/24 of the run.
  EXPECT_GE(best.step, 13);
  // The metrics name the fraction pruned.
  std::ifstream metrics(fs::path(o.out) / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  double pruned = 0, blocks = 0;
  for (Mat<float>* m : PrunedMatrices(latest.config, latest.params)) {
    pruned += std::floor(0.8 * static_cast<double>(Blocks(*m)));
    blocks += static_cast<double>(Blocks(*m));
  }
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(last).at("sparsity").get<double>(), pruned / blocks);
}

}  // namespace
}  // namespace bptt
