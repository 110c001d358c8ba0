// Option tables (options.h): a row's setter refuses a value of the wrong type, out of range or
// not finite, naming the flag; optional values and comma-separated lists; --threads' bounds;
// ApplyGiven sets the given options in the table's order and refuses a given option that does
// not apply, so that no flag is silently ignored; the commands' own tables do the same.
#include "bptt/options.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>

#include "bptt/evaluate.h"
#include "bptt/sampler.h"
#include "bptt/trainer.h"
#include "bptt/vocab.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

struct Example {
  int count = 3;
  double rate = 0.5;
  uint64_t seed = 1;
  std::optional<int> steps;
  std::vector<std::string> names;
  bool fast = false;
  int threads = 0;
};

std::vector<OptionSpec<Example>> ExampleSpecs() {
  using E = Example;
  constexpr OnResume kNone = OnResume::kNone;
  return {Field<E>(kAnyCommand, "count", "", "g", "", kNone, [](E& e) -> auto& { return e.count; }),
          Restrict(Field<E>(kAnyCommand, "rate", "", "g", "", kNone, [](E& e) -> auto& { return e.rate; }),
                   [](const E& e) { return e.fast ? "does not apply with --fast" : ""; }),
          Field<E>(kAnyCommand, "seed", "", "g", "", kNone, [](E& e) -> auto& { return e.seed; }),
          Field<E>(kAnyCommand, "steps", "", "g", "", kNone, [](E& e) -> auto& { return e.steps; }),
          List<E>(kAnyCommand, "names", "", "g", "", kNone, [](E& e) -> auto& { return e.names; },
                  [](const std::string& s) { return s; },
                  [](const std::string& s, const std::string& flag) {
                    if (s == "bad") throw Error(flag + " 'bad' is not a name");
                    return s;
                  }),
          Field<E>(kAnyCommand, "fast", "", "g", "", kNone, [](E& e) -> auto& { return e.fast; }),
          Threads<E>(kAnyCommand, "", "g", "", kNone, [](E& e) -> auto& { return e.threads; }, 0)};
}

Example Apply(const nlohmann::json& given) {
  static const std::vector<OptionSpec<Example>> specs = ExampleSpecs();
  return ApplyGiven<Example>(specs, kAnyCommand, given, Example());
}

TEST(Field, RefusesNonFiniteNumbersNamingTheFlag) {
  EXPECT_EQ(Apply({{"rate", 0.25}}).rate, 0.25);
  EXPECT_EQ(Apply({{"rate", 2}}).rate, 2.0);  // an integer is a number
  EXPECT_EQ(ErrorOf([] { Apply({{"rate", std::nan("")}}); }), "--rate must be a finite number, got nan");
  EXPECT_EQ(ErrorOf([] { Apply({{"rate", std::numeric_limits<double>::infinity()}}); }),
            "--rate must be a finite number, got inf");
  EXPECT_EQ(ErrorOf([] { Apply({{"rate", "fast"}}); }), "--rate must be a number, got \"fast\"");
}

TEST(Field, RefusesIntegersOutOfRangeAndOtherTypes) {
  EXPECT_EQ(Apply({{"count", -7}}).count, -7);
  EXPECT_EQ(ErrorOf([] { Apply({{"count", 1.5}}); }), "--count must be an integer, got 1.5");
  EXPECT_EQ(ErrorOf([] { Apply({{"count", int64_t{1} << 40}}); }),
            "--count must be an integer in [-2147483648, 2147483647], got 1099511627776");
  EXPECT_EQ(ErrorOf([] { Apply({{"seed", -1}}); }), "--seed must be an integer in [0, 18446744073709551615], got -1");
  EXPECT_EQ(Apply({{"seed", std::numeric_limits<uint64_t>::max()}}).seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ErrorOf([] { Apply({{"fast", 1}}); }), "--fast must be true or false, got 1");
}

TEST(Field, AnOptionalValueIsUnsetByNull) {
  static const std::vector<OptionSpec<Example>> specs = ExampleSpecs();
  const auto& steps = *FindOption<Example>(specs, kAnyCommand, "steps");
  Example e;
  EXPECT_TRUE(steps.get(e).is_null());
  steps.set(e, 40);
  EXPECT_EQ(e.steps, 40);
  EXPECT_EQ(steps.get(e), 40);
  steps.set(e, nullptr);
  EXPECT_FALSE(e.steps.has_value());
}

