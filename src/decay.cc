#include "bptt/decay.h"

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>

#include "bptt/clip.h"
#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/options.h"
#include "decay_internal.h"

namespace bptt {

namespace {

// Linear interpolation between order statistics (R's type 7): q in [0, 1].
double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(pos));
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (pos - static_cast<double>(i)) * (v[i + 1] - v[i]);
}

// Appends to `curve` the quartiles over the B values of one lag.
void AddPoint(DecayCurve& curve, int lag, const std::vector<double>& values) {
  curve.lags.push_back(lag);
  curve.median.push_back(Quantile(values, 0.5));
  curve.q1.push_back(Quantile(values, 0.25));
  curve.q3.push_back(Quantile(values, 0.75));
}

void SetRelative(DecayCurve& curve) {
  curve.relative.clear();
  for (double m : curve.median) curve.relative.push_back(m / curve.median.front());
}

// The curve of a recorded sweep: steps (H, s*B) holds dL/dx_t for t = 1..s; lag k is step s - k.
DecayCurve StepCurve(int layer, const std::string& quantity, const Mat<double>& steps, Eigen::Index s, Eigen::Index B) {
  DecayCurve curve{layer, quantity, {}, {}, {}, {}, {}};
  std::vector<double> norms(B);
  for (Eigen::Index k = 0; k < s; ++k) {
    const auto block = steps.middleCols((s - 1 - k) * B, B);
    for (Eigen::Index b = 0; b < B; ++b) norms[b] = block.col(b).stableNorm();
    AddPoint(curve, static_cast<int>(k), norms);
  }
  SetRelative(curve);
  return curve;
}

// Steps a declared buffer of the cache holds per chunk of T steps: T (the steps' values), T + 1
// (the states before and after them), or 0 for a buffer that is not per step.
Eigen::Index StepsOf(const BufferDecl& d, Eigen::Index T) {
  if (d.cols.letters & Extent::kT1) return T + 1;
  return d.cols.letters & Extent::kT ? T : 0;
}

// The regularisers of a cache of the evaluation pass (no masks: zoneout's expectation), for a
// part of it.
LoopRegularisers<double> Evaluation(const LoopRegularisers<double>& loop) {
  if (loop.recurrent_mask || loop.h.mask || loop.c.mask) throw Error("decay: the caches hold training masks");
  return loop;
}

// Layer l's cache restricted to its last k steps (h_{s-k} becomes the sub-chunk's h_0).
LayerCache<double> LastSteps(const Cell& cell, const LayerCache<double>& cache, Eigen::Index k) {
  const Eigen::Index B = cache.B, s = cache.T, start = (s - k) * B;
  LayerCache<double> sub;
  sub.T = k;
  sub.B = B;
  sub.loop = Evaluation(cache.loop);
  sub.buffers.resize(cache.buffers.size());
  for (size_t n = 0; n < cache.buffers.size(); ++n) {
    const Mat<double>& m = cache.buffers[n];
    const Eigen::Index steps = StepsOf(cell.cache[n], s);  // s, or s + 1 with the state before the chunk
    if (m.size() > 0) sub.buffers[n] = steps > 0 ? m.middleCols(start, (k + steps - s) * B) : m;
  }
  return sub;
}

// Layer l's cache restricted to its first JB sequences.
LayerCache<double> FirstSequences(const Cell& cell, const LayerCache<double>& cache, Eigen::Index JB) {
  LayerCache<double> sub;
  sub.T = cache.T;
  sub.B = JB;
  sub.loop = Evaluation(cache.loop);
  sub.buffers.resize(cache.buffers.size());
  for (size_t n = 0; n < cache.buffers.size(); ++n) {
    const Mat<double>& m = cache.buffers[n];
    const Eigen::Index steps = StepsOf(cell.cache[n], cache.T);
    if (m.size() == 0) continue;
    if (steps == 0) {
      sub.buffers[n] = m;
      continue;
    }
    Mat<double>& out = sub.buffers[n];
    out.resize(m.rows(), steps * JB);
    for (Eigen::Index t = 0; t < steps; ++t) out.middleCols(t * JB, JB) = m.middleCols(t * cache.B, JB);
  }
  return sub;
}

// J v = ∂h_k/∂h_0 · v over the cached chunk by the cell's tangent mode, v (H, B), c_0 held fixed.
Mat<double> Tangent(const Cell& cell, const RecurrentParams<double>& p, const LayerCache<double>& cache,
                    const Mat<double>& v) {
  Mat<double> dh = v, dc;
  if (cell.cell_state) dc = Mat<double>::Zero(v.rows(), v.cols());
  cell.modes<double>().tangent(p, cache, dh, dc);
  return dh;
}

