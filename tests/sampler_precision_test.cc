// The sampler's per-symbol step against the model's forward pass: in float32 it gives the
// forward pass's logits; in bfloat16 (SamplePrecision::kBfloat16) the logits stay within 2% of
// their spread (max - min) of the float32 ones, and greedy decoding picks float32's argmax at
// every position up to near-ties.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

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
  init.scale = 0.3;
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
                       {CellType::kRnnRelu, 1, 33, 7}};

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

TEST(SamplerPrecisionTest, Bfloat16LogitsStayCloseToFloat32) {
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
    Sampler sampler(m.config, m.params, m.vocab);
    const std::vector<int32_t> context = m.vocab.Encode("Pack my box with five dozen liquor jugs");
    const std::vector<float> reference = [&] {
      const std::span<const float> l = sampler.Logits(context, SamplePrecision::kFloat32);
      return std::vector<float>(l.begin(), l.end());
    }();
    const std::span<const float> reduced = sampler.Logits(context, SamplePrecision::kBfloat16);
    const auto [lo, hi] = std::minmax_element(reference.begin(), reference.end());
    const float spread = *hi - *lo;
    ASSERT_GT(spread, 0.5f);
    float worst = 0;
    for (size_t v = 0; v < reference.size(); ++v) worst = std::max(worst, std::abs(reduced[v] - reference[v]));
    EXPECT_LE(worst, 0.02f * spread) << CellName(c.cell) << " H=" << c.hidden;
    EXPECT_GT(worst, 0.0f) << "the bfloat16 path was not taken";
  }
}

TEST(SamplerPrecisionTest, Bfloat16GreedyChoicesAreFloat32ArgmaxesUpToTies) {
  // Greedy text in bfloat16; at every position the symbol it picked must be the float32 argmax
  // of the same context, or within 2% of the logits' spread of it (an untrained model has
  // near-ties, where the two precisions may part ways).
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed);
    Sampler sampler(m.config, m.params, m.vocab);
    SampleOptions o;
    o.prime = "the ";
    o.length = 30;
    o.argmax = true;
    o.precision = SamplePrecision::kBfloat16;
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
          << CellName(c.cell) << " H=" << c.hidden << " position " << t << " of \"" << text << "\"";
    }
  }
}

}  // namespace
}  // namespace bptt
