// Initialisers: orthogonality, the statistics of Xavier and He draws, identity, the LSTM
// forget-gate bias, layer norms that start as the identity, and bit-for-bit reproducibility from
// the seed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bptt/init.h"

namespace bptt {
namespace {

TEST(Init, OrthogonalSquareTallAndWide) {
  Rng rng(3);
  for (auto [r, c] : {std::pair{64, 64}, std::pair{80, 32}, std::pair{16, 48}}) {
    const Mat<float> q = RandomOrthogonal<float>(r, c, rng);
    const Mat<float> gram = r >= c ? Mat<float>(q.transpose() * q) : Mat<float>(q * q.transpose());
    EXPECT_LE((gram - Mat<float>::Identity(gram.rows(), gram.cols())).cwiseAbs().maxCoeff(), 1e-5)
        << r << "x" << c;
  }
}

TEST(Init, OrthogonalRecurrentBlocksOfEveryGate) {
  ModelConfig config = LanguageModel(*FindCell("lstm"), 10, 0, 32, 2, 0.0);
  Rng rng(5);
  ModelParams<float> p;
  Initialize(config, InitOptions{}, rng, p);
  for (const auto& layer : p.layers)
    for (int k = 0; k < 4; ++k) {
      const Mat<float> q = layer.tensor("weight_hh").middleRows(k * 32, 32);
      EXPECT_LE((q.transpose() * q - Mat<float>::Identity(32, 32)).cwiseAbs().maxCoeff(), 1e-5);
    }
  // Forget-gate bias: bias_ih = 1, bias_hh = 0 on the f block, zero elsewhere.
  EXPECT_EQ(p.layers[0].tensor("bias_ih").middleRows(32, 32).minCoeff(), 1.0f);
  EXPECT_EQ(p.layers[0].tensor("bias_ih").middleRows(32, 32).maxCoeff(), 1.0f);
  EXPECT_EQ(p.layers[0].tensor("bias_hh").cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_EQ(p.layers[1].tensor("bias_ih").topRows(32).cwiseAbs().maxCoeff(), 0.0f);
}

// Mean and variance of all elements of a matrix.
std::pair<double, double> Moments(const Mat<double>& m) {
  const double mean = m.mean();
  return {mean, (m.array() - mean).square().mean()};
}

TEST(Init, XavierAndHeStatistics) {
  // One GRU layer with E = H = 400: each gate block has fan_in 400, fan_out 400.
  ModelConfig config = LanguageModel(*FindCell("gru"), 400, 0, 400, 1, 0.0);
  Rng rng(11);
  ModelParams<double> p;
  InitOptions o;
  o.scheme = InitScheme::kXavier;
  Initialize(config, o, rng, p);
  auto [mean, var] = Moments(p.layers[0].tensor("weight_hh"));  // 480,000 draws of U(-a, a), a^2 = 6/800
  EXPECT_NEAR(mean, 0.0, 5e-4);
  EXPECT_NEAR(var, (6.0 / 800.0) / 3.0, 0.01 * (6.0 / 800.0) / 3.0);
  EXPECT_LE(p.layers[0].tensor("weight_hh").cwiseAbs().maxCoeff(), std::sqrt(6.0 / 800.0));

  o.scheme = InitScheme::kHe;
  Initialize(config, o, rng, p);
  std::tie(mean, var) = Moments(p.layers[0].weight_ih());  // N(0, 2/400)
  EXPECT_NEAR(mean, 0.0, 5e-4);
  EXPECT_NEAR(var, 2.0 / 400.0, 0.01 * 2.0 / 400.0);
}

TEST(Init, IdentityForReluRnn) {
  ModelConfig config = LanguageModel(*FindCell("rnn-relu"), 8, 0, 16, 2, 0.0);
  Rng rng(1);
  ModelParams<float> p;
  InitOptions o;
  o.scheme = InitScheme::kIdentity;
  Initialize(config, o, rng, p);
  for (const auto& layer : p.layers) EXPECT_TRUE(layer.tensor("weight_hh").isIdentity(0.0f));
  EXPECT_LE(p.layers[0].weight_ih().cwiseAbs().maxCoeff(), 0.01f);
  EXPECT_GT(p.layers[0].weight_ih().cwiseAbs().maxCoeff(), 0.0f);
}

TEST(Init, UniformBound) {
  ModelConfig config = LanguageModel(*FindCell("lstm"), 30, 0, 20, 1, 0.0);
  Rng rng(2);
  ModelParams<float> p;
  InitOptions o;
  o.scheme = InitScheme::kUniform;  // char-rnn: U(-0.08, 0.08)
  Initialize(config, o, rng, p);
  EXPECT_LE(p.layers[0].tensor("weight_hh").cwiseAbs().maxCoeff(), 0.08f);
  EXPECT_GT(p.layers[0].tensor("weight_hh").cwiseAbs().maxCoeff(), 0.07f);
  EXPECT_LE(p.decoder_weight.cwiseAbs().maxCoeff(), 0.08f);
}

TEST(Init, SameSeedSameBitsDifferentSeedDifferentBits) {
  ModelConfig config = LanguageModel(*FindCell("gru"), 12, 6, 10, 2, 0.0);
  for (InitScheme scheme : {InitScheme::kOrthogonal, InitScheme::kXavier, InitScheme::kUniform}) {
    InitOptions o;
    o.scheme = scheme;
    ModelParams<float> a, b, c;
    Rng r1(42), r2(42), r3(43);
    Initialize(config, o, r1, a);
    Initialize(config, o, r2, b);
    Initialize(config, o, r3, c);
    std::vector<const Mat<float>*> bs, cs;
    b.ForEach([&](const std::string&, const Mat<float>& m) { bs.push_back(&m); });
    c.ForEach([&](const std::string&, const Mat<float>& m) { cs.push_back(&m); });
    size_t k = 0;
    a.ForEach([&](const std::string& name, const Mat<float>& m) {
      EXPECT_EQ(std::memcmp(m.data(), bs[k]->data(), m.size() * sizeof(float)), 0) << name;
      if (name.find("weight") != std::string::npos) {
        EXPECT_NE(m, *cs[k]) << name;
      }
      ++k;
    });
  }
}

TEST(Init, LayerNormsStartAsTheIdentityAndTakeNoDraws) {
  // Under every scheme: gains 1 and biases 0, and every other tensor that of the same model
  // without layer norm, bit for bit (the forget-gate bias included).
  for (const char* cell : {"lstm", "gru"})
    for (InitScheme scheme : {InitScheme::kOrthogonal, InitScheme::kXavier, InitScheme::kHe, InitScheme::kUniform,
                              InitScheme::kPytorch, InitScheme::kIdentity}) {
      SCOPED_TRACE(std::string(cell) + " " + std::string(InitName(scheme)));
      ModelConfig config = LanguageModel(*FindCell(cell), 12, 0, 10, 2, 0.0);
      InitOptions o;
      o.scheme = scheme;
      ModelParams<float> plain, normalised;
      Rng r1(42), r2(42);
      Initialize(config, o, r1, plain);
      config.layer_norm = true;
      Initialize(config, o, r2, normalised);
      std::vector<const Mat<float>*> ps;
      plain.ForEach([&](const std::string&, const Mat<float>& m) { ps.push_back(&m); });
      size_t k = 0, norms = 0;
      normalised.ForEachTensor([&](const TensorInfo& tensor, const Mat<float>& m) {
        const std::string& name = tensor.name;
        if (IsNorm(tensor.role)) {
          ++norms;
          const float expected = tensor.role == TensorRole::kNormGain ? 1.0f : 0.0f;
          EXPECT_EQ(m.minCoeff(), expected) << name;
          EXPECT_EQ(m.maxCoeff(), expected) << name;
          return;
        }
        ASSERT_LT(k, ps.size());
        EXPECT_EQ(m, *ps[k++]) << name;
      });
      EXPECT_EQ(k, ps.size());
      EXPECT_EQ(norms, std::string(cell) == "lstm" ? 12u : 8u);
    }
}

TEST(Rng, SaveRestoreContinuesTheSequence) {
  Rng a(9);
  for (int k = 0; k < 10; ++k) a.Next();
  const std::string saved = a.Save();
  const double next = a.Uniform();
  Rng b(0);
  b.Restore(saved);
  EXPECT_EQ(b.Uniform(), next);
  EXPECT_THROW(b.Restore("not a state"), std::runtime_error);
}

}  // namespace
}  // namespace bptt
