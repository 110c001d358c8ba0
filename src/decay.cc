#include "bptt/decay.h"

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "bptt/clip.h"
#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/plot.h"
#include "bptt/task.h"
#include "bptt/trainer.h"
#include "decay_internal.h"

namespace bptt {

namespace {

// Norms below this are treated as 0 by the fit (they are subnormal or about to be).
constexpr double kSmallestNorm = 1e-300;

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

// Layer l's cache restricted to its last k steps (h_{s-k} becomes the sub-chunk's h_0).
LayerCache<double> LastSteps(const Cell& cell, const LayerCache<double>& cache, Eigen::Index k) {
  const Eigen::Index B = cache.B, s = cache.T, start = (s - k) * B;
  LayerCache<double> sub;
  sub.T = k;
  sub.B = B;
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
  if (options.loss_step < 0 || options.loss_step > data.T)
    throw Error("--loss-step must be in [0, " + std::to_string(data.T) + "] (0 = the last step), got " +
                std::to_string(options.loss_step));
  if (options.jacobian_lags < 0) throw Error("--jacobian-lags must be 0 or positive");
  if (options.power_iterations < 1) throw Error("--power-iterations must be positive");
  if (options.jacobian_batch < 0) throw Error("--jacobian-batch must be 0 (all) or positive");
  if (!(options.clip_norm > 0)) throw Error("--clip-norm must be positive");
}

std::string Format(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

nlohmann::json JsonNumber(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json FitJson(const DecayFit& fit) {
  return {{"decay_factor", JsonNumber(fit.decay_factor)},
          {"half_life", JsonNumber(fit.half_life)},
          {"lag_below_1e-6", fit.lag_below >= 0 ? nlohmann::json(fit.lag_below) : nlohmann::json(nullptr)},
          {"explodes", fit.explodes}};
}

}  // namespace

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
    if (!std::isfinite(m) || m <= kSmallestNorm) continue;
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
                          const std::vector<int>& lags, const DecayOptions& options) {
  const Eigen::Index H = params.hidden_size(), B = cache.B;
  Mat<double> sigma = Mat<double>::Zero(static_cast<Eigen::Index>(lags.size()), B);
  Rng rng(options.seed);
  LayerBackward<double> back;
  RecurrentParams<double> scratch = RecurrentParams<double>::Zeros(cell, params.E, H, params.layer_norm());
  for (size_t li = 0; li < lags.size(); ++li) {
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

Batch<double> CheckpointInputs(const Checkpoint& checkpoint, const std::string& text, int T, int B, uint64_t seed,
                               size_t* unknown) {
  if (checkpoint.training && !TaskOf(checkpoint.training->options).empty()) {
    const TrainOptions o = TrainOptionsFromJson(checkpoint.training->options, "checkpoint");
    const std::unique_ptr<Task> task = Task::Make(o.task, o.task_length);
    Batch<float> batch;
    task->Generate(StreamSeed(seed, kTestDataStream), 0, B, batch);
    Batch<double> data;
    data.T = batch.T;
    data.B = batch.B;
    data.ids = batch.ids;
    data.dense = batch.dense.cast<double>();
    data.classes = batch.classes;
    data.values = batch.values.cast<double>();
    data.scored = batch.scored;
    return ScoredAt(data, 0);
  }
  Rng rng(seed);
  if (text.empty()) return UnigramInputs(checkpoint.vocab, T, B, rng);
  std::vector<std::string> missing;
  const std::vector<int32_t> ids = checkpoint.vocab.Encode(text, &missing);
  if (unknown) *unknown = missing.size();
  return CorpusInputs(ids, T, B);
}

DecayReport MeasureDecay(const std::string& model, const ModelConfig& config, const ModelParams<double>& params,
                         const Batch<double>& data, const DecayOptions& options) {
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
          JB == B ? JacobianNorms(cell, params.layers[l], cache.layers[l], lags, options)
                  : JacobianNorms(cell, params.layers[l], FirstSequences(cell, cache.layers[l], JB), lags, options);
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

void WriteDecayCsv(const std::vector<DecayReport>& reports, const std::filesystem::path& path) {
  std::ostringstream out;
  out << "model,layer,quantity,lag,median,q1,q3,relative\n";
  for (const auto& r : reports)
    for (const auto& c : r.curves)
      for (size_t i = 0; i < c.lags.size(); ++i)
        out << CsvField(r.model) << ',' << c.layer << ',' << c.quantity << ',' << c.lags[i] << ',' << Format(c.median[i])
            << ',' << Format(c.q1[i]) << ',' << Format(c.q3[i]) << ',' << Format(c.relative[i]) << '\n';
  SaveText(out.str(), path);
}

nlohmann::json DecaySummaryJson(const std::vector<DecayReport>& reports, const DecayOptions& options) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& r : reports) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& ld : r.layers) {
      nlohmann::json j = FitJson(ld.h);
      j["layer"] = ld.layer;
      j["sigma_max"] = JsonNumber(ld.sigma_max);
      j["spectral_radius"] = JsonNumber(ld.spectral_radius);
      j["pascanu_bound"] = JsonNumber(ld.pascanu_bound);
      nlohmann::json gates = nlohmann::json::array();
      for (const auto& sp : ld.spectra)
        gates.push_back({{"gate", sp.gate}, {"sigma_max", JsonNumber(sp.sigma_max)},
                         {"spectral_radius", JsonNumber(sp.spectral_radius)}});
      j["gates"] = gates;
      if (r.Find(ld.layer, "c")) j["c"] = FitJson(ld.c);
      if (r.Find(ld.layer, "jacobian")) j["jacobian"] = FitJson(ld.jacobian);
      layers.push_back(j);
    }
    models.push_back({{"model", r.model},
                      {"cell", std::string(r.config.cell->name)},
                      {"hidden", r.config.hidden_size},
                      {"layers_count", r.config.layers},
                      {"vocab_size", r.config.vocab_size},
                      {"steps", r.T},
                      {"batch", r.B},
                      {"loss_step", r.loss_step},
                      {"grad_norm", JsonNumber(r.grad_norm)},
                      {"clip_norm", r.clip_norm},
                      {"clip_fraction", JsonNumber(r.clip_fraction)},
                      {"layers", layers}});
  }
  return {{"options",
           {{"loss_step", options.loss_step},
            {"jacobian_lags", options.jacobian_lags},
            {"jacobian_batch", options.jacobian_batch},
            {"power_iterations", options.power_iterations},
            {"power_tolerance", options.power_tolerance},
            {"clip_norm", options.clip_norm},
            {"vanish_threshold", options.vanish_threshold},
            {"seed", options.seed}}},
          {"models", models}};
}

void WriteDecaySummary(const std::vector<DecayReport>& reports, const DecayOptions& options,
                       const std::filesystem::path& path) {
  SaveText(DecaySummaryJson(reports, options).dump(2) + "\n", path);
}

void WriteDecayPlot(const std::vector<DecayReport>& reports, const std::filesystem::path& path) {
  LineChart chart;
  chart.title = "Gradient decay over timesteps (median and quartiles over sequences)";
  chart.x_label = "lag k (steps back from the loss)";
  chart.y_label = "‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖  (top layer)";
  std::vector<LineSeries> bounds;
  for (const auto& r : reports) {
    const DecayCurve* c = r.Find(r.config.layers - 1, "h");
    if (c == nullptr) continue;
    LineSeries s;
    s.label = r.model;
    const double m0 = c->median.front();
    for (size_t i = 0; i < c->lags.size(); ++i) {
      s.x.push_back(c->lags[i]);
      s.y.push_back(c->relative[i]);
      s.low.push_back(c->q1[i] / m0);
      s.high.push_back(c->q3[i] / m0);
    }
    chart.series.push_back(std::move(s));
    // The bound that holds for this model's weights: each step back multiplies the top layer's
    // gradient by diag(act') U^T, of norm at most γ σ_max(U), so ‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖ <=
    // (γ σ_max)^k. (0.25^k alone is the bound only for σ_max <= 1.)
    const double gamma_sigma = r.layers.back().pascanu_bound;
    if (!std::isfinite(gamma_sigma)) continue;
    char label[128];
    std::snprintf(label, sizeof label, "(%.3g·%.3g)^k bound, %s", r.config.cell->pascanu_gamma,
                  r.layers.back().sigma_max, r.model.c_str());
    LineSeries bound;
    bound.label = label;
    bound.reference = true;
    for (int k = 0; k <= c->lags.back(); ++k) {
      bound.x.push_back(k);
      bound.y.push_back(std::pow(gamma_sigma, k));
    }
    bounds.push_back(std::move(bound));
  }
  for (auto& bound : bounds) chart.series.push_back(std::move(bound));
  SaveText(RenderLineChart(chart), path);
}

void RecordDecay(const ModelConfig& config, const ModelParams<float>& params, const Batch<double>& data,
                 const DecayOptions& options, const std::filesystem::path& run_dir, int64_t step) {
  const DecayReport r = MeasureDecay(std::string(config.cell->name), config, params.Cast<double>(), data, options);

  const std::filesystem::path csv = run_dir / "decay_train.csv";
  const bool fresh = !std::filesystem::exists(csv);
  {
    std::ofstream out(csv, std::ios::app);
    if (!out) throw Error(csv.string() + ": cannot open for appending");
    if (fresh) out << "step,layer,quantity,lag,median,relative\n";
    for (const auto& c : r.curves)
      for (size_t i = 0; i < c.lags.size(); ++i)
        out << step << ',' << c.layer << ',' << c.quantity << ',' << c.lags[i] << ',' << Format(c.median[i]) << ','
            << Format(c.relative[i]) << '\n';
    if (!out) throw Error(csv.string() + ": write failed");
  }

  // The heatmap from every recorded step: top layer, quantity h, log10 of the relative norm.
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  std::map<int64_t, std::map<int, double>> grid;
  const int top = config.layers - 1;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string f[6];
    for (auto& x : f) std::getline(fields, x, ',');
    if (f[2] != "h" || std::stoi(f[1]) != top) continue;
    grid[std::stoll(f[0])][std::stoi(f[3])] = std::strtod(f[5].c_str(), nullptr);
  }
  Heatmap map;
  map.title = "Gradient decay during training (" + std::string(config.cell->name) + ", top layer)";
  map.x_label = "lag k (steps back from the loss)";
  map.y_label = "training step";
  map.colour_label = "log10 ‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖";
  std::map<int, size_t> column_of;
  for (const auto& [st, row] : grid)
    for (const auto& [lag, v] : row) column_of.emplace(lag, 0);
  for (auto& [lag, j] : column_of) {
    j = map.columns.size();
    map.columns.push_back(lag);
  }
  map.values = Mat<double>::Constant(static_cast<Eigen::Index>(grid.size()), static_cast<Eigen::Index>(map.columns.size()),
                                     std::numeric_limits<double>::quiet_NaN());
  for (const auto& [st, row] : grid) {
    const Eigen::Index i = static_cast<Eigen::Index>(map.rows.size());
    map.rows.push_back(static_cast<double>(st));
    for (const auto& [lag, v] : row)
      if (v > kSmallestNorm) map.values(i, static_cast<Eigen::Index>(column_of[lag])) = std::log10(v);
  }
  SaveText(RenderHeatmap(map), run_dir / "heatmap.svg");
}