// Vector-Jacobian product: w^T ∂h_k/∂h_0 by the cell's backward sweep with dL/dh_k = w and no
// other gradient (c_0 held fixed: the sweep's dh_0 does not include the path through c_0).
Mat<double> Vjp(const Cell& cell, const RecurrentParams<double>& p, const LayerCache<double>& cache,
                const Mat<double>& w, const Mat<double>& zero_out, LayerBackward<double>& back,
                RecurrentParams<double>& scratch) {
  back.Resize(cell, p.hidden_size(), cache.T, cache.B, p.layer_norm());
  back.dh() = w;
  if (cell.cell_state) back.dc().setZero();
  cell.modes<double>().chunk_backward(p, p.weight_hh(), cache, zero_out, back, scratch, /*threads=*/1);
  return back.dh();
}

void CheckInputs(const ModelConfig& config, const Batch<double>& data, const DecayOptions& options) {
  config.Validate();
  if (data.T < 1 || data.B < 1) throw Error("decay: need at least one step and one sequence");
  const Eigen::Index n = data.T * data.B;
  if (config.dense_input() ? data.dense.rows() != config.input_size || data.dense.cols() != n : data.ids.size() != n)
    throw Error("decay: the inputs must hold T*B = " + std::to_string(n) + " positions of the model's input");
  if (config.head == Head::kSoftmax ? data.classes.size() != n
                                    : data.values.rows() != config.output_size || data.values.cols() != n)
    throw Error("decay: the targets must hold T*B = " + std::to_string(n) + " positions of the model's head");
  const auto check = [](const Ids& ids, Eigen::Index count, int bound, const char* what) {
    for (Eigen::Index j = 0; j < count; ++j)
      if (ids(j) < 0 || ids(j) >= bound)
        throw Error(std::string("decay: ") + what + " " + std::to_string(ids(j)) + " is outside the model's range of " +
                    std::to_string(bound));
  };
  if (!config.dense_input()) check(data.ids, n, config.vocab_size, "symbol id");
  if (config.head == Head::kSoftmax)
    for (Eigen::Index j = 0; j < n; ++j)
      if (data.IsScored(j)) check(data.classes.segment(j, 1), 1, config.output_size, "target class");
  options.Validate();
  if (options.loss_step > data.T)
    throw Error("--loss-step must be in [0, " + std::to_string(data.T) + "] (0 = the last step), got " +
                std::to_string(options.loss_step));
}

}  // namespace

void DecayOptions::Validate() const {
  if (loss_step < 0) throw Error("--loss-step must be 0 (the last step) or positive, got " + std::to_string(loss_step));
  if (jacobian_lags < 0) throw Error("--jacobian-lags must be 0 or positive");
  if (power_iterations < 1) throw Error("--power-iterations must be positive");
  if (jacobian_batch < 0) throw Error("--jacobian-batch must be 0 (all) or positive");
  if (!(power_tolerance > 0)) throw Error("the power iteration's tolerance must be positive");
  if (!(clip_norm > 0) || !std::isfinite(clip_norm)) throw Error("--clip-norm must be positive");
  if (!(vanish_threshold > 0)) throw Error("the vanishing threshold must be positive");
  CheckThreads(threads, 1);
}

// A language-model batch of T steps and B sequences, every position scored.
Batch<double> SymbolBatch(int T, int B) {
  Batch<double> data;
  data.T = T;
  data.B = B;
  data.ids.resize(static_cast<Eigen::Index>(T) * B);
  data.classes.resize(static_cast<Eigen::Index>(T) * B);
  return data;
}

Batch<double> UniformInputs(int vocab_size, int T, int B, Rng& rng) {
  if (vocab_size < 1 || T < 1 || B < 1) throw Error("decay: random inputs need V, T and B positive");
  Batch<double> data = SymbolBatch(T, B);
  for (Eigen::Index j = 0; j < data.ids.size(); ++j) {
    data.ids(j) = static_cast<int32_t>(rng.Below(vocab_size));
    data.classes(j) = static_cast<int32_t>(rng.Below(vocab_size));
  }
  return data;
}

