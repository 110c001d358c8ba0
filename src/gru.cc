#include "bptt/gru.h"

#include "activation.h"
#include "packed_gemm.h"
#include "parallel_product.h"

namespace bptt {

// Forward, per step t:
//   u_t = W_hh h_{t-1} + b_hh                    (3H, B)  one product, kept in hidden_gates
//   r = sigmoid(a_r + u_r); z = sigmoid(a_z + u_z); n = tanh(a_n + r * u_n)
//   h_t = (1 - z) * n + z * h_{t-1}
// W_hh is packed once per chunk (packed_gemm.h); each thread runs the sweep for its columns.
template <typename S>
void GruForward(const RecurrentParams<S>& p, LayerCache<S>& cache) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  PackPanels(p.weight_hh, cache.packed_hh);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
    for (Eigen::Index t = 0; t < T && j0 < j1; ++t) {
      const auto h_prev = cache.Step(cache.h, t);
      auto u = cache.Step(cache.hidden_gates, t);  // (3H, B)
      auto a = cache.Step(cache.gates, t);         // (3H, B)
      auto h = cache.Step(cache.h, t + 1);
      for (Eigen::Index q = 0; q < PanelBlocks(3 * H); ++q) {  // u = W_hh h_{t-1}
        const Eigen::Index r0 = q * kPanelRows;
        PanelProduct(cache.packed_hh, q, H, h_prev.col(j0).data(), H, j1 - j0, u.col(j0).data() + r0, 3 * H,
                     std::min(kPanelRows, 3 * H - r0), false);
      }
      for (Eigen::Index b = j0; b < j1; ++b) {
        auto ub = u.col(b);
        ub += p.bias_hh.col(0);
        auto r = a.col(b).segment(0, H), z = a.col(b).segment(H, H), n = a.col(b).segment(2 * H, H);
        r = Sigmoid(r + ub.segment(0, H)).matrix();
        z = Sigmoid(z + ub.segment(H, H)).matrix();
        n = Tanh(n.array() + r.array() * ub.segment(2 * H, H).array()).matrix();
        h.col(b) = ((S(1) - z.array()) * n.array() + z.array() * h_prev.col(b).array()).matrix();
      }
    }
  }
}

// Backward, per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   dn = dh * (1 - z)                 da_n = dn * (1 - n^2)         (input side of n)
//   du_n = da_n * r                                                (hidden side of n)
//   dr = da_n * u_n                   da_r = du_r = dr * r (1 - r)
//   dz = dh * (h_{t-1} - n)           da_z = du_z = dz * z (1 - z)
//   dh_{t-1} = dh * z + W_hh^T du     one product
// After the sweep: dW_hh += du · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of du.
// W_hh^T is packed once per chunk; each thread runs the sweep for its columns.
template <typename S>
void GruBackward(const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T, blocks = PanelBlocks(H);
  PackTransposedPanels(p.weight_hh, back.packed_hh_t);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
    for (Eigen::Index t = T - 1; t >= 0 && j0 < j1; --t) {
      const auto act = cache.Step(cache.gates, t);
      const auto u = cache.Step(cache.hidden_gates, t);
      const auto h_prev = cache.Step(cache.h, t);
      auto da = back.dgates.middleCols(t * B, B);
      auto du = back.dgates_h.middleCols(t * B, B);
      for (Eigen::Index b = j0; b < j1; ++b) {
        back.dh.col(b) += dh_out.col(t * B + b);
        if (back.record) back.dh_steps.col(t * B + b) = back.dh.col(b);
        const auto r = act.col(b).segment(0, H).array(), z = act.col(b).segment(H, H).array(),
                   n = act.col(b).segment(2 * H, H).array();
        const auto dh = back.dh.col(b).array();
        auto da_b = da.col(b);
        auto du_b = du.col(b);
        da_b.segment(2 * H, H) = (dh * (S(1) - z) * TanhGradFromOutput(n)).matrix();
        du_b.segment(2 * H, H) = (da_b.segment(2 * H, H).array() * r).matrix();
        da_b.segment(0, H) =
            (da_b.segment(2 * H, H).array() * u.col(b).segment(2 * H, H).array() * SigmoidGradFromOutput(r))
                .matrix();
        da_b.segment(H, H) = (dh * (h_prev.col(b).array() - n) * SigmoidGradFromOutput(z)).matrix();
        du_b.segment(0, 2 * H) = da_b.segment(0, 2 * H);
        back.dh.col(b) = (dh * z).matrix();  // the direct part of dh_{t-1}
      }
      for (Eigen::Index q = 0; q < blocks; ++q) {  // dh_{t-1} += W_hh^T du
        const Eigen::Index u0 = q * kPanelRows, m = std::min(kPanelRows, H - u0);
        PanelProduct(back.packed_hh_t, q, 3 * H, du.col(j0).data(), 3 * H, j1 - j0, back.dh.col(j0).data() + u0, H,
                     m, true);
      }
    }
  }
  ParallelProduct(grad.weight_hh, back.dgates_h, cache.h.leftCols(T * B).transpose(), true);
  grad.bias_hh += back.dgates_h.rowwise().sum();
}

template void GruForward<float>(const RecurrentParams<float>&, LayerCache<float>&);
template void GruForward<double>(const RecurrentParams<double>&, LayerCache<double>&);
template void GruBackward<float>(const RecurrentParams<float>&, const LayerCache<float>&,
                                 const ConstMatRef<float>&, LayerBackward<float>&, RecurrentParams<float>&);
template void GruBackward<double>(const RecurrentParams<double>&, const LayerCache<double>&,
                                  const ConstMatRef<double>&, LayerBackward<double>&, RecurrentParams<double>&);

}  // namespace bptt
