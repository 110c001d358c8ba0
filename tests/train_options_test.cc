// The training options (train_options.h): their checks, how they are stored in a checkpoint
// (any path a file system allows included) and how --resume applies the given ones.
#include "bptt/train_options.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "bptt/error.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

TrainOptions Valid() {
  TrainOptions o;
  o.corpus = {"corpus.txt"};
  o.out = "run";
  return o;
}

TEST(TrainOptionsJson, AKeyMissingFromAnOlderCheckpointTakesItsDefaultAndAnUnknownOneIsRefused) {
  TrainOptions o;
  o.corpus = {"x.txt"};
  o.lr = 0.01;
  o.model.vocab_size = o.model.output_size = 7;
  nlohmann::json j = TrainOptionsToJson(o);
  j.erase("decay_every");
  j["model"].erase("head");
  j["model"].erase("output_size");
  const TrainOptions back = TrainOptionsFromJson(j, "old.safetensors");
  EXPECT_EQ(back.lr, 0.01);
  EXPECT_EQ(back.decay_every, TrainOptions().decay_every);
  EXPECT_EQ(back.model.head, Head::kSoftmax);
  EXPECT_EQ(back.model.output_size, 7);
  EXPECT_EQ(TrainOptionsToJson(back), TrainOptionsToJson(o));
  j["frobnicate"] = 3;
  try {
    TrainOptionsFromJson(j, "new.safetensors");
    ADD_FAILURE() << "an unknown option was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "new.safetensors: stored options have 'frobnicate', which this bptt does not know");
  }
}

// JSON text is UTF-8; a file name need not be. Such a path is stored as its bytes, read back
// exactly, and a valid path is stored as itself.
TEST(TrainOptionsJson, ACorpusPathThatIsNotUtf8IsStoredAndReadBackExactly) {
  TrainOptions o = Valid();
  o.model.vocab_size = o.model.output_size = 5;
  o.corpus = {"corpora/caf\xe9.txt", "corpora/ok-\xc3\xa9.txt", std::string("a\xff\xfe", 3)};
  const nlohmann::json j = TrainOptionsToJson(o);
  std::string text;
  ASSERT_NO_THROW(text = j.dump());
  EXPECT_EQ(j["corpus"][0], (nlohmann::json{{"bytes", "636f72706f72612f636166e92e747874"},
                                            {"text", "corpora/caf\xef\xbf\xbd.txt"}}));
  EXPECT_EQ(j["corpus"][1], "corpora/ok-\xc3\xa9.txt");
  const TrainOptions back = TrainOptionsFromJson(nlohmann::json::parse(text), "ck");
  EXPECT_EQ(back.corpus, o.corpus);
  // --resume compares the stored corpus with a given one as the same JSON.
  EXPECT_NO_THROW(ApplyOnResume(back, {{"corpus", o.corpus}}));
  EXPECT_NE(ErrorOf([&] { ApplyOnResume(back, {{"corpus", {"other.txt"}}}); }).find("--corpus cannot be changed"),
            std::string::npos);
  nlohmann::json bad = j;
  bad["corpus"][0]["bytes"] = "6g";
  EXPECT_NE(ErrorOf([&] { TrainOptionsFromJson(bad, "ck"); }).find("ck: stored option --corpus"), std::string::npos);
}

TEST(TrainOptionsValidate, NoNumberIsNaNInfiniteOrOutOfRange) {
  EXPECT_NO_THROW(Valid().Validate());
  EXPECT_NO_THROW([] { TrainOptions o = Valid(); o.out = ""; o.Validate(); }());  // a new directory under models/
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const auto refused = [](auto change, const std::string& text) {
    TrainOptions o = Valid();
    change(o);
    const std::string error = ErrorOf([&] { o.Validate(); });
    EXPECT_NE(error.find(text), std::string::npos) << "'" << error << "' lacks '" << text << "'";
  };
  refused([&](TrainOptions& o) { o.clip_norm = nan; }, "--clip-norm must be 0 (off) or positive");
  refused([&](TrainOptions& o) { o.clip_value = inf; }, "--clip-value");
  refused([&](TrainOptions& o) { o.time_budget = nan; }, "--time-budget");
  refused([&](TrainOptions& o) { o.lr = inf; }, "--lr must be positive and finite");
  refused([&](TrainOptions& o) { o.val_frac = nan; }, "--val-frac must be in [0, 1]");
  refused([&](TrainOptions& o) { o.test_frac = 2; }, "--test-frac");
  refused([&](TrainOptions& o) { o.collective_timeout = -1; }, "--collective-timeout");
  refused([&](TrainOptions& o) { o.init.scale = nan; }, "--init-scale");
  refused([&](TrainOptions& o) { o.optimizer.beta2 = nan; }, "--beta2 must be in [0, 1)");
  refused([&](TrainOptions& o) { o.optimizer.eps = inf; }, "--eps");
}

TEST(TrainOptionsValidate, ThreadsHaveAnUpperBound) {
  TrainOptions o = Valid();
  o.threads = kMaxThreads;
  EXPECT_NO_THROW(o.Validate());
  o.threads = kMaxThreads + 1;
  EXPECT_EQ(ErrorOf([&] { o.Validate(); }), "--threads must be in [0, 1024] (0 = chosen for you), got 1025");
  o.threads = -1;
  EXPECT_EQ(ErrorOf([&] { o.Validate(); }), "--threads must be in [0, 1024] (0 = chosen for you), got -1");
}

TEST(TrainOptionsResume, TheLimitsOfATaskMayChangeAndWhatIsNotStoredIsRefused) {
  TrainOptions o = TaskDefaults();
  o.task = "adding";
  o.out = "run";
  const TrainOptions resumed = ApplyOnResume(o, {{"max-sequences", 5000}, {"collective-timeout", 10.0}});
  EXPECT_EQ(resumed.max_sequences, 5000);
  EXPECT_EQ(resumed.collective_timeout, 10.0);
  EXPECT_NE(ErrorOf([&] { ApplyOnResume(o, {{"force", true}}); }).find("--force cannot be given with --resume"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ApplyOnResume(o, {{"T", 50}}); }).find("--T cannot be changed on --resume"),
            std::string::npos);
  // Neither is stored: a checkpoint's bytes do not depend on them.
  const nlohmann::json stored = TrainOptionsToJson(o);
  EXPECT_FALSE(stored.contains("force"));
  EXPECT_FALSE(stored.contains("collective_timeout"));
}

}  // namespace
}  // namespace bptt
