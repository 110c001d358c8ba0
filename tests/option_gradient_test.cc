// The model's options proven against central differences in double precision, for every cell
// of the registry: dropout between the layers (a fixed mask), on the input and on the output,
// per step and variational; weight drop on W_hh; AR and TAR; recurrent dropout and zoneout on h
// and c (fixed masks, and zoneout's expectation as evaluation runs it); residual connections over
// three layers, and the layer-normalised variant (--layer-norm) of the cells that have one, its LN
// gains and biases drawn away from 1 and 0 (one layer and two; one-hot, embedding and dense
// input; dropout; residual connections; the large sizes). And the learning rules of the
// feedback-alignment papers: FA with the true transposes is backpropagation, DFA's one-layer
// update is backpropagation one step at a time, and the alignment angle measures what it says.
// (The cells alone: cell_gradient_test.cc.)
#include <gtest/gtest.h>

#include "bptt/error.h"
#include "gradient_check.h"

namespace bptt {
namespace {

using namespace test;

class OptionGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(OptionGradient, EveryTensorMatchesCentralDifferences) { CheckModelGradient(GetParam()); }

std::vector<GradCase> OptionCases() {
  std::vector<GradCase> cases;
  for (const Cell* cell : Cells()) {
    // Dropout between the layers, with the mask fixed.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.4});
    // Residual connections over three layers, with and without dropout, one-hot and dense.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.0, 0, true, 3});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 4, 3, 7, 0.3, 0, true, 3});
    // Dropout on the input (one-hot, embedding, dense) and on the output, per step and
    // variational, with and without dropout between the layers.
    const std::string_view c = cell->name;
    cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .input_dropout = 0.4});
    cases.push_back({.cell = c, .input = Input::kEmbed, .scoring = Scoring::kMasked, .input_dropout = 0.3,
                     .output_dropout = 0.3});
    cases.push_back({.cell = c, .input = Input::kDense, .scoring = Scoring::kRegression, .input_dropout = 0.3});
    cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .layers = 1,
                     .output_dropout = 0.4});
    cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .dropout = 0.3,
                     .input_dropout = 0.4, .output_dropout = 0.3, .variational = true});
    cases.push_back({.cell = c, .input = Input::kEmbed, .scoring = Scoring::kLastStep, .dropout = 0.3,
                     .input_dropout = 0.3, .output_dropout = 0.3, .variational = true});
    cases.push_back({.cell = c, .input = Input::kDense, .scoring = Scoring::kRegression, .dropout = 0.3,
                     .residual = true, .layers = 3, .input_dropout = 0.3, .output_dropout = 0.3, .variational = true});
    // AR and TAR, alone, after output dropout, and on residual outputs.
    cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .ar = 2, .tar = 1});
    cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kMasked, .output_dropout = 0.4,
                     .variational = true, .ar = 2, .tar = 1});
    cases.push_back({.cell = c, .input = Input::kDense, .scoring = Scoring::kRegression, .residual = true,
                     .layers = 3, .ar = 1, .tar = 2});
    // Weight drop on W_hh: alone, with every other option, and across panels (H = 70: 280 rows).
    if (cell->recurrent_matrix()) {
      cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .weight_drop = 0.4});
      cases.push_back({.cell = c, .input = Input::kEmbed, .scoring = Scoring::kMasked, .dropout = 0.3,
                       .input_dropout = 0.2, .output_dropout = 0.3, .variational = true, .weight_drop = 0.3,
                       .ar = 1, .tar = 1});
      cases.push_back({.cell = c, .input = Input::kOneHot, .scoring = Scoring::kEveryStep, .H = 70, .B = 2,
                       .T = 4, .sampled = 8, .weight_drop = 0.5});
    }
    // The regularisers of the time loop: zoneout on h and on c, each in training (fixed masks)
    // and as evaluation's expectation; recurrent dropout (cells with a recurrent matrix); all of
    // them with dropout between the layers, plain and layer-normalised; and at the large sizes,
    // B = 11 (threads take columns) and B = 1 (threads take rows of the products).
    const double rd = cell->recurrent_matrix() ? 0.4 : 0.0, zc = cell->cell_state ? 0.3 : 0.0;
    for (const bool expectation : {false, true}) {
      GradCase zone{cell->name, Input::kOneHot, Scoring::kEveryStep};
      zone.zoneout = 0.3;
      zone.expectation = expectation;
      cases.push_back(zone);
      if (zc > 0) {
        GradCase zone_c{cell->name, Input::kEmbed, Scoring::kMasked};
        zone_c.zoneout_cell = zc;
        zone_c.expectation = expectation;
        cases.push_back(zone_c);
      }
    }
    if (rd > 0) {
      GradCase drop{cell->name, Input::kOneHot, Scoring::kEveryStep};
      drop.recurrent_dropout = rd;
      cases.push_back(drop);
    }
    for (const bool layer_norm : {false, true}) {
      if (layer_norm && !cell->layer_norm()) continue;
      GradCase all{cell->name, Input::kDense, Scoring::kRegression, 4, 3, 7, 0.3};
      all.layer_norm = layer_norm;
      all.recurrent_dropout = rd;
      all.zoneout = 0.25;
      all.zoneout_cell = zc;
      cases.push_back(all);
      all.expectation = true;
      cases.push_back(all);
      for (const int B : {11, 1}) {
        GradCase large{cell->name, Input::kOneHot, Scoring::kEveryStep, 70, B, 5, 0.0, 8, false, 2, layer_norm};
        large.recurrent_dropout = rd;
        large.zoneout = 0.25;
        large.zoneout_cell = zc;
        cases.push_back(large);
      }
    }
    if (!cell->layer_norm()) continue;
    cases.push_back({.cell = c, .input = Input::kDense, .scoring = Scoring::kRegression, .layers = 2,
                     .layer_norm = true, .input_dropout = 0.3, .output_dropout = 0.3, .variational = true,
                     .weight_drop = 0.3, .ar = 1, .tar = 1});
    // Layer normalisation: one layer and two, the inputs and heads, dropout, residual
    // connections, the large sizes.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.0, 0, false, 1, true});
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.0, 0, false, 2, true});
    cases.push_back({cell->name, Input::kEmbed, Scoring::kMasked, 4, 3, 7, 0.0, 0, false, 2, true});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 4, 3, 7, 0.0, 0, false, 2, true});
    cases.push_back({cell->name, Input::kDense, Scoring::kLastStep, 4, 3, 7, 0.0, 0, false, 2, true});
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.4, 0, false, 2, true});
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.0, 0, true, 3, true});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 4, 3, 7, 0.3, 0, true, 3, true});
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 11, 5, 0.0, 8, false, 2, true});
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 1, 5, 0.0, 8, false, 2, true});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllCells, OptionGradient, ::testing::ValuesIn(OptionCases()), GradCaseName);

