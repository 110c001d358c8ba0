// The minimal GRU and LSTM of Feng et al. 2024, "Were RNNs All We Needed?": their gates read the
// input alone, so that the state follows the linear recurrence
//   h_t = a_t * h_{t-1} + b_t,     a_t and b_t functions of x_t only
// and a chunk's gates for all T steps are one pass over its input projection, fully parallel,
// before a scan over time carries h (parallel over the H x B elements of the state).
//
//   minGRU (G = 2, gate blocks z, h: weight_ih = [W_z; W_h], bias_ih = [b_z; b_h]):
//     z_t  = sigmoid(W_z x_t + b_z)
//     h~_t = W_h x_t + b_h                        (the candidate; no activation)
//     h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t     a_t = 1 - z_t,  b_t = z_t * h~_t
//   minLSTM (G = 3, gate blocks f, i, h: weight_ih = [W_f; W_i; W_h], bias_ih likewise):
//     f_t  = sigmoid(W_f x_t + b_f),  i_t = sigmoid(W_i x_t + b_i),  h~_t = W_h x_t + b_h
//     f'_t = f_t / (f_t + i_t),       i'_t = i_t / (f_t + i_t)
//     h_t  = f'_t * h_{t-1} + i'_t * h~_t         a_t = f'_t,  b_t = i'_t * h~_t
// These are the paper's sequential forms; its log-space variant (and the positive g(.) it puts
// on h~) serves a parallel scan over time on a GPU, which a CPU's few threads, already busy with
// the batch or the rows of one stream, do not need.
//
// Their parameters are weight_ih (G*H, E) and bias_ih (G*H) in PyTorch's naming: no recurrent
// matrix, so no weight_hh (nothing for feedback alignment to replace, no product per step, no
// spectrum for `bptt decay`), and no bias_hh (a second bias of the input projection would add
// nothing). The Jacobian of a step is diag(a_t). No layer-normalised variant is declared.
//
// Both rows of the registry share the modes below, in the order of cell.h: the declarations,
// the pointwise passes (the gates of a column; the scan step of a range of rows), chunk forward,
// step, chunk backward and tangent.
#include "bptt/cell.h"
#include "kernels/activation.h"
#include "kernels/threads.h"

namespace bptt::cells {

namespace {

using namespace extent;

template <typename S>
using Vec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <typename S>
using ConstVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

// ---- minGRU ----

constexpr ParamDecl kGruParams[] = {
    {"weight_ih", kGH, kE, TensorRole::kWeight},  // [W_z; W_h]
    {"bias_ih", kGH, k1, TensorRole::kBias},      // [b_z; b_h]
};
constexpr BufferDecl kGruCache[] = {
    {"gates", kGH, kTB},  // in: W_ih x_t; out: z, h~
    {"h", kH, kT1B},      // h_0 .. h_T
};
constexpr BufferDecl kGruBackward[] = {
    {"dgates", kGH, kTB},                  // dL/d(W_ih x_t)
    {"dh", kH, kB},                        // dL/dh_t as the sweep reaches step t
    {"dh_steps", kH, kTB, When::kRecord},  // dL/dh_t of every step
};

struct MinGru {
  static constexpr size_t kBiasIh = Slot(kGruParams, "bias_ih");
  static constexpr int kOwnBuffer = -1;  // none beside gates and h

