// Gradients proven against central differences in double precision: the losses alone, and
// every cell of the registry in a 2-layer model with every input (one-hot, embedding, dense)
// and every head (softmax at every step, softmax on a mask, regression on a mask,
// classification at the last step), over T = 7 steps with B = 3, a non-zero initial state and
// a loss that also depends on the final state; the same at sizes that cross the kernels' panel
// and column-block boundaries (H = 70, B = 11, T = 5) and with one stream (B = 1: the steps
// split between the threads by rows), and with dropout on (a fixed mask).
// The layer-normalised LSTM and GRU (--layer-norm) likewise, their LN gains and biases drawn
// away from 1 and 0: one-hot, embedding and dense input, dropout, residual connections and the
// large sizes. Also: truncated BPTT with the state carried equals one long chunk, and every
// thread count gives the one-thread numbers bit for bit, however the steps are split. And the
// products in bfloat16 (--precision bf16, where the CPU has AMX or AVX-512 BF16): a float
// model's outputs and gradients within bfloat16's rounding of float's, for every cell and input.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <set>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"

namespace bptt {
namespace {

constexpr double kStep = 1e-5;       // central-difference step
constexpr double kExtrapolatedStep = 4e-5;  // h of Richardson's extrapolation (CheckTensor)
constexpr double kMaxRelError = 1e-6;

// Relative error of analytic a against numeric n, |a - n| / max(|a|, |n|, kFloor).
// A central difference of a loss of size ~1 in double carries a rounding error of about
// 1e-16 / kStep ~ 1e-11 whatever the true derivative, so for elements below kFloor (dead ReLU
// units, unused embedding rows, gradients that have decayed through many steps) the error is
// measured against kFloor: such elements must agree to 1e-10 absolute.
constexpr double kFloor = 1e-4;
double RelError(double a, double n) {
  return std::abs(a - n) / std::max({std::abs(a), std::abs(n), kFloor});
}

// Checks d loss / d x at the given elements of x (all when `elements` is empty) against central
// differences; returns the largest relative error. The central difference D(h) is off by
// h^2 f'''/6; with `extrapolate`, Richardson's (4 D(h/2) - D(h)) / 3 removes that term, for
// losses whose third derivative is large: a layer norm whose input has a variance near its eps
// (a column that dropout has left one unit) has derivatives growing like powers of 1/sqrt(eps),
// and D(1e-5) misses their gradient by a few 1e-6. The extrapolation triples the rounding
// error, hence its larger h (error h^4), which keeps both near 1e-7.
double CheckTensor(Mat<double>& x, const Mat<double>& analytic, const std::function<double()>& loss,
                   const std::vector<Eigen::Index>& elements = {}, bool extrapolate = false) {
  double worst = 0;
  const auto difference = [&](Eigen::Index k, double h) {
    const double saved = x(k);
    x(k) = saved + h;
    const double up = loss();
    x(k) = saved - h;
    const double down = loss();
    x(k) = saved;
    return (up - down) / (2 * h);
  };
  const auto check = [&](Eigen::Index k) {
    const double numeric = extrapolate ? (4 * difference(k, kExtrapolatedStep / 2) - difference(k, kExtrapolatedStep)) / 3
                                       : difference(k, kStep);
    worst = std::max(worst, RelError(analytic(k), numeric));
  };
  if (elements.empty()) {
    for (Eigen::Index k = 0; k < x.size(); ++k) check(k);
  } else {
    for (Eigen::Index k : elements) check(k);
  }
  return worst;
}

// For large tensors: every row that starts or ends a 32-row panel and the last row and column,
// each at a few columns, plus `random` elements drawn with `rng`.
std::vector<Eigen::Index> BoundaryElements(const Mat<double>& x, int random, Rng& rng) {
  std::set<Eigen::Index> rows{0, x.rows() - 1}, cols{0, x.cols() / 2, x.cols() - 1}, out;
  for (Eigen::Index r = 31; r < x.rows(); r += 32) rows.insert({r, std::min(r + 1, x.rows() - 1)});
  for (Eigen::Index r : rows)
    for (Eigen::Index c : cols) out.insert(c * x.rows() + r);
  for (int i = 0; i < random; ++i) out.insert(static_cast<Eigen::Index>(rng.Below(static_cast<uint64_t>(x.size()))));
  return {out.begin(), out.end()};
}

Ids RandomIds(Eigen::Index n, int V, Rng& rng) {
  Ids ids(n);
  for (Eigen::Index j = 0; j < n; ++j) ids(j) = static_cast<int32_t>(rng.Below(V));
  return ids;
}

Mat<double> RandomMat(Eigen::Index r, Eigen::Index c, Rng& rng, double scale = 0.5) {
  Mat<double> m(r, c);
  for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = rng.Uniform(-scale, scale);
  return m;
}

TEST(ChainRule, SeedExampleThroughTheEngine) {
  // f = (x + y) * z at x = -2, y = 5, z = -4, computed by a 1-unit ReLU RNN over one step:
  // q = relu(W_ih[:, 0] + W_hh h_0 + b) = x + y with W_ih = x, h_0 = y, W_hh = 1, b = 0,
  // and f = z * h_1 as the loss on the final state (dL/dh_1 = z, no output term).
  const ModelConfig config = LanguageModel(*FindCell("rnn-relu"), 1, 0, 1, 1);
  auto params = ModelParams<double>::Zeros(config);
  params.layers[0].weight_ih(0, 0) = -2;  // x
  params.layers[0].weight_hh(0, 0) = 1;
  State<double> initial = State<double>::Zeros(config, 1);
  initial.h[0](0, 0) = 5;  // y
  const double z = -4;
  Batch<double> batch;
  batch.T = batch.B = 1;
  batch.ids = Ids::Zero(1);
  ModelCache<double> cache;
  Forward(config, params, batch, initial, cache, 1);
  State<double> final_state = State<double>::Zeros(config, 1);
  FinalState(config, cache, final_state);
  const double q = final_state.h[0](0, 0);
  EXPECT_DOUBLE_EQ(z * q, -12.0);  // f

  auto grads = ModelParams<double>::Zeros(config);
  State<double> dfinal = State<double>::Zeros(config, 1), dinitial = State<double>::Zeros(config, 1);
  dfinal.h[0](0, 0) = z;
  const Mat<double> no_output_gradient = Mat<double>::Zero(1, 1);
  Backward(config, params, batch, cache, no_output_gradient, &dfinal, grads, &dinitial, 1);
  EXPECT_DOUBLE_EQ(grads.layers[0].weight_ih(0, 0), -4.0);  // df/dx = z
  EXPECT_DOUBLE_EQ(dinitial.h[0](0, 0), -4.0);             // df/dy = z
  EXPECT_DOUBLE_EQ(q, 3.0);                                 // df/dz = x + y
}

TEST(Forward, RefusesSymbolsAndClassesOutsideTheModel) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 4, 0, 3, 1);
  const auto params = ModelParams<double>::Zeros(config);
  Batch<double> batch;
  batch.T = 2;
  batch.B = 1;
  batch.ids = Ids::Zero(2);
  batch.ids(1) = 4;
  ModelCache<double> cache;
  EXPECT_THROW(Forward(config, params, batch, State<double>::Zeros(config, 1), cache, 1), Error);
  batch.ids(1) = 3;
  Forward(config, params, batch, State<double>::Zeros(config, 1), cache, 1);
  Ids targets = Ids::Zero(2);
  targets(0) = -1;
  EXPECT_THROW(SoftmaxCrossEntropy(cache.outputs, targets), Error);
  Mask scored = Mask::Zero(2);
  scored(1) = 1;
  EXPECT_NO_THROW(SoftmaxCrossEntropy<double>(cache.outputs, targets, scored, nullptr, 1));  // not scored: any value
}

