// The step mode (Stepper) against the model's chunk forward pass: in float32 every step gives the
// forward pass's outputs; in bfloat16 and int8 the reduced-precision products cost little on a
// model as training leaves it. The quality bounds are measured on a model this test trains (a
// 2 x 96 LSTM on generated text, its weights at the scale training produces), scored on held-out
// text with ScoreStepwise, the path `bptt eval --precision` and `bptt sample` take.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/sampler.h"
#include "bptt/trainer.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;

constexpr char kText[] = "the quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n";

struct Model {
  ModelConfig config;
  ModelParams<float> params;
  Vocab vocab;
};

// Weights drawn like a fresh bptt model's (orthogonal recurrent blocks, Xavier input blocks);
// with layer norm, its gains and biases as training might leave them (1 +- 0.5, +-0.5).
Model MakeModel(const char* cell, int layers, int hidden, int embed, bool layer_norm = false, double zoneout = 0,
                double zoneout_cell = 0) {
  Model m;
  m.vocab = VocabBuilder(TokenizerOptions{}).Add(kText).Build();
  m.config = LanguageModel(*FindCell(cell), m.vocab.size(), embed, hidden, layers);
  m.config.layer_norm = layer_norm;
  m.config.zoneout = zoneout;
  m.config.zoneout_cell = zoneout_cell;
  Rng rng(11);
  Initialize(m.config, InitOptions{}, rng, m.params);
  m.params.ForEachTensor([&](const TensorInfo& tensor, Mat<float>& w) {
    if (!IsNorm(tensor.role)) return;
    const float base = tensor.role == TensorRole::kNormGain ? 1.0f : 0.0f;
    for (Eigen::Index k = 0; k < w.size(); ++k) w(k) = base + static_cast<float>(rng.Uniform(-0.5, 0.5));
  });
  return m;
}

struct Case {
  const char* cell;
  int layers, hidden, embed;
  bool layer_norm = false;
  double zoneout = 0, zoneout_cell = 0;  // the steps take zoneout's expectation, as evaluation does
};

// Sizes with and without whole 16- and 64-row panels, one-hot and embedding input, every cell,
// the layer-normalised LSTM and GRU, and zoneout on h and c.
const Case kCases[] = {{"lstm", 2, 64, 0},      {"lstm", 1, 24, 10},       {"gru", 2, 48, 0},
                       {"rnn-tanh", 2, 40, 0},  {"rnn-relu", 1, 33, 7},    {"rnn-sigmoid", 1, 17, 0},
                       {"lstm", 1, 200, 0},     {"lstm", 2, 40, 0, true},  {"gru", 2, 33, 6, true},
                       {"lstm", 2, 40, 0, false, 0.3, 0.2},  {"lstm", 1, 24, 10, true, 0.25, 0.4},
                       {"gru", 2, 33, 0, false, 0.3},        {"gru", 1, 20, 0, true, 0.2},
                       {"rnn-tanh", 1, 17, 0, false, 0.5},   {"mingru", 2, 20, 0, false, 0.3},
                       {"minlstm", 1, 20, 5, false, 0.3}};

const Precision kReduced[] = {Precision::kBfloat16, Precision::kInt8};

// The outputs after `context`, its first symbol primed and the rest stepped.
std::vector<float> StepOutputs(Stepper& stepper, const std::vector<int32_t>& context) {
  std::span<const float> out = stepper.Prime(std::span<const int32_t>(context).first(1));
  for (size_t t = 1; t < context.size(); ++t) out = stepper.Step(context[t]);
  return {out.begin(), out.end()};
}

// Threads chosen as the steps run (Configure with 0) switch between one thread and a split of
// the rows as they time themselves; every output is the one-thread output, bit for bit, in every
// precision. The model's weights (a 2 x 256 LSTM: 2.1 MB in fp32) outgrow half of a 2 MB L2, so
// a machine with more than one core tries the split.
TEST(StepperTest, ThreadsChosenAsItRunsGiveTheOneThreadOutputs) {
  Model m = MakeModel("lstm", 2, 256, 0);
  const std::vector<int32_t> text = m.vocab.Encode(kText);
  for (const Precision precision : {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8}) {
    Stepper one(m.config, m.params), chosen(m.config, m.params);
    one.Configure(precision, 1);
    chosen.Configure(precision, 0);
    std::span<const float> a = one.Prime(std::span<const int32_t>(text).first(1));
    std::vector<float> b(a.size());
    std::ranges::copy(chosen.Prime(std::span<const int32_t>(text).first(1)), b.begin());
    for (int t = 0; t < 700; ++t) {  // past the first trial (after 16 steps) and the next (after 256 more)
      const int32_t id = text[static_cast<size_t>(t) % text.size()];
      a = one.Step(id);
      const std::span<const float> c = chosen.Step(id);
      ASSERT_TRUE(std::equal(a.begin(), a.end(), c.begin(), c.end())) << PrecisionName(precision) << " step " << t
                                                                      << " on " << chosen.threads() << " threads";
      EXPECT_GE(chosen.threads(), 1);
    }
  }
  Stepper stepper(m.config, m.params);
  EXPECT_THROW(stepper.Configure(Precision::kFloat32, -1), Error);
}