TEST(ModelConfig, LayerNormIsRefusedForCellsWithoutIt) {
  for (const Cell* cell : Cells()) {
    ModelConfig config = LanguageModel(*cell, 4, 0, 3, 1);
    config.layer_norm = true;
    if (cell->layer_norm()) {
      EXPECT_NO_THROW(config.Validate()) << cell->name;
      continue;
    }
    try {
      config.Validate();
      ADD_FAILURE() << cell->name << " took --layer-norm";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "--layer-norm applies to lstm, gru, not to " + std::string(cell->name));
    }
  }
}

TEST(ModelConfig, TheLoopRegularisersAreRefusedOutsideTheirRangeAndCells) {
  const auto refused = [](const ModelConfig& config, const std::string& expected) {
    try {
      config.Validate();
      ADD_FAILURE() << "took: " << expected;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), expected);
    }
  };
  for (const Cell* cell : Cells()) {
    SCOPED_TRACE(std::string(cell->name));
    const ModelConfig plain = LanguageModel(*cell, 4, 0, 3, 1);
    for (const double bad : {-0.1, 1.0, 1.5}) {
      ModelConfig c = plain;
      c.zoneout = bad;
      refused(c, "--zoneout must be in [0, 1), got " + std::to_string(bad));
      c = plain;
      c.recurrent_dropout = bad;
      refused(c, "--recurrent-dropout must be in [0, 1), got " + std::to_string(bad));
      c = plain;
      c.zoneout_cell = bad;
      refused(c, "--zoneout-cell must be in [0, 1), got " + std::to_string(bad));
    }
    ModelConfig c = plain;
    c.zoneout = 0.5;
    EXPECT_NO_THROW(c.Validate());
    c = plain;
    c.recurrent_dropout = 0.5;
    if (cell->recurrent_matrix()) EXPECT_NO_THROW(c.Validate());
    else refused(c, "--recurrent-dropout applies to cells with a recurrent matrix (rnn-tanh, rnn-sigmoid, rnn-relu, "
                    "lstm, gru), not to " + std::string(cell->name));
    c = plain;
    c.zoneout_cell = 0.5;
    if (cell->cell_state) EXPECT_NO_THROW(c.Validate());
    else refused(c, "--zoneout-cell applies to cells with a cell state (lstm), not to " + std::string(cell->name));
  }
}

