// The run directory (src/run_directory.h): a run never destroys another, one process owns a
// directory at a time, only a run's own stale temporaries are removed, and metrics.jsonl and
// summary.json are replaced whole (by rename), never rewritten in place.
#include "run_directory.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int Lines(const fs::path& path) {
  const std::string text = Read(path);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// A pid that no process has: a child's, after it exited and was reaped.
pid_t GonePid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

class RunDirectoryTest : public test::TempDirTest {
 protected:
  // A small language model run of `steps` steps into dir_/name.
  TrainOptions Run(const std::string& name, int64_t steps) {
    std::string text;
    for (int i = 0; i < 300; ++i) text += "line " + std::to_string(i % 17) + " of a small corpus.\n";
    TrainOptions o;
    o.corpus = {Write("corpus.txt", text).string()};
    o.out = (dir_ / name).string();
    o.model.hidden_size = 8;
    o.model.layers = 1;
    o.batch = 2;
    o.seq_len = 8;
    o.threads = 1;
    o.max_steps = steps;
    o.log_every = 1;
    o.eval_every = 2;
    return o;
  }

  std::ostringstream log_;
};

TEST_F(RunDirectoryTest, ANewRunRefusesADirectoryThatHoldsARunAndLeavesItAsItWas) {
  const TrainOptions o = Run("run", 4);
  Train(o, log_, false);
  const fs::path dir = o.out;
  const std::string metrics = Read(dir / "metrics.jsonl"), best = Read(dir / "best.safetensors");
  ASSERT_EQ(Lines(dir / "metrics.jsonl"), 4);
  TrainOptions again = o;
  again.max_steps = 1;
  const std::string error = ErrorOf([&] { Train(again, log_, false); });
  EXPECT_NE(error.find(o.out + " holds a run already (give --resume " + o.out), std::string::npos) << error;
  EXPECT_NE(error.find("--force to replace it"), std::string::npos) << error;
  EXPECT_EQ(Read(dir / "metrics.jsonl"), metrics);
  EXPECT_EQ(Read(dir / "best.safetensors"), best);
}

TEST_F(RunDirectoryTest, ForceReplacesTheRunAndSaysWhatItReplaced) {
  const TrainOptions o = Run("run", 4);
  Train(o, log_, false);
  TrainOptions again = o;
  again.max_steps = 1;
  again.force = true;
  log_.str("");
  Train(again, log_, false);
  const std::string log = log_.str();
  EXPECT_NE(log.find("--force: replaced the run in " + o.out + ": removed latest.safetensors (step 4), "
                     "best.safetensors, metrics.jsonl (4 lines), summary.json"),
            std::string::npos)
      << log;
  EXPECT_EQ(Lines(fs::path(o.out) / "metrics.jsonl"), 1);
  EXPECT_EQ(LoadCheckpoint(fs::path(o.out) / "latest.safetensors").step, 1);
  // The new run validated at its last step: its own best, not the old one's.
  EXPECT_EQ(LoadCheckpoint(fs::path(o.out) / "best.safetensors").step, 1);
}

TEST_F(RunDirectoryTest, ASecondOwnerIsRefusedNamingTheFirstOnesPid) {
  const fs::path dir = dir_ / "owned";
  {
    RunDirectory owner(dir, RunDirectory::kNew, log_);
    const std::string error = ErrorOf([&] { RunDirectory second(dir, RunDirectory::kResume, log_); });
    EXPECT_NE(error.find(dir.string() + " is in use by another bptt run (pid " + std::to_string(::getpid()) + " on "),
              std::string::npos)
        << error;
    EXPECT_EQ(error.find('\n'), std::string::npos);
    // A run into it is refused the same way, and touches nothing.
    const std::string train = ErrorOf([&] { Train(Run("owned", 2), log_, false); });
    EXPECT_NE(train.find("is in use by another bptt run"), std::string::npos) << train;
    EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));
  }
  // Released with its owner.
  EXPECT_NO_THROW(RunDirectory(dir, RunDirectory::kNew, log_));
}

TEST_F(RunDirectoryTest, OnlyTheStaleTemporariesOfItsOwnFilesAreRemoved) {
  const fs::path dir = dir_ / "run";
  fs::create_directories(dir);
  const std::string gone = std::to_string(GonePid()), alive = std::to_string(::getppid());
  const auto make = [&](const std::string& name) {
    std::ofstream(dir / name) << "x";
    return dir / name;
  };
  const fs::path stale_checkpoint = make(".latest.safetensors.tmp" + gone + "-0");
  const fs::path stale_metrics = make(".metrics.jsonl.tmp" + gone + "-3");
  const fs::path stale_ids = make("corpus.ids.tmp" + gone);
  const fs::path live_checkpoint = make(".latest.safetensors.tmp" + alive + "-0");  // its writer may be running
  const fs::path users = make(".notes.tmp" + gone + "-1");                           // not a file of a run
  const fs::path users_too = make(".latest.safetensors.tmp-mine");
  RunDirectory opened(dir, RunDirectory::kNew, log_);
  EXPECT_FALSE(fs::exists(stale_checkpoint));
  EXPECT_FALSE(fs::exists(stale_metrics));
  EXPECT_FALSE(fs::exists(stale_ids));
  EXPECT_TRUE(fs::exists(live_checkpoint));
  EXPECT_TRUE(fs::exists(users));
  EXPECT_TRUE(fs::exists(users_too));
}

