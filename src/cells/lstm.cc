// The LSTM cell, in PyTorch's nn.LSTM form (gate order i, f, g, o):
//   i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
//   f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
//   g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
//   o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
//   c_t = f_t * c_{t-1} + i_t * g_t
//   h_t = o_t * tanh(c_t)
// Its four modes follow, in the order of cell.h: the pointwise pass they share, chunk forward,
// step, chunk backward and tangent.
#include "bptt/cell.h"
#include "kernels/activation.h"
#include "kernels/packed_gemm.h"
#include "kernels/threads.h"

namespace bptt::cells {

namespace {

template <typename S>
using Vec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <typename S>
using ConstVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

// One stream's step after the recurrent product. a (4H) in: W_ih x_t + W_hh h_{t-1}; out: the
// gates i, f, g, o. c_prev (H) in; c, tanh_c, h (H) out (c may be c_prev).
template <typename S>
void Pointwise(Eigen::Index H, S* a, const RecurrentParams<S>& p, const S* c_prev, S* c, S* tanh_c, S* h) {
  Vec<S> all(a, 4 * H);
  all += ConstVec<S>(p.bias_ih.data(), 4 * H);
  all += ConstVec<S>(p.bias_hh.data(), 4 * H);
  Vec<S> i(a, H), f(a + H, H), g(a + 2 * H, H), o(a + 3 * H, H);
  i = Sigmoid(i);
  f = Sigmoid(f);
  g = Tanh(g);
  o = Sigmoid(o);
  Vec<S>(c, H) = f * ConstVec<S>(c_prev, H) + i * g;
  Vec<S>(tanh_c, H) = Tanh(Vec<S>(c, H));
  Vec<S>(h, H) = o * Vec<S>(tanh_c, H);
}

// Per step t, for each thread's columns of the batch:
//   a_t = gates_t + W_hh h_{t-1}           (4H, B)  one product over the packed W_hh
//   then Pointwise on each column.
template <typename S>
void ChunkForward(const RecurrentParams<S>& p, LayerCache<S>& cache, int threads) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  PackPanels(p.weight_hh, cache.packed_hh);
#pragma omp parallel num_threads(threads)
  {
    const auto [j0, j1] = ThreadRange(B);
    for (Eigen::Index t = 0; t < T && j0 < j1; ++t) {
      auto a = cache.Step(cache.gates, t);  // (4H, B)
      const auto h_prev = cache.Step(cache.h, t);
      PackedProduct(cache.packed_hh, 4 * H, H, h_prev.col(j0).data(), H, j1 - j0, a.col(j0).data(), 4 * H, true);
      for (Eigen::Index b = j0; b < j1; ++b)
        Pointwise(H, a.col(b).data(), p, cache.Step(cache.c, t).col(b).data(),
                  cache.Step(cache.c, t + 1).col(b).data(), cache.Step(cache.tanh_c, t).col(b).data(),
                  cache.Step(cache.h, t + 1).col(b).data());
    }
  }
}

// One stream: a += W_hh h_{t-1}, then Pointwise; `recurrent` holds tanh(c_t).
void Step(const RecurrentParams<float>& p, const StepProduct& w_hh, float* a, float* recurrent, float* h, float* c) {
  w_hh(h, a, true);
  Pointwise(p.hidden_size(), a, p, c, c, recurrent, h);
}

// Per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   do = dh * tanh(c_t)                     da_o = do * o (1 - o)
//   dc = dc_next + dh * o * (1 - tanh^2 c_t)
//   di = dc * g                             da_i = di * i (1 - i)
//   dg = dc * i                             da_g = dg * (1 - g^2)
//   df = dc * c_{t-1}                       da_f = df * f (1 - f)
//   dc_{t-1} = dc * f
//   dh_{t-1} = W_hh^T da                    one product over the packed W_hh^T (back_hh^T: cell.h)
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of da.
template <typename S>
void ChunkBackward(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                   const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, int threads) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const bool recur = back_hh.size() > 0;
  if (recur) PackTransposedPanels(back_hh, back.packed_hh_t);
#pragma omp parallel num_threads(threads)
  {
    const auto [j0, j1] = ThreadRange(B);
    for (Eigen::Index t = T - 1; t >= 0 && j0 < j1; --t) {
      const auto act = cache.Step(cache.gates, t);
      const auto c_prev = cache.Step(cache.c, t);
      const auto tc = cache.Step(cache.tanh_c, t);
      auto da = back.dgates.middleCols(t * B, B);
      for (Eigen::Index b = j0; b < j1; ++b) {
        back.dh.col(b) += dh_out.col(t * B + b);
        if (back.record) back.dh_steps.col(t * B + b) = back.dh.col(b);
        const auto i = act.col(b).segment(0, H).array(), f = act.col(b).segment(H, H).array(),
                   g = act.col(b).segment(2 * H, H).array(), o = act.col(b).segment(3 * H, H).array();
        const auto dh = back.dh.col(b).array();
        auto dc = back.dc.col(b).array();
        const auto tcb = tc.col(b).array();
        dc += dh * o * TanhGradFromOutput(tcb);
        auto col = da.col(b);
        col.segment(0, H) = (dc * g * SigmoidGradFromOutput(i)).matrix();
        col.segment(H, H) = (dc * c_prev.col(b).array() * SigmoidGradFromOutput(f)).matrix();
        col.segment(2 * H, H) = (dc * i * TanhGradFromOutput(g)).matrix();
        col.segment(3 * H, H) = (dh * tcb * SigmoidGradFromOutput(o)).matrix();
        if (back.record) back.dc_steps.col(t * B + b) = dc.matrix();
        dc *= f;  // dc_{t-1}
      }
      if (recur)
        PackedProduct(back.packed_hh_t, H, 4 * H, da.col(j0).data(), 4 * H, j1 - j0, back.dh.col(j0).data(), H, false);
      else
        back.dh.middleCols(j0, j1 - j0).setZero();
    }
  }
  ParallelProduct(grad.weight_hh, back.dgates, cache.h.leftCols(T * B).transpose(), true, threads);
  grad.bias_hh += back.dgates.rowwise().sum();
}

