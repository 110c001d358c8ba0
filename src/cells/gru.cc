// The GRU cell, in PyTorch's nn.GRU form (gate order r, z, n):
//   u_t = W_hh h_{t-1} + b_hh                       (3H) the recurrent pre-activation, kept apart
//   r_t = sigmoid(W_ir x_t + b_ir + u_r)
//   z_t = sigmoid(W_iz x_t + b_iz + u_z)
//   n_t = tanh   (W_in x_t + b_in + r_t * u_n)
//   h_t = (1 - z_t) * n_t + z_t * h_{t-1}
// With layer normalisation (cell.h), each LN over a whole 3H column, gains and biases per
// element, the recurrent pre-activation normalised as a whole before r_t picks its n block:
//   a_t = LN(W_ih x_t; g_ih, b'_ih) + b_ih                   (3H)
//   u_t = LN(W_hh h_{t-1}; g_hh, b'_hh) + b_hh               (3H)
//   r_t = sigmoid(a_r + u_r),  z_t = sigmoid(a_z + u_z),  n_t = tanh(a_n + r_t * u_n)
//   h_t = (1 - z_t) * n_t + z_t * h_{t-1}
// Its tensors and four modes follow, in the order of cell.h: the declarations, the pointwise
// passes the modes share (plain and layer-normalised), chunk forward, step, chunk backward and
// tangent; each mode chooses the variant once, by whether the layer's parameters hold the LN
// tensors.
#include "bptt/cell.h"
#include "kernels/activation.h"
#include "kernels/packed_gemm.h"
#include "kernels/threads.h"
#include "layer_norm.h"
#include "variant.h"