TEST(List, TakesCommaSeparatedNamesOrAnArray) {
  EXPECT_EQ(Apply({{"names", "a,b,,c"}}).names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(Apply({{"names", {"x", "y"}}}).names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(ErrorOf([] { Apply({{"names", "a,bad"}}); }), "--names 'bad' is not a name");
  EXPECT_EQ(ErrorOf([] { Apply({{"names", {1, 2}}}); }), "--names must be a list of strings, got [1,2]");
  static const std::vector<OptionSpec<Example>> specs = ExampleSpecs();
  Example e;
  e.names = {"p", "q"};
  EXPECT_EQ(FindOption<Example>(specs, kAnyCommand, "names")->get(e), "p,q");
}

TEST(Threads, AreBoundedAbove) {
  EXPECT_EQ(Apply({{"threads", 0}}).threads, 0);
  EXPECT_EQ(Apply({{"threads", kMaxThreads}}).threads, kMaxThreads);
  EXPECT_EQ(ErrorOf([] { Apply({{"threads", 1025}}); }), "--threads must be in [0, 1024] (0 = chosen for you), got 1025");
  EXPECT_EQ(ErrorOf([] { Apply({{"threads", -1}}); }), "--threads must be in [0, 1024] (0 = chosen for you), got -1");
  EXPECT_EQ(ErrorOf([] { CheckThreads(0, 1); }), "--threads must be in [1, 1024], got 0");
}

TEST(ApplyGiven, RefusesAGivenOptionThatDoesNotApply) {
  EXPECT_EQ(ErrorOf([] { Apply({{"fast", true}, {"rate", 0.1}}); }), "--rate does not apply with --fast");
  const Example fast = Apply({{"fast", true}});  // --rate not given: nothing to refuse
  EXPECT_TRUE(fast.fast);
  EXPECT_EQ(fast.rate, 0.5);
  EXPECT_EQ(ErrorOf([] { Apply({{"frobnicate", 1}}); }), "--frobnicate is not an option of this command");
}

// The commands' tables: a keyword of the Python module reaches the options through the same
// rows and checks as the flag, so NaN, infinity and absurd thread counts are refused by both.
TEST(CommandTables, RefuseWhatTheCommandLineRefuses) {
  const nlohmann::json nan = std::nan("");
  EXPECT_EQ(ErrorOf([&] { ApplyGiven(TrainOptionSpecs(), kTrainCommand, {{"time-budget", nan}}, TrainOptions()); }),
            "--time-budget must be a finite number, got nan");
  EXPECT_EQ(ErrorOf([&] { ApplyGiven(TrainOptionSpecs(), kTrainCommand, {{"clip-norm", nan}}, TrainOptions()); }),
            "--clip-norm must be a finite number, got nan");
  EXPECT_EQ(ErrorOf([&] { ApplyGiven(SampleOptionSpecs(), kAnyCommand, {{"temperature", nan}}, SampleOptions()); }),
            "--temperature must be a finite number, got nan");
  EXPECT_EQ(ErrorOf([] { ApplyGiven(SampleOptionSpecs(), kAnyCommand, {{"threads", 5000}}, SampleOptions()); }),
            "--threads must be in [0, 1024] (0 = chosen for you), got 5000");
  EXPECT_EQ(ErrorOf([] {
              ApplyGiven(SampleOptionSpecs(), kAnyCommand, {{"argmax", true}, {"top-p", 0.5}}, SampleOptions());
            }),
            "--top-p does not apply with --argmax, which always takes the most probable symbol");
  EXPECT_EQ(ErrorOf([] {
              ApplyGiven(EvalOptionSpecs(), kAnyCommand, {{"precision", "fp32"}, {"seq-len", 8}}, EvalOptions());
            }),
            "--seq-len does not apply with --precision, which scores one symbol at a time");
  const EvalOptions stepwise = ApplyGiven(EvalOptionSpecs(), kAnyCommand, {{"precision", "int8"}}, EvalOptions());
  EXPECT_EQ(stepwise.precision, Precision::kInt8);
}

TEST(TokenizerOptionSpecs, RefuseSettingsThatChangeNothing) {
  const auto nested = Nest<TokenizerOptions>(TokenizerOptionSpecs(), kAnyCommand, "",
                                             [](TokenizerOptions& t) -> auto& { return t; });
  const auto apply = [&nested](const nlohmann::json& given) {
    return ApplyGiven<TokenizerOptions>(nested, kAnyCommand, given, TokenizerOptions());
  };
  EXPECT_EQ(apply({{"unit", "word"}, {"max-vocab", 100}}).max_vocab, 100u);
  EXPECT_EQ(ErrorOf([&] { apply({{"max-vocab", 100}}); }), "--max-vocab applies to --unit word only");
  EXPECT_FALSE(apply({{"no-normalize", false}}).normalize);
  EXPECT_EQ(ErrorOf([&] { apply({{"unit", "byte"}, {"no-normalize", false}}); }),
            "--no-normalize does not apply to --unit byte, which is never normalised");
  EXPECT_EQ(ErrorOf([&] { apply({{"on-invalid", "ignore"}}); }), "--on-invalid must be error or replace, got 'ignore'");
  EXPECT_EQ(ErrorOf([&] { apply({{"unit", "syllable"}}); }),
            "--unit 'syllable' is not one of grapheme, codepoint, byte, word");
}

}  // namespace
}  // namespace bptt