  // The gates of one column. a (2H) in: W_ih x_t; out: z, h~. The cache has no other buffer.
  template <typename S>
  static void Gates(Eigen::Index H, S* a, const S* bias, S* /*none*/) {
    Vec<S> z(a, H), h(a + H, H);
    z = Sigmoid(z + ConstVec<S>(bias, H));
    h += ConstVec<S>(bias + H, H);
  }
  // Rows [r, r + n) of h_t (in gates' blocks and h_prev, h, the same rows).
  template <typename S>
  static void Scan(Eigen::Index H, Eigen::Index r, Eigen::Index n, const S* gates, const S*, const S* h_prev, S* h) {
    const ConstVec<S> z(gates + r, n), ht(gates + H + r, n);
    Vec<S>(h + r, n) = (S(1) - z) * ConstVec<S>(h_prev + r, n) + z * ht;
  }
  // Rows [r, r + n) of step t backwards. dh in: dL/dh_t; out: its part of dL/dh_{t-1},
  // dh * (1 - z). dgates (2H) out: da_z = dh (h~ - h_{t-1}) z (1 - z), da_h = dh z.
  template <typename S>
  static void Back(Eigen::Index H, Eigen::Index r, Eigen::Index n, const S* gates, const S*, const S* h_prev, S* dh,
                   S* dgates) {
    const ConstVec<S> z(gates + r, n), ht(gates + H + r, n), hp(h_prev + r, n);
    Vec<S> d(dh + r, n);
    Vec<S>(dgates + r, n) = d * (ht - hp) * SigmoidGradFromOutput(z);
    Vec<S>(dgates + H + r, n) = d * z;
    d *= S(1) - z;
  }
  // a_t of a step: the tangent's diagonal. gates: (2H, B) of the step.
  template <typename G>
  static auto Decay(Eigen::Index H, const G& gates) {
    return typename G::Scalar(1) - gates.topRows(H).array();
  }
};

// ---- minLSTM ----

constexpr ParamDecl kLstmParams[] = {
    {"weight_ih", kGH, kE, TensorRole::kWeight},  // [W_f; W_i; W_h]
    {"bias_ih", kGH, k1, TensorRole::kBias},      // [b_f; b_i; b_h]
};
constexpr BufferDecl kLstmCache[] = {
    {"gates", kGH, kTB},    // in: W_ih x_t; out: f', i', h~
    {"h", kH, kT1B},        // h_0 .. h_T
    {"gate_sum", kH, kTB},  // f_t + i_t, which normalised the gates: the backward pass undoes it
};
constexpr BufferDecl kLstmBackward[] = {
    {"dgates", kGH, kTB},                  // dL/d(W_ih x_t)
    {"dh", kH, kB},                        // dL/dh_t as the sweep reaches step t
    {"dh_steps", kH, kTB, When::kRecord},  // dL/dh_t of every step
};

struct MinLstm {
  static constexpr size_t kBiasIh = Slot(kLstmParams, "bias_ih");
  static constexpr int kOwnBuffer = Slot(kLstmCache, "gate_sum");

