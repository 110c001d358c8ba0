// Training end to end on a corpus the test writes: the validation loss falls below a stated
// threshold, a resumed run ends with exactly the weights of an uninterrupted one, and a
// diverging run stops without writing a non-finite checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <malloc.h>
#include <set>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/clip.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/optimizer.h"
#include "bptt/trainer.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;

// Sentences from a small grammar: learnable structure with some entropy.
std::string GrammarText(size_t sentences, uint64_t seed) {
  const char* subjects[] = {"the cat", "a dog", "my aunt", "the old man", "Zoë"};
  const char* verbs[] = {"sees", "likes", "chases", "paints", "finds"};
  const char* objects[] = {"the moon.", "a red ball.", "the café.", "seven fish.", "the river."};
  Rng rng(seed);
  std::string text;
  for (size_t k = 0; k < sentences; ++k) {
    text += subjects[rng.Below(5)];
    text += ' ';
    text += verbs[rng.Below(5)];
    text += ' ';
    text += objects[rng.Below(5)];
    text += '\n';
  }
  return text;
}

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bptt_trainer_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  TrainOptions Options(const std::string& corpus_text, const std::string& run) {
    const fs::path corpus = dir_ / "corpus.txt";
    std::ofstream(corpus) << corpus_text;
    TrainOptions o;
    o.corpus = {corpus.string()};
    o.out = (dir_ / run).string();
    o.model.hidden_size = 48;
    o.model.layers = 1;
    o.batch = 8;
    o.seq_len = 32;
    o.threads = 2;
    o.val_frac = 0.1;
    return o;
  }

  fs::path dir_;
  std::ostringstream log_;
};

TEST_F(TrainerTest, ValidationLossFallsBelowThreshold) {
  TrainOptions o = Options(GrammarText(1500, 1), "learn");  // ~40 k symbols
  o.max_steps = 300;
  o.eval_every = 100;
  const TrainResult r = Train(o, log_, false);
  EXPECT_EQ(r.end, TrainEnd::kFinished);
  EXPECT_EQ(r.steps, 300);
  // The text has about 26 distinct symbols (ln 26 = 3.26 nats for a uniform guess); the grammar's
  // own entropy is below 0.25 nats per symbol. 300 steps of a 48-unit LSTM reach well under 1.0.
  EXPECT_LT(r.best_val_loss, 1.0) << log_.str();
  EXPECT_GT(r.best_val_loss, 0.0);
  // metrics.jsonl: one object per logged step with the documented keys.
  std::ifstream in(fs::path(o.out) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  double first_val = 0, last_val = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* key : {"step", "epoch", "train_loss", "val_loss", "val_bpc", "lr", "grad_norm",
                            "clip_fraction", "chars_per_s", "wall_s"})
      EXPECT_TRUE(j.contains(key)) << key;
    if (!j["val_loss"].is_null()) {
      if (first_val == 0) first_val = j["val_loss"];
      last_val = j["val_loss"];
      EXPECT_NEAR(j["val_bpc"].get<double>(), j["val_loss"].get<double>() / std::log(2.0), 1e-9);
    }
    ++lines;
  }
  EXPECT_EQ(lines, 300 / 50);
  EXPECT_LT(last_val, first_val);
  const Checkpoint best = LoadCheckpoint(fs::path(o.out) / "best.safetensors");
  EXPECT_NEAR(best.metrics["val_loss"].get<double>(), r.best_val_loss, 1e-12);
}

