// What the gradient suites share: central differences in double precision against an analytic
// gradient, and one whole-model check that every parameter and initial state of a model, with
// its input, head, sizes and options, matches them.
//
//   tests/cell_gradient_test.cc       every cell of the registry: its tensors, the kernels' panel
//                                     and block boundaries, one stream, truncated BPTT
//   tests/head_gradient_test.cc       the losses, and every input with every head, for every cell
//   tests/option_gradient_test.cc     dropout, residual connections, layer normalisation,
//                                     recurrent dropout and zoneout, and the feedback-alignment rules
//   tests/precision_gradient_test.cc  thread splits bit for bit, and bfloat16 products
//   tests/sequence_gradient_test.cc   the heads of sequence models (pooling, masks of different
//                                     lengths, absolute and Huber errors) for every cell
//
//   CheckModelGradient({"lstm", Input::kEmbed, Scoring::kMasked});
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"

namespace bptt::test {

inline constexpr double kStep = 1e-5;              // central-difference step
inline constexpr double kExtrapolatedStep = 4e-5;  // h of Richardson's extrapolation (CheckTensor)
inline constexpr double kMaxRelError = 1e-6;

// Relative error of analytic a against numeric n, |a - n| / max(|a|, |n|, kFloor).
// A central difference of a loss of size ~1 in double carries a rounding error of about
// 1e-16 / kStep ~ 1e-11 whatever the true derivative, so for elements below kFloor (dead ReLU
// units, unused embedding rows, gradients that have decayed through many steps) the error is
// measured against kFloor: such elements must agree to 1e-10 absolute.
inline constexpr double kFloor = 1e-4;
inline double RelError(double a, double n) { return std::abs(a - n) / std::max({std::abs(a), std::abs(n), kFloor}); }

// Checks d loss / d x at the given elements of x (all when `elements` is empty) against central
// differences; returns the largest relative error. The central difference D(h) is off by
// h^2 f'''/6; with `extrapolate`, Richardson's (4 D(h/2) - D(h)) / 3 removes that term, for
// losses whose third derivative is large: a layer norm whose input has a variance near its eps
// (a column that dropout has left one unit) has derivatives growing like powers of 1/sqrt(eps),
// and D(1e-5) misses their gradient by a few 1e-6. The extrapolation triples the rounding
// error, hence its larger h (error h^4), which keeps both near 1e-7.
inline double CheckTensor(Mat<double>& x, const Mat<double>& analytic, const std::function<double()>& loss,
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
inline std::vector<Eigen::Index> BoundaryElements(const Mat<double>& x, int random, Rng& rng) {
  std::set<Eigen::Index> rows{0, x.rows() - 1}, cols{0, x.cols() / 2, x.cols() - 1}, out;
  for (Eigen::Index r = 31; r < x.rows(); r += 32) rows.insert({r, std::min(r + 1, x.rows() - 1)});
  for (Eigen::Index r : rows)
    for (Eigen::Index c : cols) out.insert(c * x.rows() + r);
  for (int i = 0; i < random; ++i) out.insert(static_cast<Eigen::Index>(rng.Below(static_cast<uint64_t>(x.size()))));
  return {out.begin(), out.end()};
}

inline Ids RandomIds(Eigen::Index n, int V, Rng& rng) {
  Ids ids(n);
  for (Eigen::Index j = 0; j < n; ++j) ids(j) = static_cast<int32_t>(rng.Below(V));
  return ids;
}

inline Mat<double> RandomMat(Eigen::Index r, Eigen::Index c, Rng& rng, double scale = 0.5) {
  Mat<double> m(r, c);
  for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = rng.Uniform(-scale, scale);
  return m;
}

// A test name for a cell parameter: its registry name with '-' as '_'.
inline std::string CellTestName(const ::testing::TestParamInfo<const Cell*>& info) {
  std::string name(info.param->name);
  for (auto& ch : name)
    if (ch == '-') ch = '_';
  return name;
}

enum class Input { kOneHot, kEmbed, kDense };
enum class Scoring {
  kEveryStep,  // softmax at every position (a language model)
  kMasked,     // softmax on a random mask of positions
  kLastStep,   // softmax at the last step only (classification)
  kRegression, // mean squared error on a random mask of positions
};

// One whole-model gradient check: a cell, its input and head, the sizes and the options.
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
  // The training regularisers (model.h ModelConfig), with their masks fixed.
  double input_dropout = 0;
  double output_dropout = 0;
  bool variational = false;
  double weight_drop = 0;
  double ar = 0, tar = 0;
  // The regularisers of the time loop (cell.h): training passes with fixed masks, or with
  // `expectation` the evaluation pass (no RNG: zoneout's expectation, no recurrent dropout).
  double recurrent_dropout = 0, zoneout = 0, zoneout_cell = 0;
  bool expectation = false;

  // Whether the case's passes are training passes (an RNG draws masks).
  bool training() const {
    return dropout > 0 || input_dropout > 0 || output_dropout > 0 || weight_drop > 0 || ar > 0 || tar > 0 ||
           (!expectation && (recurrent_dropout > 0 || zoneout > 0 || zoneout_cell > 0));
  }

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
    if (input_dropout > 0) name += "_inputdropout";
    if (output_dropout > 0) name += "_outputdropout";
    if (variational) name += "_variational";
    if (weight_drop > 0) name += "_weightdrop";
    if (ar > 0) name += "_ar";
    if (tar > 0) name += "_tar";
    if (recurrent_dropout > 0) name += "_recurrentdropout";
    if (zoneout > 0) name += "_zoneout";
    if (zoneout_cell > 0) name += "_zoneoutcell";
    if (expectation) name += "_expectation";
    return name;
  }
};

