// Training end to end on a corpus the test writes: the validation loss falls below a stated
// threshold, a resumed run ends with exactly the weights of an uninterrupted one, and a
// diverging run stops without writing a non-finite checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "bptt/checkpoint.h"
#include "bptt/clip.h"
#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/optimizer.h"
#include "bptt/trainer.h"
#include "test_util.h"

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

class TrainerTest : public test::TempDirTest {
 protected:

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

  std::ostringstream log_;
};

using test::FileBytes;

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
    for (const char* key : {"step", "epoch", "train_loss", "val_loss", "lr", "grad_norm", "clip_fraction",
                            "chars_per_s", "wall_s"})
      EXPECT_TRUE(j.contains(key)) << key;
    if (!j["val_loss"].is_null()) {
      EXPECT_EQ(j["val_streams"], 8);  // the validation figure says how it was computed
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
  // summary.json: the best checkpoint scored as one stream over the validation split.
  const auto summary = nlohmann::json::parse(std::ifstream(fs::path(o.out) / "summary.json"));
  EXPECT_EQ(summary["steps"], 300);
  EXPECT_NEAR(summary["best_val_loss"].get<double>(), r.best_val_loss, 1e-12);
  const double one_stream = summary["best_val_loss_one_stream"];
  EXPECT_GT(one_stream, 0.0);
  EXPECT_NEAR(one_stream, r.best_val_loss, 0.1);  // the same model, scored with more context
  EXPECT_EQ(summary, r.summary);
}

// --lr-anneal F: full rate until the run is 1 - F done, then linearly down to zero at its end
// (the rate of step s + 1 from the fraction s / max_steps done before it); the logged "lr" is the
// rate the step took.
TEST_F(TrainerTest, LrAnnealFallsLinearlyToZeroOverTheLastFractionOfTheRun) {
  TrainOptions o = Options(GrammarText(300, 2), "anneal");
  o.max_steps = 10;
  o.lr = 1e-3;
  o.lr_anneal = 0.5;
  o.log_every = 1;
  o.eval_every = 100;
  ASSERT_EQ(Train(o, log_, false).steps, 10);
  std::ifstream in(fs::path(o.out) / "metrics.jsonl");
  std::vector<double> lr;
  for (std::string line; std::getline(in, line);) lr.push_back(nlohmann::json::parse(line)["lr"].get<double>());
  ASSERT_EQ(lr.size(), 10u);
  for (int s = 0; s < 10; ++s) EXPECT_NEAR(lr[s], 1e-3 * std::min(1.0, (1 - s / 10.0) / 0.5), 1e-12) << "step " << s + 1;
  o.lr_anneal = 1.5;
  EXPECT_THROW(o.Validate(), Error);
}

TEST_F(TrainerTest, ResumeContinuesExactly) {
  // Small corpus so that the 24 steps cross epoch boundaries; dropout exercises the RNG state,
  // and so do the other training regularisers (model.h ModelConfig) and those of the time loop
  // (recurrent dropout and zoneout, their masks drawn after the model's), masks included.
  for (const std::string variant : {"", "-regularised", "-loop"}) {
    SCOPED_TRACE(variant.empty() ? "dropout" : variant);
    TrainOptions o = Options(GrammarText(40, 2), "whole" + variant);
    o.model.layers = 2;
    o.model.dropout = 0.25;
    if (variant == "-regularised") {
      o.model.input_dropout = 0.2;
      o.model.output_dropout = 0.3;
      o.model.variational = true;
      o.model.weight_drop = 0.3;
      o.model.ar = 2;
      o.model.tar = 1;
    }
    if (variant == "-loop") {
      o.model.recurrent_dropout = 0.2;
      o.model.zoneout = 0.15;
      o.model.zoneout_cell = o.model.cell->cell_state ? 0.1 : 0.0;
    }
    o.batch = 4;
    o.seq_len = 16;
    o.eval_every = 5;
    o.max_steps = 24;
    const TrainResult whole = Train(o, log_, false);
    ASSERT_EQ(whole.steps, 24);

    TrainOptions first = o;
    first.out = (dir_ / ("split" + variant)).string();
    first.max_steps = 10;  // a multiple of eval_every: no extra validation at the end (trainer.h)
    ASSERT_EQ(Train(first, log_, false).steps, 10);
    const TrainResult resumed = Resume(first.out, {{"max-steps", 24}}, log_, false);
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
    EXPECT_EQ(a.config.weight_drop, o.model.weight_drop);  // stored in the checkpoint
    EXPECT_EQ(a.config.variational, o.model.variational);
    EXPECT_EQ(a.config.tar, o.model.tar);
    EXPECT_EQ(a.config.zoneout, o.model.zoneout);
    EXPECT_EQ(a.config.recurrent_dropout, o.model.recurrent_dropout);
  }
}