TEST_F(TrainerTest, ResumeContinuesExactly) {
  // Small corpus so that the 24 steps cross epoch boundaries; dropout exercises the RNG state.
  TrainOptions o = Options(GrammarText(40, 2), "whole");
  o.model.layers = 2;
  o.model.dropout = 0.25;
  o.batch = 4;
  o.seq_len = 16;
  o.eval_every = 5;
  o.max_steps = 24;
  const TrainResult whole = Train(o, log_, false);
  ASSERT_EQ(whole.steps, 24);

  TrainOptions first = o;
  first.out = (dir_ / "split").string();
  first.max_steps = 11;
  ASSERT_EQ(Train(first, log_, false).steps, 11);
  TrainOptions limits;
  limits.max_steps = 24;
  const TrainResult resumed = Resume(first.out, limits, log_, false);
  ASSERT_EQ(resumed.steps, 24);

  const Checkpoint a = LoadCheckpoint(fs::path(o.out) / "latest.safetensors");
  const Checkpoint b = LoadCheckpoint(fs::path(first.out) / "latest.safetensors");
  ASSERT_GT(a.training->epoch, 0);  // the run crossed an epoch boundary
  std::vector<const Mat<float>*> bs;
  b.params.ForEach([&](const std::string&, const Mat<float>& m) { bs.push_back(&m); });
  size_t k = 0;
  a.params.ForEach([&](const std::string& name, const Mat<float>& m) {
    EXPECT_EQ(std::memcmp(m.data(), bs[k++]->data(), sizeof(float) * m.size()), 0) << name;
  });
  EXPECT_EQ(a.training->rng, b.training->rng);
  EXPECT_EQ(a.training->chunk, b.training->chunk);
  EXPECT_EQ(a.training->epoch, b.training->epoch);
  EXPECT_EQ(a.training->best_val_loss, b.training->best_val_loss);
}

std::string FileBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The train_loss column of a run's metrics.jsonl.
std::vector<double> LossCurve(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<double> curve;
  for (std::string line; std::getline(in, line);) curve.push_back(nlohmann::json::parse(line)["train_loss"]);
  return curve;
}

TEST_F(TrainerTest, SameSeedAndThreadsGiveTheSameLossCurveAndCheckpointBytes) {
  TrainOptions o = Options(GrammarText(200, 4), "first");
  o.model.dropout = 0.1;
  o.model.layers = 2;
  o.max_steps = 12;
  o.log_every = 3;
  o.eval_every = 6;
  Train(o, log_, false);
  TrainOptions again = o;
  again.out = (dir_ / "second").string();
  Train(again, log_, false);
  EXPECT_EQ(LossCurve(o.out).size(), 4u);
  EXPECT_EQ(LossCurve(o.out), LossCurve(again.out));
  EXPECT_EQ(FileBytes(fs::path(o.out) / "latest.safetensors"), FileBytes(fs::path(again.out) / "latest.safetensors"));
  EXPECT_EQ(FileBytes(fs::path(o.out) / "best.safetensors"), FileBytes(fs::path(again.out) / "best.safetensors"));
  TrainOptions other_seed = o;
  other_seed.out = (dir_ / "third").string();
  other_seed.seed = 2;
  Train(other_seed, log_, false);
  EXPECT_NE(LossCurve(o.out), LossCurve(other_seed.out));
}

TEST_F(TrainerTest, DivergenceStopsWithoutWritingNonFiniteWeights) {
  // Adam's first step moves each weight by lr / (1 - beta1) = 3e38 here, just below the largest
  // float (3.4e38); the second overflows, and the run must stop there.
  TrainOptions o = Options(GrammarText(300, 3), "diverge");
  o.lr = 3e37;
  o.clip_norm = 0;
  o.checkpoint_every = 1;
  o.max_steps = 50;
  const TrainResult r = Train(o, log_, false);
  ASSERT_EQ(r.end, TrainEnd::kDiverged);
  EXPECT_LT(r.steps, 10);
  EXPECT_NE(r.message.find("diverged"), std::string::npos) << r.message;
  const fs::path latest = fs::path(o.out) / "latest.safetensors";
  ASSERT_TRUE(fs::exists(latest)) << r.message;
  const Checkpoint ck = LoadCheckpoint(latest);  // LoadCheckpoint refuses non-finite weights
  EXPECT_GE(ck.step, 1);
  EXPECT_LE(ck.step, r.steps);
}

TEST_F(TrainerTest, RollbackReloadsLatestAndHalvesTheLearningRate) {
  // As above, the second step overflows; each rollback reloads step 1 with half the learning
  // rate, which still overflows from there, so the run stops after max_rollbacks rollbacks.
  TrainOptions o = Options(GrammarText(300, 3), "rollback");
  o.lr = 3e37;
  o.clip_norm = 0;
  o.checkpoint_every = 1;
  o.max_steps = 50;
  o.rollback_on_divergence = true;
  o.max_rollbacks = 2;
  const TrainResult r = Train(o, log_, false);
  ASSERT_EQ(r.end, TrainEnd::kDiverged);
  const std::string log = log_.str();
  EXPECT_NE(log.find("rolled back to step 1 and halved the learning rate to 1.5e+37 (rollback 1 of 2)"), std::string::npos) << log;
  EXPECT_NE(log.find("halved the learning rate to 7.5e+36 (rollback 2 of 2)"), std::string::npos) << log;
  EXPECT_EQ(log.find("rollback 3"), std::string::npos) << log;
  const Checkpoint ck = LoadCheckpoint(fs::path(o.out) / "latest.safetensors");
  EXPECT_EQ(ck.step, 1);
}

