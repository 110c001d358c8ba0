#include "bptt/gru.h"

#include "activation.h"

namespace bptt {

// Forward, per step t:
//   u_t = W_hh h_{t-1} + b_hh                    (3H, B)  one GEMM, kept in hidden_gates
//   r = sigmoid(a_r + u_r); z = sigmoid(a_z + u_z); n = tanh(a_n + r * u_n)
//   h_t = (1 - z) * n + z * h_{t-1}
template <typename S>
void GruForward(const RecurrentParams<S>& p, LayerCache<S>& cache) {
  const Eigen::Index H = p.hidden_size(), B = cache.B;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    const auto h_prev = cache.Step(cache.h, t);
    auto u = cache.Step(cache.hidden_gates, t);  // (3H, B)
    u.noalias() = p.weight_hh * h_prev;
    auto a = cache.Step(cache.gates, t);         // (3H, B)
    auto h = cache.Step(cache.h, t + 1);
    for (Eigen::Index b = 0; b < B; ++b) {
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

// Backward, per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   dn = dh * (1 - z)                 da_n = dn * (1 - n^2)         (input side of n)
//   du_n = da_n * r                                                (hidden side of n)
//   dr = da_n * u_n                   da_r = du_r = dr * r (1 - r)
//   dz = dh * (h_{t-1} - n)           da_z = du_z = dz * z (1 - z)
//   dh_{t-1} = dh * z + W_hh^T du     one GEMM
// After the sweep: dW_hh += du · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of du.
template <typename S>
void GruBackward(const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  for (Eigen::Index t = T - 1; t >= 0; --t) {
    back.dh += dh_out.middleCols(t * B, B);
    if (back.record) back.dh_steps.middleCols(t * B, B) = back.dh;
    const auto act = cache.Step(cache.gates, t);
    const auto u = cache.Step(cache.hidden_gates, t);
    const auto h_prev = cache.Step(cache.h, t);
    auto da = back.dgates.middleCols(t * B, B);
    auto du = back.dgates_h.middleCols(t * B, B);
    for (Eigen::Index b = 0; b < B; ++b) {
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
      back.scratch.col(b) = (dh * z).matrix();
    }
    back.dh = back.scratch;
    back.dh.noalias() += p.weight_hh.transpose() * du;  // dh_{t-1}
  }
  grad.weight_hh.noalias() += back.dgates_h * cache.h.leftCols(T * B).transpose();
  grad.bias_hh += back.dgates_h.rowwise().sum();
}

template void GruForward<float>(const RecurrentParams<float>&, LayerCache<float>&);
template void GruForward<double>(const RecurrentParams<double>&, LayerCache<double>&);
template void GruBackward<float>(const RecurrentParams<float>&, const LayerCache<float>&,
                                 const ConstMatRef<float>&, LayerBackward<float>&, RecurrentParams<float>&);
template void GruBackward<double>(const RecurrentParams<double>&, const LayerCache<double>&,
                                  const ConstMatRef<double>&, LayerBackward<double>&, RecurrentParams<double>&);

}  // namespace bptt