TEST(ModelConfig, LayerNormIsRefusedForCellsWithoutIt) {
  for (const Cell* cell : Cells()) {
    ModelConfig config = LanguageModel(*cell, 4, 0, 3, 1);
    config.layer_norm = true;
    if (cell->layer_norm) {
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

TEST(SoftmaxCrossEntropy, MatchesCentralDifferences) {
  Rng rng(7);
  Mat<double> logits = RandomMat(6, 9, rng, 3.0);
  const Ids targets = RandomIds(9, 6, rng);
  Mat<double> dlogits;
  const double loss = SoftmaxCrossEntropy(logits, targets, &dlogits);
  double expected = 0;
  for (Eigen::Index j = 0; j < 9; ++j)
    expected += std::log(logits.col(j).array().exp().sum()) - logits(targets(j), j);
  EXPECT_NEAR(loss, expected / 9, 1e-14);
  const double err = CheckTensor(logits, dlogits, [&] { return SoftmaxCrossEntropy(logits, targets); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "softmax cross-entropy: max relative error " << err << "\n";
}

TEST(SoftmaxCrossEntropy, MaskedPositionsAreNeitherScoredNorDifferentiated) {
  Rng rng(8);
  Mat<double> logits = RandomMat(5, 8, rng, 3.0);
  Ids targets = RandomIds(8, 5, rng);
  Mask scored(8);
  scored << 0, 1, 1, 0, 0, 1, 0, 1;
  targets(0) = -7;  // an unscored position may hold any value
  Mat<double> d;
  const double loss = SoftmaxCrossEntropy<double>(logits, targets, scored, &d, 1);
  double expected = 0;
  for (Eigen::Index j = 0; j < 8; ++j)
    if (scored(j)) expected += std::log(logits.col(j).array().exp().sum()) - logits(targets(j), j);
  EXPECT_NEAR(loss, expected / 4, 1e-14);
  for (Eigen::Index j = 0; j < 8; ++j)
    if (!scored(j)) {
      EXPECT_EQ(d.col(j).cwiseAbs().maxCoeff(), 0.0) << j;
    }
  const double err =
      CheckTensor(logits, d, [&] { return SoftmaxCrossEntropy<double>(logits, targets, scored, nullptr, 1); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "masked softmax cross-entropy: max relative error " << err << "\n";
}

TEST(MeanSquaredError, MatchesItsFormulaAndCentralDifferences) {
  Rng rng(9);
  Mat<double> p = RandomMat(2, 6, rng, 2.0);
  const Mat<double> t = RandomMat(2, 6, rng, 2.0);
  Mask scored(6);
  scored << 1, 0, 1, 1, 0, 1;
  Mat<double> d;
  const double loss = MeanSquaredError<double>(p, t, scored, &d, 1);
  double expected = 0;
  for (Eigen::Index j = 0; j < 6; ++j)
    if (scored(j)) expected += (p.col(j) - t.col(j)).squaredNorm();
  EXPECT_NEAR(loss, expected / (4 * 2), 1e-15);
  for (Eigen::Index j = 0; j < 6; ++j)
    if (!scored(j)) {
      EXPECT_EQ(d.col(j).cwiseAbs().maxCoeff(), 0.0) << j;
    }
  const double err = CheckTensor(p, d, [&] { return MeanSquaredError<double>(p, t, scored, nullptr, 1); });
  EXPECT_LE(err, kMaxRelError);
  std::cout << "mean squared error: max relative error " << err << "\n";
}

enum class Input { kOneHot, kEmbed, kDense };
enum class Scoring {
  kEveryStep,  // softmax at every position (a language model)
  kMasked,     // softmax on a random mask of positions
  kLastStep,   // softmax at the last step only (classification)
  kRegression, // mean squared error on a random mask of positions
};

struct GradCase {
  std::string_view cell;
  Input input;
  Scoring scoring;
  int H = 4, B = 3, T = 7;
  double dropout = 0;
  int sampled = 0;  // > 0: check the tensors at their panel boundaries plus this many random elements
  bool residual = false;
  int layers = 2;
  bool layer_norm = false;

  std::string Name() const {
    std::string name(cell);
    for (auto& ch : name)
      if (ch == '-') ch = '_';
    name += input == Input::kOneHot ? "_onehot" : input == Input::kEmbed ? "_embed" : "_dense";
    name += scoring == Scoring::kEveryStep ? "_every" : scoring == Scoring::kMasked ? "_masked"
            : scoring == Scoring::kLastStep ? "_last" : "_regression";
    if (H != 4) name += "_H" + std::to_string(H) + "_B" + std::to_string(B) + "_T" + std::to_string(T);
    if (dropout > 0) name += "_dropout";
    if (residual) name += "_residual";
    if (residual || layers != 2) name += "_L" + std::to_string(layers);
    if (layer_norm) name += "_layernorm";
    return name;
  }
};

class ModelGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(ModelGradient, EveryTensorMatchesCentralDifferences) {
  const GradCase gc = GetParam();
  const Cell& cell = *FindCell(gc.cell);
  const Eigen::Index T = gc.T, B = gc.B, H = gc.H;
  const int V = 5, D = 3;
  ModelConfig config;
  config.cell = &cell;
  config.hidden_size = gc.H;
  config.layers = gc.layers;
  config.dropout = gc.dropout;
  config.residual = gc.residual;
  config.layer_norm = gc.layer_norm;
  if (gc.input == Input::kDense) config.input_size = D;
  else config.vocab_size = V;
  if (gc.input == Input::kEmbed) config.embed_size = 3;
  config.head = gc.scoring == Scoring::kRegression ? Head::kRegression : Head::kSoftmax;
  config.output_size = gc.scoring == Scoring::kRegression ? 2 : gc.scoring == Scoring::kLastStep ? 4 : V;
  config.Validate();

  Rng rng(1234 + static_cast<int>(cell.name.size()) * 7 + static_cast<int>(gc.input) * 3 +
          static_cast<int>(gc.scoring));
  ModelParams<double> params;
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = cell.name == "rnn-relu" ? 0.6 : 0.8;
  if (gc.H > 4) init.scale = 1.5 / std::sqrt(static_cast<double>(gc.H));
  Initialize(config, init, rng, params);
  // Layer norms away from their starting gain 1 and bias 0, so that both enter every gradient.
  params.ForEach([&](const std::string& name, Mat<double>& m) {
    if (RoleOf(name) != TensorRole::kNorm) return;
    const bool gain = name.find("weight") != std::string::npos;
    for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = (gain ? 1.0 : 0.0) + rng.Uniform(-0.4, 0.4);
  });

  // The final-state weights shrink with the state's size, so that the loss stays of order 1 and
  // the central differences' rounding (about 1e-16 of the loss, over kStep) stays below kFloor's.
  const double wscale = 0.5 * std::sqrt(12.0 / static_cast<double>(H * B));
  State<double> initial = State<double>::Zeros(config, B), wfinal = State<double>::Zeros(config, B);
  for (int l = 0; l < config.layers; ++l) {
    initial.h[l] = RandomMat(H, B, rng);
    wfinal.h[l] = RandomMat(H, B, rng, wscale);
    if (cell.cell_state) {
      initial.c[l] = RandomMat(H, B, rng);
      wfinal.c[l] = RandomMat(H, B, rng, wscale);
    }
  }
  Batch<double> batch;
  batch.T = T;
  batch.B = B;
  if (gc.input == Input::kDense) batch.dense = RandomMat(D, T * B, rng, 1.0);
  else batch.ids = RandomIds(T * B, V, rng);
  if (gc.scoring == Scoring::kRegression) batch.values = RandomMat(2, T * B, rng, 1.0);
  else batch.classes = RandomIds(T * B, config.output_size, rng);
  if (gc.scoring == Scoring::kMasked || gc.scoring == Scoring::kRegression) {
    batch.scored = Mask::Zero(T * B);
    for (Eigen::Index j = 0; j < T * B; ++j) batch.scored(j) = rng.Uniform() < 0.5;
    batch.scored(T * B - 1) = 1;
  } else if (gc.scoring == Scoring::kLastStep) {
    batch.scored = Mask::Zero(T * B);
    batch.scored.tail(B).setOnes();
  }

  // loss = head loss + sum(wfinal.h * h_T) + sum(wfinal.c * c_T); the dropout mask is the same
  // in every evaluation (the generator restarts from the same state).
  const Rng dropout_rng(77);
  ModelCache<double> cache;
  State<double> final_state = State<double>::Zeros(config, B);
  auto loss = [&]() {
    Rng r = dropout_rng;
    Forward(config, params, batch, initial, cache, 1, gc.dropout > 0 ? &r : nullptr);
    FinalState(config, cache, final_state);
    double value = HeadLoss<double>(config, cache.outputs, batch, nullptr, 1);
    for (int l = 0; l < config.layers; ++l) {
      value += (wfinal.h[l].array() * final_state.h[l].array()).sum();
      if (cell.cell_state) value += (wfinal.c[l].array() * final_state.c[l].array()).sum();
    }
    return value;
  };

  Rng r = dropout_rng;
  Forward(config, params, batch, initial, cache, 2, gc.dropout > 0 ? &r : nullptr);
  if (gc.dropout > 0) {
    ASSERT_FALSE(cache.dropout_mask.empty());
    EXPECT_GT((cache.dropout_mask[0].array() == 0).count(), 0);  // some units are dropped
  }
  Mat<double> doutputs;
  HeadLoss<double>(config, cache.outputs, batch, &doutputs, 1);
  auto grads = ModelParams<double>::Zeros(config);
  State<double> dinitial = State<double>::Zeros(config, B);
  Backward(config, params, batch, cache, doutputs, &wfinal, grads, &dinitial, 2);

  std::vector<Mat<double>*> analytic;
  grads.ForEach([&](const std::string&, Mat<double>& g) { analytic.push_back(&g); });
  size_t k = 0;
  Rng pick(5);
  double worst = 0;
  params.ForEach([&](const std::string& name, Mat<double>& w) {
    const auto elements = gc.sampled > 0 ? BoundaryElements(w, gc.sampled, pick) : std::vector<Eigen::Index>{};
    const double err = CheckTensor(w, *analytic[k++], loss, elements, gc.layer_norm);
    EXPECT_LE(err, kMaxRelError) << name;
    worst = std::max(worst, err);
    std::cout << gc.Name() << " " << name << ": max relative error " << err << "\n";
  });
  for (int l = 0; l < config.layers; ++l) {
    const auto elements = gc.sampled > 0 ? BoundaryElements(initial.h[l], gc.sampled, pick) : std::vector<Eigen::Index>{};
    const double err_h = CheckTensor(initial.h[l], dinitial.h[l], loss, elements, gc.layer_norm);
    EXPECT_LE(err_h, kMaxRelError) << "h0 layer " << l;
    worst = std::max(worst, err_h);
    if (cell.cell_state) {
      const double err_c = CheckTensor(initial.c[l], dinitial.c[l], loss, elements, gc.layer_norm);
      EXPECT_LE(err_c, kMaxRelError) << "c0 layer " << l;
      worst = std::max(worst, err_c);
    }
  }
  std::cout << gc.Name() << ": max relative error over every tensor " << worst << "\n";
}

std::vector<GradCase> AllCases() {
  std::vector<GradCase> cases;
  for (const Cell* cell : Cells()) {
    for (const Input input : {Input::kOneHot, Input::kEmbed, Input::kDense})
      for (const Scoring scoring : {Scoring::kEveryStep, Scoring::kMasked, Scoring::kLastStep, Scoring::kRegression})
        cases.push_back({cell->name, input, scoring});
    // Across the kernels' 32-row panels and 8-column blocks, forward and backward.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 11, 5, 0.0, 8});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 70, 11, 5, 0.0, 8});
    // One stream on the analytic pass's 2 threads: the steps split by rows (StepShare).
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 70, 1, 5, 0.0, 8});
    // Dropout between the layers, with the mask fixed.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.4});
    // Residual connections over three layers, with and without dropout, one-hot and dense.
    cases.push_back({cell->name, Input::kOneHot, Scoring::kEveryStep, 4, 3, 7, 0.0, 0, true, 3});
    cases.push_back({cell->name, Input::kDense, Scoring::kRegression, 4, 3, 7, 0.3, 0, true, 3});
    if (!cell->layer_norm) continue;
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

INSTANTIATE_TEST_SUITE_P(AllCells, ModelGradient, ::testing::ValuesIn(AllCases()),
                         [](const auto& info) { return info.param.Name(); });

// A test name for a cell parameter: its registry name with '-' as '_'.
std::string CellTestName(const ::testing::TestParamInfo<const Cell*>& info) {
  std::string name(info.param->name);
  for (auto& ch : name)
    if (ch == '-') ch = '_';
  return name;
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
  for (const bool residual : {false, true}) {
    const SmallModel s = MakeSmallModel(*GetParam(), 3, 4, residual, 17);
    Rng rng(3);
    FeedbackMatrices<double> fa = FeedbackMatrices<double>::Draw(Feedback::kFa, s.config, rng);
    ASSERT_EQ(fa.recurrent.size(), 3u);
    for (int l = 0; l < 3; ++l) {
      fa.recurrent[l] = s.params.layers[l].weight_hh;
      fa.input[l] = s.params.layers[l].weight_ih;  // layer 0: below it, the embedding
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
    EXPECT_EQ(angles.size(), 1u + 3 * 2 + 1);  // encoder, W_ih and W_hh per layer, decoder
    // The decoder's own gradient needs no feedback: the same direction, up to acos's rounding
    // near 1 (1e-16 in the cosine is 1e-8 radians).
    EXPECT_NEAR(angles.at("decoder.weight"), 0.0, 1e-5);
    EXPECT_GT(angles.at("rnn.weight_hh_l0"), 1.0);
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

INSTANTIATE_TEST_SUITE_P(AllCells, FeedbackRules, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

TEST(AlignmentDegrees, MeasuresTheAngleOfEachWeightTensor) {
  const ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 2, 0, 1, 1);
  auto a = ModelParams<double>::Zeros(config), b = a;
  a.layers[0].weight_ih << 1, 0;  // (1, 2): at 45 degrees to (1, 1)
  b.layers[0].weight_ih << 1, 1;
  a.layers[0].weight_hh << 2;     // the same direction
  b.layers[0].weight_hh << 5;
  a.decoder_weight << 1, 0;       // opposite
  b.decoder_weight << -3, 0;
  a.layers[0].bias_ih << 1;       // biases are not measured
  b.layers[0].bias_ih << -1;
  const auto angles = AlignmentDegrees(a, b);
  ASSERT_EQ(angles.size(), 3u);
  EXPECT_NEAR(angles.at("rnn.weight_ih_l0"), 45.0, 1e-12);
  EXPECT_NEAR(angles.at("rnn.weight_hh_l0"), 0.0, 1e-12);
  EXPECT_NEAR(angles.at("decoder.weight"), 180.0, 1e-12);
}

class TruncatedBptt : public ::testing::TestWithParam<const Cell*> {};

TEST_P(TruncatedBptt, TwoChunksWithCarriedStateEqualOneChunk) {
  const Cell& cell = *GetParam();
  const Eigen::Index T = 8, B = 2;
  const ModelConfig config = LanguageModel(cell, 6, 0, 5, 2);
  Rng rng(99);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  Batch<double> whole_batch;
  whole_batch.T = T;
  whole_batch.B = B;
  whole_batch.ids = RandomIds(T * B, 6, rng);
  State<double> initial = State<double>::Zeros(config, B);
  for (auto& h : initial.h) h = RandomMat(5, B, rng);
  for (auto& c : initial.c) c = RandomMat(5, B, rng);

  ModelCache<double> whole;
  Forward(config, params, whole_batch, initial, whole, 1);
  State<double> whole_final = State<double>::Zeros(config, B);
  FinalState(config, whole, whole_final);

  ModelCache<double> part;
  State<double> state = initial;
  Mat<double> outputs(6, T * B);
  for (int chunk = 0; chunk < 2; ++chunk) {
    Batch<double> piece;
    piece.T = T / 2;
    piece.B = B;
    piece.ids = whole_batch.ids.segment(chunk * (T / 2) * B, (T / 2) * B);
    Forward(config, params, piece, state, part, 1);
    FinalState(config, part, state);
    outputs.middleCols(chunk * (T / 2) * B, (T / 2) * B) = part.outputs;
  }
  EXPECT_LE((outputs - whole.outputs).cwiseAbs().maxCoeff(), 1e-13);
  for (int l = 0; l < config.layers; ++l) {
    EXPECT_LE((state.h[l] - whole_final.h[l]).cwiseAbs().maxCoeff(), 1e-13);
    if (cell.cell_state) {
      EXPECT_LE((state.c[l] - whole_final.c[l]).cwiseAbs().maxCoeff(), 1e-13);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, TruncatedBptt, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

// The time loops share each step between the threads by columns of the batch, or by rows of
// the recurrent product when there are fewer columns than threads (StepShare, packed_gemm.h);
// every sum of the sweeps runs in the same order either way, so one layer's forward cache and
// backward outputs are bit for bit those of one thread. (The large products around the sweeps
// are Eigen's, whose kernels may round differently at different split sizes: a whole model is
// held to its central differences instead, above, with B = 1 on 2 threads.) In float at H = 70
// (the products' 70, 210 and 280 rows make 3, 7 and 9 panels of 32, shared unevenly), B = 1 on
// 2 and 3 threads and B = 2 on 3 (split by rows), B = 2 on 2 and B = 3 (by columns); every cell,
// with and without layer norm; in float, and with bfloat16 products where the CPU has them
// (the steps' products then run on 16-row tiles: 70, 210 and 280 rows end in partial tiles).
class ThreadSplit : public ::testing::TestWithParam<const Cell*> {};

TEST_P(ThreadSplit, AnyThreadCountGivesTheOneThreadNumbers) {
  const Cell& cell = *GetParam();
  const Eigen::Index H = 70, T = 5, G = cell.gates;
  std::vector<Precision> precisions = {Precision::kFloat32};
  if (Bf16ProductsAvailable()) precisions.push_back(Precision::kBfloat16);
  for (const Precision precision : precisions)
  for (const bool layer_norm : {false, true}) {
    if (layer_norm && !cell.layer_norm) continue;
    for (const Eigen::Index B : {1, 2, 3}) {
      ModelConfig config = LanguageModel(cell, 6, 0, H, 1);
      config.layer_norm = layer_norm;
      config.Validate();
      Rng rng(31 + B);
      ModelParams<float> params;
      Initialize(config, InitOptions{}, rng, params);
      const RecurrentParams<float>& p = params.layers[0];
      const Mat<float> input = RandomMat(G * H, T * B, rng, 1.0).cast<float>();  // W_ih x_t
      const Mat<float> h0 = RandomMat(H, B, rng).cast<float>(), c0 = RandomMat(H, B, rng).cast<float>();
      const Mat<float> dh_out = RandomMat(H, T * B, rng).cast<float>();
      const Mat<float> dh_T = RandomMat(H, B, rng).cast<float>(), dc_T = RandomMat(H, B, rng).cast<float>();

      struct Sweeps {
        LayerCache<float> cache;
        LayerBackward<float> back;
      };
      const auto run = [&](int threads) {
        Sweeps s;
        s.cache.Resize(cell, H, T, B, layer_norm);
        s.cache.gates = input;
        s.cache.h.leftCols(B) = h0;
        if (cell.cell_state) s.cache.c.leftCols(B) = c0;
        cell.modes<float>().chunk_forward(p, s.cache, Compute{threads, precision});
        s.back.Resize(cell, H, T, B, layer_norm);
        s.back.dh = dh_T;
        if (cell.cell_state) s.back.dc = dc_T;
        RecurrentParams<float> grad = RecurrentParams<float>::Zeros(cell, 6, H, layer_norm);
        cell.modes<float>().chunk_backward(p, p.weight_hh, s.cache, dh_out, s.back, grad, Compute{threads, precision});
        return s;
      };
      const Sweeps one = run(1);
      for (const int threads : {2, 3}) {
        const Sweeps many = run(threads);
        const std::string where = std::string(cell.name) + " " + PrecisionName(precision) +
                                  (layer_norm ? " layer norm" : "") + " B " +
                                  std::to_string(B) + " on " + std::to_string(threads) + " threads: ";
        const auto same = [&](const char* name, const Mat<float>& a, const Mat<float>& b) {
          ASSERT_EQ(a.rows(), b.rows()) << where << name;
          ASSERT_EQ(a.cols(), b.cols()) << where << name;
          EXPECT_TRUE((a.array() == b.array()).all()) << where << name;
        };
        same("h", many.cache.h, one.cache.h);
        same("c", many.cache.c, one.cache.c);
        same("gates", many.cache.gates, one.cache.gates);
        same("tanh_c", many.cache.tanh_c, one.cache.tanh_c);
        same("recurrent", many.cache.recurrent, one.cache.recurrent);
        same("ln_ih", many.cache.ln_ih, one.cache.ln_ih);
        same("ln_hh", many.cache.ln_hh, one.cache.ln_hh);
        same("ln_c", many.cache.ln_c, one.cache.ln_c);
        same("ln_rstd", many.cache.ln_rstd, one.cache.ln_rstd);
        same("dgates", many.back.dgates, one.back.dgates);
        same("drecurrent", many.back.drecurrent, one.back.drecurrent);
        same("dln_ih", many.back.dln_ih, one.back.dln_ih);
        same("dln_hh", many.back.dln_hh, one.back.dln_hh);
        same("dln_c", many.back.dln_c, one.back.dln_c);
        same("dh_0", many.back.dh, one.back.dh);
        same("dc_0", many.back.dc, one.back.dc);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, ThreadSplit, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

// bfloat16 products (compute.h): the kernels are proven in kernels_test; here, that the model
// sends its large products and its steps' recurrent products there, and what that costs.
// Operands rounded to 8 bits of significand move a float model's outputs and gradients by a few
// parts in a thousand: each is asserted within 3% (relative L2) of the float run's and different
// from it (the products did run in bfloat16); the ReLU RNN's gradient is the exception said
// below. One-hot input with 2 layers (the upper layer's input projection), an embedding and a
// dense input, every cell, 2 threads, with B = 5 and B = 1.
class Bf16Products : public ::testing::TestWithParam<const Cell*> {};

TEST_P(Bf16Products, StayWithinBfloat16RoundingOfFloat) {
  if (!Bf16ProductsAvailable()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX-512 BF16";
  for (const Input input : {Input::kOneHot, Input::kEmbed, Input::kDense})
  for (const Eigen::Index B : {5, 1}) {  // the steps split by columns, and by rows (one stream)
    constexpr int V = 30, H = 40, T = 6;
    ModelConfig config = LanguageModel(*GetParam(), V, input == Input::kEmbed ? 12 : 0, H, 2);
    if (input == Input::kDense) {
      config.vocab_size = 0;
      config.input_size = 9;
    }
    config.Validate();
    Rng rng(21);
    ModelParams<float> params;
    Initialize(config, InitOptions{}, rng, params);
    Batch<float> batch;
    batch.T = T;
    batch.B = B;
    if (input == Input::kDense) batch.dense = Mat<double>::Random(9, T * B).cast<float>();
    else batch.ids = RandomIds(T * B, V, rng);
    batch.classes = RandomIds(T * B, V, rng);
    const auto run = [&](Precision products, Mat<float>& outputs) {
      ModelCache<float> cache;
      Forward(config, params, batch, State<float>::Zeros(config, B), cache, Compute{2, products});
      outputs = cache.outputs;
      Mat<float> d;
      HeadLoss<float>(config, cache.outputs, batch, &d, 1);
      ModelParams<float> grads = ModelParams<float>::Zeros(config);
      Backward(config, params, batch, cache, d, nullptr, grads, nullptr, Compute{2, products});
      return grads;
    };
    Mat<float> out32, out16;
    const ModelParams<float> g32 = run(Precision::kFloat32, out32), g16 = run(Precision::kBfloat16, out16);
    const std::string what = std::string(GetParam()->name) + " input " + std::to_string(static_cast<int>(input)) +
                             " B " + std::to_string(B);
    EXPECT_LE((out16 - out32).norm(), 0.03 * out32.norm()) << what;
    EXPECT_GT((out16 - out32).norm(), 0.0) << what;
    std::vector<const Mat<float>*> f;
    g32.ForEach([&f](const std::string&, const Mat<float>& m) { f.push_back(&m); });
    // A ReLU's derivative jumps at 0: the few units whose pre-activation the rounding moves
    // across 0 change the ReLU RNN's gradient by more than the rounding itself (4-14% here),
    // so for it only the gradient's finiteness is asserted.
    const bool smooth = GetParam()->name != "rnn-relu";
    size_t k = 0;
    double moved = 0;
    g16.ForEach([&](const std::string& name, const Mat<float>& m) {
      const Mat<float>& ref = *f[k++];
      if (smooth) EXPECT_LE((m - ref).norm(), 0.03 * ref.norm() + 1e-7) << what << " " << name;
      else EXPECT_TRUE(m.allFinite()) << what << " " << name;
      moved += (m - ref).norm();
    });
    EXPECT_GT(moved, 0.0) << what;
  }
}

TEST(Bf16ProductsRefused, ForDoubleModels) {
  const ModelConfig config = LanguageModel(*Cells()[0], 6, 0, 5, 2);
  Rng rng(1);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  Batch<double> batch;
  batch.T = 2;
  batch.B = 1;
  batch.ids = RandomIds(2, 6, rng);
  ModelCache<double> cache;
  EXPECT_THROW(Forward(config, params, batch, State<double>::Zeros(config, 1), cache, Compute{1, Precision::kBfloat16}),
               Error);
}

INSTANTIATE_TEST_SUITE_P(AllCells, Bf16Products, ::testing::ValuesIn(Cells().begin(), Cells().end()), CellTestName);

}  // namespace
}  // namespace bptt