// Interrupted (as by Ctrl-C) wherever it happens and resumed, a run ends with the weights and
// the best checkpoint of the uninterrupted run: the validation at the interruption is logged
// but does not choose best.safetensors.
TEST_F(TrainerTest, AnInterruptedAndResumedRunEndsWithTheSameBestCheckpoint) {
  TrainOptions o = Options(GrammarText(300, 6), "whole");
  o.eval_every = 7;
  o.max_steps = 40;
  o.log_every = 1;
  Train(o, log_, false);
  TrainOptions cut = o;
  cut.out = (dir_ / "cut").string();
  std::thread interrupter([&] {
    // Once a few steps are logged: a stop request, as the SIGINT handler makes it.
    for (int i = 0; i < 2000; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::ifstream in(fs::path(cut.out) / "metrics.jsonl");
      if (std::count(std::istreambuf_iterator<char>(in), {}, '\n') >= 3) break;
    }
    RequestStop();
  });
  const TrainResult first = Train(cut, log_, false);
  interrupter.join();
  ASSERT_EQ(first.end, TrainEnd::kInterrupted);
  ASSERT_LT(first.steps, 40);
  const TrainResult rest = Resume(cut.out, nlohmann::json::object(), log_, false);
  ASSERT_EQ(rest.steps, 40);
  EXPECT_EQ(FileBytes(fs::path(o.out) / "best.safetensors"), FileBytes(fs::path(cut.out) / "best.safetensors"))
      << "interrupted at step " << first.steps;
  EXPECT_EQ(FileBytes(fs::path(o.out) / "latest.safetensors"), FileBytes(fs::path(cut.out) / "latest.safetensors"));
}