std::vector<DecayReport> MeasureDecayStudy(const DecayStudy& study, std::ostream& log) {
  if (study.cells.empty() && study.checkpoints.empty()) throw Error("give --cell or --checkpoint (or both)");
  const std::vector<std::string> inits =
      study.inits.empty() ? std::vector<std::string>{std::string(InitName(InitOptions().scheme))} : study.inits;
  if (inits.size() != 1 && inits.size() != study.cells.size())
    throw Error("--init takes one scheme for all models or one per --cell (" + std::to_string(study.cells.size()) + ")");
  if (study.measure.threads < 1) throw Error("--threads must be positive, got " + std::to_string(study.measure.threads));
  const int steps = study.steps.value_or(DecayStudy::kDefaultSteps);
  DecayOptions options = study.measure;
  options.seed = study.seed;

  std::string text;
  if (!study.corpus.empty()) {
    std::ifstream in(study.corpus, std::ios::binary);
    if (!in) throw Error(study.corpus + ": cannot open");
    std::ostringstream read;
    read << in.rdbuf();
    text = read.str();
  }
  std::vector<DecayReport> reports;
  const auto label_of = [&reports](std::string label) {
    int same = 1;
    for (const auto& r : reports) same += r.model == label || r.model.rfind(label + " #", 0) == 0;
    return same > 1 ? label + " #" + std::to_string(same) : label;
  };
  const auto measure = [&](const std::string& label, const ModelConfig& c, const ModelParams<float>& params,
                           const Batch<double>& data) {
    log << "bptt decay: " << label << " (" << c.cell->name << ", L=" << c.layers << ", H=" << c.hidden_size
        << ", T=" << data.T << ", B=" << data.B << ")\n";
    reports.push_back(MeasureDecay(label_of(label), c, params.Cast<double>(), data, options));
  };

  // Fresh models share one vocabulary and one input.
  if (!study.cells.empty()) {
    ModelConfig config = study.model;
    Batch<double> data;
    if (!study.corpus.empty()) {
      TokenizerOptions tokenizer;
      tokenizer.unit = study.unit;
      const Vocab vocab = VocabBuilder(tokenizer).Add(text, study.corpus).Build();
      config.vocab_size = vocab.size();
      data = CorpusInputs(vocab.Encode(text), steps, study.batch);
    } else {
      config.vocab_size = study.symbols;
      Rng rng(study.seed + 1);
      data = UniformInputs(study.symbols, steps, study.batch, rng);
    }
    for (size_t i = 0; i < study.cells.size(); ++i) {
      const std::string& scheme = inits.size() == 1 ? inits[0] : inits[i];
      const auto parsed = ParseInit(scheme);
      if (!parsed) throw Error("--init '" + scheme + "' is not one of uniform, pytorch, xavier, he, orthogonal, identity");
      ModelConfig c = config;
      c.cell = &ParseCell(study.cells[i]);
      c.output_size = c.vocab_size;
      c.Validate();
      InitOptions init = study.init;
      init.scheme = *parsed;
      Rng init_rng(study.seed);
      auto params = ModelParams<float>::Zeros(c);
      Initialize(c, init, init_rng, params);
      std::string label = study.cells[i];
      if (init.scheme != InitOptions().scheme) label += " (" + scheme + ")";
      measure(label, c, params, data);
    }
  }

  for (const auto& path : study.checkpoints) {
    const Checkpoint checkpoint = LoadCheckpoint(path);
    const bool task = checkpoint.training && !TaskOf(checkpoint.training->options).empty();
    if (task && (study.steps || !study.corpus.empty()))
      throw Error(path + " was trained on a task; its sequences are the task's, so --steps and --corpus do not apply");
    size_t unknown = 0;
    const Batch<double> data = CheckpointInputs(checkpoint, text, steps, study.batch, study.seed + 1, &unknown);
    if (unknown > 0)
      log << "bptt decay: " << unknown << " symbols of " << study.corpus << " are not in the vocabulary of " << path
          << "; left out\n";
    const std::filesystem::path p(path);
    const std::string parent = p.parent_path().filename().string();
    measure(parent.empty() ? p.stem().string() : parent + "/" + p.stem().string(), checkpoint.config,
            checkpoint.params, data);
  }
  return reports;
}

}  // namespace bptt
