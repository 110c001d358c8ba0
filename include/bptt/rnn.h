// The Elman RNN cell, in PyTorch's nn.RNN form with a choice of activation:
//   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act in {tanh, sigmoid, relu}
// (PyTorch offers tanh and relu; sigmoid is here to show its derivative bound of 1/4 per step.)
// Buffers and the calling protocol are described in cell.h.
#pragma once

#include "bptt/cell.h"

namespace bptt {

// In: cache.gates = W_ih x + b_ih (H, T*B); h_0 in the first B columns of cache.h.
// Out: h_1..h_T (also left in cache.gates).
template <typename S>
void RnnForward(CellType cell, const RecurrentParams<S>& p, LayerCache<S>& cache);

// In: dh_out (H, T*B) = dL/dh_t from above; back.dh = dL/dh_T.
// Out: back.dgates; back.dh = dL/dh_0; grad.weight_hh, grad.bias_hh += ...
template <typename S>
void RnnBackward(CellType cell, const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad);

}  // namespace bptt