TEST_F(TrainerTest, ResumeTakesTheOptionsThatMayChangeAndRefusesTheRest) {
  TrainOptions o = Options(GrammarText(300, 7), "policy");
  o.max_steps = 4;
  Train(o, log_, false);
  const auto stored = [&] {
    return LoadCheckpoint(fs::path(o.out) / "latest.safetensors").training->options;
  };
  // Taken: the learning rate, clipping and limits.
  Resume(o.out, {{"lr", 0.01}, {"clip-norm", 2.0}, {"max-steps", 6}}, log_, false);
  EXPECT_EQ(stored()["lr"], 0.01);
  EXPECT_EQ(stored()["clip_norm"], 2.0);
  EXPECT_EQ(LoadCheckpoint(fs::path(o.out) / "latest.safetensors").step, 6);
  // The same value of a fixed option is no change.
  EXPECT_NO_THROW(Resume(o.out, {{"hidden", 48}, {"max-steps", 7}}, log_, false));
  // A different one is refused, naming the flag and the run's value.
  const auto refused = [&](const nlohmann::json& given, const std::string& text) {
    try {
      Resume(o.out, given, log_, false);
      ADD_FAILURE() << "resumed with " << given.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  };
  refused({{"hidden", 64}}, "--hidden cannot be changed on --resume: the run has --hidden 48");
  refused({{"batch", 4}}, "--batch cannot be changed");
  refused({{"seq-len", 8}}, "--seq-len cannot be changed");
  refused({{"dropout", 0.3}}, "--dropout cannot be changed");
  refused({{"cell", "gru"}}, "--cell cannot be changed");
  refused({{"seed", 9}}, "--seed cannot be changed");
  refused({{"out", "elsewhere"}}, "--out cannot be given with --resume");
}

TEST_F(TrainerTest, ATaskRunResumesExactly) {
  TrainOptions o = TaskDefaults();
  o.task = "adding";
  o.task_length = 20;
  o.model.hidden_size = 8;
  o.batch = 4;
  o.test_size = 16;
  o.eval_every = 3;
  o.max_steps = 8;
  o.threads = 1;
  o.out = (dir_ / "task-whole").string();
  const TrainResult whole = Train(o, log_, false);
  ASSERT_EQ(whole.steps, 8);
  TrainOptions first = o;
  first.out = (dir_ / "task-split").string();
  first.max_steps = 3;
  Train(first, log_, false);
  ASSERT_EQ(Resume(first.out, {{"max-steps", 8}}, log_, false).steps, 8);
  const Checkpoint a = LoadCheckpoint(fs::path(o.out) / "latest.safetensors");
  const Checkpoint b = LoadCheckpoint(fs::path(first.out) / "latest.safetensors");
  EXPECT_EQ(a.params.layers[0].tensor("weight_hh"), b.params.layers[0].tensor("weight_hh"));
  EXPECT_EQ(a.params.decoder_weight, b.params.decoder_weight);
  EXPECT_EQ(a.training->chunk, 8u);  // the next batch of the training stream
  EXPECT_EQ(a.training->data, b.training->data);  // the stop criterion's window
  EXPECT_EQ(a.training->data["stop"]["seen"], 32);
  // The model the task needs, and its summary.
  EXPECT_TRUE(a.config.dense_input());
  EXPECT_EQ(a.config.input_size, 2);
  EXPECT_EQ(a.config.head, Head::kRegression);
  EXPECT_EQ(a.config.output_size, 1);
  for (const char* key : {"task", "T", "cell", "seed", "solved", "train_sequences", "test_size", "test_wrong",
                          "test_mse", "baseline"})
    EXPECT_TRUE(whole.summary.contains(key)) << key;
  EXPECT_EQ(whole.summary["train_sequences"], 32);
  EXPECT_EQ(whole.summary["test_size"], 16);
  EXPECT_NEAR(whole.summary["baseline"].get<double>(), 19.0 / 480, 1e-12);
}

TEST_F(TrainerTest, FeedbackAlignmentRecordsItsAngleAndResumesExactly) {
  for (const Feedback rule : {Feedback::kFa, Feedback::kDfa}) {
    TrainOptions o = Options(GrammarText(300, 11), std::string(FeedbackName(rule)) + "-whole");
    o.model.layers = 2;
    o.model.residual = true;
    o.feedback = rule;
    o.eval_every = 3;
    o.max_steps = 6;
    Train(o, log_, false);
    std::ifstream in(fs::path(o.out) / "metrics.jsonl");
    int measured = 0;
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (!j.contains("alignment_deg")) continue;
      ++measured;
      for (const char* name : {"rnn.weight_ih_l0", "rnn.weight_hh_l1", "decoder.weight"}) {
        ASSERT_TRUE(j["alignment_deg"].contains(name)) << name << " " << line;
        const double angle = j["alignment_deg"][name];
        EXPECT_GE(angle, 0.0);
        EXPECT_LE(angle, 180.0);
      }
      EXPECT_LT(j["alignment_deg"]["decoder.weight"].get<double>(), 1e-3);  // its gradient needs no feedback
      EXPECT_GT(j["alignment_deg"]["rnn.weight_hh_l0"].get<double>(), 1.0);
    }
    EXPECT_EQ(measured, 2);
    TrainOptions first = o;
    first.out = (dir_ / (std::string(FeedbackName(rule)) + "-split")).string();
    first.max_steps = 3;
    Train(first, log_, false);
    Resume(first.out, {{"max-steps", 6}}, log_, false);
    const Checkpoint a = LoadCheckpoint(fs::path(o.out) / "latest.safetensors");
    const Checkpoint b = LoadCheckpoint(fs::path(first.out) / "latest.safetensors");
    EXPECT_EQ(a.params.layers[1].tensor("weight_hh"), b.params.layers[1].tensor("weight_hh")) << FeedbackName(rule);
    EXPECT_EQ(a.training->feedback.rule, rule);
    EXPECT_EQ(b.training->feedback.direct.size(), rule == Feedback::kDfa ? 2u : 0u);
    EXPECT_EQ(b.training->feedback.recurrent.size(), rule == Feedback::kFa ? 2u : 0u);
  }
}