Batch<double> UnigramInputs(const Vocab& vocab, int T, int B, Rng& rng) {
  if (vocab.size() < 1 || T < 1 || B < 1) throw Error("decay: random inputs need a vocabulary and T, B positive");
  std::vector<double> cumulative;
  double total = 0;
  for (int32_t id = 0; id < vocab.size(); ++id) cumulative.push_back(total += static_cast<double>(vocab.count(id)) + 1e-12);
  // Symbol b*(T+1)... is drawn with probability count / total; targets continue the stream.
  auto draw = [&] {
    const double u = rng.Uniform() * total;
    return static_cast<int32_t>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
  };
  std::vector<int32_t> ids(static_cast<size_t>(T + 1) * B);
  for (auto& id : ids) id = std::min(draw(), vocab.size() - 1);
  Batch<double> data = SymbolBatch(T, B);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      data.ids(t * B + b) = ids[static_cast<size_t>(b) * (T + 1) + t];
      data.classes(t * B + b) = ids[static_cast<size_t>(b) * (T + 1) + t + 1];
    }
  return data;
}

Batch<double> CorpusInputs(std::span<const int32_t> ids, int T, int B) {
  if (T < 1 || B < 1) throw Error("decay: T and B must be positive");
  if (ids.size() < static_cast<size_t>(T) + 1)
    throw Error("decay: the corpus has " + std::to_string(ids.size()) + " symbols; --steps " + std::to_string(T) +
                " needs at least " + std::to_string(T + 1));
  const size_t room = ids.size() - static_cast<size_t>(T) - 1;
  Batch<double> data = SymbolBatch(T, B);
  for (int b = 0; b < B; ++b) {
    const size_t start = B == 1 ? 0 : room * static_cast<size_t>(b) / static_cast<size_t>(B - 1);
    for (int t = 0; t < T; ++t) {
      data.ids(t * B + b) = ids[start + t];
      data.classes(t * B + b) = ids[start + t + 1];
    }
  }
  return data;
}

DecayFit FitDecay(const DecayCurve& curve, double vanish_threshold) {
  DecayFit fit;
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < curve.lags.size(); ++i) {
    const double m = curve.median[i];
    if (!std::isfinite(m) || m <= kSmallestDecayNorm) continue;
    const double x = curve.lags[i], y = std::log(m);
    n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  const double denominator = n * sxx - sx * sx;
  if (n >= 2 && denominator > 0) {
    const double slope = (n * sxy - sx * sy) / denominator;
    fit.decay_factor = std::exp(slope);
    fit.half_life = slope < 0 ? std::log(2.0) / -slope : std::numeric_limits<double>::infinity();
    fit.explodes = fit.decay_factor > 1;
  }
  for (size_t i = 0; i < curve.lags.size(); ++i) {
    if (curve.relative[i] < vanish_threshold) {
      fit.lag_below = curve.lags[i];
      break;
    }
  }
  return fit;
}

std::vector<RecurrentSpectrum> RecurrentSpectra(const Cell& cell, const Mat<double>& weight_hh) {
  const Eigen::Index H = weight_hh.cols();
  std::vector<RecurrentSpectrum> out;
  for (int g = 0; g < cell.gates; ++g) {
    const Mat<double> U = weight_hh.middleRows(g * H, H);
    RecurrentSpectrum s;
    s.gate = cell.gate_names.empty() ? "" : std::string(1, cell.gate_names[static_cast<size_t>(g)]);
    s.sigma_max = Eigen::BDCSVD<Mat<double>>(U).singularValues()(0);
    s.spectral_radius = Eigen::EigenSolver<Mat<double>>(U, false).eigenvalues().cwiseAbs().maxCoeff();
    out.push_back(s);
  }
  return out;
}

std::vector<int> LogSpacedLags(int max_lag, int n) {
  std::vector<int> lags{0};
  if (max_lag < 1 || n < 1) return lags;
  if (max_lag <= n) {
    for (int k = 1; k <= max_lag; ++k) lags.push_back(k);
    return lags;
  }
  for (int i = 0; i < n; ++i) {
    const double x = n == 1 ? std::log(max_lag) : std::log(max_lag) * i / (n - 1);
    const int k = std::clamp(static_cast<int>(std::lround(std::exp(x))), 1, max_lag);
    if (k > lags.back()) lags.push_back(k);
  }
  if (lags.back() != max_lag) lags.push_back(max_lag);
  return lags;
}

