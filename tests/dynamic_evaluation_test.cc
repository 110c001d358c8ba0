// Dynamic evaluation: with a learning rate of 0 it is the static evaluation to the bit; one
// update is the sgd or rms step of the gradient computed independently; on a text repeating a
// pattern the model has not learned it scores below the static model; the same inputs and threads
// give the same numbers; the trained weights are never written; bad options are refused in one
// line naming the flag.
#include "bptt/dynamic_evaluation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/options.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

// Parameters uniform in [-0.3, 0.3] (test_util.h).
constexpr double kScale = 0.3;
using test::RandomIds;
ModelParams<float> RandomParams(const ModelConfig& config, uint64_t seed) {
  return test::RandomParams(config, seed, kScale);
}

// A vocabulary of V one-character symbols ('a', 'b', ...).
Vocab LetterVocab(int V) {
  std::vector<std::string> symbols;
  for (int v = 0; v < V; ++v) symbols.emplace_back(1, static_cast<char>('a' + v));
  return Vocab(TokenizerOptions(), symbols, std::vector<uint64_t>(symbols.size(), 1));
}

EncodedFile File(std::vector<int32_t> ids) {
  EncodedFile file;
  file.ids = std::move(ids);
  return file;
}

bool SameBits(const ModelParams<float>& a, const ModelParams<float>& b) {
  std::vector<const Mat<float>*> x, y;
  a.ForEach([&x](const std::string&, const Mat<float>& m) { x.push_back(&m); });
  b.ForEach([&y](const std::string&, const Mat<float>& m) { y.push_back(&m); });
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i]->rows() != y[i]->rows() || x[i]->cols() != y[i]->cols() ||
        std::memcmp(x[i]->data(), y[i]->data(), sizeof(float) * static_cast<size_t>(x[i]->size())) != 0)
      return false;
  return true;
}

struct Case {
  const char* cell;
  int embed;
  bool layer_norm;
};

const Case kCases[] = {{"lstm", 0, false}, {"gru", 5, false}, {"rnn-tanh", 0, false},
                       {"mingru", 0, false}, {"lstm", 0, true}};

ModelConfig SmallConfig(const Case& c, int V) {
  ModelConfig config = LanguageModel(*FindCell(c.cell), V, c.embed, 12, 2);
  config.layer_norm = c.layer_norm;
  return config;
}

TEST(DynamicEvaluationTest, LearningRateZeroIsTheStaticEvaluationToTheBit) {
  const int V = 9;
  const Vocab vocab = LetterVocab(V);
  const std::vector<int32_t> ids = RandomIds(307, V, 4);
  for (const Case& c : kCases) {
    const ModelConfig config = SmallConfig(c, V);
    const ModelParams<float> params = RandomParams(config, 6);
    for (const DynamicRule rule : {DynamicRule::kSgd, DynamicRule::kRms}) {
      for (const int k : {1, 20, 500}) {
        SCOPED_TRACE(std::string(c.cell) + " rule " + std::string(DynamicRuleName(rule)) + " k " + std::to_string(k));
        EvalOptions plain;
        plain.seq_len = k;
        plain.threads = 1;
        const TextEvaluation expected = Evaluate(config, params, vocab, File(ids), plain);
        EvalOptions dynamic;
        dynamic.threads = 1;
        dynamic.dynamic.enabled = true;
        dynamic.dynamic.rule = rule;
        dynamic.dynamic.segment = k;
        dynamic.dynamic.lr = 0;
        dynamic.dynamic.decay = 0.5;
        const TextEvaluation r = Evaluate(config, params, vocab, File(ids), dynamic);
        EXPECT_EQ(r.nats_per_symbol, expected.nats_per_symbol);
        ASSERT_TRUE(r.static_nats_per_symbol.has_value());
        EXPECT_EQ(*r.static_nats_per_symbol, expected.nats_per_symbol);
        EXPECT_EQ(r.symbols, ids.size() - 1);
        EXPECT_EQ(r.statistics_symbols, rule == DynamicRule::kRms ? ids.size() : 0u);
        EXPECT_NE(r.method.find("dynamic (" + std::string(DynamicRuleName(rule))), std::string::npos) << r.method;
      }
    }
  }
}