TEST_F(TrainerTest, ResumeRefusesADifferentCorpusNamingIt) {
  TrainOptions o = Options(GrammarText(300, 8), "corpus");
  o.max_steps = 3;
  Train(o, log_, false);
  std::ofstream(o.corpus[0]) << GrammarText(300, 9);  // the same symbols, another text
  try {
    Resume(o.out, {{"max-steps", 5}}, log_, false);
    ADD_FAILURE() << "resumed on another corpus";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(o.corpus[0]), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("is not the one this run was trained on"), std::string::npos) << e.what();
  }
}

// A checkpoint whose model has another output size or head than its corpus makes, its tensors
// shaped to fit that model, is refused rather than trained with the wrong shapes.
TEST_F(TrainerTest, ResumeRefusesAModelThatItsDataDoesNotMake) {
  TrainOptions o = Options(GrammarText(100, 10), "shape");
  o.model.hidden_size = 8;
  o.batch = 2;
  o.seq_len = 8;
  o.max_steps = 2;
  Train(o, log_, false);
  const fs::path latest = fs::path(o.out) / "latest.safetensors";
  const Checkpoint ck = LoadCheckpoint(latest, CheckpointUse::kResume);
  for (const Head head : {Head::kSoftmax, Head::kRegression}) {
    Checkpoint changed = ck;
    changed.config.output_size = 3;
    changed.config.head = head;
    changed.params.decoder_weight = ck.params.decoder_weight.topRows(3);
    changed.params.decoder_bias = ck.params.decoder_bias.topRows(3);
    for (auto* slot : {&changed.training->optimizer.slot1, &changed.training->optimizer.slot2}) {
      // The decoder's weight and bias are the last two tensors (ModelParams::ForEach).
      Mat<float>& weight = (*slot)[slot->size() - 2];
      Mat<float>& bias = (*slot)[slot->size() - 1];
      weight = Mat<float>(weight.topRows(3));
      bias = Mat<float>(bias.topRows(3));
    }
    changed.training->options["model"] = ConfigToJson(changed.config);
    SaveCheckpoint(changed, latest);
    try {
      Resume(o.out, {{"max-steps", 3}}, log_, false);
      ADD_FAILURE() << "resumed a model with " << changed.config.output_size << " outputs on a corpus of "
                    << ck.config.vocab_size << " symbols";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not the one its data makes"), std::string::npos) << e.what();
    }
  }
}