// Power iteration on J^T J per sequence (column), J = ∂h_s/∂h_{s-k}. Each sequence keeps its
// own unit vector v; ‖J v‖ is the estimate. w = J v is normalised before the product J^T w, so
// that neither underflows while σ_max itself is representable.
Mat<double> JacobianNorms(const Cell& cell, const RecurrentParams<double>& params, const LayerCache<double>& cache,
                          const std::vector<int>& lags, const DecayOptions& options,
                          const std::function<void()>& between_chunks) {
  const Eigen::Index H = params.hidden_size(), B = cache.B;
  Mat<double> sigma = Mat<double>::Zero(static_cast<Eigen::Index>(lags.size()), B);
  Rng rng(options.seed);
  LayerBackward<double> back;
  RecurrentParams<double> scratch = RecurrentParams<double>::Zeros(cell, params.E, H, params.layer_norm());
  for (size_t li = 0; li < lags.size(); ++li) {
    if (between_chunks) between_chunks();
    const int k = lags[li];
    if (k < 0 || k >= cache.T + 1) throw Error("decay: lag " + std::to_string(k) + " outside the chunk");
    if (k == 0) {
      sigma.row(li).setOnes();  // J = I
      continue;
    }
    const LayerCache<double> sub = LastSteps(cell, cache, k);
    const Mat<double> zero_out = Mat<double>::Zero(H, k * B);
    Mat<double> v(H, B);
    for (Eigen::Index j = 0; j < v.size(); ++j) v(j) = rng.Normal();
    v.colwise().normalize();
    Eigen::VectorXd estimate = Eigen::VectorXd::Zero(B);
    for (int it = 0; it < options.power_iterations; ++it) {
      Mat<double> w = Tangent(cell, params, sub, v);
      bool converged = it > 0;
      for (Eigen::Index b = 0; b < B; ++b) {
        const double norm = w.col(b).stableNorm();
        if (!(std::abs(norm - estimate(b)) <= options.power_tolerance * norm)) converged = false;
        estimate(b) = norm;
        if (norm > 0) w.col(b) /= norm;
      }
      if (converged) break;
      const Mat<double> z = Vjp(cell, params, sub, w, zero_out, back, scratch);
      for (Eigen::Index b = 0; b < B; ++b) {
        const double norm = z.col(b).stableNorm();
        if (norm > 0 && std::isfinite(norm)) v.col(b) = z.col(b) / norm;
      }
    }
    sigma.row(li) = estimate.transpose();
  }
  return sigma;
}

const DecayCurve* DecayReport::Find(int layer, const std::string& quantity) const {
  for (const auto& c : curves)
    if (c.layer == layer && c.quantity == quantity) return &c;
  return nullptr;
}

namespace {

// Steps [first_step, first_step + steps) of every position-indexed part of a batch.
Batch<double> Columns(const Batch<double>& data, Eigen::Index first_step, Eigen::Index steps) {
  const Eigen::Index B = data.B, j = first_step * B, n = steps * B;
  Batch<double> out;
  out.T = steps;
  out.B = B;
  if (data.ids.size() > 0) out.ids = data.ids.segment(j, n);
  if (data.dense.size() > 0) out.dense = data.dense.middleCols(j, n);
  if (data.classes.size() > 0) out.classes = data.classes.segment(j, n);
  if (data.values.size() > 0) out.values = data.values.middleCols(j, n);
  if (data.scored.size() > 0) out.scored = data.scored.segment(j, n);
  return out;
}

}  // namespace

Batch<double> ScoredAt(const Batch<double>& data, int s) {
  const Eigen::Index B = data.B;
  // The position of each sequence's last scored step.
  std::vector<Eigen::Index> last(static_cast<size_t>(B), -1);
  for (Eigen::Index b = 0; b < B; ++b) {
    for (Eigen::Index t = data.T - 1; t >= 0 && last[b] < 0; --t)
      if (data.IsScored(t * B + b)) last[b] = t * B + b;
    if (last[b] < 0) throw Error("decay: sequence " + std::to_string(b) + " has no scored step");
  }
  if (s == 0) s = static_cast<int>(*std::min_element(last.begin(), last.end()) / B + 1);
  if (s < 1 || s > data.T) throw Error("decay: loss step " + std::to_string(s) + " outside 1.." + std::to_string(data.T));
  Batch<double> out = Columns(data, 0, s);
  if (data.scored.size() == 0) return out;
  const Eigen::Index at = (s - 1) * B;
  for (Eigen::Index b = 0; b < B; ++b) {
    if (out.scored(at + b)) continue;
    if (out.classes.size() > 0) out.classes(at + b) = data.classes(last[b]);
    if (out.values.size() > 0) out.values.col(at + b) = data.values.col(last[b]);
    out.scored(at + b) = 1;
  }
  return out;
}