// The outputs (O, T) of the forward pass over `context` from the zero state, one stream.
Mat<float> ForwardOutputs(const Model& m, const std::vector<int32_t>& context) {
  Batch<float> batch;
  batch.T = static_cast<Eigen::Index>(context.size());
  batch.B = 1;
  batch.ids = Eigen::Map<const Ids>(context.data(), batch.T);
  ModelCache<float> cache;
  Forward(m.config, m.params, batch, State<float>::Zeros(m.config, 1), cache, 1);
  return cache.outputs;
}

TEST(StepperTest, Float32StepsGiveTheForwardPassOutputs) {
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed, c.layer_norm, c.zoneout, c.zoneout_cell);
    const std::vector<int32_t> context = m.vocab.Encode("the lazy dog jumps over");
    const Mat<float> outputs = ForwardOutputs(m, context);
    Stepper stepper(m.config, m.params);
    for (int threads : {1, 2}) {
      stepper.Configure(Precision::kFloat32, threads);
      // Every step, not only the last.
      std::span<const float> got = stepper.Prime(std::span<const int32_t>(context).first(1));
      for (Eigen::Index t = 0; t < outputs.cols(); ++t) {
        if (t > 0) got = stepper.Step(context[static_cast<size_t>(t)]);
        const Eigen::VectorXf expected = outputs.col(t);
        const float scale = expected.cwiseAbs().maxCoeff();
        for (size_t v = 0; v < got.size(); ++v)
          ASSERT_NEAR(got[v], expected(static_cast<Eigen::Index>(v)), 1e-5f * scale)
              << c.cell << (c.layer_norm ? " layer norm" : "") << " H=" << c.hidden << " t=" << t << " v=" << v;
      }
    }
  }
}

// A prime runs as steps up to kStepPrime symbols and as one chunk of Forward beyond: on both
// sides of that boundary the outputs after the prime, and after a step from its state, are the
// forward pass's.
TEST(StepperTest, PrimesOfEveryLengthGiveTheForwardPassOutputs) {
  for (const Case& c : kCases) {
    Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed, c.layer_norm, c.zoneout, c.zoneout_cell);
    const std::vector<int32_t> context = m.vocab.Encode("the lazy dog jumps over");
    ASSERT_GT(static_cast<Eigen::Index>(context.size()), Stepper::kStepPrime + 2);
    const Mat<float> outputs = ForwardOutputs(m, context);
    Stepper stepper(m.config, m.params);
    stepper.Configure(Precision::kFloat32, 1);
    for (const Eigen::Index T : {Eigen::Index{1}, Stepper::kStepPrime - 1, Stepper::kStepPrime, Stepper::kStepPrime + 1}) {
      std::span<const float> got = stepper.Prime(std::span<const int32_t>(context).first(static_cast<size_t>(T)));
      for (const Eigen::Index t : {T - 1, T}) {
        if (t == T) got = stepper.Step(context[static_cast<size_t>(t)]);
        const Eigen::VectorXf expected = outputs.col(t);
        const float scale = expected.cwiseAbs().maxCoeff();
        for (size_t v = 0; v < got.size(); ++v)
          ASSERT_NEAR(got[v], expected(static_cast<Eigen::Index>(v)), 1e-5f * scale)
              << c.cell << (c.layer_norm ? " layer norm" : "") << " H=" << c.hidden << " prime of " << T << " t=" << t
              << " v=" << v;
      }
    }
  }
}