// The feedback-alignment rules (model.h Feedback).
class FeedbackRules : public ::testing::TestWithParam<const Cell*> {};

struct SmallModel {
  ModelConfig config;
  ModelParams<double> params;
  Batch<double> batch;
};

SmallModel MakeSmallModel(const Cell& cell, int layers, int embed, bool residual, uint64_t seed) {
  SmallModel s;
  s.config = LanguageModel(cell, 6, embed, 5, layers);
  s.config.residual = residual;
  Rng rng(seed);
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = 0.7;
  Initialize(s.config, init, rng, s.params);
  s.batch.T = 6;
  s.batch.B = 3;
  s.batch.ids = RandomIds(18, 6, rng);
  s.batch.classes = RandomIds(18, 6, rng);
  return s;
}

ModelParams<double> Gradient(const SmallModel& s, const FeedbackMatrices<double>* feedback) {
  ModelCache<double> cache;
  Forward(s.config, s.params, s.batch, State<double>::Zeros(s.config, s.batch.B), cache, 1);
  Mat<double> d;
  HeadLoss<double>(s.config, cache.outputs, s.batch, &d, 1);
  auto grads = ModelParams<double>::Zeros(s.config);
  Backward(s.config, s.params, s.batch, cache, d, nullptr, grads, nullptr, 1, feedback);
  return grads;
}

TEST_P(FeedbackRules, FeedbackAlignmentWithTheTrueTransposesIsBackpropagation) {
  const Cell& cell = *GetParam();
  const bool recurrent = cell.recurrent_matrix();  // a cell without one has no W_hh to replace
  for (const bool residual : {false, true}) {
    const SmallModel s = MakeSmallModel(cell, 3, 4, residual, 17);
    Rng rng(3);
    FeedbackMatrices<double> fa = FeedbackMatrices<double>::Draw(Feedback::kFa, s.config, rng);
    ASSERT_EQ(fa.recurrent.size(), recurrent ? 3u : 0u);
    for (int l = 0; l < 3; ++l) {
      if (recurrent) fa.recurrent[l] = s.params.layers[l].weight_hh();
      fa.input[l] = s.params.layers[l].weight_ih();  // layer 0: below it, the embedding
    }
    fa.decoder = s.params.decoder_weight;
    const ModelParams<double> bptt = Gradient(s, nullptr), rule = Gradient(s, &fa);
    std::vector<const Mat<double>*> b;
    bptt.ForEach([&b](const std::string&, const Mat<double>& m) { b.push_back(&m); });
    size_t k = 0;
    rule.ForEach([&](const std::string& name, const Mat<double>& m) { EXPECT_EQ(m, *b[k++]) << name; });
    // Random feedback: another update, whose weights follow BPTT only partly.
    const FeedbackMatrices<double> random = FeedbackMatrices<double>::Draw(Feedback::kFa, s.config, rng);
    const auto angles = AlignmentDegrees(Gradient(s, &random), bptt);
    // encoder, W_ih (and W_hh) per layer, decoder
    EXPECT_EQ(angles.size(), 1u + 3 * (recurrent ? 2 : 1) + 1);
    // The decoder's own gradient needs no feedback: the same direction, up to acos's rounding
    // near 1 (1e-16 in the cosine is 1e-8 radians).
    EXPECT_NEAR(angles.at("decoder.weight"), 0.0, 1e-5);
    EXPECT_GT(angles.at(recurrent ? "rnn.weight_hh_l0" : "rnn.weight_ih_l0"), 1.0);
  }
}

TEST(DirectFeedback, OneLayerGetsTheErrorOfEachStepAlone) {
  // One layer, D_0 = W_dec: DFA gives the top layer BPTT's error at each step, and sends nothing
  // back through time. For the Elman RNNs that is BPTT over chunks of one step with the state
  // carried (no error crosses a chunk boundary); gated cells keep their elementwise paths.
  for (const Cell* cell : Cells()) {
    if (cell->gates != 1) continue;
    SCOPED_TRACE(std::string(cell->name));
    const SmallModel s = MakeSmallModel(*cell, 1, 0, false, 19);
    Rng rng(4);
    FeedbackMatrices<double> dfa = FeedbackMatrices<double>::Draw(Feedback::kDfa, s.config, rng);
    ASSERT_EQ(dfa.direct.size(), 1u);
    dfa.direct[0] = s.params.decoder_weight;
    const ModelParams<double> rule = Gradient(s, &dfa);
    // BPTT one step at a time, the loss of each step weighted as in the whole chunk.
    auto expected = ModelParams<double>::Zeros(s.config);
    State<double> state = State<double>::Zeros(s.config, s.batch.B);
    for (Eigen::Index t = 0; t < s.batch.T; ++t) {
      Batch<double> step;
      step.T = 1;
      step.B = s.batch.B;
      step.ids = s.batch.ids.segment(t * step.B, step.B);
      step.classes = s.batch.classes.segment(t * step.B, step.B);
      ModelCache<double> cache;
      Forward(s.config, s.params, step, state, cache, 1);
      Mat<double> d;
      HeadLoss<double>(s.config, cache.outputs, step, &d, 1);
      d /= static_cast<double>(s.batch.T);  // the whole chunk averages over T*B positions
      Backward(s.config, s.params, step, cache, d, nullptr, expected, nullptr, 1);
      FinalState(s.config, cache, state);
    }
    std::vector<const Mat<double>*> e;
    expected.ForEach([&e](const std::string&, const Mat<double>& m) { e.push_back(&m); });
    size_t k = 0;
    rule.ForEach([&](const std::string& name, const Mat<double>& m) {
      EXPECT_LE((m - *e[k++]).cwiseAbs().maxCoeff(), 1e-14) << name;
    });
  }
}