DecayReport MeasureDecay(const std::string& model, const ModelConfig& config, const ModelParams<double>& params,
                         const Batch<double>& data, const DecayOptions& options,
                         const std::function<void()>& between_chunks) {
  CheckInputs(config, data, options);
  const Cell& cell = *config.cell;
  const Eigen::Index B = data.B, L = config.layers;
  const Eigen::Index s = options.loss_step > 0 ? options.loss_step : data.T;
  for (Eigen::Index b = 0; b < B; ++b)
    if (!data.IsScored((s - 1) * B + b))
      throw Error("decay: step " + std::to_string(s) + " of sequence " + std::to_string(b) +
                  " has no target; choose a --loss-step where every sequence is scored");
  const State<double> zero = State<double>::Zeros(config, B);

  DecayReport report;
  report.model = model;
  report.config = config;
  report.T = static_cast<int>(data.T);
  report.B = static_cast<int>(data.B);
  report.loss_step = static_cast<int>(s);

  // One sweep for L_b = the head's loss at step s, summed over b (not averaged), so that each
  // column carries exactly ∂L_b/∂x of its own sequence.
  const Batch<double> upto = Columns(data, 0, s);
  ModelCache<double> cache;
  Forward(config, params, upto, zero, cache, options.threads);
  Mat<double> doutputs = Mat<double>::Zero(config.output_size, s * B), dlast;
  Batch<double> last = Columns(data, s - 1, 1);
  last.scored.resize(0);
  HeadLoss<double>(config, cache.outputs.rightCols(B), last, &dlast, options.threads);
  doutputs.rightCols(B) = dlast * static_cast<double>(B);
  cache.back.resize(L);
  for (auto& back : cache.back) back.record = true;
  auto grads = ModelParams<double>::Zeros(config);
  Backward<double>(config, params, upto, cache, doutputs, nullptr, grads, nullptr, options.threads);

  const std::vector<int> lags = LogSpacedLags(static_cast<int>(s - 1), options.jacobian_lags);
  for (Eigen::Index l = 0; l < L; ++l) {
    if (between_chunks) between_chunks();
    const int layer = static_cast<int>(l);
    LayerDecay ld;
    ld.layer = layer;
    report.curves.push_back(StepCurve(layer, "h", cache.back[l].dh_steps(), s, B));
    ld.h = FitDecay(report.curves.back(), options.vanish_threshold);
    if (cell.cell_state) {
      report.curves.push_back(StepCurve(layer, "c", cache.back[l].dc_steps(), s, B));
      ld.c = FitDecay(report.curves.back(), options.vanish_threshold);
    }
    if (options.jacobian_lags > 0) {
      const Eigen::Index JB = options.jacobian_batch > 0 ? std::min<Eigen::Index>(options.jacobian_batch, B) : B;
      const Mat<double> sigma =
          JB == B ? JacobianNorms(cell, params.layers[l], cache.layers[l], lags, options, between_chunks)
                  : JacobianNorms(cell, params.layers[l], FirstSequences(cell, cache.layers[l], JB), lags, options,
                                  between_chunks);
      DecayCurve curve{layer, "jacobian", {}, {}, {}, {}, {}};
      for (size_t i = 0; i < lags.size(); ++i) {
        const Eigen::RowVectorXd row = sigma.row(static_cast<Eigen::Index>(i));
        AddPoint(curve, lags[i], std::vector<double>(row.data(), row.data() + row.size()));
      }
      SetRelative(curve);
      report.curves.push_back(std::move(curve));
      ld.jacobian = FitDecay(report.curves.back(), options.vanish_threshold);
    }
    if (cell.recurrent_matrix()) {
      ld.spectra = RecurrentSpectra(cell, params.layers[l].weight_hh());
    } else {  // nothing to measure
      ld.sigma_max = ld.spectral_radius = std::numeric_limits<double>::quiet_NaN();
    }
    for (const auto& sp : ld.spectra) {
      ld.sigma_max = std::max(ld.sigma_max, sp.sigma_max);
      ld.spectral_radius = std::max(ld.spectral_radius, sp.spectral_radius);
    }
    ld.pascanu_bound = cell.pascanu_gamma * ld.sigma_max;
    report.layers.push_back(std::move(ld));
  }

  // The gradient training would clip: the head's loss over the whole chunk.
  ModelCache<double> chunk;
  Forward(config, params, data, zero, chunk, options.threads);
  Mat<double> dchunk;
  HeadLoss<double>(config, chunk.outputs, data, &dchunk, options.threads);
  grads.SetZero();
  Backward<double>(config, params, data, chunk, dchunk, nullptr, grads, nullptr, options.threads);
  report.grad_norm = GradNorm(grads);
  report.clip_norm = options.clip_norm;
  report.clip_fraction = report.grad_norm > options.clip_norm ? 1 - options.clip_norm / report.grad_norm : 0.0;
  return report;
}

}  // namespace bptt
