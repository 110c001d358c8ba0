// The sampler's per-symbol step against the model's forward pass: in float32 it gives the
// forward pass's logits; in bfloat16 and int8 (SamplePrecision::kBfloat16, kInt8) the logits
// stay within 2% of their spread (max - min) of the float32 ones, and greedy decoding picks
// float32's argmax at every position up to near-ties. Sampler::Score is the mean of the
// forward pass's per-symbol losses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/sampler.h"

namespace bptt {
namespace {

constexpr char kText[] = "the quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n";

struct Model {
  ModelConfig config;
  ModelParams<float> params;
  Vocab vocab;
};

Model MakeModel(CellType cell, int layers, int hidden, int embed) {
  Model m;
  m.vocab = VocabBuilder(TokenizerOptions{}).Add(kText).Build();
  m.config.cell = cell;
  m.config.vocab_size = m.vocab.size();
  m.config.hidden_size = hidden;
  m.config.layers = layers;
  m.config.embed_size = embed;
  m.params = ModelParams<float>::Zeros(m.config);
  Rng rng(11);
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  // 0.3 up to 64 units, then shrinking as 1/sqrt(H): the same recurrent gain at every size.
  // (A larger random network is chaotic, and its trajectory amplifies any rounding: at 0.3 the
  // 200-unit LSTM moves its logits by 1.3% of their spread in bfloat16 and 4.4% in int8.)
  init.scale = 0.3 * std::sqrt(64.0 / std::max(64, hidden));
  Initialize(m.config, init, rng, m.params);
  return m;
}

struct Case {
  CellType cell;
  int layers, hidden, embed;
};

// Sizes with and without whole 16- and 64-row panels, one-hot and embedding input.
const Case kCases[] = {{CellType::kLstm, 2, 64, 0},     {CellType::kLstm, 1, 24, 10},
                       {CellType::kGru, 2, 48, 0},      {CellType::kRnnTanh, 2, 40, 0},
                       {CellType::kRnnRelu, 1, 33, 7},  {CellType::kLstm, 1, 200, 0}};

const SamplePrecision kReduced[] = {SamplePrecision::kBfloat16, SamplePrecision::kInt8};

TEST(SamplerPrecisionTest, Float32StepsGiveTheForwardPassLogits) {
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
    const std::vector<int32_t> context = m.vocab.Encode("the lazy dog jumps over");
    const auto T = static_cast<Eigen::Index>(context.size());
    Ids inputs(T);
    for (Eigen::Index t = 0; t < T; ++t) inputs(t) = context[static_cast<size_t>(t)];
    ModelCache<float> cache;
    Forward(m.config, m.params, inputs, T, 1, State<float>::Zeros(m.config, 1), cache);
    const Eigen::VectorXf expected = cache.logits.col(T - 1);
    Sampler sampler(m.config, m.params, m.vocab);
    const std::span<const float> got = sampler.Logits(context, SamplePrecision::kFloat32);
    ASSERT_EQ(got.size(), static_cast<size_t>(expected.size()));
    const float scale = expected.cwiseAbs().maxCoeff();
    for (size_t v = 0; v < got.size(); ++v)
      EXPECT_NEAR(got[v], expected(static_cast<Eigen::Index>(v)), 1e-5f * scale) << CellName(c.cell) << " v=" << v;
  }
}

TEST(SamplerPrecisionTest, ReducedPrecisionLogitsStayCloseToFloat32) {
  for (const SamplePrecision precision : kReduced) {
    for (const Case& c : kCases) {
      Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
      Sampler sampler(m.config, m.params, m.vocab);
      const std::vector<int32_t> context = m.vocab.Encode("Pack my box with five dozen liquor jugs");
      const std::vector<float> reference = [&] {
        const std::span<const float> l = sampler.Logits(context, SamplePrecision::kFloat32);
        return std::vector<float>(l.begin(), l.end());
      }();
      const std::span<const float> reduced = sampler.Logits(context, precision);
      const auto [lo, hi] = std::minmax_element(reference.begin(), reference.end());
      const float spread = *hi - *lo;
      ASSERT_GT(spread, 0.5f);
      float worst = 0;
      for (size_t v = 0; v < reference.size(); ++v) worst = std::max(worst, std::abs(reduced[v] - reference[v]));
      EXPECT_LE(worst, 0.02f * spread) << PrecisionName(precision) << " " << CellName(c.cell) << " H=" << c.hidden;
      EXPECT_GT(worst, 0.0f) << "the " << PrecisionName(precision) << " path was not taken";
    }
  }
}

TEST(SamplerPrecisionTest, ReducedPrecisionGreedyChoicesAreFloat32ArgmaxesUpToTies) {
  // Greedy text in a reduced precision; at every position the symbol it picked must be the
  // float32 argmax of the same context, or within 2% of the logits' spread of it (an untrained
  // model has near-ties, where the precisions may part ways).
  for (const SamplePrecision precision : kReduced) {
    for (const Case& c : kCases) {
      Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
      Sampler sampler(m.config, m.params, m.vocab);
      SampleOptions o;
      o.prime = "the ";
      o.length = 30;
      o.argmax = true;
      o.precision = precision;
      std::string text;
      sampler.Generate(o, [&text](std::string_view s) { text += s; });
      const std::vector<int32_t> ids = m.vocab.Encode(text);
      ASSERT_EQ(ids.size(), 34u);
      for (size_t t = 4; t < ids.size(); ++t) {
        const std::span<const float> logits =
            sampler.Logits(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(t)),
                           SamplePrecision::kFloat32);
        const auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
        EXPECT_GE(logits[static_cast<size_t>(ids[t])], *hi - 0.02f * (*hi - *lo))
            << PrecisionName(precision) << " " << CellName(c.cell) << " H=" << c.hidden << " position " << t
            << " of \"" << text << "\"";
      }
    }
  }
}