inline std::string GradCaseName(const ::testing::TestParamInfo<GradCase>& info) { return info.param.Name(); }

// Every parameter tensor and initial state of the case's model against central differences,
// over T steps with B streams, a non-zero initial state and a loss that also depends on the
// final state; the analytic pass on 2 threads.
inline void CheckModelGradient(const GradCase& gc) {
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
  config.input_dropout = gc.input_dropout;
  config.output_dropout = gc.output_dropout;
  config.variational = gc.variational;
  config.weight_drop = gc.weight_drop;
  config.ar = gc.ar;
  config.tar = gc.tar;
  config.recurrent_dropout = gc.recurrent_dropout;
  config.zoneout = gc.zoneout;
  config.zoneout_cell = gc.zoneout_cell;
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
  params.ForEachTensor([&](const TensorInfo& tensor, Mat<double>& m) {
    if (!IsNorm(tensor.role)) return;
    const double start = tensor.role == TensorRole::kNormGain ? 1.0 : 0.0;
    for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = start + rng.Uniform(-0.4, 0.4);
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

  // loss = head loss + AR + TAR + sum(wfinal.h * h_T) + sum(wfinal.c * c_T); the masks are the
  // same in every evaluation (the generator restarts from the same state).
  const Rng dropout_rng(77);
  ModelCache<double> cache;
  State<double> final_state = State<double>::Zeros(config, B);
  auto loss = [&]() {
    Rng r = dropout_rng;
    Forward(config, params, batch, initial, cache, 1, gc.training() ? &r : nullptr);
    FinalState(config, cache, final_state);
    double value = HeadLoss<double>(config, cache.outputs, batch, nullptr, 1) + cache.activation_penalty;
    for (int l = 0; l < config.layers; ++l) {
      value += (wfinal.h[l].array() * final_state.h[l].array()).sum();
      if (cell.cell_state) value += (wfinal.c[l].array() * final_state.c[l].array()).sum();
    }
    return value;
  };

  Rng r = dropout_rng;
  Forward(config, params, batch, initial, cache, 2, gc.training() ? &r : nullptr);
  // Some units (weights) are dropped, some kept.
  const auto drops_some = [](const Mat<double>& mask) {
    return (mask.array() == 0).count() > 0 && (mask.array() != 0).count() > 0;
  };
  if (gc.dropout > 0) {
    ASSERT_FALSE(cache.dropout_mask.empty());
    EXPECT_TRUE(drops_some(cache.dropout_mask[0]));
  }
  if (gc.input_dropout > 0) {
    EXPECT_TRUE(drops_some(cache.input_mask));
  }
  if (gc.output_dropout > 0) {
    EXPECT_TRUE(drops_some(cache.output_mask));
  }
  if (gc.weight_drop > 0) {
    ASSERT_EQ(cache.weight_mask.size(), static_cast<size_t>(config.layers));
    EXPECT_TRUE(drops_some(cache.weight_mask[0]));
  }
  if (gc.ar > 0 || gc.tar > 0) {
    EXPECT_GT(cache.activation_penalty, 0);
  }
  if (gc.variational) {  // locked: every step repeats the first step's mask (a one-hot input's, per symbol)
    const auto locked = [&](const Mat<double>& mask) {
      for (Eigen::Index t = 1; t < T; ++t) {
        EXPECT_EQ(mask.middleCols(t * B, B), mask.leftCols(B)) << "step " << t;
      }
    };
    if (gc.dropout > 0) locked(cache.dropout_mask[0]);
    if (gc.output_dropout > 0) locked(cache.output_mask);
    if (gc.input_dropout > 0 && gc.input != Input::kOneHot) locked(cache.input_mask);
    if (gc.input_dropout > 0 && gc.input == Input::kOneHot) {
      for (Eigen::Index j = 0; j < T * B; ++j) {
        EXPECT_EQ(cache.input_mask(0, j), cache.locked_symbols(batch.ids(j), j % B)) << "position " << j;
      }
    }
  }
  // The loop's masks: present in training only, each with units of both kinds in every layer.
  for (const auto& [rate, drawn] : {std::pair{gc.recurrent_dropout, &cache.recurrent_mask},
                                    std::pair{gc.zoneout, &cache.zoneout_mask},
                                    std::pair{gc.zoneout_cell, &cache.zoneout_cell_mask}}) {
    if (!gc.training() || rate == 0) {
      EXPECT_TRUE(drawn->empty());
      continue;
    }
    ASSERT_EQ(drawn->size(), static_cast<size_t>(config.layers));
    for (const Mat<double>& m : *drawn) {
      EXPECT_GT((m.array() == 0).count(), 0);
      EXPECT_GT((m.array() != 0).count(), 0);
    }
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

}  // namespace bptt::test