// A checkpoint may hold any count: resuming it never overflows the step, optimizer-step or
// epoch count, nor step * batch against --max-sequences.
TEST_F(TrainerTest, ResumeNeverOverflowsTheCountsOfACheckpoint) {
  TrainOptions o = Options(GrammarText(100, 11), "counts");
  o.model.hidden_size = 8;
  o.batch = 2;
  o.seq_len = 8;
  o.max_steps = 2;
  Train(o, log_, false);
  const fs::path latest = fs::path(o.out) / "latest.safetensors";
  const Checkpoint trained = LoadCheckpoint(latest, CheckpointUse::kResume);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // At the end of an epoch, one step short of the largest step count, with the optimizer's
  // count and the epoch at the largest: one more step, and those two stay there.
  const size_t symbols = trained.training->data["corpus"]["symbols"];
  const SymbolRange train = SplitCorpus(symbols, o.val_frac, o.test_frac).train;
  Checkpoint ck = trained;
  ck.step = kMax - 1;
  ck.training->optimizer.step = kMax;
  ck.training->epoch = kMax;
  ck.training->chunk = (train.size() - 1) / o.batch / o.seq_len;
  SaveCheckpoint(ck, latest);
  EXPECT_EQ(Resume(o.out, {{"max-steps", kMax}}, log_, false).steps, kMax);
  const Checkpoint after = LoadCheckpoint(latest, CheckpointUse::kResume);
  EXPECT_EQ(after.training->optimizer.step, kMax);
  EXPECT_EQ(after.training->epoch, kMax);
  EXPECT_EQ(after.training->chunk, 1u);
  // step * batch would overflow: --max-sequences is reached without a step.
  ck = trained;
  ck.step = kMax - 1;
  ck.training->options["max_sequences"] = kMax;
  SaveCheckpoint(ck, latest);
  EXPECT_EQ(Resume(o.out, {{"max-steps", kMax}}, log_, false).steps, kMax - 1);
}

// A file name need not be UTF-8: such a corpus trains, its checkpoints store the path (as its
// bytes) and the run resumes from them.
TEST_F(TrainerTest, ACorpusWhosePathIsNotUtf8TrainsAndResumes) {
  TrainOptions o = Options(GrammarText(100, 12), "latin1");
  const fs::path latin1 = dir_ / "caf\xe9.txt";
  fs::rename(o.corpus[0], latin1);
  o.corpus = {latin1.string()};
  o.model.hidden_size = 8;
  o.batch = 2;
  o.seq_len = 8;
  o.max_steps = 2;
  o.checkpoint_every = 1;
  ASSERT_EQ(Train(o, log_, false).end, TrainEnd::kFinished);
  const Checkpoint ck = LoadCheckpoint(fs::path(o.out) / "latest.safetensors", CheckpointUse::kResume);
  EXPECT_EQ(TrainOptionsFromJson(ck.training->options, "ck").corpus, o.corpus);
  EXPECT_EQ(Resume(o.out, {{"max-steps", 3}}, log_, false).steps, 3);
}

// The options are checked before the corpus is read (which may take minutes), and nothing is
// written for a run that cannot start.
TEST_F(TrainerTest, BadOptionsAreRefusedBeforeTheDataIsReadOrTheDirectoryMade) {
  TrainOptions o = Options(GrammarText(10, 1), "never");
  o.corpus = {(dir_ / "missing.txt").string()};
  o.model.hidden_size = -1;
  EXPECT_EQ(test::ErrorOf([&] { Train(o, log_, false); }), "--hidden must be positive, got -1");
  o.model.hidden_size = 8;
  o.model.layer_norm = true;
  o.model.cell = FindCell("rnn-tanh");
  EXPECT_NE(test::ErrorOf([&] { Train(o, log_, false); }).find("--layer-norm applies to"), std::string::npos);
  o.model.layer_norm = false;
  o.model.hidden_size = 300000;  // its W_hh alone is 360 GB
  EXPECT_NE(test::ErrorOf([&] { Train(o, log_, false); }).find("MiB are available"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.out));
  o.model.hidden_size = 8;  // now the corpus is read, and is missing
  EXPECT_NE(test::ErrorOf([&] { Train(o, log_, false); }).find("missing.txt"), std::string::npos);
}

