// The decay study (decay_study.h, `bptt decay`): its option table refuses what would be ignored
// (fresh models' options beside checkpoints only, the tokenizer's without a corpus, --symbols
// with one, the power iteration's without Jacobian lags), labels its models as documented,
// measures a task checkpoint on the task's own sequences (refusing --steps and --corpus for it),
// and writes its files only when asked.
#include "bptt/decay_study.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <filesystem>
#include <sstream>

#include "bptt/error.h"
#include "bptt/options.h"
#include "bptt/trainer.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

const bool kSingleThreaded = [] {
  omp_set_num_threads(1);
  return true;
}();

DecayStudy Study(const nlohmann::json& given) {
  DecayStudy study = ApplyGiven(DecayStudyOptionSpecs(), kAnyCommand, given, DecayStudy());
  study.Validate();
  return study;
}

TEST(DecayStudyOptions, RefuseWhatWouldBeIgnored) {
  EXPECT_EQ(ErrorOf([] { Study({{"checkpoint", "a.safetensors"}, {"hidden", 8}}); }),
            "--hidden describes fresh models (--cell); a checkpoint has its own");
  EXPECT_EQ(ErrorOf([] { Study({{"checkpoint", "a.safetensors"}, {"layer-norm", true}}); }),
            "--layer-norm describes fresh models (--cell); a checkpoint has its own");
  EXPECT_EQ(ErrorOf([] { Study({{"checkpoint", "a.safetensors"}, {"init", "identity"}}); }),
            "--init describes fresh models (--cell); a checkpoint has its own");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm"}, {"unit", "word"}}); }), "--unit applies to --corpus only");
  EXPECT_EQ(ErrorOf([] { Study({{"checkpoint", "a.safetensors"}, {"corpus", "c.txt"}, {"unit", "word"}}); }),
            "--unit describes how fresh models (--cell) read --corpus; a checkpoint has its own vocabulary");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm"}, {"corpus", "c.txt"}, {"symbols", 10}}); }),
            "--symbols does not apply with --corpus, whose symbols are the input");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm"}, {"jacobian-lags", 0}, {"jacobian-batch", 2}}); }),
            "--jacobian-batch does not apply with --jacobian-lags 0 (no Jacobian norms)");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm,lstn"}}); }), "--cell 'lstn' is not one of " + CellNames());
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm,gru"}, {"init", "orthogonal,identity,he"}}); }),
            "--init takes one scheme for all models or one per --cell (2)");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm"}, {"threads", 0}}); }), "--threads must be in [1, 1024], got 0");
  EXPECT_EQ(ErrorOf([] { Study({{"cell", "lstm"}, {"clip-norm", std::nan("")}}); }),
            "--clip-norm must be a finite number, got nan");
  EXPECT_EQ(ErrorOf([] { Study(nlohmann::json::object()); }), "give --cell or --checkpoint (or both)");
  const DecayStudy fine = Study({{"cell", {"rnn-tanh", "lstm"}}, {"init", "orthogonal,identity"}, {"steps", 30}});
  EXPECT_EQ(fine.cells.size(), 2u);
  EXPECT_EQ(fine.inits.back(), InitScheme::kIdentity);
  EXPECT_EQ(fine.steps, 30);
}

TEST(MeasureDecayStudy, LabelsFreshModelsByCellSchemeAndRepeat) {
  const DecayStudy study = Study({{"cell", "lstm,lstm,rnn-tanh,rnn-tanh"},
                                  {"init", "orthogonal,identity,orthogonal,orthogonal"},
                                  {"hidden", 4},
                                  {"layers", 1},
                                  {"steps", 12},
                                  {"batch", 3},
                                  {"jacobian-lags", 0}});
  std::ostringstream log;
  const std::vector<DecayReport> reports = MeasureDecayStudy(study, log);
  ASSERT_EQ(reports.size(), 4u);
  EXPECT_EQ(reports[0].model, "lstm");
  EXPECT_EQ(reports[1].model, "lstm (identity)");
  EXPECT_EQ(reports[2].model, "rnn-tanh");
  EXPECT_EQ(reports[3].model, "rnn-tanh #2");
  EXPECT_EQ(reports[0].T, 12);
  EXPECT_NE(log.str().find("bptt decay: lstm (identity) (lstm, L=1, H=4, T=12, B=3)"), std::string::npos) << log.str();
}

class DecayStudyFiles : public test::TempDirTest {};

TEST_F(DecayStudyFiles, ATaskCheckpointIsMeasuredOnItsTasksSequences) {
  TrainOptions o = TaskDefaults();
  o.task = "adding";
  o.task_length = 20;
  o.model.hidden_size = 6;
  o.max_steps = 2;
  o.eval_every = 2;
  o.test_size = 16;
  o.threads = 1;
  o.out = (dir_ / "adding").string();
  std::ostringstream log;
  Train(o, log, false);
  const std::string checkpoint = (dir_ / "adding" / "latest.safetensors").string();

  std::ostringstream quiet;
  EXPECT_EQ(ErrorOf([&] { MeasureDecayStudy(Study({{"checkpoint", checkpoint}, {"steps", 50}}), quiet); }),
            checkpoint + " was trained on a task; its sequences are the task's, so --steps and --corpus do not apply");
  DecayStudy study = Study({{"checkpoint", checkpoint}, {"batch", 4}, {"jacobian-lags", 3}});
  const std::vector<DecayReport> reports = MeasureDecayStudy(study, quiet);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].model, "adding/latest");
  EXPECT_EQ(reports[0].B, 4);
  EXPECT_GE(reports[0].T, 20);  // the adding problem's sequences: T to T + T/10 steps
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));  // no --out: no files

  study.out = (dir_ / "out").string();
  RunDecayStudy(study, quiet);
  for (const char* file : {"decay.csv", "summary.json", "decay.svg"})
    EXPECT_TRUE(std::filesystem::exists(dir_ / "out" / file)) << file;
}

TEST_F(DecayStudyFiles, ACorpusThatIsNotATextFileIsNamed) {
  EXPECT_EQ(ErrorOf([&] {
              std::ostringstream log;
              MeasureDecayStudy(Study({{"cell", "lstm"}, {"corpus", dir_.string()}}), log);
            }),
            dir_.string() + ": is a directory, not a text file");
}

}  // namespace
}  // namespace bptt