// Non-finite weights have no bfloat16 or int8 copy: Configure refuses, keeps the precision it
// had and nothing half-built (a second try is refused again); float steps still run.
TEST(StepperTest, RefusesReducedPrecisionsOfNonFiniteWeights) {
  Model m = MakeModel("lstm", 2, 40, 0);
  m.params.layers[1][kWeightHhSlot](3, 5) = std::numeric_limits<float>::quiet_NaN();
  Stepper stepper(m.config, m.params);
  for (const Precision precision : kReduced)
    for (const int threads : {1, 2, 0}) {
      EXPECT_THROW(stepper.Configure(precision, threads), Error) << PrecisionName(precision) << " " << threads;
      EXPECT_THROW(stepper.Configure(precision, threads), Error) << PrecisionName(precision) << " again";
    }
  stepper.Configure(Precision::kFloat32, 1);
  const std::vector<int32_t> context = m.vocab.Encode("the lazy dog");
  const std::vector<float> out = StepOutputs(stepper, context);
  EXPECT_EQ(out.size(), static_cast<size_t>(m.config.output_size));
}

TEST(StepperTest, RefusesInputsOfTheWrongKind) {
  Model m = MakeModel("gru", 1, 8, 0);
  Stepper stepper(m.config, m.params);
  const float x[3] = {1, 2, 3};
  EXPECT_THROW(stepper.Step(x), Error);
  ModelConfig dense = m.config;
  dense.vocab_size = 0;
  dense.input_size = 3;
  dense.head = Head::kRegression;
  dense.output_size = 1;
  Stepper dense_stepper(dense, ModelParams<float>::Zeros(dense));
  EXPECT_THROW(dense_stepper.Step(int32_t{0}), Error);
  EXPECT_THROW(dense_stepper.Prime(std::vector<int32_t>{0}), Error);
  EXPECT_NO_THROW(dense_stepper.Step(x));
  EXPECT_THROW(Stepper(m.config, ModelParams<float>::Zeros(dense)), Error);  // parameters of another shape
}

TEST(StepperTest, AMovedStepperKeepsItsWeightsAndRefusesUnknownSymbols) {
  Model m = MakeModel("lstm", 2, 16, 0);
  const std::vector<int32_t> context = m.vocab.Encode("the lazy dog");
  for (const Precision precision : {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8}) {
    Stepper reference(m.config, m.params);
    reference.Configure(precision, 1);
    const std::vector<float> expected = StepOutputs(reference, context);
    Stepper first(m.config, m.params);
    first.Configure(precision, 1);
    StepOutputs(first, context);  // builds its weight copies before the move
    Stepper moved(std::move(first));
    EXPECT_EQ(StepOutputs(moved, context), expected) << PrecisionName(precision);
    Stepper assigned(m.config, m.params);
    assigned = std::move(moved);
    EXPECT_EQ(StepOutputs(assigned, context), expected) << PrecisionName(precision);
    EXPECT_THROW(assigned.Step(m.config.vocab_size), Error);
    EXPECT_THROW(assigned.Step(-1), Error);
  }
}

TEST(StepperTest, ReducedPrecisionOutputsStayCloseToFloat32) {
  for (const Precision precision : kReduced) {
    for (const Case& c : kCases) {
      Model m = MakeModel(c.cell, c.layers, c.hidden, c.embed, c.layer_norm, c.zoneout, c.zoneout_cell);
      Stepper stepper(m.config, m.params);
      const std::vector<int32_t> context = m.vocab.Encode("Pack my box with five dozen liquor jugs");
      stepper.Configure(Precision::kFloat32, 1);
      const std::vector<float> reference = StepOutputs(stepper, context);
      stepper.Configure(precision, 1);
      const std::vector<float> reduced = StepOutputs(stepper, context);
      const auto [lo, hi] = std::minmax_element(reference.begin(), reference.end());
      const float spread = *hi - *lo;
      ASSERT_GT(spread, 0.1f);
      float worst = 0;
      for (size_t v = 0; v < reference.size(); ++v) worst = std::max(worst, std::abs(reduced[v] - reference[v]));
      EXPECT_LE(worst, 0.05f * spread) << PrecisionName(precision) << " " << c.cell
                                       << (c.layer_norm ? " layer norm" : "") << " H=" << c.hidden;
      EXPECT_GT(worst, 0.0f) << "the " << PrecisionName(precision) << " path was not taken";
    }
  }
}