TEST_F(TrainerTest, DecayEveryRecordsTheProfileDuringTraining) {
  TrainOptions o = Options(GrammarText(300, 5), "decay");
  o.max_steps = 12;
  o.decay_every = 6;
  o.decay_steps = 20;
  o.decay_batch = 3;
  Train(o, log_, false);
  std::ifstream csv(fs::path(o.out) / "decay_train.csv");
  std::string header, line;
  std::getline(csv, header);
  EXPECT_EQ(header, "step,layer,quantity,lag,median,relative");
  std::set<std::string> steps;
  int rows = 0;
  while (std::getline(csv, line)) {
    steps.insert(line.substr(0, line.find(',')));
    ++rows;
  }
  EXPECT_EQ(steps, (std::set<std::string>{"6", "12"}));
  EXPECT_EQ(rows, 2 * 2 * 20);  // 2 records x (h and c of the LSTM layer) x 20 lags
  EXPECT_TRUE(fs::exists(fs::path(o.out) / "heatmap.svg"));
}

TEST_F(TrainerTest, TooSmallCorpusIsAClearError) {
  TrainOptions o = Options("tiny corpus\n", "tiny");
  o.max_steps = 1;
  try {
    Train(o, log_, false);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than --batch x --seq-len + 1"), std::string::npos) << e.what();
  }
}

// EstimateTrainingBytes (what the trainer checks against free memory before it allocates, and
// what bench/run compares the peak RSS with) against the heap a training step leaves allocated:
// every buffer of the step (parameters, gradients, Adam's slots, the forward and backward
// caches and the packed weights) lives in caller-owned structs that persist between steps.
TEST(EstimateTrainingBytesTest, MatchesTheHeapATrainingStepHolds) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the sanitizer owns the heap";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "the sanitizer owns the heap";
#endif
#endif
  const auto heap = [] {
    const struct mallinfo2 m = mallinfo2();
    return static_cast<double>(m.uordblks + m.hblkhd);  // small blocks in use + mmapped blocks
  };
  for (const CellType cell : {CellType::kLstm, CellType::kGru, CellType::kRnnTanh}) {
    ModelConfig config;
    config.cell = cell;
    config.vocab_size = 60;
    config.hidden_size = 192;
    config.layers = 2;
    const int T = 48, B = 16;
    const double before = heap();
    {
      ModelParams<float> params = ModelParams<float>::Zeros(config), grads = params;
      Rng rng(5);
      Initialize(config, InitOptions{}, rng, params);
      OptimizerOptions adam;
      OptimizerState<float> slots;
      ModelCache<float> cache;
      Ids inputs(T * B), targets(T * B);
      for (Eigen::Index i = 0; i < inputs.size(); ++i) {
        inputs(i) = static_cast<int32_t>(rng.Below(60));
        targets(i) = static_cast<int32_t>(rng.Below(60));
      }
      State<float> state = State<float>::Zeros(config, B);
      Mat<float> dlogits;
      Forward(config, params, inputs, T, B, state, cache);
      SoftmaxCrossEntropy(cache.logits, targets, &dlogits);
      Backward(config, params, inputs, cache, dlogits, nullptr, grads, nullptr);
      ClipGradNorm(grads, 5.0);
      OptimizerStep(adam, 2e-3, params, grads, slots);
      const double held = heap() - before;
      const double estimate = static_cast<double>(EstimateTrainingBytes(config, T, B, OptimizerSlots(adam)));
      EXPECT_NEAR(held / estimate, 1.0, 0.1) << CellName(cell) << ": heap " << held << " bytes, estimate " << estimate;
    }
  }
}

}  // namespace
}  // namespace bptt