  // The gates of one column. a (3H) in: W_ih x_t; out: f', i', h~. sum (H) out: f + i.
  template <typename S>
  static void Gates(Eigen::Index H, S* a, const S* bias, S* sum) {
    Vec<S> f(a, H), i(a + H, H), h(a + 2 * H, H), s(sum, H);
    f = Sigmoid(f + ConstVec<S>(bias, H));
    i = Sigmoid(i + ConstVec<S>(bias + H, H));
    s = f + i;
    f /= s;
    i /= s;
    h += ConstVec<S>(bias + 2 * H, H);
  }
  template <typename S>
  static void Scan(Eigen::Index H, Eigen::Index r, Eigen::Index n, const S* gates, const S*, const S* h_prev, S* h) {
    const ConstVec<S> f(gates + r, n), i(gates + H + r, n), ht(gates + 2 * H + r, n);
    Vec<S>(h + r, n) = f * ConstVec<S>(h_prev + r, n) + i * ht;
  }
  // Rows [r, r + n) of step t backwards, with f = f' s and i = i' s (s = f + i, cached):
  //   dL/df' = dh h_{t-1},  dL/di' = dh h~,  and f' = f / s, i' = i / s give
  //   dL/df = (dL/df' - dL/di') i' / s,  dL/di = (dL/di' - dL/df') f' / s, so with
  //   c = dh (h_{t-1} - h~) f' i':  da_f = c (1 - f),  da_i = -c (1 - i),  da_h = dh i'
  //   dh in: dL/dh_t; out: its part of dL/dh_{t-1}, dh f'.
  template <typename S>
  static void Back(Eigen::Index H, Eigen::Index r, Eigen::Index n, const S* gates, const S* sum, const S* h_prev,
                   S* dh, S* dgates) {
    const ConstVec<S> f(gates + r, n), i(gates + H + r, n), ht(gates + 2 * H + r, n), s(sum + r, n),
        hp(h_prev + r, n);
    Vec<S> d(dh + r, n);
    const Eigen::Array<S, Eigen::Dynamic, 1> c = d * (hp - ht) * f * i;
    Vec<S>(dgates + r, n) = c * (S(1) - f * s);
    Vec<S>(dgates + H + r, n) = -c * (S(1) - i * s);
    Vec<S>(dgates + 2 * H + r, n) = d * i;
    d *= f;
  }
  template <typename G>
  static auto Decay(Eigen::Index H, const G& gates) {
    return gates.topRows(H).array();
  }
};

// The cell's own cache buffer beside gates and h (minLSTM's gate sums), or null.
template <typename Cell, typename Cache>
auto OwnBuffer(Cache& cache) -> decltype(&cache[0]) {
  if constexpr (Cell::kOwnBuffer < 0) return nullptr;
  else return &cache[Cell::kOwnBuffer];
}

// This thread's share of the (H, B) state in a parallel region: whole columns when every thread
// gets one, else rows of every column, in blocks of 16 (one stream: `bptt eval`, a prime).
struct StateShare {
  Eigen::Index r0 = 0, r1 = 0, j0 = 0, j1 = 0;
  StateShare(Eigen::Index H, Eigen::Index B) {
    if (B >= omp_get_num_threads()) {
      r1 = H;
      std::tie(j0, j1) = ThreadRange(B);
    } else {
      std::tie(r0, r1) = ThreadRange(H, 16);
      j1 = B;
    }
  }
};

// 1. The gates of all T steps at once, each thread its own columns of the (G*H, T*B) projection.
// 2. The scan over t, each thread its share of the state (StateShare):
//      h_t = a_t * h_{t-1} + b_t
//    and with zoneout (cell.h; recurrent dropout has no product to act on here: ModelConfig
//    refuses it) h_t = d_t h_{t-1} + (1 - d_t) (a_t * h_{t-1} + b_t).
template <typename Cell, typename S>
void ChunkForward(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute) {
  const Zoneout<S>& zoneout = cache.loop.h;
  const bool zone = zoneout.on();
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  Mat<S>& gates = cache.gates();
  Mat<S>* own = OwnBuffer<Cell>(cache);
  const S* bias = p[Cell::kBiasIh].data();
#pragma omp parallel num_threads(compute.threads)
  {
    const auto [c0, c1] = ThreadRange(T * B);
    for (Eigen::Index j = c0; j < c1; ++j)
      Cell::Gates(H, gates.col(j).data(), bias, own ? own->col(j).data() : nullptr);
#pragma omp barrier
    const StateShare share(H, B);
    for (Eigen::Index t = 0; t < T; ++t)
      for (Eigen::Index b = share.j0; b < share.j1; ++b) {
        const Eigen::Index j = t * B + b;
        Cell::Scan(H, share.r0, share.r1 - share.r0, gates.col(j).data(), own ? own->col(j).data() : nullptr,
                   cache.h().col(j).data(), cache.h().col(j + B).data());
        if (zone)
          zoneout.Forward(H, share.r0, j, cache.h().col(j).segment(share.r0, share.r1 - share.r0).array(),
                          cache.h().col(j + B).segment(share.r0, share.r1 - share.r0).array());
      }
  }
}

// One stream: the gates of the column, then h_t; the recurrent product is never called.
template <typename Cell>
void Step(const RecurrentParams<float>& p, const StepProduct&, float* a, float* recurrent, float* h, float*) {
  const Eigen::Index H = p.hidden_size();
  Cell::Gates(H, a, p[Cell::kBiasIh].data(), recurrent);  // recurrent's first H: the cell's own buffer
  Cell::Scan(H, 0, H, a, recurrent, h, h);
}

// Per step t = T..1, each thread its share of the state, with dh = dh_out_t + (dL/dh_t through
// step t+1): the step's gate gradients into dgates, and dh_{t-1} = a_t * dh (Cell::Back); no
// recurrent matrix, so back_hh is not used. After the sweep: db_ih += sum over columns of dgates.
// With zoneout, dh first splits into (1 - d_t) dh, on into Cell::Back, and d_t dh, added to
// dh_{t-1}.
template <typename Cell, typename S>
void ChunkBackward(const RecurrentParams<S>& p, const Mat<S>&, const LayerCache<S>& cache,
                   const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const Mat<S>* own = OwnBuffer<Cell>(cache);
  const Zoneout<S>& zoneout = cache.loop.h;
  const bool zone = zoneout.on();
  if (zone) EnsureShape(back.dh_kept, H, B);
#pragma omp parallel num_threads(compute.threads)
  {
    const StateShare share(H, B);
    const Eigen::Index r0 = share.r0, n = share.r1 - share.r0;
    for (Eigen::Index t = T - 1; t >= 0; --t)
      for (Eigen::Index b = share.j0; b < share.j1; ++b) {
        const Eigen::Index j = t * B + b;
        auto dh = back.dh().col(b).segment(r0, n);
        dh += dh_out.col(j).segment(r0, n);
        if (back.record) back.dh_steps().col(j).segment(r0, n) = dh;
        if (zone) zoneout.Backward(H, r0, j, dh.array(), back.dh_kept.col(b).segment(r0, n).array());
        Cell::Back(H, r0, n, cache.gates().col(j).data(), own ? own->col(j).data() : nullptr,
                   cache.h().col(j).data(), back.dh().col(b).data(), back.dgates().col(j).data());
        if (zone) dh += back.dh_kept.col(b).segment(r0, n);
      }
  }
  SumColumnsOverTime(grad[Cell::kBiasIh], back.dgates());
}

// The tangent of the forward pass, per step: dh_t = a_t * dh_{t-1}; with zoneout
// dh_t = d_t dh_{t-1} + (1 - d_t) a_t * dh_{t-1}.
template <typename Cell, typename S>
void Tangent(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>&) {
  Mat<S> next;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    next = (Cell::Decay(p.hidden_size(), cache.Step(cache.gates(), t)) * dh.array()).matrix();
    if (cache.loop.h.on()) cache.loop.h.Forward(p.hidden_size(), 0, t * cache.B, dh.array(), next.array());
    dh.swap(next);
  }
}

template <typename Cell>
constexpr CellModes<float> F32{&ChunkForward<Cell, float>, &ChunkBackward<Cell, float>, &Tangent<Cell, float>};
template <typename Cell>
constexpr CellModes<double> F64{&ChunkForward<Cell, double>, &ChunkBackward<Cell, double>, &Tangent<Cell, double>};

}  // namespace

extern constinit const Cell kMinGru, kMinLstm;
constinit const Cell kMinGru{
    .name = "mingru",
    .gates = 2,
    .gate_names = "zh",
    .cell_state = false,
    .pascanu_gamma = std::numeric_limits<double>::quiet_NaN(),
    .torch = "",
    .params = kGruParams,
    .cache = kGruCache,
    .backward = kGruBackward,
    .f32 = F32<MinGru>,
    .f64 = F64<MinGru>,
    .step = &Step<MinGru>,
};
constinit const Cell kMinLstm{
    .name = "minlstm",
    .gates = 3,
    .gate_names = "fih",
    .cell_state = false,
    .pascanu_gamma = std::numeric_limits<double>::quiet_NaN(),
    .torch = "",
    .params = kLstmParams,
    .cache = kLstmCache,
    .backward = kLstmBackward,
    .f32 = F32<MinLstm>,
    .f64 = F64<MinLstm>,
    .step = &Step<MinLstm>,
};

}  // namespace bptt::cells