TEST(FeedbackWeightDrop, MasksTheUpdateOfWHhAndNotTheFeedback) {
  // FA and DFA with weight drop: the forward pass runs with the dropped W_hh, the update of a
  // dropped weight is zero, and each kept weight's is the rule's update scaled by 1/(1-p) (the
  // feedback matrix B itself is not dropped).
  for (const Feedback rule : {Feedback::kFa, Feedback::kDfa}) {
    SCOPED_TRACE(std::string(FeedbackName(rule)));
    SmallModel s = MakeSmallModel(*FindCell("lstm"), 2, 0, false, 23);
    s.config.weight_drop = 0.5;
    Rng rng(6);
    const FeedbackMatrices<double> feedback = FeedbackMatrices<double>::Draw(rule, s.config, rng);
    ModelCache<double> cache;
    Rng dropout(8);
    Forward(s.config, s.params, s.batch, State<double>::Zeros(s.config, s.batch.B), cache, 1, &dropout);
    Mat<double> d;
    HeadLoss<double>(s.config, cache.outputs, s.batch, &d, 1);
    auto grads = ModelParams<double>::Zeros(s.config);
    Backward(s.config, s.params, s.batch, cache, d, nullptr, grads, nullptr, 1, &feedback);
    // The same rule on the model whose W_hh is the dropped one, without weight drop.
    SmallModel dropped = s;
    dropped.config.weight_drop = 0;
    for (int l = 0; l < 2; ++l) dropped.params.layers[l][kWeightHhSlot] = cache.dropped_hh[l];
    const ModelParams<double> plain = Gradient(dropped, &feedback);
    for (int l = 0; l < 2; ++l) {
      const Mat<double>& mask = cache.weight_mask[l];
      ASSERT_GT((mask.array() == 0).count(), 0);
      const Mat<double> expected = (plain.layers[l].weight_hh().array() * mask.array()).matrix();
      EXPECT_LE((grads.layers[l].weight_hh() - expected).cwiseAbs().maxCoeff(), 1e-14) << "layer " << l;
      EXPECT_EQ(((mask.array() == 0) && (grads.layers[l].weight_hh().array() != 0)).count(), 0) << "layer " << l;
      EXPECT_LE((grads.layers[l].weight_ih() - plain.layers[l].weight_ih()).cwiseAbs().maxCoeff(), 1e-14);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, FeedbackRules, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

TEST(AlignmentDegrees, MeasuresTheAngleOfEachWeightTensor) {
  const ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 2, 0, 1, 1);
  auto a = ModelParams<double>::Zeros(config), b = a;
  a.layers[0].weight_ih() << 1, 0;  // (1, 2): at 45 degrees to (1, 1)
  b.layers[0].weight_ih() << 1, 1;
  a.layers[0].tensor("weight_hh") << 2;  // the same direction
  b.layers[0].tensor("weight_hh") << 5;
  a.decoder_weight << 1, 0;  // opposite
  b.decoder_weight << -3, 0;
  a.layers[0].tensor("bias_ih") << 1;  // biases are not measured
  b.layers[0].tensor("bias_ih") << -1;
  const auto angles = AlignmentDegrees(a, b);
  ASSERT_EQ(angles.size(), 3u);
  EXPECT_NEAR(angles.at("rnn.weight_ih_l0"), 45.0, 1e-12);
  EXPECT_NEAR(angles.at("rnn.weight_hh_l0"), 0.0, 1e-12);
  EXPECT_NEAR(angles.at("decoder.weight"), 180.0, 1e-12);
}

}  // namespace
}  // namespace bptt
