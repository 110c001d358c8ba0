#include "bptt/credit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "bptt/error.h"
#include "bptt/decay.h"
#include "bptt/loss.h"
#include "bptt/plot.h"
#include "bptt/trainer.h"
#include "kernels/threads.h"

namespace bptt {

namespace {
constexpr Credit kCredits[] = {Credit::kBptt,  Credit::kRtrl, Credit::kUoro, Credit::kSnap1,
                               Credit::kSnap2, Credit::kRflo, Credit::kEprop};
constexpr std::string_view kCreditNames[] = {"bptt", "rtrl", "uoro", "snap1", "snap2", "rflo", "eprop"};
}  // namespace

std::string_view CreditName(Credit credit) { return kCreditNames[static_cast<int>(credit)]; }
std::span<const Credit> Credits() { return kCredits; }

std::string CreditNames() {
  std::string names;
  for (const Credit c : kCredits) names += (names.empty() ? "" : ", ") + std::string(CreditName(c));
  return names;
}

Credit ParseCredit(std::string_view name, std::string_view flag) {
  for (const Credit c : kCredits)
    if (CreditName(c) == name) return c;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of " + CreditNames());
}

namespace {

// The diagonal traces: SnAp-1, RFLO and e-prop.
bool Diagonal(Credit c) { return c == Credit::kSnap1 || c == Credit::kRflo || c == Credit::kEprop; }

// The algorithms that keep the whole sensitivity matrix M (N, P): RTRL, and SnAp-2 on its pattern.
bool WholeSensitivity(Credit c) { return c == Credit::kRtrl || c == Credit::kSnap2; }

// Whether the cell's state reaches the next step other than through weight_hh (a leak: GRU's
// z_t h_{t-1}, the minimal cells' a_t h_{t-1}), read from the declarations: a cell without a
// recurrent matrix carries its state only so; the Elman cells (G = 1) only through weight_hh; a
// gated cell without a cell state (GRU) interpolates with h_{t-1}.
bool Leaks(const Cell& cell) { return !cell.recurrent_matrix() || (cell.gates > 1 && !cell.cell_state); }

// A model whose state or parameters go beyond one recurrent layer on its raw input: more than
// one layer, or an embedding. RTRL follows it whole (StackRtrl); the others refuse it.
bool Stacked(const ModelConfig& c) { return c.layers > 1 || c.embed_size > 0; }
constexpr const char* kOneLayerMeasured =
    "bptt credit measures the algorithms on one recurrent layer on its input (--layers 1, --embed 0); "
    "rtrl trains a stack, but the others are not defined there";

// State entries N (every layer's h, and c) and the parameters P the algorithm follows: every
// parameter but the head's (the recurrent layer's alone for a one-layer model on its input).
Eigen::Index StateSize(const ModelConfig& c) { return c.layers * c.hidden_size * (c.cell->cell_state ? 2 : 1); }
double FollowedParameters(const ModelConfig& c) {
  return ParameterCount(c) - static_cast<double>(c.output_size) * (c.hidden_size + 1);
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> CarriedCreditShapes(Credit credit, const ModelConfig& c,
                                                                             int64_t B) {
  const int64_t N = StateSize(c), P = static_cast<int64_t>(FollowedParameters(c)), K = c.cell->cell_state ? 2 : 1;
  if (credit == Credit::kUoro) return {{"state_factor", {N, B}}, {"param_factor", {P, B}}};
  return {{"sensitivity", {B, WholeSensitivity(credit) ? N : K, P}}};
}

std::string CreditRefusal(Credit credit, const ModelConfig& c) {
  if (credit == Credit::kBptt) return "";
  const std::string name(CreditName(credit)), cell(c.cell->name);
  if (c.layers != 1 && credit != Credit::kRtrl)
    return name + " is defined here for one recurrent layer (--layers 1), not " + std::to_string(c.layers) +
           " (rtrl follows a stack whole)";
  if (c.embed_size > 0 && credit != Credit::kRtrl)
    return name + " is defined here for a one-hot or dense input: the embedding's gradient would flow through time (--embed 0)";
  if (Diagonal(credit) && c.layer_norm)
    return name + " keeps each unit's own sensitivities, and layer normalisation couples every unit within a step (drop --layer-norm)";
  if (credit == Credit::kSnap2 && c.layer_norm)
    return name + " keeps the sensitivities a parameter reaches through weight_hh's nonzeros in two steps, and layer "
                  "normalisation couples every unit within a step (drop --layer-norm; rtrl is exact with it)";
  if (credit == Credit::kEprop && !c.cell->cell_state)
    return "eprop's eligibility traces follow a cell state (lstm); " + cell + " has none (rflo follows a leaky state)";
  if (credit == Credit::kRflo && c.cell->cell_state)
    return "rflo follows a leaky hidden state; " + cell + " keeps a cell state, whose traces are eprop's";
  if (credit == Credit::kRflo && !Leaks(*c.cell))
    return "rflo follows the leak of a cell's state, and " + cell +
           "'s state reaches the next step only through weight_hh: its trace would be the one-step Jacobian alone (use snap1)";
  return "";
}

double CreditBytes(Credit credit, const ModelConfig& c, int T, int B, size_t scalar_bytes) {
  const double N = static_cast<double>(StateSize(c)), P = FollowedParameters(c), K = c.cell->cell_state ? 2 : 1;
  const double s = static_cast<double>(scalar_bytes);
  switch (credit) {
    case Credit::kBptt: {
      const Sizes sizes{c.cell->gates, c.hidden_size, c.layer0_input_size(), T, B};
      double n = 0;
      for (const auto decls : {c.cell->cache, c.cell->backward})
        for (const BufferDecl& d : decls)
          if (Present(d.when, c.layer_norm)) n += d.rows.Count(sizes) * d.cols.Count(sizes);
      return n * s;
    }
    case Credit::kRtrl:
    case Credit::kSnap2: return (B * N * P + N * (N + P)) * s;
    case Credit::kUoro: return B * (N + P) * s;
    default: return B * K * P * s;
  }
}

void CheckCredit(Credit credit, const ModelConfig& c, int B, size_t scalar_bytes, uint64_t available_bytes) {
  if (const std::string why = CreditRefusal(credit, c); !why.empty()) throw Error(why);
  const double need = CreditBytes(credit, c, 1, B, scalar_bytes);
  if (available_bytes > 0 && need > static_cast<double>(available_bytes)) {
    const auto mib = [](double bytes) { return std::to_string(static_cast<uint64_t>(bytes / (1 << 20))); };
    throw Error(std::string(CreditName(credit)) + " needs " + mib(need) + " MiB for " + std::to_string(B) +
                " streams (N = " + std::to_string(StateSize(c)) + " state entries x P = " +
                std::to_string(static_cast<int64_t>(FollowedParameters(c))) + " parameters each) but only " +
                mib(static_cast<double>(available_bytes)) + " MiB are available; reduce --hidden or --batch, or use uoro or snap1");
  }
}

namespace {

// One step of one stream of the layer, and its linearisation through the cell's own modes.
template <typename S>
class OneStep {
 public:
  OneStep(const ModelConfig& config, const RecurrentParams<S>& p, Compute compute)
      : config_(config), cell_(*config.cell), p_(p), compute_(compute), H_(config.hidden_size) {
    cache_.Resize(cell_, H_, 1, 1, config.layer_norm);
    back_.Resize(cell_, H_, 1, 1, config.layer_norm);
    grad_ = RecurrentParams<S>::Zeros(cell_, p.E, H_, config.layer_norm);
    dh_out_ = Mat<S>::Zero(H_, 1);
    p.ForEach([&](const ParamDecl&, const Mat<S>& m) {
      offsets_.push_back(P_);
      for (Eigen::Index j = 0; j < m.cols(); ++j)
        for (Eigen::Index i = 0; i < m.rows(); ++i) unit_.push_back(static_cast<int32_t>(i % H_));
      P_ += m.size();
    });
  }

  Eigen::Index P() const { return P_; }
  // The unit whose state entries each parameter's row reaches in one step.
  const std::vector<int32_t>& units() const { return unit_; }

  // The step on input column j of the batch from h_{t-1}, c_{t-1} (H each; c ignored without a
  // cell state); h_t, c_t are then h(), c().
  void Forward(const Batch<S>& batch, Eigen::Index j, const S* h_prev, const S* c_prev) {
    j_ = j;
    batch_ = &batch;
    if (config_.dense_input()) cache_.gates().noalias() = p_.weight_ih() * batch.dense.col(j);
    else cache_.gates() = p_.weight_ih().col(batch.ids(j));
    cache_.h().col(0) = Eigen::Map<const Mat<S>>(h_prev, H_, 1);
    if (cell_.cell_state) cache_.c().col(0) = Eigen::Map<const Mat<S>>(c_prev, H_, 1);
    cell_.modes<S>().chunk_forward(p_, cache_, compute_);
  }
  auto h() const { return cache_.h().col(1); }
  auto c() const { return cache_.c().col(1); }

  // From the cotangent v = (vh, vc) on S_t (vc ignored without a cell state): dh, dc = v^T ∂S_t /
  // ∂(h_{t-1}, c_{t-1}) with the recurrent path crossed back through back_hh, and g (P) =
  // v^T ∂S_t/∂θ.
  void Vjp(const Mat<S>& back_hh, const S* vh, const S* vc, S* dh, S* dc, S* g) {
    back_.dh() = Eigen::Map<const Mat<S>>(vh, H_, 1);
    if (cell_.cell_state) back_.dc() = Eigen::Map<const Mat<S>>(vc, H_, 1);
    for (Mat<S>& m : grad_.tensors) m.setZero();
    cell_.modes<S>().chunk_backward(p_, back_hh, cache_, dh_out_, back_, grad_, compute_);
    Eigen::Map<Mat<S>>(dh, H_, 1) = back_.dh();
    if (cell_.cell_state) Eigen::Map<Mat<S>>(dc, H_, 1) = back_.dc();
    // weight_ih from dgates, the other tensors as the cell wrote them.
    const Mat<S>& dgates = back_.dgates();
    Eigen::Map<Mat<S>> dw_ih(g, p_.weight_ih().rows(), p_.weight_ih().cols());
    if (config_.dense_input()) {
      dw_ih.noalias() = dgates * batch_->dense.col(j_).transpose();
    } else {
      dw_ih.setZero();
      dw_ih.col(batch_->ids(j_)) = dgates;
    }
    size_t k = 0;
    grad_.ForEach([&](const ParamDecl&, const Mat<S>& m) {
      if (k > 0) std::copy(m.data(), m.data() + m.size(), g + offsets_[k]);
      ++k;
    });
  }

  // u (dh, dc) in: a direction at S_{t-1}; out: J_t u.
  void Jvp(Mat<S>& dh, Mat<S>& dc) { cell_.modes<S>().tangent(p_, cache_, dh, dc); }

  // The flat gradient g (P) added to the layer's tensors.
  void AddTo(const S* g, RecurrentParams<S>& grad) const {
    size_t k = 0;
    grad.ForEach([&](const ParamDecl&, Mat<S>& m) {
      m += Eigen::Map<const Mat<S>>(g + offsets_[k], m.rows(), m.cols());
      ++k;
    });
  }

 private:
  const ModelConfig& config_;
  const Cell& cell_;
  const RecurrentParams<S>& p_;
  Compute compute_;
  Eigen::Index H_, P_ = 0;
  std::vector<Eigen::Index> offsets_;
  std::vector<int32_t> unit_;
  LayerCache<S> cache_;
  LayerBackward<S> back_;
  RecurrentParams<S> grad_;
  Mat<S> dh_out_;  // (H, 1) zero: the cotangent comes in through dh, dc
  const Batch<S>* batch_ = nullptr;
  Eigen::Index j_ = 0;
};

}  // namespace

template <typename S>
OnlineCredit<S>::OnlineCredit(Credit credit_, const ModelConfig& config, Eigen::Index B_, uint64_t seed)
    : credit(credit_), B(B_), N(StateSize(config)), P(static_cast<Eigen::Index>(FollowedParameters(config))),
      K(config.cell->cell_state ? 2 : 1),
      rng(seed) {
  if (credit == Credit::kBptt) throw Error("bptt is not an online algorithm: it sweeps the chunk's stored caches");
  if (const std::string why = CreditRefusal(credit, config); !why.empty()) throw Error(why);
  Reset();
}

template <typename S>
void OnlineCredit<S>::Reset() {
  // Zeros in place once shaped: a task resets at every step.
  if (credit == Credit::kUoro) {
    EnsureShape(state_factor, N, B);
    EnsureShape(param_factor, P, B);
    state_factor.setZero();
    param_factor.setZero();
    return;
  }
  sensitivity.resize(B);
  for (Mat<S>& m : sensitivity) {
    EnsureShape(m, WholeSensitivity(credit) ? N : K, P);
    m.setZero();
  }
}

namespace {

// The steps of a chunk whose one-step Jacobian I_t enters the sensitivities, and whose loss
// enters the gradient: every one (-1), or one step alone. With I from step s alone and the loss
// of the last step alone, the gradient is the part of that loss's credit that crosses the T-1-s
// steps from s to the end: the lag profile of CompareCredit.
struct StepMasks {
  Eigen::Index immediate = -1, scored = -1;
};

// SnAp-2's pattern (Menick et al. 2021): the state entries a parameter reaches within two steps,
// the same for every parameter of one unit u: u's own (h_u, and c_u; one step, I_t) and those of
// every unit whose rows of weight_hh read h_u with a nonzero weight (the second step, J_t I_{t-1}).
// Elsewhere a unit's state reaches no other unit's in one step (the cells' declarations: only
// weight_hh mixes units), so without a recurrent matrix the pattern is the unit's own entries.
struct TwoStepPattern {
  std::vector<std::vector<Eigen::Index>> rows;  // per unit: the state entries (rows of M), ascending
  std::vector<std::vector<Eigen::Index>> params;  // per unit: its parameters (columns of M)
  bool whole = true;                              // every unit reaches every entry: SnAp-2 is RTRL

  TwoStepPattern() = default;
  template <typename S>
  TwoStepPattern(const RecurrentParams<S>& p, const std::vector<int32_t>& unit, Eigen::Index H, Eigen::Index K,
                 bool recurrent_matrix)
      : rows(H), params(H) {
    for (Eigen::Index u = 0; u < H; ++u) {
      std::vector<Eigen::Index> reached;
      for (Eigen::Index v = 0; v < H; ++v) {
        bool reads = v == u;
        if (recurrent_matrix)
          for (Eigen::Index r = v; r < p.weight_hh().rows() && !reads; r += H) reads = p.weight_hh()(r, u) != S(0);
        if (reads) reached.push_back(v);
      }
      whole = whole && static_cast<Eigen::Index>(reached.size()) == H;
      for (Eigen::Index k = 0; k < K; ++k)
        for (const Eigen::Index v : reached) rows[u].push_back(k * H + v);
    }
    for (size_t q = 0; q < unit.size(); ++q) params[unit[q]].push_back(static_cast<Eigen::Index>(q));
  }

  // Zeros M off the pattern. The pattern is read from weight_hh at each chunk, and M carried from
  // the last: where pruning has since zeroed weights, what M holds off the new pattern is dropped.
  template <typename S>
  void Restrict(Mat<S>& M) const {
    Mat<S> kept;
    for (size_t u = 0; u < rows.size(); ++u) {
      kept = M(rows[u], params[u]);
      M(Eigen::all, params[u]).setZero();
      M(rows[u], params[u]) = kept;
    }
  }
};

// RTRL on a stacked model (Stacked): S_t is every layer's state, θ every parameter but the
// head's, and the step's Jacobians come from the model's own one-step Backward, one stream at a
// time: from a unit cotangent on S_t, a row of J_t (the gradient on S_{t-1}) and of I_t (the
// parameters'); from the step's head gradient, the loss's own credit u_t to S_{t-1} and its
// direct gradient d_t (the head's included). Then dL_t/dθ = u_t M_{t-1} + d_t and
// M_t = J_t M_{t-1} + I_t. N + 1 one-step backward passes per step.
template <typename S>
void StackRtrl(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch, const State<S>& initial,
               const Mat<S>& doutputs, OnlineCredit<S>& online, ModelParams<S>& grads, Compute compute,
               Eigen::Index immediate_step, Eigen::Index scored_step) {
  const Eigen::Index T = batch.T, B = batch.B, N = online.N, P = online.P, L = config.layers;
  const Eigen::Index H = config.hidden_size;
  const bool cell_state = config.cell->cell_state;
  // The state and the parameters but the head's as flat vectors, in M's row and column order:
  // layer by layer h then c; ModelParams::ForEachTensor's order.
  const auto flatten_state = [&](const State<S>& state, S* out) {
    for (Eigen::Index l = 0; l < L; ++l) {
      Eigen::Map<Mat<S>>(out, H, 1) = state.h[l];
      out += H;
      if (cell_state) {
        Eigen::Map<Mat<S>>(out, H, 1) = state.c[l];
        out += H;
      }
    }
  };
  const auto for_each_followed = [](auto& model, auto&& f) {
    model.ForEachTensor([&](const TensorInfo& info, auto& m) {
      if (!info.name.starts_with("decoder.")) f(m);
    });
  };
  const auto flatten_params = [&](const ModelParams<S>& g, S* out) {
    for_each_followed(g, [&](const Mat<S>& m) { out = std::copy(m.data(), m.data() + m.size(), out); });
  };

  Batch<S> one;  // one position of one stream
  one.T = one.B = 1;
  ModelCache<S> cache;
  ModelParams<S> step_grads = ModelParams<S>::Zeros(config);
  State<S> state = State<S>::Zeros(config, 1), cotangent = State<S>::Zeros(config, 1),
           dinitial = State<S>::Zeros(config, 1);
  const Mat<S> zero_outputs = Mat<S>::Zero(doutputs.rows(), 1);
  Mat<S> jac_t(N, N), imm_t(P, N), next, credit(N, 1), direct(P, 1);
  Mat<S> g = Mat<S>::Zero(P, 1);
  for (Eigen::Index b = 0; b < B; ++b) {
    for (Eigen::Index l = 0; l < L; ++l) {
      state.h[l] = initial.h[l].col(b);
      if (cell_state) state.c[l] = initial.c[l].col(b);
    }
    Mat<S>& M = online.sensitivity[b];  // (N, P)
    for (Eigen::Index t = 0; t < T; ++t) {
      const Eigen::Index j = t * B + b;
      if (batch.dense.size() > 0) one.dense = batch.dense.col(j);
      else one.ids = batch.ids.segment(j, 1);
      Forward(config, params, one, state, cache, compute);
      const bool immediate = immediate_step < 0 || immediate_step == t, scored = scored_step < 0 || scored_step == t;
      if (scored) {  // the loss's own credit: u_t M_{t-1} + d_t
        step_grads.SetZero();
        Backward(config, params, one, cache, Mat<S>(doutputs.col(j)), nullptr, step_grads, &dinitial, compute);
        flatten_state(dinitial, credit.data());
        g.noalias() += M.transpose() * credit;
        grads.decoder_weight += step_grads.decoder_weight;
        grads.decoder_bias += step_grads.decoder_bias;
        if (immediate) {
          flatten_params(step_grads, direct.data());
          g += direct;
        }
      }
      for (Eigen::Index k = 0; k < N; ++k) {  // row k of J_t and of I_t: a unit cotangent on entry k
        const Eigen::Index parts = cell_state ? 2 : 1, l = k / (parts * H), part = k / H % parts;
        S& entry = (part == 0 ? cotangent.h : cotangent.c)[l](k % H);
        entry = 1;
        step_grads.SetZero();
        Backward(config, params, one, cache, zero_outputs, &cotangent, step_grads, &dinitial, compute);
        entry = 0;
        flatten_state(dinitial, jac_t.col(k).data());
        flatten_params(step_grads, imm_t.col(k).data());
      }
      next.noalias() = jac_t.transpose() * M;
      if (immediate) next += imm_t.transpose();
      M.swap(next);
      FinalState(config, cache, state);
    }
  }
  S* from = g.data();
  for_each_followed(grads, [&](Mat<S>& m) {
    m += Eigen::Map<const Mat<S>>(from, m.rows(), m.cols());
    from += m.size();
  });
}

template <typename S>
double OnlineGradientMasked(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                            const State<S>& initial, ModelCache<S>& cache, OnlineCredit<S>& online,
                            ModelParams<S>& grads, Compute compute, StepMasks masks) {
  if (const std::string why = CreditRefusal(online.credit, config); !why.empty()) throw Error(why);
  const Cell& cell = *config.cell;
  const Eigen::Index H = config.hidden_size, T = batch.T, B = batch.B, N = online.N, P = online.P, K = online.K;
  if (online.B != B || online.P != static_cast<Eigen::Index>(FollowedParameters(config)) || online.N != StateSize(config))
    throw Error("the online algorithm's state was made for another model or batch (" + std::to_string(online.B) +
                " streams, the batch has " + std::to_string(B) + ")");

  if (cache.checkpoint_steps != 0)
    throw Error("an online algorithm reads every step's output of the chunk's forward pass: it takes no --checkpoint-steps");
  // The chunk's outputs, the head's loss and its exact gradient; c_t on h_t for every step.
  Forward(config, params, batch, initial, cache, compute);
  Mat<S> doutputs;
  const double loss = HeadLoss(config, cache.outputs, batch, &doutputs, compute.threads);
  if (Stacked(config)) {  // rtrl alone (CreditRefusal)
    StackRtrl(config, params, batch, initial, doutputs, online, grads, compute, masks.immediate, masks.scored);
    return loss;
  }
  SumProductOverTime(grads.decoder_weight, doutputs, cache.layers[0].h().rightCols(T * B), compute);
  SumColumnsOverTime(grads.decoder_bias, doutputs);
  const Mat<S> dloss_h = params.decoder_weight.transpose() * doutputs;  // (H, T*B) c_t on h_t

  // The recurrent matrix the VJPs cross back: weight_hh (exact), its unit-diagonal part
  // (SnAp-1's J blocks), or none (the leak alone: RFLO, e-prop).
  const RecurrentParams<S>& p = params.layers[0];
  static const Mat<S> kNone;
  Mat<S> unit_diagonal;
  const Mat<S>* back_hh = &kNone;
  if (cell.recurrent_matrix() && (WholeSensitivity(online.credit) || online.credit == Credit::kUoro)) {
    back_hh = &p.weight_hh();
  } else if (cell.recurrent_matrix() && online.credit == Credit::kSnap1) {
    unit_diagonal = Mat<S>::Zero(p.weight_hh().rows(), H);
    for (Eigen::Index r = 0; r < unit_diagonal.rows(); ++r) unit_diagonal(r, r % H) = p.weight_hh()(r, r % H);
    back_hh = &unit_diagonal;
  }

  OneStep<S> step(config, p, compute);
  const std::vector<int32_t>& unit = step.units();
  Mat<S> g = Mat<S>::Zero(P, 1);            // the estimate of dL/dθ, summed over the streams
  Mat<S> h(H, 1), c = Mat<S>::Zero(H, 1);   // one stream's S_{t-1}
  Mat<S> jac_t, imm_t, next;                // rtrl, snap2: J^T (N, N), I^T (P, N); M's next value
  Mat<S> v = Mat<S>::Zero(N, 1), out(2 * H, 1), imm(P, K), th(H, 1), tc = Mat<S>::Zero(H, 1);
  Mat<S> diag = Mat<S>::Zero(2 * H, K);  // column k: the unit-diagonal entries of J_t, rows of part k
  if (WholeSensitivity(online.credit)) {
    jac_t.resize(2 * H, N);  // the dc half unused without a cell state
    imm_t.resize(P, N);
  }
  const TwoStepPattern pattern =
      online.credit == Credit::kSnap2 ? TwoStepPattern(p, unit, H, K, cell.recurrent_matrix()) : TwoStepPattern();
  Mat<S> j_block, m_block;  // snap2: one unit's J and M on its pattern
  if (online.credit == Credit::kSnap2 && !pattern.whole)
    for (Mat<S>& M : online.sensitivity) pattern.Restrict(M);
  for (Eigen::Index b = 0; b < B; ++b) {
    h = initial.h[0].col(b);
    if (cell.cell_state) c = initial.c[0].col(b);
    for (Eigen::Index t = 0; t < T; ++t) {
      const Eigen::Index j = t * B + b;
      step.Forward(batch, j, h.data(), c.data());
      const bool immediate = masks.immediate < 0 || masks.immediate == t, scored = masks.scored < 0 || masks.scored == t;
      const auto ct = dloss_h.col(j);
      switch (online.credit) {
        case Credit::kRtrl:
        case Credit::kSnap2: {
          Mat<S>& M = online.sensitivity[b];  // (N, P)
          for (Eigen::Index k = 0; k < N; ++k) {  // row k of J_t and of I_t
            v.setZero();
            v(k) = 1;
            step.Vjp(*back_hh, v.data(), v.data() + (N > H ? H : 0), jac_t.col(k).data(), jac_t.col(k).data() + H,
                     imm_t.col(k).data());
          }
          if (online.credit == Credit::kRtrl || pattern.whole) {  // SnAp-2 on a whole pattern is RTRL
            next.noalias() = jac_t.topRows(N).transpose() * M;     // M_t = J_t M_{t-1} + I_t
            if (immediate) next += imm_t.transpose();
            M.swap(next);
          } else {
            // M_t = (J_t M_{t-1} + I_t) on the pattern: M is zero off it, so each unit's columns
            // take J's rows and columns of the pattern alone (gathered, multiplied, scattered).
            for (size_t u = 0; u < pattern.rows.size(); ++u) {
              const std::vector<Eigen::Index>& r = pattern.rows[u];
              const std::vector<Eigen::Index>& q = pattern.params[u];
              j_block = jac_t(r, r).transpose();
              m_block = M(r, q);
              next.noalias() = j_block * m_block;
              if (immediate) next += imm_t(q, r).transpose();
              M(r, q) = next;
            }
          }
          if (scored) g.noalias() += M.topRows(H).transpose() * ct;
          break;
        }
        case Credit::kUoro: {
          auto s = online.state_factor.col(b);      // s̃ (N)
          auto theta = online.param_factor.col(b);  // θ̃ (P)
          th = s.head(H);
          if (cell.cell_state) tc = s.tail(H);
          step.Jvp(th, tc);  // J_t s̃
          for (Eigen::Index k = 0; k < N; ++k) v(k) = (online.rng.Next() >> 63) ? S(1) : S(-1);
          step.Vjp(*back_hh, v.data(), v.data() + (N > H ? H : 0), out.data(), out.data() + H, imm.col(0).data());
          if (!immediate) imm.col(0).setZero();
          const S js_norm = std::sqrt(th.squaredNorm() + (cell.cell_state ? tc.squaredNorm() : S(0)));
          const S theta_norm = theta.norm(), nu_i_norm = imm.col(0).norm(), nu_norm = v.norm();
          const S rho0 = theta_norm > 0 && js_norm > 0 ? std::sqrt(theta_norm / js_norm) : S(1);
          const S rho1 = nu_i_norm > 0 ? std::sqrt(nu_i_norm / nu_norm) : S(1);
          s.head(H) = rho0 * th + rho1 * v.topRows(H);
          if (cell.cell_state) s.tail(H) = rho0 * tc + rho1 * v.bottomRows(H);
          theta = theta / rho0 + imm.col(0) / rho1;
          if (scored) g.noalias() += s.head(H).dot(ct) * theta;
          break;
        }
        default: {
          // One VJP per part of the state, with v all ones on it: each parameter's entry of I_t on
          // its own unit's part k, and the unit-diagonal entries of J_t, rows of part k.
          Mat<S>& m = online.sensitivity[b];  // (K, P)
          for (Eigen::Index k = 0; k < K; ++k) {
            v.setZero();
            v.middleRows(k * H, H).setOnes();
            step.Vjp(*back_hh, v.data(), v.data() + (K > 1 ? H : 0), diag.col(k).data(), diag.col(k).data() + H,
                     imm.col(k).data());
          }
          if (!immediate) imm.setZero();
          for (Eigen::Index q = 0; q < P; ++q) {
            const int32_t u = unit[q];
            const S m_h = m(0, q), m_c = K > 1 ? m(1, q) : S(0);
            for (Eigen::Index k = 0; k < K; ++k) m(k, q) = diag(u, k) * m_h + diag(H + u, k) * m_c + imm(q, k);
            if (scored) g(q) += ct(u) * m(0, q);
          }
          break;
        }
      }
      h = step.h();
      if (cell.cell_state) c = step.c();
    }
  }
  step.AddTo(g.data(), grads.layers[0]);
  return loss;
}

}  // namespace

template <typename S>
double OnlineGradient(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                      const State<S>& initial, ModelCache<S>& cache, OnlineCredit<S>& online, ModelParams<S>& grads,
                      Compute compute) {
  return OnlineGradientMasked(config, params, batch, initial, cache, online, grads, compute, StepMasks{});
}

namespace {

Alignment Align(std::string name, const Mat<double>& a, const Mat<double>& b) {
  Alignment r{std::move(name)};
  const double na = a.norm(), nb = b.norm();
  r.cosine = na > 0 && nb > 0 ? a.cwiseProduct(b).sum() / (na * nb) : (na == nb ? 1.0 : 0.0);
  r.rel_error = nb > 0 ? (a - b).norm() / nb : (na > 0 ? INFINITY : 0.0);
  return r;
}

// The recurrent layer's tensors of `grads` against BPTT's, then the layer as one vector.
std::vector<Alignment> AlignLayer(const RecurrentParams<double>& a, const RecurrentParams<double>& b) {
  std::vector<Alignment> rows;
  std::vector<double> flat_a, flat_b;
  size_t k = 0;
  a.ForEach([&](const ParamDecl& d, const Mat<double>& m) {
    while (b.tensors[k].size() == 0) ++k;
    rows.push_back(Align("rnn." + std::string(d.name) + "_l0", m, b.tensors[k]));
    flat_a.insert(flat_a.end(), m.data(), m.data() + m.size());
    flat_b.insert(flat_b.end(), b.tensors[k].data(), b.tensors[k].data() + b.tensors[k].size());
    ++k;
  });
  const auto n = static_cast<Eigen::Index>(flat_a.size());
  rows.push_back(Align("layer 0", Eigen::Map<Mat<double>>(flat_a.data(), n, 1), Eigen::Map<Mat<double>>(flat_b.data(), n, 1)));
  return rows;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

CreditReport CompareCredit(const ModelConfig& config, const ModelParams<double>& params, const Batch<double>& batch,
                           const CreditOptions& options) {
  config.Validate();
  if (Stacked(config)) throw Error(kOneLayerMeasured);
  if (options.uoro_draws < 0) throw Error("--uoro-draws must not be negative");
  if (options.lags < 0) throw Error("--lags must not be negative");
  std::vector<Credit> algorithms = options.algorithms;
  CreditReport report;
  if (algorithms.empty()) {
    for (const Credit c : Credits()) {
      if (const std::string why = CreditRefusal(c, config); why.empty()) algorithms.push_back(c);
      else report.refused.push_back(std::string(CreditName(c)) + ": " + why);
    }
  }
  for (const Credit c : algorithms)
    if (const std::string why = CreditRefusal(c, config); !why.empty()) throw Error(why);
  std::erase(algorithms, Credit::kBptt);

  const Compute compute{options.threads};
  const int T = static_cast<int>(batch.T), B = static_cast<int>(batch.B);
  report.T = T;
  report.B = B;
  report.parameters = static_cast<int64_t>(FollowedParameters(config));
  report.model = std::string(config.cell->name) + (config.layer_norm ? " (layer norm)" : "") + " " +
                 std::to_string(config.layers) + "x" + std::to_string(config.hidden_size) + ", " +
                 (config.dense_input() ? "dense " + std::to_string(config.input_size)
                                       : "one-hot " + std::to_string(config.vocab_size));
  const State<double> zero = State<double>::Zeros(config, B);

  // Exact BPTT.
  ModelParams<double> exact = ModelParams<double>::Zeros(config);
  {
    const auto start = std::chrono::steady_clock::now();
    ModelCache<double> cache;
    Forward(config, params, batch, zero, cache, compute);
    Mat<double> doutputs;
    report.loss = HeadLoss(config, cache.outputs, batch, &doutputs, compute.threads);
    Backward(config, params, batch, cache, doutputs, nullptr, exact, nullptr, compute);
    CreditRow row;
    row.algorithm = "bptt";
    row.tensors = AlignLayer(exact.layers[0], exact.layers[0]);
    row.seconds_per_step = Seconds(start) / T;
    row.bytes = CreditBytes(Credit::kBptt, config, T, B, sizeof(double));
    report.rows.push_back(std::move(row));
  }

  // An algorithm's estimate of the layer's gradient: the mean over `draws` runs (UORO's signs
  // from seeds 0 .. draws-1 of options.seed), with the step masks; *seconds, the first run's time.
  const auto estimate = [&](Credit c, int draws, StepMasks masks, double* seconds) {
    RecurrentParams<double> mean = RecurrentParams<double>::Zeros(*config.cell, config.layer0_input_size(),
                                                                  config.hidden_size, config.layer_norm);
    for (int d = 0; d < draws; ++d) {
      ModelParams<double> grads = ModelParams<double>::Zeros(config);
      ModelCache<double> cache;
      OnlineCredit<double> online(c, config, B, StreamSeed(options.seed, static_cast<uint64_t>(d)));
      const auto start = std::chrono::steady_clock::now();
      OnlineGradientMasked(config, params, batch, zero, cache, online, grads, compute, masks);
      if (d == 0 && seconds) *seconds = Seconds(start);
      for (size_t k = 0; k < mean.tensors.size(); ++k) mean.tensors[k] += grads.layers[0].tensors[k] / draws;
    }
    return mean;
  };
  // The lag profile: the gradient of the last step's loss through step T-1-τ alone, for each
  // lag τ, against RTRL's, which is BPTT's.
  const int lags = std::min(options.lags, T - 1);
  std::vector<RecurrentParams<double>> lag_exact;
  for (int tau = 0; tau <= lags && options.lags > 0; ++tau)
    lag_exact.push_back(estimate(Credit::kRtrl, 1, StepMasks{T - 1 - tau, T - 1}, nullptr));
  const auto lag_profile = [&](Credit c, int draws, CreditRow& row) {
    for (int tau = 0; tau < static_cast<int>(lag_exact.size()); ++tau) {
      const Alignment a = AlignLayer(estimate(c, draws, StepMasks{T - 1 - tau, T - 1}, nullptr), lag_exact[tau]).back();
      row.lag_cosine.push_back(a.cosine);
      row.lag_rel_error.push_back(a.rel_error);
    }
  };

  for (const Credit c : algorithms) {
    CreditRow row;
    row.algorithm = CreditName(c);
    const RecurrentParams<double> g = estimate(c, 1, StepMasks{}, &row.seconds_per_step);
    row.tensors = AlignLayer(g, exact.layers[0]);
    row.seconds_per_step /= T;
    row.bytes = CreditBytes(c, config, T, B, sizeof(double));
    lag_profile(c, 1, row);
    report.rows.push_back(row);
    if (c == Credit::kUoro && options.uoro_draws > 1) {  // the mean over draws
      CreditRow mean = row;
      mean.algorithm = "uoro x" + std::to_string(options.uoro_draws);
      mean.tensors = AlignLayer(estimate(c, options.uoro_draws, StepMasks{}, nullptr), exact.layers[0]);
      mean.lag_cosine.clear();
      mean.lag_rel_error.clear();
      lag_profile(c, options.uoro_draws, mean);
      report.rows.push_back(mean);
    }
  }
  return report;
}

nlohmann::json CreditReport::ToJson() const {
  nlohmann::json j;
  j["model"] = model;
  j["T"] = T;
  j["B"] = B;
  j["layer_parameters"] = parameters;
  j["loss"] = loss;
  j["algorithms"] = nlohmann::json::array();
  for (const CreditRow& r : rows) {
    nlohmann::json row;
    row["algorithm"] = r.algorithm;
    row["seconds_per_step"] = r.seconds_per_step;
    row["bytes"] = r.bytes;
    for (const Alignment& a : r.tensors) {
      nlohmann::json t;
      t["cosine"] = a.cosine;
      t["rel_error"] = std::isfinite(a.rel_error) ? nlohmann::json(a.rel_error) : nlohmann::json(nullptr);
      row["tensors"][a.name] = t;
    }
    if (!r.lag_cosine.empty()) {
      row["lag_cosine"] = r.lag_cosine;
      nlohmann::json errors = nlohmann::json::array();
      for (const double e : r.lag_rel_error) errors.push_back(std::isfinite(e) ? nlohmann::json(e) : nlohmann::json(nullptr));
      row["lag_rel_error"] = errors;
    }
    j["algorithms"].push_back(row);
  }
  j["refused"] = refused;
  return j;
}

std::vector<CreditCost> MeasureCreditCost(const ModelConfig& config, const InitOptions& init,
                                          std::span<const int> hidden_sizes, int T, int B,
                                          const CreditOptions& options) {
  constexpr int kCostRepeats = 3;  // the fastest of three runs: the least disturbed by other work
  if (T < 1 || B < 1) throw Error("--seq-len and --batch must be positive");
  if (Stacked(config)) throw Error(kOneLayerMeasured);
  std::vector<CreditCost> costs;
  for (const int H : hidden_sizes) {
    if (H < 1) throw Error("--hidden-sizes must be positive, got " + std::to_string(H));
    ModelConfig c = config;
    c.hidden_size = H;
    c.Validate();
    Rng rng(options.seed);
    ModelParams<double> params;
    Initialize(c, init, rng, params);
    const Batch<double> batch = UniformInputs(c.vocab_size, T, B, rng);
    CreditOptions o = options;
    o.uoro_draws = 1;
    o.lags = 0;
    if (o.algorithms.empty())
      for (const Credit a : Credits())
        if (a != Credit::kBptt && CreditRefusal(a, c).empty()) o.algorithms.push_back(a);
    for (const Credit a : o.algorithms) CheckCredit(a, c, B, sizeof(double), AvailableBytes());
    const size_t first = costs.size();
    for (int repeat = 0; repeat < kCostRepeats; ++repeat) {
      const std::vector<CreditRow> rows = CompareCredit(c, params, batch, o).rows;
      for (size_t k = 0; k < rows.size(); ++k) {
        if (repeat == 0) costs.push_back({H, rows[k].algorithm, rows[k].seconds_per_step, rows[k].bytes});
        else costs[first + k].seconds_per_step = std::min(costs[first + k].seconds_per_step, rows[k].seconds_per_step);
      }
    }
  }
  return costs;
}

namespace {

LineChart Chart(std::string title, std::string x_label, std::string y_label, std::string id, bool log_y) {
  LineChart chart;
  chart.title = std::move(title);
  chart.x_label = std::move(x_label);
  chart.y_label = std::move(y_label);
  chart.id = std::move(id);
  chart.log_y = log_y;
  return chart;
}

LineSeries Series(std::string label) {
  LineSeries series;
  series.label = std::move(label);
  return series;
}

}  // namespace

std::string RenderCreditFigure(const CreditReport& report, std::span<const CreditCost> cost) {
  std::vector<LineChart> charts;
  LineChart cosine = Chart("Alignment with BPTT by lag", "lag (steps)", "cosine", "cosine", false);
  LineChart error = Chart("Relative error by lag", "lag (steps)", "|g - g_bptt| / |g_bptt|", "error", true);
  for (const CreditRow& row : report.rows) {
    if (row.lag_cosine.empty()) continue;
    LineSeries c = Series(row.algorithm), e = Series(row.algorithm);
    for (size_t k = 0; k < row.lag_cosine.size(); ++k) {
      c.x.push_back(static_cast<double>(k));
      c.y.push_back(row.lag_cosine[k]);
      e.x.push_back(static_cast<double>(k));
      e.y.push_back(row.lag_rel_error[k]);
    }
    cosine.series.push_back(c);
    error.series.push_back(e);
  }
  charts.push_back(cosine);
  charts.push_back(error);
  if (!cost.empty()) {
    LineChart time = Chart("Time per step", "log10 hidden size H", "seconds", "time", true);
    LineChart memory = Chart("Memory", "log10 hidden size H", "bytes", "memory", true);
    std::vector<std::string> names;
    for (const CreditCost& c : cost)
      if (std::find(names.begin(), names.end(), c.algorithm) == names.end()) names.push_back(c.algorithm);
    for (const std::string& name : names) {
      LineSeries t = Series(name), m = Series(name);
      for (const CreditCost& c : cost) {
        if (c.algorithm != name) continue;
        t.x.push_back(std::log10(c.hidden_size));
        t.y.push_back(c.seconds_per_step);
        m.x.push_back(std::log10(c.hidden_size));
        m.y.push_back(c.bytes);
      }
      time.series.push_back(t);
      memory.series.push_back(m);
    }
    charts.push_back(time);
    charts.push_back(memory);
  }
  return RenderPanels(charts, 2, report.model + ": online gradient algorithms against BPTT (T = " +
                                     std::to_string(report.T) + ", B = " + std::to_string(report.B) + ")");
}

#define BPTT_INSTANTIATE(S)                                                                                 \
  template struct OnlineCredit<S>;                                                                          \
  template double OnlineGradient<S>(const ModelConfig&, const ModelParams<S>&, const Batch<S>&, const State<S>&, \
                                    ModelCache<S>&, OnlineCredit<S>&, ModelParams<S>&, Compute);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE

}  // namespace bptt