// The gradient of the mean loss of one segment from the zero state, computed here directly.
ModelParams<float> SegmentGradient(const ModelConfig& config, const ModelParams<float>& params,
                                   const std::vector<int32_t>& ids) {
  Batch<float> batch;
  batch.B = 1;
  batch.T = static_cast<Eigen::Index>(ids.size() - 1);
  batch.ids = Eigen::Map<const Ids>(ids.data(), batch.T);
  batch.classes = Eigen::Map<const Ids>(ids.data() + 1, batch.T);
  ModelCache<float> cache;
  Forward(config, params, batch, State<float>::Zeros(config, 1), cache, 1);
  Mat<float> doutputs;
  SoftmaxCrossEntropy<float>(cache.outputs, batch.classes, &doutputs);
  ModelParams<float> grads = ModelParams<float>::Zeros(config);
  Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, 1);
  return grads;
}

TEST(DynamicEvaluationTest, OneUpdateIsTheRuleAppliedToTheSegmentGradient) {
  const int V = 7;
  const std::vector<int32_t> ids = RandomIds(31, V, 2);  // one segment of 30 inputs
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.cell);
    const ModelConfig config = SmallConfig(c, V);
    const ModelParams<float> params = RandomParams(config, 3);
    const ModelParams<float> g = SegmentGradient(config, params, ids);
    DynamicOptions o;
    o.segment = 30;
    o.lr = 0.1;
    o.decay = 0.3;  // the weights start at theta_0: nothing to decay in the first update
    for (const DynamicRule rule : {DynamicRule::kSgd, DynamicRule::kRms}) {
      o.rule = rule;
      DynamicAdapter adapter(config, params, o, 1);
      // rms with the statistics of the same one segment: MS = g^2, so each parameter moves by
      // lr g / (|g| + eps).
      if (rule == DynamicRule::kRms) {
        EXPECT_EQ(adapter.GatherStatistics(ids), 30u);
      }
      adapter.Score(ids);
      ModelParams<float> expected = params;
      std::vector<Mat<float>*> e;
      std::vector<const Mat<float>*> grad;
      expected.ForEach([&e](const std::string&, Mat<float>& m) { e.push_back(&m); });
      g.ForEach([&grad](const std::string&, const Mat<float>& m) { grad.push_back(&m); });
      for (size_t i = 0; i < e.size(); ++i) {
        if (rule == DynamicRule::kSgd) {
          *e[i] -= 0.1f * *grad[i];
        } else {
          e[i]->array() -= 0.1f * grad[i]->array() / (grad[i]->array().abs() + static_cast<float>(kDynamicEpsilon));
        }
      }
      std::vector<const Mat<float>*> got;
      adapter.weights().ForEach([&got](const std::string&, const Mat<float>& m) { got.push_back(&m); });
      for (size_t i = 0; i < e.size(); ++i) EXPECT_LT((*got[i] - *e[i]).cwiseAbs().maxCoeff(), 1e-5f) << i;
      // The update moved the weights (the comparison above is not of two untouched copies).
      EXPECT_FALSE(SameBits(adapter.weights(), params));
      EXPECT_TRUE(SameBits(adapter.trained(), params));
    }
  }
}

TEST(DynamicEvaluationTest, DecayPullsTheWeightsBackToTheTrainedOnes) {
  const int V = 6;
  const ModelConfig config = SmallConfig(kCases[0], V);
  const ModelParams<float> params = RandomParams(config, 5);
  const std::vector<int32_t> first = RandomIds(41, V, 7);
  DynamicOptions o;
  o.rule = DynamicRule::kSgd;
  o.segment = 40;
  o.lr = 0.2;
  o.decay = 1;  // each update starts again from theta_0
  DynamicAdapter adapter(config, params, o, 1);
  adapter.Score(first);
  EXPECT_FALSE(SameBits(adapter.weights(), params));
  // A second text of one segment: theta_2 = theta_1 + (theta_0 - theta_1) - lr g_2 with g_2 at
  // theta_1, which is theta_0 - lr g_2 (to rounding).
  const std::vector<int32_t> second = RandomIds(41, V, 8);
  const ModelParams<float> theta1 = adapter.weights();
  const ModelParams<float> g2 = SegmentGradient(config, theta1, second);
  adapter.Score(second);
  std::vector<const Mat<float>*> got, theta0, grad;
  adapter.weights().ForEach([&got](const std::string&, const Mat<float>& m) { got.push_back(&m); });
  params.ForEach([&theta0](const std::string&, const Mat<float>& m) { theta0.push_back(&m); });
  g2.ForEach([&grad](const std::string&, const Mat<float>& m) { grad.push_back(&m); });
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LT((*got[i] - (*theta0[i] - 0.2f * *grad[i])).cwiseAbs().maxCoeff(), 1e-5f) << i;
}

