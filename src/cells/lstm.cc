// The LSTM cell, in PyTorch's nn.LSTM form (gate order i, f, g, o):
//   i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
//   f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
//   g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
//   o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
//   c_t = f_t * c_{t-1} + i_t * g_t
//   h_t = o_t * tanh(c_t)
// With layer normalisation (cell.h; the LN-LSTM of Ba, Kiros & Hinton 2016), each LN over a
// whole column (4H for the projections, H for the cell state), gains and biases per element:
//   a_t = LN(W_ih x_t; g_ih, b'_ih) + LN(W_hh h_{t-1}; g_hh, b'_hh) + b_ih + b_hh    (4H)
//   i_t, f_t, g_t, o_t = sigmoid, sigmoid, tanh, sigmoid of the blocks of a_t
//   c_t = f_t * c_{t-1} + i_t * g_t
//   h_t = o_t * tanh(LN(c_t; g_c, b'_c))
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

// Parameters, in PyTorch's nn.LSTM layout (G = 4, gate blocks i, f, g, o), then the LN gains g
// and biases b' of the layer-normalised variant.
constexpr ParamDecl kParams[] = {
    {"weight_ih", kGH, kE, TensorRole::kWeight},                  // W_ih
    {"weight_hh", kGH, kH, TensorRole::kWeight},                  // W_hh
    {"bias_ih", kGH, k1, TensorRole::kBias},                      // b_ih
    {"bias_hh", kGH, k1, TensorRole::kBias},                      // b_hh
    {"ln_ih_weight", kGH, k1, TensorRole::kNormGain, kLn},        // g_ih   LN(W_ih x_t)
    {"ln_ih_bias", kGH, k1, TensorRole::kNormBias, kLn},          // b'_ih
    {"ln_hh_weight", kGH, k1, TensorRole::kNormGain, kLn},        // g_hh   LN(W_hh h_{t-1})
    {"ln_hh_bias", kGH, k1, TensorRole::kNormBias, kLn},          // b'_hh
    {"ln_c_weight", kH, k1, TensorRole::kNormGain, kLn},          // g_c    LN(c_t)
    {"ln_c_bias", kH, k1, TensorRole::kNormBias, kLn},            // b'_c
};
constexpr size_t kWeightHh = Slot(kParams, "weight_hh"), kBiasIh = Slot(kParams, "bias_ih"),
                 kBiasHh = Slot(kParams, "bias_hh"), kLnIhWeight = Slot(kParams, "ln_ih_weight"),
                 kLnIhBias = Slot(kParams, "ln_ih_bias"), kLnHhWeight = Slot(kParams, "ln_hh_weight"),
                 kLnHhBias = Slot(kParams, "ln_hh_bias"), kLnCWeight = Slot(kParams, "ln_c_weight"),
                 kLnCBias = Slot(kParams, "ln_c_bias");

// The cache. Each LN keeps its normalised input ẑ = (z - mean) / sqrt(var + eps) and the
// column's rstd = 1 / sqrt(var + eps).
constexpr BufferDecl kCache[] = {
    {"gates", kGH, kTB},                // in: W_ih x_t; out: i, f, g, o
    {"h", kH, kT1B},                    // h_0 .. h_T
    {"c", kH, kT1B},                    // c_0 .. c_T
    {"tanh_c", kH, kTB},                // tanh(c_t); with layer norm tanh(LN(c_t))
    {"ln_ih", kGH, kTB, kLn},           // ẑ of W_ih x_t
    {"ln_hh", kGH, kTB, kLn},           // ẑ of W_hh h_{t-1}
    {"ln_c", kH, kTB, kLn},             // ẑ of c_t
    {"ln_rstd", Extent{3}, kTB, kLn},   // rstd of ih, hh, c
};
constexpr size_t kTanhC = Slot(kCache, "tanh_c"), kLnIh = Slot(kCache, "ln_ih"), kLnHh = Slot(kCache, "ln_hh"),
                 kLnC = Slot(kCache, "ln_c"), kLnRstd = Slot(kCache, "ln_rstd");

