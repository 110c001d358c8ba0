// Weight averaging: the update is the debiased exponential moving average computed directly;
// --average parses and refuses in one line; training with --average validates the averaged
// weights, keeps them as best.safetensors (which does not resume), and a resumed run ends with
// the weights and average of an uninterrupted one, to the byte.
#include "bptt/average.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/trainer.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;
using test::FileBytes;

TEST(AverageTest, UpdateIsTheDebiasedExponentialMovingAverage) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 5, 0, 4, 1);
  AverageOptions options;
  options.kind = AverageKind::kEma;
  options.decay = 0.8;
  WeightAverage average;
  std::vector<ModelParams<float>> seen;
  Rng rng(3);
  for (int n = 1; n <= 6; ++n) {
    ModelParams<float> weights = ModelParams<float>::Zeros(config);
    Initialize(config, InitOptions(), rng, weights);
    seen.push_back(weights);
    average.Update(options, weights);
    ASSERT_EQ(average.updates, n);
    // sum_k (1 - d) d^(n-k) theta_k / (1 - d^n), in double.
    std::vector<const Mat<float>*> got;
    average.params.ForEach([&got](const std::string&, const Mat<float>& m) { got.push_back(&m); });
    for (size_t i = 0; i < got.size(); ++i) {
      Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(got[i]->rows(), got[i]->cols());
      for (int k = 1; k <= n; ++k) {
        std::vector<const Mat<float>*> theta;
        seen[static_cast<size_t>(k - 1)].ForEach([&theta](const std::string&, const Mat<float>& m) { theta.push_back(&m); });
        expected += (1 - 0.8) * std::pow(0.8, n - k) * theta[i]->cast<double>();
      }
      expected /= 1 - std::pow(0.8, n);
      EXPECT_LT((got[i]->cast<double>() - expected).cwiseAbs().maxCoeff(), 1e-6) << "n " << n << " tensor " << i;
    }
  }
}

// NT-ASGD: nothing is averaged until a validation loss is above the lowest of those more than N
// validations before it; from the next step on, the uniform mean of the weights.
TEST(AverageTest, AsgdTriggersOnANonMonotoneLossThenTakesTheUniformMean) {
  const ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 4, 0, 3, 1);
  AverageOptions options = ParseAverage("asgd:2", "--average");
  WeightAverage average;
  ModelParams<float> weights = ModelParams<float>::Zeros(config);
  for (const double loss : {3.0, 2.0, 2.5, 1.9, 1.95}) {  // 1.95 is not above min(3.0, 2.0): no trigger
    average.Observe(options, loss);
    average.Update(options, weights);
  }
  EXPECT_FALSE(average.triggered);
  EXPECT_EQ(average.updates, 0);
  average.Observe(options, 2.05);  // above min(3.0, 2.0, 2.5) = 2.0: fires
  EXPECT_TRUE(average.triggered);
  for (int n = 1; n <= 3; ++n) {
    weights.decoder_bias.setConstant(static_cast<float>(n));
    average.Update(options, weights);
  }
  EXPECT_EQ(average.updates, 3);
  EXPECT_FLOAT_EQ(average.params.decoder_bias(0), 2.0f);  // (1 + 2 + 3) / 3
  average.Observe(options, 9.0);  // after the trigger: nothing
  EXPECT_TRUE(average.history.empty());
}

TEST(AverageTest, ParsesAndRefusesInOneLine) {
  EXPECT_EQ(ParseAverage("off", "--average").kind, AverageKind::kNone);
  const AverageOptions ema = ParseAverage("ema:0.999", "--average");
  EXPECT_EQ(ema.kind, AverageKind::kEma);
  EXPECT_EQ(ema.decay, 0.999);
  EXPECT_EQ(AverageName(ema), "ema:0.999");
  EXPECT_EQ(AverageName(AverageOptions()), "off");
  const AverageOptions asgd = ParseAverage("asgd:3", "--average");
  EXPECT_EQ(asgd.kind, AverageKind::kAsgd);
  EXPECT_EQ(asgd.nonmono, 3);
  EXPECT_EQ(AverageName(asgd), "asgd:3");
  for (const char* bad : {"ema", "ema:", "ema:1", "ema:0", "ema:-0.5", "ema:0.9x", "swa", "ema:nan", "asgd:",
                          "asgd:0", "asgd:-2", "asgd:2.5", "asgd"}) {
    const std::string error = ErrorOf([&] { ParseAverage(bad, "--average"); });
    EXPECT_NE(error.find("--average must be off, ema:DECAY with DECAY in (0, 1) or asgd:N with N >= 1, got '" + std::string(bad) + "'"),
              std::string::npos)
        << error;
  }
}

class AverageTrainingTest : public test::TempDirTest {
 protected:
  TrainOptions Options(const std::string& run) {
    TrainOptions o = test::SmallRun(dir_, run);
    o.model.dropout = 0.2;
    o.average = ParseAverage("ema:0.9", "--average");
    return o;
  }
  std::ostringstream log_;
};