// A pattern of 6 symbols repeated: a random model does not predict it, a model that adapts as it
// reads learns it within the text.
TEST(DynamicEvaluationTest, AdaptsToARepeatedPatternTheModelHasNotLearned) {
  const int V = 10;
  const Vocab vocab = LetterVocab(V);
  const std::vector<int32_t> pattern = {3, 7, 1, 8, 5, 2};
  std::vector<int32_t> ids;
  for (int r = 0; r < 60; ++r) ids.insert(ids.end(), pattern.begin(), pattern.end());
  for (const Case& c : kCases) {
    ModelConfig config = SmallConfig(c, V);
    config.hidden_size = 16;
    const ModelParams<float> params = RandomParams(config, 9);
    for (const DynamicRule rule : {DynamicRule::kSgd, DynamicRule::kRms}) {
      SCOPED_TRACE(std::string(c.cell) + " " + std::string(DynamicRuleName(rule)));
      EvalOptions o;
      o.threads = 1;
      o.dynamic.enabled = true;
      o.dynamic.rule = rule;
      o.dynamic.segment = 10;
      o.dynamic.lr = rule == DynamicRule::kSgd ? 1 : 0.003;
      o.dynamic.decay = 0.001;
      const TextEvaluation r = Evaluate(config, params, vocab, File(ids), o);
      ASSERT_TRUE(r.static_nats_per_symbol.has_value());
      EXPECT_GT(*r.static_nats_per_symbol, 0.9 * std::log(V));  // static: near chance
      EXPECT_LT(r.nats_per_symbol, *r.static_nats_per_symbol - 0.3);
    }
  }
}

TEST(DynamicEvaluationTest, DivergenceIsAnErrorNamingTheLearningRate) {
  const int V = 10;
  std::vector<int32_t> ids;
  for (int r = 0; r < 60; ++r) ids.insert(ids.end(), {3, 7, 1, 8, 5, 2});
  const ModelConfig config = LanguageModel(*FindCell("mingru"), V, 0, 16, 2);
  DynamicOptions o;
  o.segment = 10;
  o.lr = 0.3;  // rms steps of 0.3 in every parameter at each update
  DynamicAdapter adapter(config, RandomParams(config, 9), o, 1);
  adapter.GatherStatistics(ids);
  const std::string error = ErrorOf([&] { adapter.Score(ids); });
  EXPECT_NE(error.find("dynamic evaluation diverged"), std::string::npos) << error;
  EXPECT_NE(error.find("--dynamic-lr"), std::string::npos) << error;
}

TEST(DynamicEvaluationTest, SameInputsAndThreadsGiveTheSameNumbers) {
  const int V = 8;
  const Vocab vocab = LetterVocab(V);
  const std::vector<int32_t> ids = RandomIds(400, V, 12);
  const ModelConfig config = LanguageModel(*FindCell("lstm"), V, 0, 24, 2);
  const ModelParams<float> params = RandomParams(config, 13);
  const ModelParams<float> copy = params;
  for (const int threads : {1, 2}) {
    EvalOptions o;
    o.threads = threads;
    o.dynamic.enabled = true;
    o.dynamic.segment = 16;
    o.dynamic.lr = 0.01;
    const TextEvaluation a = Evaluate(config, params, vocab, File(ids), o);
    const TextEvaluation b = Evaluate(config, params, vocab, File(ids), o);
    EXPECT_EQ(a.nats_per_symbol, b.nats_per_symbol);
    EXPECT_EQ(*a.static_nats_per_symbol, *b.static_nats_per_symbol);
    EXPECT_NE(a.nats_per_symbol, *a.static_nats_per_symbol);
  }
  EXPECT_TRUE(SameBits(params, copy));  // the trained weights are only read
}

