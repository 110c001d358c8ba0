#include "bptt/rnn.h"

#include "activation.h"

namespace bptt {

// Forward, per step t:
//   a_t = gates_t + W_hh h_{t-1} + b_hh     (H, B)  one GEMM
//   h_t = act(a_t)
template <typename S>
void RnnForward(CellType cell, const RecurrentParams<S>& p, LayerCache<S>& cache) {
  const Eigen::Index B = cache.B;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    auto a = cache.Step(cache.gates, t);
    a.noalias() += p.weight_hh * cache.Step(cache.h, t);
    a.colwise() += p.bias_hh.col(0);
    switch (cell) {
      case CellType::kRnnTanh: a = Tanh(a).matrix(); break;
      case CellType::kRnnSigmoid: a = Sigmoid(a).matrix(); break;
      default: a = Relu(a).matrix(); break;
    }
    cache.Step(cache.h, t + 1) = a;
    (void)B;
  }
}

// Backward, per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   da = dh * act'(a_t)      from the output: 1 - h^2, h (1 - h), or [h > 0]
//   dh_{t-1} = W_hh^T da     one GEMM
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of da.
template <typename S>
void RnnBackward(CellType cell, const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  const Eigen::Index B = cache.B, T = cache.T;
  for (Eigen::Index t = T - 1; t >= 0; --t) {
    back.dh += dh_out.middleCols(t * B, B);
    if (back.record) back.dh_steps.middleCols(t * B, B) = back.dh;
    const auto h = cache.Step(cache.h, t + 1);
    auto da = back.dgates.middleCols(t * B, B);
    switch (cell) {
      case CellType::kRnnTanh: da = (back.dh.array() * TanhGradFromOutput(h)).matrix(); break;
      case CellType::kRnnSigmoid: da = (back.dh.array() * SigmoidGradFromOutput(h)).matrix(); break;
      default: da = (back.dh.array() * ReluGradFromOutput(h)).matrix(); break;
    }
    back.dh.noalias() = p.weight_hh.transpose() * da;  // dh_{t-1}
  }
  grad.weight_hh.noalias() += back.dgates * cache.h.leftCols(T * B).transpose();
  grad.bias_hh += back.dgates.rowwise().sum();
}

template void RnnForward<float>(CellType, const RecurrentParams<float>&, LayerCache<float>&);
template void RnnForward<double>(CellType, const RecurrentParams<double>&, LayerCache<double>&);
template void RnnBackward<float>(CellType, const RecurrentParams<float>&, const LayerCache<float>&,
                                 const ConstMatRef<float>&, LayerBackward<float>&, RecurrentParams<float>&);
template void RnnBackward<double>(CellType, const RecurrentParams<double>&, const LayerCache<double>&,
                                  const ConstMatRef<double>&, LayerBackward<double>&, RecurrentParams<double>&);

}  // namespace bptt