TEST_F(RunDirectoryTest, APathThatCannotBeARunDirectoryIsAOneLineError) {
  const fs::path file = Write("file", "x");
  const std::string error = ErrorOf([&] { RunDirectory(file / "run", RunDirectory::kNew, log_); });
  EXPECT_NE(error.find((file / "run").string() + ": cannot create the run directory"), std::string::npos) << error;
  EXPECT_NE(ErrorOf([&] { RunDirectory(file, RunDirectory::kNew, log_); }).find("not a directory"), std::string::npos);
}

// metrics.jsonl after a crash ends in a torn line; a resume keeps the whole lines up to its
// checkpoint's step, as a new file renamed over the old one: another name of the old file (a
// backup, a reader's open file) keeps every line.
TEST_F(RunDirectoryTest, MetricsAreCutBackByRenameAndATornLineIsDropped) {
  const fs::path dir = dir_ / "run";
  RunDirectory run(dir, RunDirectory::kNew, log_);
  run.StartMetrics();
  for (int step = 1; step <= 4; ++step) run.AppendMetrics({{"step", step}, {"val_loss", nullptr}});
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << R"({"step": 5, "val_lo)";  // torn
  fs::create_hard_link(dir / "metrics.jsonl", dir_ / "backup.jsonl");
  const std::string before = Read(dir_ / "backup.jsonl");
  run.KeepMetricsThrough(2);
  EXPECT_EQ(Read(dir / "metrics.jsonl"), "{\"step\":1,\"val_loss\":null}\n{\"step\":2,\"val_loss\":null}\n");
  EXPECT_EQ(Read(dir_ / "backup.jsonl"), before);
  // The end of a run rewrites its last line (of the same step) with the validation added.
  run.AppendMetrics({{"step", 3}, {"val_loss", nullptr}});
  run.ReplaceLastMetrics({{"step", 3}, {"val_loss", 1.5}});
  EXPECT_EQ(Read(dir / "metrics.jsonl"),
            "{\"step\":1,\"val_loss\":null}\n{\"step\":2,\"val_loss\":null}\n{\"step\":3,\"val_loss\":1.5}\n");
  // A line of another step is appended, not replaced.
  run.ReplaceLastMetrics({{"step", 4}, {"val_loss", 1.0}});
  EXPECT_EQ(Lines(dir / "metrics.jsonl"), 4);
}

TEST_F(RunDirectoryTest, ResumeReplacesSummaryAndMetricsByRename) {
  TrainOptions o = Run("run", 3);
  Train(o, log_, false);
  const fs::path dir = o.out;
  // What a run killed after step 3 may leave: lines past its checkpoint, the last one torn.
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"step\":4}\n{\"step\":5,\"tr";
  fs::create_hard_link(dir / "summary.json", dir_ / "summary.old");
  fs::create_hard_link(dir / "metrics.jsonl", dir_ / "metrics.old");
  const std::string summary = Read(dir / "summary.json"), metrics = Read(dir / "metrics.jsonl");
  Resume(o.out, {{"max-steps", 5}}, log_, false);
  EXPECT_NE(Read(dir / "summary.json"), summary);
  EXPECT_EQ(Read(dir_ / "summary.old"), summary);
  EXPECT_EQ(Read(dir_ / "metrics.old"), metrics);
  EXPECT_EQ(Lines(dir / "metrics.jsonl"), 5);
  for (const std::string& line : {std::string("\"step\":4"), std::string("\"step\":5")})
    EXPECT_NE(Read(dir / "metrics.jsonl").find(line), std::string::npos) << line;
}

// A plot is never worth a run: curves.svg that cannot be written is a warning, and the run ends
// with its checkpoint.
TEST_F(RunDirectoryTest, CurvesThatCannotBeDrawnDoNotStopTheRun) {
  TrainOptions o = Run("run", 4);
  o.checkpoint_every = 1000;
  fs::create_directories(fs::path(o.out) / "curves.svg");  // not a file
  const TrainResult r = Train(o, log_, false);
  EXPECT_EQ(r.end, TrainEnd::kFinished);
  EXPECT_EQ(LoadCheckpoint(fs::path(o.out) / "latest.safetensors").step, 4);
  const std::string log = log_.str();
  EXPECT_NE(log.find("bptt train: warning: " + (fs::path(o.out) / "curves.svg").string() + " not drawn"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("warning", log.find("warning") + 1), std::string::npos) << "said more than once: " << log;
}

// --decay-every: a decay_train.csv that its reader cannot parse (a torn line, an edit) is a
// warning too.
TEST_F(RunDirectoryTest, ADecayProfileThatCannotBeRecordedDoesNotStopTheRun) {
  TrainOptions o = Run("run", 4);
  o.decay_every = 2;
  o.decay_steps = 4;
  o.decay_batch = 1;
  fs::create_directories(fs::path(o.out) / "heatmap.svg");  // cannot be written
  const TrainResult r = Train(o, log_, false);
  EXPECT_EQ(r.end, TrainEnd::kFinished);
  EXPECT_EQ(LoadCheckpoint(fs::path(o.out) / "latest.safetensors").step, 4);
  EXPECT_NE(log_.str().find("warning: the gradient-decay profile of step 2 was not recorded"), std::string::npos)
      << log_.str();
}

}  // namespace
}  // namespace bptt