// Without a run directory, a new one under models/ (of the working directory) named after the
// cell and the time, never one that exists.
TEST_F(TrainerTest, WithoutOutARunMakesANewDirectory) {
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  TrainOptions o = Options(GrammarText(100, 13), "unused");
  o.corpus = {(dir_ / "corpus.txt").string()};
  o.out = "";
  o.model.hidden_size = 8;
  o.max_steps = 1;
  const TrainResult first = Train(o, log_, false);
  const TrainResult second = Train(o, log_, false);
  fs::current_path(cwd);
  EXPECT_EQ(first.dir.parent_path(), fs::path("models"));
  EXPECT_EQ(first.dir.filename().string().rfind("lstm-", 0), 0u) << first.dir;
  EXPECT_NE(first.dir, second.dir);
  EXPECT_TRUE(fs::exists(dir_ / first.dir / "latest.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / second.dir / "latest.safetensors"));
}

TEST_F(TrainerTest, DropoutIsDrawnFromTheSeed) {
  // The trainer's first step, rebuilt from its documented streams: initialisation from
  // Rng(seed), dropout from Rng(StreamSeed(seed, kDropoutStream)).
  for (const uint64_t seed : {1u, 2u}) {
    TrainOptions o = Options(GrammarText(200, 10), "seed" + std::to_string(seed));
    o.model.layers = 2;
    o.model.dropout = 0.5;
    o.seed = seed;
    o.max_steps = 1;
    o.threads = 1;
    Train(o, log_, false);
    const Checkpoint trained = LoadCheckpoint(fs::path(o.out) / "latest.safetensors");

    ModelConfig config = trained.config;
    ModelParams<float> params, grads = ModelParams<float>::Zeros(config);
    Rng init(seed);
    Initialize(config, o.init, init, params);
    const EncodedCorpus corpus = EncodedCorpus::Build(ListCorpusFiles(o.corpus).files, o.tokenizer, dir_ / "ids");
    BatchStream stream(corpus, SplitCorpus(corpus.size(), o.val_frac, 0).train, o.batch, o.seq_len);
    Batch<float> batch;
    batch.B = o.batch;
    batch.T = stream.Next(batch.ids, batch.classes);
    Rng dropout(StreamSeed(seed, kDropoutStream));
    ModelCache<float> cache;
    Forward(config, params, batch, State<float>::Zeros(config, o.batch), cache, 1, &dropout);
    Mat<float> d;
    HeadLoss(config, cache.outputs, batch, &d, 1);
    Backward(config, params, batch, cache, d, nullptr, grads, nullptr, 1);
    ClipGradNorm(grads, o.clip_norm);
    OptimizerState<float> adam;
    OptimizerStep(o.optimizer, o.lr, params, grads, adam, 1);
    EXPECT_EQ(params.layers[1].weight_ih(), trained.params.layers[1].weight_ih()) << "seed " << seed;
  }
  // Two seeds, the same weights: different masks.
  const ModelConfig config = LanguageModel(DefaultCell(), 5, 0, 16, 3, 0.5);
  ModelParams<float> params;
  Rng init(1);
  Initialize(config, InitOptions{}, init, params);
  Batch<float> batch;
  batch.T = 4;
  batch.B = 2;
  batch.ids = Ids::Zero(8);
  ModelCache<float> a, b;
  Rng one(StreamSeed(1, kDropoutStream)), two(StreamSeed(2, kDropoutStream));
  Forward(config, params, batch, State<float>::Zeros(config, 2), a, 1, &one);
  Forward(config, params, batch, State<float>::Zeros(config, 2), b, 1, &two);
  EXPECT_NE(a.dropout_mask[0], b.dropout_mask[0]);
  EXPECT_NE(a.dropout_mask[1], b.dropout_mask[1]);
}

TEST_F(TrainerTest, NonFiniteWeightsStopTheRunAtTheStepTheyAppear) {
  // A plain SGD step with a learning rate beyond float's range (it rounds to infinity) turns the
  // weights non-finite while the step's own loss and gradient are finite; with no checkpoint due,
  // the check after every update stops the run there and then.
  TrainOptions o = Options(GrammarText(300, 3), "weights");
  o.optimizer.type = OptimizerType::kSgd;
  o.lr = 1e300;
  o.clip_norm = 0;
  o.checkpoint_every = 1000;
  o.max_steps = 50;
  const TrainResult r = Train(o, log_, false);
  ASSERT_EQ(r.end, TrainEnd::kDiverged);
  EXPECT_NE(r.message.find("the weights became non-finite at step 1"), std::string::npos) << r.message;
  EXPECT_FALSE(fs::exists(fs::path(o.out) / "latest.safetensors"));
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

}  // namespace
}  // namespace bptt