TEST(DynamicEvaluationTest, RmsNeedsItsStatisticsAndALanguageModel) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 5, 0, 8, 1);
  const ModelParams<float> params = RandomParams(config, 1);
  DynamicOptions o;
  DynamicAdapter adapter(config, params, o, 1);
  const std::vector<int32_t> ids = RandomIds(20, 5, 1);
  EXPECT_NE(ErrorOf([&] { adapter.Score(ids); }).find("needs the gradient statistics"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { adapter.GatherStatistics(std::span<const int32_t>(ids).first(1)); }).find("at least 2"),
            std::string::npos);
  ModelConfig task = config;
  task.output_size = 3;
  EXPECT_NE(ErrorOf([&] { DynamicAdapter(task, ModelParams<float>::Zeros(task), o, 1); }).find("language model"),
            std::string::npos);
}

TEST(DynamicEvaluationTest, BadOptionsAreRefusedInOneLineNamingTheFlag) {
  using nlohmann::json;
  const auto refused = [](const json& given) {
    return ErrorOf([&] { ApplyGiven(EvalOptionSpecs(), kAnyCommand, given, EvalOptions()).Validate(); });
  };
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"dynamic-lr", 0.1}}, "--dynamic-lr applies only with --dynamic"},
      {{{"dynamic-segment", 5}}, "--dynamic-segment applies only with --dynamic"},
      {{{"dynamic", true}, {"dynamic-rule", "sgd"}, {"dynamic-stats", "a.txt"}},
       "--dynamic-stats applies only with --dynamic-rule rms"},
      {{{"dynamic", true}, {"dynamic-rule", "sgd"}, {"dynamic-stats-symbols", 100}},
       "--dynamic-stats-symbols applies only with --dynamic-rule rms"},
      {{{"dynamic", true}, {"dynamic-rule", "adam"}}, "--dynamic-rule must be sgd or rms, got 'adam'"},
      {{{"dynamic", true}, {"dynamic-segment", 0}}, "--dynamic-segment must be positive, got 0"},
      {{{"dynamic", true}, {"dynamic-lr", -1}}, "--dynamic-lr must be at least 0"},
      {{{"dynamic", true}, {"dynamic-decay", 2}}, "--dynamic-decay must be in [0, 1]"},
      {{{"dynamic", true}, {"dynamic-stats-symbols", 1}}, "--dynamic-stats-symbols must be at least 2"},
      {{{"dynamic", true}, {"batch", 4}}, "--batch does not apply with --dynamic"},
      {{{"dynamic", true}, {"seq-len", 64}}, "--seq-len does not apply with --dynamic"},
      {{{"dynamic", true}, {"precision", "bf16"}}, "cannot be combined with --precision"},
  };
  for (const auto& [given, message] : cases) {
    const std::string error = refused(given);
    EXPECT_NE(error.find(message), std::string::npos) << given.dump() << ": " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
  EXPECT_EQ(refused({{"dynamic", true}, {"dynamic-rule", "sgd"}, {"dynamic-lr", 0.5}, {"dynamic-segment", 3}}), "");
}

TEST(DynamicEvaluationTest, StatisticsFileErrorsNameTheFlag) {
  const int V = 4;
  const Vocab vocab = LetterVocab(V);
  const ModelConfig config = LanguageModel(*FindCell("lstm"), V, 0, 8, 1);
  const ModelParams<float> params = RandomParams(config, 2);
  EvalOptions o;
  o.threads = 1;
  o.dynamic.enabled = true;
  o.dynamic.stats_file = "/nonexistent/stats.txt";
  const std::string error = ErrorOf([&] { Evaluate(config, params, vocab, File(RandomIds(50, V, 3)), o); });
  EXPECT_NE(error.find("--dynamic-stats /nonexistent/stats.txt: "), std::string::npos) << error;
}

}  // namespace
}  // namespace bptt
