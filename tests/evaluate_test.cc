// Evaluation: EvaluateLoss against a direct computation over the same streams in double
// precision, a uniform predictor scoring exactly ln V, and the counting of symbols outside the
// vocabulary when a file is encoded for `bptt eval`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <utility>

#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;

ModelConfig SmallConfig(const char* cell, int V, int embed = 0) {
  // Dropout must be ignored by evaluation.
  return LanguageModel(*FindCell(cell), V, embed, 16, 2, 0.5);
}

// Parameters uniform in [-0.4, 0.4] (test_util.h).
constexpr double kScale = 0.4;
using test::RandomIds;
ModelParams<float> RandomParams(const ModelConfig& config, uint64_t seed) {
  return test::RandomParams(config, seed, kScale);
}

// The mean loss over the range laid out as B streams of Ls = (n - 1) / B inputs, computed
// with one forward pass over each whole stream (T = Ls) in double precision.
double DirectLoss(const ModelConfig& config, const ModelParams<float>& params, const std::vector<int32_t>& ids,
                  SymbolRange range, int B) {
  const size_t Ls = (range.size() - 1) / static_cast<size_t>(B);
  const auto T = static_cast<Eigen::Index>(Ls);
  Batch<double> batch;
  batch.T = T;
  batch.B = B;
  batch.ids.resize(T * B);
  batch.classes.resize(T * B);
  for (Eigen::Index t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b) {
      const size_t at = range.begin + static_cast<size_t>(b) * Ls + static_cast<size_t>(t);
      batch.ids(t * B + b) = ids[at];
      batch.classes(t * B + b) = ids[at + 1];
    }
  }
  const ModelParams<double> p = params.Cast<double>();
  ModelCache<double> cache;
  Forward(config, p, batch, State<double>::Zeros(config, B), cache, 1);
  return SoftmaxCrossEntropy(cache.outputs, batch.classes);
}

TEST(EvaluateTest, LossEqualsDirectComputationOverTheSameStreams) {
  const int V = 11;
  const std::vector<int32_t> ids = RandomIds(500, V, 3);
  for (const char* cell : {"lstm", "gru", "rnn-tanh"}) {
    for (int embed : {0, 5}) {
      const ModelConfig config = SmallConfig(cell, V, embed);
      const ModelParams<float> params = RandomParams(config, 8);
      const EncodedCorpus corpus(ids);
      for (const SymbolRange range : {SymbolRange{0, 500}, SymbolRange{37, 240}}) {
        for (const auto& [B, T] : {std::pair{1, 16}, std::pair{3, 8}, std::pair{4, 100}, std::pair{7, 5}}) {
          const double expected = DirectLoss(config, params, ids, range, B);
          const double loss = EvaluateLoss(config, params, corpus, range, B, T, 1);
          EXPECT_NEAR(loss, expected, 1e-5 * expected)
              << cell << " E=" << embed << " range " << range.begin << ".." << range.end << " B=" << B << " T=" << T;
        }
      }
    }
  }
}

TEST(EvaluateTest, ChunkLengthDoesNotChangeTheLossBecauseTheStateIsCarried) {
  const int V = 9;
  const std::vector<int32_t> ids = RandomIds(400, V, 5);
  const ModelConfig config = SmallConfig("lstm", V);
  const ModelParams<float> params = RandomParams(config, 2);
  const EncodedCorpus corpus(ids);
  const double whole = EvaluateLoss(config, params, corpus, {0, 400}, 2, 199, 1);
  for (int T : {1, 7, 64, 1000}) EXPECT_NEAR(EvaluateLoss(config, params, corpus, {0, 400}, 2, T, 1), whole, 1e-5 * whole) << T;
}

TEST(EvaluateTest, UniformPredictionScoresLnV) {
  for (int V : {2, 10, 65, 300}) {
    const ModelConfig config = SmallConfig("lstm", V);
    ModelParams<float> params = RandomParams(config, 1);
    params.decoder_weight.setZero();
    params.decoder_bias.setConstant(2.5f);  // equal logits, whatever the state
    const EncodedCorpus corpus(RandomIds(301, V, 4));
    EXPECT_DOUBLE_EQ(EvaluateLoss(config, params, corpus, {0, 301}, 4, 16, 1), std::log(static_cast<double>(V))) << V;
  }
}

TEST(EvaluateTest, TooShortRangeIsAnError) {
  const ModelConfig config = SmallConfig("gru", 5);
  const ModelParams<float> params = RandomParams(config, 1);
  const EncodedCorpus corpus(RandomIds(10, 5, 1));
  EXPECT_THROW(EvaluateLoss(config, params, corpus, {0, 4}, 4, 8, 1), Error);
  EXPECT_NO_THROW(EvaluateLoss(config, params, corpus, {0, 5}, 4, 8, 1));
}

