#include "bptt/lstm.h"

#include "activation.h"
#include "packed_gemm.h"
#include "parallel_product.h"

namespace bptt {

// Forward, per step t (columns of timestep t, all B sequences at once):
//   a_t = gates_t + W_hh h_{t-1} + b_hh           (4H, B)  one product
//   i, f, o = sigmoid(a_i, a_f, a_o); g = tanh(a_g)       one pass over each column
//   c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
// W_hh is packed once per chunk (packed_gemm.h); each thread runs the sweep for its columns.
template <typename S>
void LstmForward(const RecurrentParams<S>& p, LayerCache<S>& cache) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  PackPanels(p.weight_hh, cache.packed_hh);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
    for (Eigen::Index t = 0; t < T && j0 < j1; ++t) {
      auto a = cache.Step(cache.gates, t);  // (4H, B)
      const auto h_prev = cache.Step(cache.h, t);
      const auto c_prev = cache.Step(cache.c, t);  // (H, B)
      auto c = cache.Step(cache.c, t + 1);
      auto h = cache.Step(cache.h, t + 1);
      auto tc = cache.Step(cache.tanh_c, t);
      for (Eigen::Index q = 0; q < PanelBlocks(4 * H); ++q) {  // a += W_hh h_{t-1}
        const Eigen::Index r0 = q * kPanelRows;
        PanelProduct(cache.packed_hh, q, H, h_prev.col(j0).data(), H, j1 - j0, a.col(j0).data() + r0, 4 * H,
                     std::min(kPanelRows, 4 * H - r0), true);
      }
      for (Eigen::Index b = j0; b < j1; ++b) {
        auto col = a.col(b);
        col += p.bias_hh.col(0);
        auto i = col.segment(0, H), f = col.segment(H, H), g = col.segment(2 * H, H), o = col.segment(3 * H, H);
        i = Sigmoid(i).matrix();
        f = Sigmoid(f).matrix();
        g = Tanh(g).matrix();
        o = Sigmoid(o).matrix();
        c.col(b) = (f.array() * c_prev.col(b).array() + i.array() * g.array()).matrix();
        tc.col(b) = Tanh(c.col(b)).matrix();
        h.col(b) = (o.array() * tc.col(b).array()).matrix();
      }
    }
  }
}

// Backward, per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   do = dh * tanh(c_t)                     da_o = do * o (1 - o)
//   dc = dc_next + dh * o * (1 - tanh^2 c_t)
//   di = dc * g                             da_i = di * i (1 - i)
//   dg = dc * i                             da_g = dg * (1 - g^2)
//   df = dc * c_{t-1}                       da_f = df * f (1 - f)
//   dc_{t-1} = dc * f
//   dh_{t-1} = W_hh^T da                    one product
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of da.
// W_hh^T is packed once per chunk; each thread runs the sweep for its columns.
template <typename S>
void LstmBackward(const RecurrentParams<S>& p, const LayerCache<S>& cache,
                  const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T, blocks = PanelBlocks(H);
  PackTransposedPanels(p.weight_hh, back.packed_hh_t);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
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
      for (Eigen::Index q = 0; q < blocks; ++q) {  // dh_{t-1} = W_hh^T da
        const Eigen::Index u0 = q * kPanelRows, n = std::min(kPanelRows, H - u0);
        PanelProduct(back.packed_hh_t, q, 4 * H, da.col(j0).data(), 4 * H, j1 - j0, back.dh.col(j0).data() + u0, H,
                     n, false);
      }
    }
  }
  ParallelProduct(grad.weight_hh, back.dgates, cache.h.leftCols(T * B).transpose(), true);
  grad.bias_hh += back.dgates.rowwise().sum();
}

template void LstmForward<float>(const RecurrentParams<float>&, LayerCache<float>&);
template void LstmForward<double>(const RecurrentParams<double>&, LayerCache<double>&);
template void LstmBackward<float>(const RecurrentParams<float>&, const LayerCache<float>&,
                                  const ConstMatRef<float>&, LayerBackward<float>&, RecurrentParams<float>&);
template void LstmBackward<double>(const RecurrentParams<double>&, const LayerCache<double>&,
                                   const ConstMatRef<double>&, LayerBackward<double>&, RecurrentParams<double>&);

}  // namespace bptt