TEST(SamplerPrecisionTest, ScoreIsTheForwardPassLossAndReducedPrecisionsStayNearIt) {
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
    const std::vector<int32_t> ids = m.vocab.Encode(kText);
    const auto T = static_cast<Eigen::Index>(ids.size());
    Ids inputs(T);
    for (Eigen::Index t = 0; t < T; ++t) inputs(t) = ids[static_cast<size_t>(t)];
    ModelCache<float> cache;
    Forward(m.config, m.params, inputs, T, 1, State<float>::Zeros(m.config, 1), cache);
    double expected = 0;  // mean over t < T-1 of -log softmax(z_t)[ids[t+1]], in double
    for (Eigen::Index t = 0; t + 1 < T; ++t) {
      const Eigen::VectorXd z = cache.logits.col(t).cast<double>();
      expected += std::log((z.array() - z.maxCoeff()).exp().sum()) + z.maxCoeff() - z(ids[static_cast<size_t>(t + 1)]);
    }
    expected /= static_cast<double>(T - 1);
    Sampler sampler(m.config, m.params, m.vocab);
    EXPECT_NEAR(sampler.Score(ids, SamplePrecision::kFloat32), expected, 1e-5 * expected) << CellName(c.cell);
    for (const SamplePrecision precision : kReduced)
      EXPECT_NEAR(sampler.Score(ids, precision), expected, 0.01 * expected)
          << PrecisionName(precision) << " " << CellName(c.cell) << " H=" << c.hidden;
  }
}

TEST(SamplerPrecisionTest, ScoreNeedsTwoSymbolsAndPrecisionNamesRoundTrip) {
  Model m = MakeModel(CellType::kLstm, 1, 8, 0);
  Sampler sampler(m.config, m.params, m.vocab);
  EXPECT_THROW(sampler.Score(std::vector<int32_t>{1}, SamplePrecision::kInt8), Error);
  for (const SamplePrecision p : {SamplePrecision::kFloat32, SamplePrecision::kBfloat16, SamplePrecision::kInt8})
    EXPECT_EQ(ParsePrecision(PrecisionName(p), "--precision"), p);
  try {
    ParsePrecision("fp16", "--precision");
    ADD_FAILURE() << "fp16 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "--precision must be fp32, bf16 or int8, got 'fp16'");
  }
}

}  // namespace
}  // namespace bptt
