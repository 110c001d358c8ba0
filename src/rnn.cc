#include "bptt/rnn.h"

#include "activation.h"
#include "packed_gemm.h"
#include "parallel_product.h"

namespace bptt {

// Forward, per step t:
//   a_t = gates_t + W_hh h_{t-1} + b_hh     (H, B)  one product
//   h_t = act(a_t)
// W_hh is packed once per chunk (packed_gemm.h); each thread runs the sweep for its columns.
template <typename S>
void RnnForward(CellType cell, const RecurrentParams<S>& p, LayerCache<S>& cache) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T, blocks = PanelBlocks(H);
  PackPanels(p.weight_hh, cache.packed_hh);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
    for (Eigen::Index t = 0; t < T && j0 < j1; ++t) {
      auto a = cache.Step(cache.gates, t).middleCols(j0, j1 - j0);
      for (Eigen::Index q = 0; q < blocks; ++q) {  // a += W_hh h_{t-1}
        const Eigen::Index u0 = q * kPanelRows;
        PanelProduct(cache.packed_hh, q, H, cache.Step(cache.h, t).col(j0).data(), H, j1 - j0, a.data() + u0, H,
                     std::min(kPanelRows, H - u0), true);
      }
      a.colwise() += p.bias_hh.col(0);
      switch (cell) {
        case CellType::kRnnTanh: a = Tanh(a).matrix(); break;
        case CellType::kRnnSigmoid: a = Sigmoid(a).matrix(); break;
        default: a = Relu(a).matrix(); break;
      }
      cache.Step(cache.h, t + 1).middleCols(j0, j1 - j0) = a;
    }
  }
}

// Backward, per step t = T..1, with dh = dh_out_t + (dL/dh_t through step t+1):
//   da = dh * act'(a_t)      from the output: 1 - h^2, h (1 - h), or [h > 0]
//   dh_{t-1} = W_hh^T da     one product
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_hh += sum over columns of da.
// W_hh^T is packed once per chunk; each thread runs the sweep for its columns.
template <typename S>
void RnnBackward(CellType cell, const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T, blocks = PanelBlocks(H);
  PackTransposedPanels(p.weight_hh, back.packed_hh_t);
#pragma omp parallel
  {
    const auto [j0, j1] = ThreadColumns(B);
    const Eigen::Index nb = j1 - j0;
    auto dh = back.dh.middleCols(j0, nb);
    for (Eigen::Index t = T - 1; t >= 0 && nb > 0; --t) {
      dh += dh_out.middleCols(t * B + j0, nb);
      if (back.record) back.dh_steps.middleCols(t * B + j0, nb) = dh;
      const auto h = cache.Step(cache.h, t + 1).middleCols(j0, nb);
      auto da = back.dgates.middleCols(t * B + j0, nb);
      switch (cell) {
        case CellType::kRnnTanh: da = (dh.array() * TanhGradFromOutput(h)).matrix(); break;
        case CellType::kRnnSigmoid: da = (dh.array() * SigmoidGradFromOutput(h)).matrix(); break;
        default: da = (dh.array() * ReluGradFromOutput(h)).matrix(); break;
      }
      for (Eigen::Index q = 0; q < blocks; ++q) {  // dh_{t-1} = W_hh^T da
        const Eigen::Index u0 = q * kPanelRows;
        PanelProduct(back.packed_hh_t, q, H, da.data(), H, nb, dh.data() + u0, H, std::min(kPanelRows, H - u0), false);
      }
    }
  }
  ParallelProduct(grad.weight_hh, back.dgates, cache.h.leftCols(T * B).transpose(), true);
  grad.bias_hh += back.dgates.rowwise().sum();
}

template void RnnForward<float>(CellType, const RecurrentParams<float>&, LayerCache<float>&);
template void RnnForward<double>(CellType, const RecurrentParams<double>&, LayerCache<double>&);
template void RnnBackward<float>(CellType, const RecurrentParams<float>&, const LayerCache<float>&,
                                 const ConstMatRef<float>&, LayerBackward<float>&, RecurrentParams<float>&);
template void RnnBackward<double>(CellType, const RecurrentParams<double>&, const LayerCache<double>&,
                                  const ConstMatRef<double>&, LayerBackward<double>&, RecurrentParams<double>&);

}  // namespace bptt