class EncodeFileTest : public test::TempDirTest {};

TEST_F(EncodeFileTest, SymbolsOutsideTheVocabularyAreCountedAndLeftOut) {
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add("abc d\n").Build();
  const fs::path path = Write("a.txt", "abXc dY\nXé a\n");
  const EncodedFile file = EncodeFile(path, vocab);
  EXPECT_EQ(file.unknown, 4u);  // X, Y, X, é
  EXPECT_EQ(file.unknown_symbols, (std::vector<std::string>{"X", "Y", "é"}));
  EXPECT_EQ(vocab.Decode(file.ids), "abc d\n a\n");
}

TEST_F(EncodeFileTest, WordsOutsideTheVocabularyBecomeUnk) {
  TokenizerOptions words;
  words.unit = Unit::kWord;
  words.max_vocab = 4;  // <unk> and the three most frequent words
  const Vocab vocab = VocabBuilder(words).Add("the cat the cat the dog\n").Build();
  ASSERT_GE(vocab.unknown_id(), 0);
  const EncodedFile file = EncodeFile(Write("w.txt", "the bird the fish"), vocab);
  EXPECT_EQ(file.unknown, 2u);
  EXPECT_EQ(file.unknown_symbols, (std::vector<std::string>{"bird", "fish"}));
  EXPECT_EQ(vocab.Decode(file.ids), "the <unk> the <unk>");
}

TEST_F(EncodeFileTest, UnreadableOrInvalidFilesAreErrorsNamingThePath) {
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add("abc").Build();
  try {
    EncodeFile(dir_ / "missing.txt", vocab);
    FAIL() << "expected bptt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.txt"), std::string::npos) << e.what();
  }
  try {
    EncodeFile(Write("bad.txt", "ab\xff" "c"), vocab);
    FAIL() << "expected bptt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.txt"), std::string::npos) << e.what();
  }
}

TEST_F(EncodeFileTest, WhatIsNotATextFileIsNamedInOneLine) {
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add("abc").Build();
  EXPECT_EQ(test::ErrorOf([&] { EncodeFile(dir_, vocab); }), dir_.string() + ": is a directory, not a text file");
  const fs::path empty = Write("empty.txt", "");
  EXPECT_EQ(test::ErrorOf([&] { EncodeFile(empty, vocab); }), empty.string() + ": empty file");
  const fs::path binary = Write("binary.bin", std::string("ab\0c", 4));
  EXPECT_EQ(test::ErrorOf([&] { EncodeFile(binary, vocab); }), binary.string() + ": not text (NUL byte at byte 2)");
}

TEST_F(EncodeFileTest, TooFewKnownSymbolsAreCountedInTheError) {
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add("abc\n").Build();
  const ModelConfig config = SmallConfig("gru", vocab.size());
  const ModelParams<float> params = RandomParams(config, 2);
  EXPECT_EQ(test::ErrorOf([&] { Evaluate(config, params, vocab, EncodeText("xyaz", vocab), EvalOptions()); }),
            "has 4 symbols, 1 of them in the model's vocabulary; scoring needs at least 2");
  EXPECT_EQ(test::ErrorOf([&] { Evaluate(config, params, vocab, EncodeText("", vocab), EvalOptions()); }),
            "has 0 symbols, 0 of them in the model's vocabulary; scoring needs at least 2");
}

// A hook that throws between chunks abandons the evaluation (the Python module's Ctrl-C): every
// chunk of T steps, and every 1024 symbols stepwise.
TEST_F(EncodeFileTest, EvaluationStopsWhenTheHookBetweenChunksThrows) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "abc cab bca\n";
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add(text).Build();
  const ModelConfig config = SmallConfig("lstm", vocab.size());
  const ModelParams<float> params = RandomParams(config, 4);
  EvalOptions chunks;
  chunks.seq_len = 64;  // 3600 symbols: 57 chunks
  EvalOptions stepwise;
  stepwise.precision = Precision::kFloat32;  // 4 pieces of 1024
  for (const EvalOptions& o : {chunks, stepwise}) {
    int calls = 0;
    const TextEvaluation whole =
        Evaluate(config, params, vocab, EncodeText(text, vocab), o, [&calls] { ++calls; });
    EXPECT_GE(calls, o.precision ? 3 : 50);
    struct Stop {};
    int left = 2;
    EXPECT_THROW(Evaluate(config, params, vocab, EncodeText(text, vocab), o, [&left] {
                   if (--left == 0) throw Stop();
                 }),
                 Stop);
    EXPECT_GT(whole.nats_per_symbol, 0);
  }
}