constexpr BufferDecl kBackward[] = {
    {"dgates", kGH, kTB},                  // dL/d(W_ih x_t)
    {"dh", kH, kB},                        // dL/dh_t as the sweep reaches step t
    {"dh_steps", kH, kTB, When::kRecord},  // dL/dh_t of every step
    {"dc", kH, kB},                        // dL/dc_t as the sweep reaches step t
    {"dc_steps", kH, kTB, When::kRecord},  // dL/dc_t of every step
    {"drecurrent", kGH, kTB, kLn},         // dL/d(W_hh h_{t-1})
    {"dln_ih", kGH, kTB, kLn},             // dL/da_t, the gradient on both LNs' outputs (and b_ih's)
    {"dln_c", kH, kTB, kLn},               // dL/dLN(c_t)
};
constexpr size_t kDrecurrent = Slot(kBackward, "drecurrent"), kDlnIh = Slot(kBackward, "dln_ih"),
                 kDlnC = Slot(kBackward, "dln_c");

template <typename S>
using Vec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <typename S>
using ConstVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

// The gates and the new cell state from the pre-activations with their biases. a (4H) in: a_t;
// out: i, f, g, o. c_prev (H) in; c (H) out (may be c_prev).
template <typename S>
void GatesAndCell(Eigen::Index H, S* a, const S* c_prev, S* c) {
  Vec<S> i(a, H), f(a + H, H), g(a + 2 * H, H), o(a + 3 * H, H);
  i = Sigmoid(i);
  f = Sigmoid(f);
  g = Tanh(g);
  o = Sigmoid(o);
  Vec<S>(c, H) = f * ConstVec<S>(c_prev, H) + i * g;
}

// One stream's step after the recurrent product. a (4H) in: W_ih x_t + W_hh h_{t-1}; out: the
// gates i, f, g, o. c_prev (H) in; c, tanh_c, h (H) out (c may be c_prev).
template <typename S>
void Pointwise(Eigen::Index H, S* a, const RecurrentParams<S>& p, const S* c_prev, S* c, S* tanh_c, S* h) {
  Vec<S> all(a, 4 * H);
  all += ConstVec<S>(p[kBiasIh].data(), 4 * H);
  all += ConstVec<S>(p[kBiasHh].data(), 4 * H);
  GatesAndCell(H, a, c_prev, c);
  Vec<S>(tanh_c, H) = Tanh(Vec<S>(c, H));
  Vec<S>(h, H) = ConstVec<S>(a + 3 * H, H) * Vec<S>(tanh_c, H);
}

// The same with layer normalisation. a (4H) in: W_ih x_t; out: the gates. r (4H) in: W_hh h_{t-1};
// out: its ẑ. z_ih (4H) out: the ẑ of W_ih x_t (may be a). c_prev (H) in; c, z_c, tanh_c, h (H)
// out: c_t, its ẑ, tanh(LN(c_t)), h_t (c may be c_prev). rstd (3) out: of ih, hh, c.
template <typename S>
void PointwiseLn(Eigen::Index H, S* a, S* r, S* z_ih, const RecurrentParams<S>& p, const S* c_prev, S* c, S* z_c,
                 S* tanh_c, S* h, S* rstd) {
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
  rstd[0] = LayerNormalize(4 * H, a, z_ih);
  rstd[1] = LayerNormalize(4 * H, r, r);
  Vec<S>(a, 4 * H) = param(p[kLnIhWeight]) * ConstVec<S>(z_ih, 4 * H) + param(p[kLnIhBias]) +
                     param(p[kLnHhWeight]) * ConstVec<S>(r, 4 * H) + param(p[kLnHhBias]) + param(p[kBiasIh]) +
                     param(p[kBiasHh]);
  GatesAndCell(H, a, c_prev, c);
  rstd[2] = LayerNormalize(H, c, z_c);
  Vec<S>(tanh_c, H) = Tanh(param(p[kLnCWeight]) * ConstVec<S>(z_c, H) + param(p[kLnCBias]));
  Vec<S>(h, H) = ConstVec<S>(a + 3 * H, H) * Vec<S>(tanh_c, H);
}

