// Trials (trainer.h TrainTrials, src/trials.h): seeds trained one after another and summarised,
// the caller's hooks honoured in every trial, and a trials directory resumed as one run.
#include "trials.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/trainer.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;

class TrialsTest : public test::TempDirTest {
 protected:
  TrainOptions Copy(const std::string& name) const {
    TrainOptions o = TaskDefaults();
    o.task = "copy";
    o.task_length = 5;
    o.model.hidden_size = 8;
    o.batch = 4;
    o.test_size = 8;
    o.max_steps = 3;
    o.threads = 1;
    o.log_every = 1;
    o.out = (dir_ / name).string();
    return o;
  }

  std::ostringstream log_;
};

TEST_F(TrialsTest, TrialsDifferOnlyInTheSeedAndAreSummarised) {
  const TrainOptions o = Copy("trials");
  const TrainResult r = TrainTrials(o, 3, log_, false);
  ASSERT_EQ(r.summary["runs"].size(), 3u);
  EXPECT_EQ(r.summary["trials"], 3);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(r.summary["runs"][k]["seed"], 1 + k);
    EXPECT_TRUE(fs::exists(fs::path(o.out) / ("seed-" + std::to_string(1 + k)) / "summary.json"));
  }
  const auto& nats = r.summary["stats"]["test_nats"];
  double mean = 0;
  for (int k = 0; k < 3; ++k) mean += r.summary["runs"][k]["test_nats"].get<double>() / 3;
  EXPECT_NEAR(nats["mean"].get<double>(), mean, 1e-12);
  EXPECT_LE(nats["min"].get<double>(), nats["max"].get<double>());
  EXPECT_GT(nats["std"].get<double>(), 0.0);  // different seeds, different models
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(fs::path(o.out) / "summary.json")), r.summary);
}

TEST(TrialStatistics, MeanSampleSpreadAndRange) {
  const nlohmann::json runs = {{{"seed", 1}, {"x", 1.0}, {"name", "a"}}, {{"seed", 2}, {"x", 3.0}}};
  const nlohmann::json stats = TrialStatistics(runs);
  EXPECT_FALSE(stats.contains("seed"));
  EXPECT_FALSE(stats.contains("name"));
  EXPECT_EQ(stats["x"], (nlohmann::json{{"mean", 2.0}, {"std", std::sqrt(2.0)}, {"min", 1.0}, {"max", 3.0}}));
}

// The progress hook sees every trial's lines and the stop hook stops whichever trial runs; the
// trials directory then resumes as one run and ends as the trials would have without a stop.
TEST_F(TrialsTest, HooksReachEveryTrialAndAStoppedTrialsRunResumes) {
  const TrainOptions whole = Copy("whole");
  TrainTrials(whole, 3, log_, false);
  TrainOptions cut = Copy("cut");
  int lines = 0, trial = 0;
  int64_t step = 0;
  TrainHooks hooks;
  hooks.progress = [&](const nlohmann::json& metrics) {
    ++lines;
    step = metrics["step"];
    if (step == 1) ++trial;
  };
  hooks.stop = [&] { return trial == 2 && step == 2; };
  const TrainResult stopped = TrainTrials(cut, 3, log_, false, hooks);
  EXPECT_EQ(stopped.end, TrainEnd::kInterrupted);
  EXPECT_EQ(trial, 2);
  // The first trial's 3 steps and its last line again with the validation at its end, then the
  // second's 2 and its last line again.
  EXPECT_EQ(lines, 4 + 3);
  EXPECT_EQ(stopped.dir, fs::path(cut.out));  // what resumes the trials
  EXPECT_TRUE(fs::exists(fs::path(cut.out) / "seed-1" / "summary.json"));
  EXPECT_EQ(LoadCheckpoint(fs::path(cut.out) / "seed-2" / "latest.safetensors").step, 2);
  EXPECT_FALSE(fs::exists(fs::path(cut.out) / "seed-3"));
  EXPECT_FALSE(fs::exists(fs::path(cut.out) / "summary.json"));
  // A new run into it is refused; a resume continues it.
  EXPECT_NE(ErrorOf([&] { TrainTrials(cut, 3, log_, false); }).find("holds a run already"), std::string::npos);
  const TrainResult resumed = Resume(cut.out, nlohmann::json::object(), log_, false);
  EXPECT_EQ(resumed.end, TrainEnd::kFinished);
  const auto summary = [](const fs::path& dir) { return nlohmann::json::parse(std::ifstream(dir / "summary.json")); };
  EXPECT_EQ(summary(cut.out), summary(whole.out));
  for (const char* trial : {"seed-1", "seed-2", "seed-3"}) {
    const std::string a = (fs::path(cut.out) / trial / "latest.safetensors").string();
    const std::string b = (fs::path(whole.out) / trial / "latest.safetensors").string();
    EXPECT_EQ(LoadCheckpoint(a).params.layers[0].weight_hh(), LoadCheckpoint(b).params.layers[0].weight_hh()) << trial;
  }
}

// --max-sequences (or --max-steps) given on resume takes every unfinished trial further.
TEST_F(TrialsTest, ResumeTakesTheTrialsToNewLimits) {
  const TrainOptions o = Copy("trials");
  TrainTrials(o, 2, log_, false);
  const TrainResult r = Resume(o.out, {{"max-sequences", 20}, {"max-steps", 0}}, log_, false);
  ASSERT_EQ(r.summary["runs"].size(), 2u);
  for (const auto& run : r.summary["runs"]) EXPECT_EQ(run["train_sequences"], 20);
  EXPECT_NE(ErrorOf([&] { Resume(o.out, {{"hidden", 9}}, log_, false); }).find("--hidden cannot be changed"),
            std::string::npos);
}

}  // namespace
}  // namespace bptt