TEST_F(AverageTrainingTest, AResumedRunEndsWithTheWeightsAndAverageOfAnUninterruptedOne) {
  for (const char* average : {"ema:0.9", "asgd:1"}) {
    SCOPED_TRACE(average);
    TrainOptions o = Options(std::string("whole_") + average);
    o.average = ParseAverage(average, "--average");
    if (o.average.kind == AverageKind::kAsgd) {
      o.eval_every = 1;  // validations at every step and a large rate, so that the loss rises and triggers
      o.lr = 0.05;
    }
    ASSERT_EQ(Train(o, log_, false).steps, 24);
    TrainOptions first = o;
    first.out = (dir_ / (std::string("split_") + average)).string();
    // asgd: cut before its trigger, so that the resumed run carries the validation history on.
    first.max_steps = o.average.kind == AverageKind::kAsgd ? 3 : 10;
    ASSERT_EQ(Train(first, log_, false).steps, first.max_steps);
    ASSERT_EQ(Resume(first.out, {{"max-steps", 24}}, log_, false).steps, 24);
    const Checkpoint a = LoadCheckpoint(fs::path(o.out) / "latest.safetensors", CheckpointUse::kResume);
    ASSERT_TRUE(a.training->average.has_value());
    if (o.average.kind == AverageKind::kEma) {
      EXPECT_EQ(a.training->average->updates, 24);
    } else {
      // Triggered part-way, after the cut at step 3.
      EXPECT_TRUE(a.training->average->triggered);
      EXPECT_GT(a.training->average->updates, 0);
      EXPECT_LT(a.training->average->updates, 21);
    }
    EXPECT_EQ(FileBytes(fs::path(o.out) / "latest.safetensors"), FileBytes(fs::path(first.out) / "latest.safetensors"));
    EXPECT_EQ(FileBytes(fs::path(o.out) / "best.safetensors"), FileBytes(fs::path(first.out) / "best.safetensors"));
    // Changing --average on resume is refused.
    const std::string error =
        ErrorOf([&] { Resume(first.out, {{"max-steps", 30}, {"average", "ema:0.5"}}, log_, false); });
    EXPECT_NE(error.find("--average"), std::string::npos) << error;
  }
}

TEST_F(AverageTrainingTest, ValidationAndBestUseTheAveragedWeights) {
  const TrainOptions o = Options("run");
  const TrainResult result = Train(o, log_, false);
  ASSERT_EQ(result.steps, 24);
  // Every validation logs the averaged model's loss and the weights' own; best is the lowest
  // averaged one.
  std::ifstream metrics(fs::path(o.out) / "metrics.jsonl");
  double lowest = 0;
  int validations = 0;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json m = nlohmann::json::parse(line);
    if (m["val_loss"].is_null()) continue;
    ++validations;
    ASSERT_TRUE(m.contains("val_loss_unaveraged")) << line;
    EXPECT_NE(m["val_loss"].get<double>(), m["val_loss_unaveraged"].get<double>()) << line;
    if (lowest == 0 || m["val_loss"].get<double>() < lowest) lowest = m["val_loss"].get<double>();
  }
  EXPECT_EQ(validations, 5);  // steps 5, 10, 15, 20 and the end
  EXPECT_EQ(result.best_val_loss, lowest);

  const fs::path best = fs::path(o.out) / "best.safetensors";
  const Checkpoint b = LoadCheckpoint(best);
  ASSERT_TRUE(b.training.has_value());
  EXPECT_TRUE(b.training->weights_averaged);
  EXPECT_EQ(b.training->best_val_loss, lowest);
  const std::string error = ErrorOf([&] { LoadCheckpoint(best, CheckpointUse::kResume); });
  EXPECT_NE(error.find("holds the averaged weights"), std::string::npos) << error;
  // latest keeps the weights and, beside them, the average; a best written at the last step
  // holds exactly that average as its weights.
  const Checkpoint latest = LoadCheckpoint(fs::path(o.out) / "latest.safetensors", CheckpointUse::kResume);
  EXPECT_FALSE(latest.training->weights_averaged);
  if (b.step == latest.step) {
    std::vector<const Mat<float>*> avg;
    latest.training->average->params.ForEach([&avg](const std::string&, const Mat<float>& m) { avg.push_back(&m); });
    size_t k = 0;
    b.params.ForEach([&](const std::string& name, const Mat<float>& m) {
      EXPECT_EQ(std::memcmp(m.data(), avg[k++]->data(), sizeof(float) * static_cast<size_t>(m.size())), 0) << name;
    });
  }
  EXPECT_NE(latest.params.decoder_weight, latest.training->average->params.decoder_weight);
}

}  // namespace
}  // namespace bptt