TEST_F(EncodeFileTest, EvaluateFileReportsTheScoredSymbols) {
  const std::string text = "one fish two fish red fish blue fish\nthis one has a little star\n";
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add(text).Build();
  ModelConfig config = SmallConfig("lstm", vocab.size());
  const ModelParams<float> params = RandomParams(config, 6);
  const fs::path path = Write("e.txt", text + "ZZ");
  EncodedFile file = EncodeFile(path, vocab);
  const size_t n = file.ids.size();
  ASSERT_EQ(n, text.size());
  const EncodedCorpus corpus(file.ids, vocab);
  ASSERT_EQ(n, 64u);  // 63 inputs: 3 streams of 21 >= T = 16 each
  const TextEvaluation r = EvaluateFile(config, params, std::move(file), vocab, 4, 16, 1);
  EXPECT_EQ(r.unknown, 2u);
  EXPECT_EQ(r.symbols, 63u);
  EXPECT_DOUBLE_EQ(r.nats_per_symbol, EvaluateLoss(config, params, corpus, {0, n}, 3, 16, 1));
  EXPECT_DOUBLE_EQ(r.bits_per_symbol, r.nats_per_symbol / std::numbers::ln2);
  EXPECT_DOUBLE_EQ(r.perplexity, std::exp(r.nats_per_symbol));
  // Short text: one stream scores every symbol after the first.
  const TextEvaluation one = EvaluateFile(config, params, EncodeFile(path, vocab), vocab, 10000, 100, 1);
  EXPECT_EQ(one.symbols, n - 1);
  EXPECT_DOUBLE_EQ(one.nats_per_symbol, EvaluateLoss(config, params, corpus, {0, n}, 1, 100, 1));
  // More streams when there is text enough for them; never more than asked for.
  EXPECT_EQ(EvaluateFile(config, params, EncodeFile(path, vocab), vocab, 2, 4, 1).symbols, 62u);
  // Fewer than two known symbols cannot be scored.
  EXPECT_THROW(EvaluateFile(config, params, EncodeFile(Write("s.txt", "oZZ"), vocab), vocab, 4, 16, 1), Error);
}

TEST_F(EncodeFileTest, StepwiseEvaluationScoresAsOneStream) {
  const std::string text = "one fish two fish red fish blue fish\nthis one has a little star\n";
  const Vocab vocab = VocabBuilder(TokenizerOptions{}).Add(text).Build();
  std::string long_text;  // 2560 symbols: ScoreStepwise's chunks of 1024 steps, full and partial
  for (int i = 0; i < 40; ++i) long_text += text;
  const fs::path path = Write("e.txt", long_text + "Z");
  const size_t n = long_text.size();
  const EncodedCorpus corpus(EncodeFile(path, vocab).ids, vocab);
  // The plain GRU, and the layer-normalised LSTM and GRU (whose step normalises each column as
  // the chunk pass does), with LN gains and biases away from 1 and 0.
  for (const auto& [cell, layer_norm] : {std::pair{"gru", false}, std::pair{"lstm", true}, std::pair{"gru", true}}) {
    SCOPED_TRACE(std::string(cell) + (layer_norm ? " layer norm" : ""));
    ModelConfig config = SmallConfig(cell, vocab.size());
    config.layer_norm = layer_norm;
    ModelParams<float> params = RandomParams(config, 9);
    Rng rng(10);
    params.ForEachTensor([&](const TensorInfo& tensor, Mat<float>& m) {
      if (!IsNorm(tensor.role)) return;
      const double base = tensor.role == TensorRole::kNormGain ? 1.0 : 0.0;
      for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = static_cast<float>(base + rng.Uniform(-0.5, 0.5));
    });
    // One stream over the whole text, all n - 1 predictions: the batched path with B = 1.
    const double batched = EvaluateLoss(config, params, corpus, {0, n}, 1, 16, 1);
    const TextEvaluation r = EvaluateFileStepwise(config, params, EncodeFile(path, vocab), Precision::kFloat32);
    EXPECT_EQ(r.symbols, n - 1);
    EXPECT_EQ(r.unknown, 1u);
    EXPECT_NEAR(r.nats_per_symbol, batched, 1e-5 * batched);
    // --threads splits each step's products by rows: the same sums, the same score.
    EXPECT_EQ(EvaluateFileStepwise(config, params, EncodeFile(path, vocab), Precision::kFloat32, 2).nats_per_symbol,
              r.nats_per_symbol);
    EXPECT_DOUBLE_EQ(r.bits_per_symbol, r.nats_per_symbol / std::numbers::ln2);
    EXPECT_DOUBLE_EQ(r.perplexity, std::exp(r.nats_per_symbol));
    EXPECT_THROW(EvaluateFileStepwise(config, params, EncodeFile(Write("s.txt", "oZZ"), vocab), Precision::kInt8),
                 Error);
  }
}

}  // namespace
}  // namespace bptt