// Per step t, shared between the threads as StepShare (packed_gemm.h) says:
//   a_t = gates_t + W_hh h_{t-1}           (4H, B)  one product over the packed W_hh
//   then Pointwise on each column.
// With layer norm the product goes to ln_hh instead (W_hh h_{t-1} is normalised on its own),
// then PointwiseLn on each column.
// With the loop's regularisers (cell.h) the product reads m ⊙ h_{t-1}, and zoneout blends
// c_t = d^c_t c_{t-1} + (1 - d^c_t) c̃_t and h_t = d_t h_{t-1} + (1 - d_t) h̃_t after the
// pointwise pass, which computed c̃_t and h̃_t = o_t tanh(c̃_t) (tanh_c keeps tanh(c̃_t)).
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
    const StepShare share(4 * H, B);
    const Eigen::Index j0 = share.j0, j1 = share.j1, nb = j1 - j0;
    if (drop) {
      cache.DropProductInput(0, j0, j1);
      share.Join();
    }
    for (Eigen::Index t = 0; t < T && share.active(); ++t) {
      auto a = cache.Step(cache.gates(), t);  // (4H, B)
      const S* h_prev = kLoop ? cache.ProductInput(t) : cache.Step(cache.h(), t).data();
      if constexpr (kLayerNorm) {
        auto r = cache.Step(cache[kLnHh], t);  // (4H, B)
        share.Product(cache.packed_hh, h_prev, H, r.data(), 4 * H, false);
        share.Join();
        for (Eigen::Index b = j0; b < j1; ++b)
          PointwiseLn(H, a.col(b).data(), r.col(b).data(), cache.Step(cache[kLnIh], t).col(b).data(), p,
                      cache.Step(cache.c(), t).col(b).data(), cache.Step(cache.c(), t + 1).col(b).data(),
                      cache.Step(cache[kLnC], t).col(b).data(), cache.Step(cache[kTanhC], t).col(b).data(),
                      cache.Step(cache.h(), t + 1).col(b).data(), cache.Step(cache[kLnRstd], t).col(b).data());
      } else {
        share.Product(cache.packed_hh, h_prev, H, a.data(), 4 * H, true);
        share.Join();
        for (Eigen::Index b = j0; b < j1; ++b)
          Pointwise(H, a.col(b).data(), p, cache.Step(cache.c(), t).col(b).data(),
                    cache.Step(cache.c(), t + 1).col(b).data(), cache.Step(cache[kTanhC], t).col(b).data(),
                    cache.Step(cache.h(), t + 1).col(b).data());
      }
      if constexpr (kLoop) {
        if (loop.c.on())
          loop.c.Forward(H, 0, t * B + j0, cache.Step(cache.c(), t).middleCols(j0, nb).array(),
                         cache.Step(cache.c(), t + 1).middleCols(j0, nb).array());
        if (loop.h.on())
          loop.h.Forward(H, 0, t * B + j0, cache.Step(cache.h(), t).middleCols(j0, nb).array(),
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

// One stream: a += W_hh h_{t-1}, then Pointwise; `recurrent` holds tanh(c_t). With layer norm:
// recurrent = W_hh h_{t-1} (normalised apart from a), then PointwiseLn with the ẑ of W_ih x_t
// in a, and those of c_t and tanh(LN(c_t)) in recurrent's first 2H.
void Step(const RecurrentParams<float>& p, const StepProduct& w_hh, float* a, float* recurrent, float* h, float* c) {
  const Eigen::Index H = p.hidden_size();
  if (p.layer_norm()) {
    float rstd[3];
    w_hh(h, recurrent, false);
    PointwiseLn(H, a, recurrent, a, p, c, c, recurrent, recurrent + H, h, rstd);
    return;
  }
  w_hh(h, a, true);
  Pointwise(H, a, p, c, c, recurrent, h);
}

// Per step t = T..1 (shared between the threads as StepShare says), with
// dh = dh_out_t + (dL/dh_t through step t+1):
//   do = dh * tanh(c_t)                     da_o = do * o (1 - o)
//   dc = dc_next + dh * o * (1 - tanh^2 c_t)
//   di = dc * g                             da_i = di * i (1 - i)
//   dg = dc * i                             da_g = dg * (1 - g^2)
//   df = dc * c_{t-1}                       da_f = df * f (1 - f)
//   dc_{t-1} = dc * f
//   dh_{t-1} = W_hh^T da                    one product over the packed W_hh^T (back_hh^T: cell.h)
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_ih, db_hh += sum over columns of da.
// With layer norm (J: the LN Jacobian of layer_norm.h at the cached ẑ and rstd; y_c = LN(c_t)):
//   dy_c = dh * o * (1 - tanh^2 y_c)        into dln_c
//   dc = dc_next + J_c (g_c * dy_c)
//   da as above, into dln_ih (both LN outputs are summed into a_t, so both receive da)
//   dgates = J_ih (g_ih * da),  drecurrent = J_hh (g_hh * da),  dh_{t-1} = W_hh^T drecurrent
// and after the sweep dW_hh += drecurrent · [h_0 .. h_{T-1}]^T; db_ih, db_hh, db'_ih, db'_hh +=
// sum of da; dg_ih += sum of da * ẑ_ih, dg_hh += sum of da * ẑ_hh; dg_c += sum of dy_c * ẑ_c,
// db'_c += sum of dy_c.
// With the loop's regularisers: zoneout first splits dh into (1 - d_t) dh (dL/dh̃_t, on into
// the step) and d_t dh (added to dh_{t-1}), and dc_next into (1 - d^c_t) dc_next (on into dc,
// which becomes dL/dc̃_t) and d^c_t dc_next (added to dc_{t-1}); recurrent dropout masks the
// product, dh_{t-1} = m ⊙ W_hh^T da (+ d_t dh), and dW_hh += da · [m ⊙ h_0 .. m ⊙ h_{T-1}]^T.
// The record keeps dL/dh_t and dL/dc_t of the states (with zoneout on c, c_t reaches the loss
// through step t+1 alone: dc_next).
template <bool kLayerNorm, bool kLoop, typename S>
void ChunkBackwardOf(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                     const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  const int threads = compute.threads;
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const bool recur = back_hh.size() > 0;
  const LoopRegularisers<S>& loop = cache.loop;
  const bool drop = kLoop && loop.recurrent_mask && recur, zone_h = kLoop && loop.h.on(),
             zone_c = kLoop && loop.c.on();
  if (drop) EnsureShape(back.dh_dropped, H, B);
  if (zone_h) EnsureShape(back.dh_kept, H, B);
  if (zone_c) EnsureShape(back.dc_kept, H, B);
  if (recur) Pack(back_hh, true, compute.products, back.packed_hh_t);
  Mat<S>& dpre = kLayerNorm ? back[kDlnIh] : back.dgates();           // dL/da_t
  Mat<S>& dproduct = kLayerNorm ? back[kDrecurrent] : back.dgates();   // dL/d(W_hh h_{t-1})
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
#pragma omp parallel num_threads(threads)
  {
    const StepShare share(H, B);
    const Eigen::Index j0 = share.j0, j1 = share.j1;
    for (Eigen::Index t = T - 1; t >= 0 && share.active(); --t) {
      const auto act = cache.Step(cache.gates(), t);
      const auto c_prev = cache.Step(cache.c(), t);
      const auto tc = cache.Step(cache[kTanhC], t);
      auto da = dpre.middleCols(t * B, B);
      for (Eigen::Index b = j0; b < j1; ++b) {
        const Eigen::Index j = t * B + b;
        back.dh().col(b) += dh_out.col(j);
        if (back.record) back.dh_steps().col(j) = back.dh().col(b);
        if (zone_h) loop.h.Backward(H, 0, j, back.dh().col(b).array(), back.dh_kept.col(b).array());
        if (zone_c) {
          if (back.record) back.dc_steps().col(j) = back.dc().col(b);
          loop.c.Backward(H, 0, j, back.dc().col(b).array(), back.dc_kept.col(b).array());
        }
        const auto i = act.col(b).segment(0, H).array(), f = act.col(b).segment(H, H).array(),
                   g = act.col(b).segment(2 * H, H).array(), o = act.col(b).segment(3 * H, H).array();
        const auto dh = back.dh().col(b).array();
        auto dc = back.dc().col(b).array();
        const auto tcb = tc.col(b).array();
        if constexpr (kLayerNorm) {
          auto dy_c = back[kDlnC].col(j).array();
          dy_c = dh * o * TanhGradFromOutput(tcb);
          dc += LayerNormJacobian(param(p[kLnCWeight]) * dy_c, cache[kLnC].col(j).array(), cache[kLnRstd](2, j));
        } else {
          dc += dh * o * TanhGradFromOutput(tcb);
        }
        auto col = da.col(b);
        col.segment(0, H) = (dc * g * SigmoidGradFromOutput(i)).matrix();
        col.segment(H, H) = (dc * c_prev.col(b).array() * SigmoidGradFromOutput(f)).matrix();
        col.segment(2 * H, H) = (dc * i * TanhGradFromOutput(g)).matrix();
        col.segment(3 * H, H) = (dh * tcb * SigmoidGradFromOutput(o)).matrix();
        if (back.record && !zone_c) back.dc_steps().col(j) = dc.matrix();
        dc *= f;  // dc_{t-1}
        if (zone_c) dc += back.dc_kept.col(b).array();
        if constexpr (kLayerNorm) {
          const auto dab = col.array();
          back.dgates().col(j) =
              LayerNormJacobian(param(p[kLnIhWeight]) * dab, cache[kLnIh].col(j).array(), cache[kLnRstd](0, j)).matrix();
          back[kDrecurrent].col(j) =
              LayerNormJacobian(param(p[kLnHhWeight]) * dab, cache[kLnHh].col(j).array(), cache[kLnRstd](1, j)).matrix();
        }
      }
      share.Join();
      if (recur)
        share.Product(back.packed_hh_t, dproduct.col(t * B).data(), 4 * H, (drop ? back.dh_dropped : back.dh()).data(),
                      H, false);
      else back.dh().middleCols(j0, j1 - j0).setZero();
      share.Join();
      if (drop) back.DropProductGradient(loop.recurrent_mask, j0, j1, false);
      if (zone_h) back.dh().middleCols(j0, j1 - j0) += back.dh_kept.middleCols(j0, j1 - j0);
    }
  }
  if (kLoop && loop.recurrent_mask) SumProductOverTime(grad[kWeightHh], dproduct, cache.h_dropped, compute);
  else SumProductOverTime(grad[kWeightHh], dproduct, cache.h().leftCols(T * B), compute);
  SumColumnsOverTime(grad[kBiasIh], dpre);
  SumColumnsOverTime(grad[kBiasHh], dpre);
  if constexpr (kLayerNorm) {
    SumColumnsOverTime(grad[kLnIhBias], dpre);
    SumColumnsOverTime(grad[kLnHhBias], dpre);
    SumProductsOverTime(grad[kLnIhWeight], dpre, cache[kLnIh]);
    SumProductsOverTime(grad[kLnHhWeight], dpre, cache[kLnHh]);
    SumProductsOverTime(grad[kLnCWeight], back[kDlnC], cache[kLnC]);
    SumColumnsOverTime(grad[kLnCBias], back[kDlnC]);
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
//   da = W_hh dh_{t-1};  di = i(1-i) da_i, df = f(1-f) da_f, dg = (1-g^2) da_g, do = o(1-o) da_o
//   dc_t = df*c_{t-1} + f*dc_{t-1} + di*g + i*dg
//   dh_t = do*tanh(c_t) + o*(1 - tanh^2 c_t)*dc_t
// With layer norm (J as in the backward pass): da = g_hh * J_hh (W_hh dh_{t-1}), and
//   dh_t = do*tanh(y_c) + o*(1 - tanh^2 y_c) * g_c * J_c dc_t.
// With the loop's regularisers: da from W_hh (m ⊙ dh_{t-1}); the above give dc̃_t and dh̃_t, and
//   dc_t = d^c_t dc_{t-1} + (1 - d^c_t) dc̃_t,   dh_t = d_t dh_{t-1} + (1 - d_t) dh̃_t.
template <bool kLayerNorm, typename S>
void TangentOf(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>& dc) {
  const Eigen::Index H = p.hidden_size(), B = cache.B;
  using Array = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
  const auto param = [](const Mat<S>& m) { return ConstVec<S>(m.data(), m.size()); };
  const LoopRegularisers<S>& loop = cache.loop;
  Mat<S> da, dh_prev, dc_prev;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    if (loop.recurrent_mask)
      da.noalias() = p.weight_hh() * (Eigen::Map<const Mat<S>>(loop.recurrent_mask, H, B).array() * dh.array()).matrix();
    else da.noalias() = p.weight_hh() * dh;
    if (loop.h.on()) dh_prev = dh;
    if (loop.c.on()) dc_prev = dc;
    if constexpr (kLayerNorm)
      for (Eigen::Index b = 0; b < B; ++b)
        da.col(b) = (param(p[kLnHhWeight]) * LayerNormJacobian(da.col(b).array(), cache[kLnHh].col(t * B + b).array(),
                                                                cache[kLnRstd](1, t * B + b)))
                        .matrix();
    const auto act = cache.Step(cache.gates(), t);
    const auto i = act.topRows(H).array(), f = act.middleRows(H, H).array(), g = act.middleRows(2 * H, H).array(),
               o = act.bottomRows(H).array();
    const auto c_prev = cache.Step(cache.c(), t).array();
    const auto tc = cache.Step(cache[kTanhC], t).array();
    const Array di = SigmoidGradFromOutput(i) * da.topRows(H).array();
    const Array df = SigmoidGradFromOutput(f) * da.middleRows(H, H).array();
    const Array dg = TanhGradFromOutput(g) * da.middleRows(2 * H, H).array();
    const Array d_o = SigmoidGradFromOutput(o) * da.bottomRows(H).array();
    dc = (df * c_prev + f * dc.array() + di * g + i * dg).matrix();
    if constexpr (kLayerNorm) {
      Array dy(H, B);
      for (Eigen::Index b = 0; b < B; ++b)
        dy.col(b) = param(p[kLnCWeight]) *
                    LayerNormJacobian(dc.col(b).array(), cache[kLnC].col(t * B + b).array(), cache[kLnRstd](2, t * B + b));
      dh = (d_o * tc + o * TanhGradFromOutput(tc) * dy).matrix();
    } else {
      dh = (d_o * tc + o * TanhGradFromOutput(tc) * dc.array()).matrix();
    }
    if (loop.c.on()) loop.c.Forward(H, 0, t * B, dc_prev.array(), dc.array());
    if (loop.h.on()) loop.h.Forward(H, 0, t * B, dh_prev.array(), dh.array());
  }
}

template <typename S>
void Tangent(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>& dc) {
  if (p.layer_norm()) TangentOf<true>(p, cache, dh, dc);
  else TangentOf<false>(p, cache, dh, dc);
}

}  // namespace

extern constinit const Cell kLstm;
constinit const Cell kLstm{
    .name = "lstm",
    .gates = 4,
    .gate_names = "ifgo",
    .cell_state = true,
    .pascanu_gamma = std::numeric_limits<double>::quiet_NaN(),
    .torch = "nn.LSTM",
    .params = kParams,
    .cache = kCache,
    .backward = kBackward,
    .f32 = {&ChunkForward<float>, &ChunkBackward<float>, &Tangent<float>},
    .f64 = {&ChunkForward<double>, &ChunkBackward<double>, &Tangent<double>},
    .step = &Step,
};

}  // namespace bptt::cells