namespace bptt::cells {

namespace {

using namespace extent;
constexpr When kLn = When::kLayerNorm;

// Parameters, in PyTorch's nn.GRU layout (G = 3, gate blocks r, z, n), then the LN gains g and
// biases b' of the layer-normalised variant.
constexpr ParamDecl kParams[] = {
    {"weight_ih", kGH, kE, TensorRole::kWeight},            // W_ih
    {"weight_hh", kGH, kH, TensorRole::kWeight},            // W_hh
    {"bias_ih", kGH, k1, TensorRole::kBias},                // b_ih
    {"bias_hh", kGH, k1, TensorRole::kBias},                // b_hh
    {"ln_ih_weight", kGH, k1, TensorRole::kNormGain, kLn},  // g_ih   LN(W_ih x_t)
    {"ln_ih_bias", kGH, k1, TensorRole::kNormBias, kLn},    // b'_ih
    {"ln_hh_weight", kGH, k1, TensorRole::kNormGain, kLn},  // g_hh   LN(W_hh h_{t-1})
    {"ln_hh_bias", kGH, k1, TensorRole::kNormBias, kLn},    // b'_hh
};
constexpr size_t kWeightHh = Slot(kParams, "weight_hh"), kBiasIh = Slot(kParams, "bias_ih"),
                 kBiasHh = Slot(kParams, "bias_hh"), kLnIhWeight = Slot(kParams, "ln_ih_weight"),
                 kLnIhBias = Slot(kParams, "ln_ih_bias"), kLnHhWeight = Slot(kParams, "ln_hh_weight"),
                 kLnHhBias = Slot(kParams, "ln_hh_bias");

// The cache. Each LN keeps its normalised input ẑ = (z - mean) / sqrt(var + eps) and the
// column's rstd = 1 / sqrt(var + eps).
constexpr BufferDecl kCache[] = {
    {"gates", kGH, kTB},               // in: W_ih x_t; out: r, z, n
    {"h", kH, kT1B},                   // h_0 .. h_T
    {"recurrent", kGH, kTB},           // u_t = W_hh h_{t-1} + b_hh (with layer norm LN(W_hh h_{t-1}) + b_hh)
    {"ln_ih", kGH, kTB, kLn},          // ẑ of W_ih x_t
    {"ln_hh", kGH, kTB, kLn},          // ẑ of W_hh h_{t-1}
    {"ln_rstd", Extent{2}, kTB, kLn},  // rstd of ih, hh
};
constexpr size_t kRecurrent = Slot(kCache, "recurrent"), kLnIh = Slot(kCache, "ln_ih"),
                 kLnHh = Slot(kCache, "ln_hh"), kLnRstd = Slot(kCache, "ln_rstd");

constexpr BufferDecl kBackward[] = {
    {"dgates", kGH, kTB},                  // dL/d(W_ih x_t)
    {"dh", kH, kB},                        // dL/dh_t as the sweep reaches step t
    {"dh_steps", kH, kTB, When::kRecord},  // dL/dh_t of every step
    {"drecurrent", kGH, kTB},              // dL/d(W_hh h_{t-1})
    {"dln_ih", kGH, kTB, kLn},             // dL/da_t, the gradient on LN(W_ih x_t) (and b_ih's)
    {"dln_hh", kGH, kTB, kLn},             // dL/du_t, the gradient on LN(W_hh h_{t-1}) (and b_hh's)
};
constexpr size_t kDrecurrent = Slot(kBackward, "drecurrent"), kDlnIh = Slot(kBackward, "dln_ih"),
                 kDlnHh = Slot(kBackward, "dln_hh");

template <typename S>
using Vec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <typename S>
using ConstVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

// The gates and the new state from the pre-activations with their biases. a (3H) in: a_t; out:
// r, z, n. u (3H) in: u_t. h_prev (H) in; h (H) out (may be h_prev).
template <typename S>
void Gates(Eigen::Index H, S* a, const S* u, const S* h_prev, S* h) {
  Vec<S> r(a, H), z(a + H, H), n(a + 2 * H, H);
  r = Sigmoid(r + ConstVec<S>(u, H));
  z = Sigmoid(z + ConstVec<S>(u + H, H));
  n = Tanh(n + r * ConstVec<S>(u + 2 * H, H));
  Vec<S>(h, H) = (S(1) - z) * n + z * ConstVec<S>(h_prev, H);
}

// One stream's step after the recurrent product. a (3H) in: W_ih x_t; out: r, z, n. u (3H) in:
// W_hh h_{t-1}; out: u_t (with b_hh). h_prev (H) in; h (H) out (may be h_prev).
template <typename S>
void Pointwise(Eigen::Index H, S* a, S* u, const RecurrentParams<S>& p, const S* h_prev, S* h) {
  Vec<S>(a, 3 * H) += ConstVec<S>(p[kBiasIh].data(), 3 * H);
  Vec<S>(u, 3 * H) += ConstVec<S>(p[kBiasHh].data(), 3 * H);
  Gates(H, a, u, h_prev, h);
}

// The same with layer normalisation; also out: z_ih, z_hh (3H) the ẑ of W_ih x_t and W_hh h_{t-1}
// (may be a and u themselves) and rstd (2) their 1 / sqrt(var + eps).
template <typename S>
void PointwiseLn(Eigen::Index H, S* a, S* u, S* z_ih, S* z_hh, const RecurrentParams<S>& p, const S* h_prev, S* h,
                 S* rstd) {
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
  rstd[0] = LayerNormalize(3 * H, a, z_ih);
  rstd[1] = LayerNormalize(3 * H, u, z_hh);
  Vec<S>(a, 3 * H) = param(p[kLnIhWeight]) * ConstVec<S>(z_ih, 3 * H) + param(p[kLnIhBias]) + param(p[kBiasIh]);
  Vec<S>(u, 3 * H) = param(p[kLnHhWeight]) * ConstVec<S>(z_hh, 3 * H) + param(p[kLnHhBias]) + param(p[kBiasHh]);
  Gates(H, a, u, h_prev, h);
}

// Per step t, shared between the threads as StepShare (packed_gemm.h) says:
//   u_t = W_hh h_{t-1}                     (3H, B)  one product over the packed W_hh
//   then Pointwise (with layer norm PointwiseLn) on each column.
// With the loop's regularisers (cell.h) the product reads m ⊙ h_{t-1} (the interpolation
// z_t * h_{t-1} reads h_{t-1} whole), and zoneout blends h_t = d_t h_{t-1} + (1 - d_t) h̃_t
// after the pointwise pass.
template <bool kLayerNorm, bool kLoop, typename S>
void ChunkForwardOf(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute) {
  const int threads = compute.threads;
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const LoopRegularisers<S>& loop = cache.loop;
  const bool drop = kLoop && loop.recurrent_mask;
  if (drop) EnsureShape(cache.h_dropped, H, T * B);
  Pack(p.weight_hh(), false, compute.products, cache.packed_hh);
#pragma omp parallel num_threads(threads)
  {
    const StepShare share(3 * H, B);
    const Eigen::Index j0 = share.j0, j1 = share.j1, nb = j1 - j0;
    if (drop) {
      cache.DropProductInput(0, j0, j1);
      share.Join();
    }
    for (Eigen::Index t = 0; t < T && share.active(); ++t) {
      const auto h_prev = cache.Step(cache.h(), t);
      auto u = cache.Step(cache[kRecurrent], t);  // (3H, B)
      auto a = cache.Step(cache.gates(), t);      // (3H, B)
      share.Product(cache.packed_hh, kLoop ? cache.ProductInput(t) : h_prev.data(), H, u.data(), 3 * H, false);
      share.Join();
      for (Eigen::Index b = j0; b < j1; ++b) {
        if constexpr (kLayerNorm)
          PointwiseLn(H, a.col(b).data(), u.col(b).data(), cache.Step(cache[kLnIh], t).col(b).data(),
                      cache.Step(cache[kLnHh], t).col(b).data(), p, h_prev.col(b).data(),
                      cache.Step(cache.h(), t + 1).col(b).data(), cache.Step(cache[kLnRstd], t).col(b).data());
        else
          Pointwise(H, a.col(b).data(), u.col(b).data(), p, h_prev.col(b).data(),
                    cache.Step(cache.h(), t + 1).col(b).data());
      }
      if constexpr (kLoop) {
        if (loop.h.on())
          loop.h.Forward(H, 0, t * B + j0, h_prev.middleCols(j0, nb).array(),
                         cache.Step(cache.h(), t + 1).middleCols(j0, nb).array());
        if (drop && t + 1 < T) cache.DropProductInput(t + 1, j0, j1);
      }
      share.Join();
    }
  }
}

template <typename S>
void ChunkForward(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute) {
  WithVariant(p.layer_norm(), cache.loop.any(), [&](auto ln, auto loop) {
    ChunkForwardOf<decltype(ln)::value, decltype(loop)::value>(p, cache, compute);
  });
}

// One stream: u = W_hh h_{t-1}, then Pointwise (with layer norm PointwiseLn, the ẑ in place).
void Step(const RecurrentParams<float>& p, const StepProduct& w_hh, float* a, float* recurrent, float* h, float*) {
  w_hh(h, recurrent, false);
  if (p.layer_norm()) {
    float rstd[2];
    PointwiseLn(p.hidden_size(), a, recurrent, a, recurrent, p, h, h, rstd);
    return;
  }
  Pointwise(p.hidden_size(), a, recurrent, p, h, h);
}

// Per step t = T..1 (shared between the threads as StepShare says), with
// dh = dh_out_t + (dL/dh_t through step t+1):
//   dn = dh * (1 - z)                 da_n = dn * (1 - n^2)         (input side of n)
//   du_n = da_n * r                                                (recurrent side of n)
//   dr = da_n * u_n                   da_r = du_r = dr * r (1 - r)
//   dz = dh * (h_{t-1} - n)           da_z = du_z = dz * z (1 - z)
//   dh_{t-1} = dh * z + W_hh^T du     one product over the packed W_hh^T (back_hh^T: cell.h)
// After the sweep: dW_hh += du · [h_0 .. h_{T-1}]^T, db_ih += sum over columns of da and
// db_hh += sum over columns of du.
// With layer norm (J: the LN Jacobian of layer_norm.h at the cached ẑ and rstd), da and du
// above are the gradients on the LN outputs (kept in dln_ih, dln_hh); then
//   dgates = J_ih (g_ih * da),  drecurrent = J_hh (g_hh * du),  dh_{t-1} = dh * z + W_hh^T drecurrent
// and after the sweep dW_hh += drecurrent · [h_0 .. h_{T-1}]^T; db_ih, db'_ih += sum of da,
// dg_ih += sum of da * ẑ_ih; db_hh, db'_hh += sum of du, dg_hh += sum of du * ẑ_hh.
// With the loop's regularisers: zoneout first splits dh into (1 - d_t) dh, the dh above, and
// d_t dh, added to dh_{t-1}; recurrent dropout masks the product's part, dh_{t-1} = dh * z +
// m ⊙ W_hh^T du (+ d_t dh), and dW_hh += du · [m ⊙ h_0 .. m ⊙ h_{T-1}]^T.
template <bool kLayerNorm, bool kLoop, typename S>
void ChunkBackwardOf(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                     const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  const int threads = compute.threads;
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const bool recur = back_hh.size() > 0;
  const LoopRegularisers<S>& loop = cache.loop;
  const bool drop = kLoop && loop.recurrent_mask && recur, zone = kLoop && loop.h.on();
  if (drop) EnsureShape(back.dh_dropped, H, B);
  if (zone) EnsureShape(back.dh_kept, H, B);
  if (recur) Pack(back_hh, true, compute.products, back.packed_hh_t);
  Mat<S>& dpre = kLayerNorm ? back[kDlnIh] : back.dgates();      // dL/da_t
  Mat<S>& dpre_u = kLayerNorm ? back[kDlnHh] : back[kDrecurrent];  // dL/du_t
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
#pragma omp parallel num_threads(threads)
  {
    const StepShare share(H, B);
    const Eigen::Index j0 = share.j0, j1 = share.j1;
    for (Eigen::Index t = T - 1; t >= 0 && share.active(); --t) {
      const auto act = cache.Step(cache.gates(), t);
      const auto u = cache.Step(cache[kRecurrent], t);
      const auto h_prev = cache.Step(cache.h(), t);
      auto da = dpre.middleCols(t * B, B);
      auto du = dpre_u.middleCols(t * B, B);
      for (Eigen::Index b = j0; b < j1; ++b) {
        const Eigen::Index j = t * B + b;
        back.dh().col(b) += dh_out.col(j);
        if (back.record) back.dh_steps().col(j) = back.dh().col(b);
        if (zone) loop.h.Backward(H, 0, j, back.dh().col(b).array(), back.dh_kept.col(b).array());
        const auto r = act.col(b).segment(0, H).array(), z = act.col(b).segment(H, H).array(),
                   n = act.col(b).segment(2 * H, H).array();
        const auto dh = back.dh().col(b).array();
        auto da_b = da.col(b);
        auto du_b = du.col(b);
        da_b.segment(2 * H, H) = (dh * (S(1) - z) * TanhGradFromOutput(n)).matrix();
        du_b.segment(2 * H, H) = (da_b.segment(2 * H, H).array() * r).matrix();
        da_b.segment(0, H) =
            (da_b.segment(2 * H, H).array() * u.col(b).segment(2 * H, H).array() * SigmoidGradFromOutput(r))
                .matrix();
        da_b.segment(H, H) = (dh * (h_prev.col(b).array() - n) * SigmoidGradFromOutput(z)).matrix();
        du_b.segment(0, 2 * H) = da_b.segment(0, 2 * H);
        back.dh().col(b) = (dh * z).matrix();  // the direct part of dh_{t-1}
        if (zone) back.dh().col(b) += back.dh_kept.col(b);
        if constexpr (kLayerNorm) {
          back.dgates().col(j) = LayerNormJacobian(param(p[kLnIhWeight]) * da_b.array(), cache[kLnIh].col(j).array(),
                                                 cache[kLnRstd](0, j))
                                   .matrix();
          back[kDrecurrent].col(j) = LayerNormJacobian(param(p[kLnHhWeight]) * du_b.array(),
                                                     cache[kLnHh].col(j).array(), cache[kLnRstd](1, j))
                                       .matrix();
        }
      }
      share.Join();
      if (drop) share.Product(back.packed_hh_t, back[kDrecurrent].col(t * B).data(), 3 * H, back.dh_dropped.data(), H, false);
      else if (recur) share.Product(back.packed_hh_t, back[kDrecurrent].col(t * B).data(), 3 * H, back.dh().data(), H, true);
      share.Join();
      if (drop) back.DropProductGradient(loop.recurrent_mask, j0, j1, true);
    }
  }
  if (kLoop && loop.recurrent_mask) SumProductOverTime(grad[kWeightHh], back[kDrecurrent], cache.h_dropped, compute);
  else SumProductOverTime(grad[kWeightHh], back[kDrecurrent], cache.h().leftCols(T * B), compute);
  SumColumnsOverTime(grad[kBiasIh], dpre);
  SumColumnsOverTime(grad[kBiasHh], dpre_u);
  if constexpr (kLayerNorm) {
    SumColumnsOverTime(grad[kLnIhBias], dpre);
    SumColumnsOverTime(grad[kLnHhBias], dpre_u);
    SumProductsOverTime(grad[kLnIhWeight], dpre, cache[kLnIh]);
    SumProductsOverTime(grad[kLnHhWeight], dpre_u, cache[kLnHh]);
  }
}

template <typename S>
void ChunkBackward(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                   const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  WithVariant(p.layer_norm(), cache.loop.any(), [&](auto ln, auto loop) {
    ChunkBackwardOf<decltype(ln)::value, decltype(loop)::value>(p, back_hh, cache, dh_out, back, grad, compute);
  });
}

// The tangent of the forward pass, per step (dx: the directional derivative of x):
//   du = W_hh dh_{t-1};  dr = r(1-r) du_r, dz = z(1-z) du_z
//   dn = (1-n^2) (dr*u_n + r*du_n);  dh_t = (1-z)*dn + dz*(h_{t-1} - n) + z*dh_{t-1}
// With layer norm (J as in the backward pass): du = g_hh * J_hh (W_hh dh_{t-1}).
// With the loop's regularisers: du from W_hh (m ⊙ dh_{t-1}); the above gives dh̃_t, and
//   dh_t = d_t dh_{t-1} + (1 - d_t) dh̃_t.
template <bool kLayerNorm, typename S>
void TangentOf(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh) {
  const Eigen::Index H = p.hidden_size(), B = cache.B;
  using Array = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
  const LoopRegularisers<S>& loop = cache.loop;
  Mat<S> du, next;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    if (loop.recurrent_mask)
      du.noalias() = p.weight_hh() * (Eigen::Map<const Mat<S>>(loop.recurrent_mask, H, B).array() * dh.array()).matrix();
    else du.noalias() = p.weight_hh() * dh;
    if constexpr (kLayerNorm)
      for (Eigen::Index b = 0; b < B; ++b)
        du.col(b) = (param(p[kLnHhWeight]) * LayerNormJacobian(du.col(b).array(), cache[kLnHh].col(t * B + b).array(),
                                                                cache[kLnRstd](1, t * B + b)))
                        .matrix();
    const auto act = cache.Step(cache.gates(), t);
    const auto r = act.topRows(H).array(), z = act.middleRows(H, H).array(), n = act.bottomRows(H).array();
    const auto u_n = cache.Step(cache[kRecurrent], t).bottomRows(H).array();
    const auto h_prev = cache.Step(cache.h(), t).array();
    const Array dr = SigmoidGradFromOutput(r) * du.topRows(H).array();
    const Array dz = SigmoidGradFromOutput(z) * du.middleRows(H, H).array();
    const Array dn = TanhGradFromOutput(n) * (dr * u_n + r * du.bottomRows(H).array());
    next = ((S(1) - z) * dn + dz * (h_prev - n) + z * dh.array()).matrix();
    if (loop.h.on()) loop.h.Forward(H, 0, t * B, dh.array(), next.array());
    dh.swap(next);
  }
}

template <typename S>
void Tangent(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>&) {
  if (p.layer_norm()) TangentOf<true>(p, cache, dh);
  else TangentOf<false>(p, cache, dh);
}

}  // namespace

extern constinit const Cell kGru;
constinit const Cell kGru{
    .name = "gru",
    .gates = 3,
    .gate_names = "rzn",
    .cell_state = false,
    .pascanu_gamma = std::numeric_limits<double>::quiet_NaN(),
    .torch = "nn.GRU",
    .params = kParams,
    .cache = kCache,
    .backward = kBackward,
    .f32 = {&ChunkForward<float>, &ChunkBackward<float>, &Tangent<float>},
    .f64 = {&ChunkForward<double>, &ChunkBackward<double>, &Tangent<double>},
    .step = &Step,
};

}  // namespace bptt::cells