// The tangent of the forward pass, per step (dx: the directional derivative of x):
//   da = W_hh dh_{t-1};  di = i(1-i) da_i, df = f(1-f) da_f, dg = (1-g^2) da_g, do = o(1-o) da_o
//   dc_t = df*c_{t-1} + f*dc_{t-1} + di*g + i*dg
//   dh_t = do*tanh(c_t) + o*(1 - tanh^2 c_t)*dc_t
template <typename S>
void Tangent(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>& dc) {
  const Eigen::Index H = p.hidden_size();
  using Array = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
  Mat<S> da;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    da.noalias() = p.weight_hh * dh;
    const auto act = cache.Step(cache.gates, t);
    const auto i = act.topRows(H).array(), f = act.middleRows(H, H).array(), g = act.middleRows(2 * H, H).array(),
               o = act.bottomRows(H).array();
    const auto c_prev = cache.Step(cache.c, t).array();
    const auto tc = cache.Step(cache.tanh_c, t).array();
    const Array di = SigmoidGradFromOutput(i) * da.topRows(H).array();
    const Array df = SigmoidGradFromOutput(f) * da.middleRows(H, H).array();
    const Array dg = TanhGradFromOutput(g) * da.middleRows(2 * H, H).array();
    const Array d_o = SigmoidGradFromOutput(o) * da.bottomRows(H).array();
    dc = (df * c_prev + f * dc.array() + di * g + i * dg).matrix();
    dh = (d_o * tc + o * TanhGradFromOutput(tc) * dc.array()).matrix();
  }
}

}  // namespace

extern constinit const Cell kLstm;
constinit const Cell kLstm{
    .name = "lstm",
    .gates = 4,
    .gate_names = "ifgo",
    .cell_state = true,
    .separate_recurrent = false,
    .pascanu_gamma = std::numeric_limits<double>::quiet_NaN(),
    .torch = "nn.LSTM",
    .f32 = {&ChunkForward<float>, &ChunkBackward<float>, &Tangent<float>},
    .f64 = {&ChunkForward<double>, &ChunkBackward<double>, &Tangent<double>},
    .step = &Step,
};

}  // namespace bptt::cells