// Text with structure to learn: words from a small lexicon in a loose grammar.
std::string GeneratedText(size_t sentences, uint64_t seed) {
  const char* subjects[] = {"the cat", "a dog", "my aunt", "the old man", "Zoë", "every child", "the river"};
  const char* verbs[] = {"sees", "likes", "chases", "paints", "finds", "remembers", "follows"};
  const char* objects[] = {"the moon.", "a red ball.", "the café.", "seven fish.", "the river.", "an open door."};
  Rng rng(seed);
  std::string text;
  for (size_t k = 0; k < sentences; ++k) {
    text += subjects[rng.Below(7)];
    text += ' ';
    text += verbs[rng.Below(7)];
    text += ' ';
    text += objects[rng.Below(6)];
    text += rng.Below(4) == 0 ? "\n" : " ";
  }
  return text;
}

// A 2 x 96 LSTM trained for 200 steps: weights at the scale training produces, not at init.
class TrainedModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("bptt_precision_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "train.txt") << GeneratedText(6000, 1);
    held_out_ = GeneratedText(600, 2);
    TrainOptions o;
    o.corpus = {(dir_ / "train.txt").string()};
    o.out = (dir_ / "run").string();
    o.model.hidden_size = 96;
    o.model.layers = 2;
    o.batch = 16;
    o.seq_len = 48;
    o.max_steps = 200;
    o.eval_every = 200;
    o.checkpoint_every = 200;
    o.threads = 1;
    std::ostringstream log;
    Train(o, log, false);
    checkpoint_ = new Checkpoint(LoadCheckpoint(dir_ / "run" / "latest.safetensors"));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    fs::remove_all(dir_);
  }

  static inline fs::path dir_;
  static inline std::string held_out_;
  static inline Checkpoint* checkpoint_ = nullptr;
};

TEST_F(TrainedModel, ScoreStepwiseIsTheForwardPassLoss) {
  const std::vector<int32_t> ids = checkpoint_->vocab.Encode(held_out_);
  Batch<float> batch;
  batch.T = static_cast<Eigen::Index>(ids.size()) - 1;
  batch.B = 1;
  batch.ids = Eigen::Map<const Ids>(ids.data(), batch.T);
  batch.classes = Eigen::Map<const Ids>(ids.data() + 1, batch.T);
  ModelCache<float> cache;
  Forward(checkpoint_->config, checkpoint_->params, batch, State<float>::Zeros(checkpoint_->config, 1), cache, 1);
  const double expected = SoftmaxCrossEntropy(cache.outputs, batch.classes);
  Stepper stepper(checkpoint_->config, checkpoint_->params);
  const double fp32 = ScoreStepwise(stepper, ids);
  EXPECT_NEAR(fp32, expected, 1e-5 * expected);
  EXPECT_LT(fp32, 1.5);  // it has learnt the text (a uniform guess costs ln V > 3)
}

// What a reduced precision costs in nats per symbol on held-out text: measured on an Intel Xeon
// (AVX-512 BF16 and VNNI), bf16 -0.00002 and int8 -0.00001 after 200 steps (+0.0003 for int8
// after 300); the bounds leave room for another CPU's rounding and the scalar fallbacks.
TEST_F(TrainedModel, ReducedPrecisionsCostLittleOnHeldOutText) {
  const std::vector<int32_t> ids = checkpoint_->vocab.Encode(held_out_);
  Stepper stepper(checkpoint_->config, checkpoint_->params);
  const double fp32 = ScoreStepwise(stepper, ids);
  for (const auto& [precision, bound] : {std::pair{Precision::kBfloat16, 0.001}, std::pair{Precision::kInt8, 0.002}}) {
    stepper.Configure(precision, 1);
    const double reduced = ScoreStepwise(stepper, ids);
    std::cout << PrecisionName(precision) << ": " << reduced << " nats against fp32 " << fp32 << " (" << std::showpos
              << reduced - fp32 << std::noshowpos << ")\n";
    EXPECT_LE(std::abs(reduced - fp32), bound) << PrecisionName(precision);
    EXPECT_NE(reduced, fp32) << "the " << PrecisionName(precision) << " path was not taken";
  }
}

TEST(StepperTest, ScoreNeedsTwoSymbolsAndPrecisionNamesRoundTrip) {
  Model m = MakeModel("lstm", 1, 8, 0);
  Stepper stepper(m.config, m.params);
  EXPECT_THROW(ScoreStepwise(stepper, std::vector<int32_t>{1}), Error);
  for (const Precision p : {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8})
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
