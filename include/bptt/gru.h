// The GRU cell, in PyTorch's nn.GRU form (gate order r, z, n):
//   r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
//   z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
//   n_t = tanh   (W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
//   h_t = (1 - z_t) * n_t + z_t * h_{t-1}
// Buffers and the calling protocol are described in cell.h.
#pragma once

#include "bptt/cell.h"

namespace bptt {

// In: cache.gates = W_ih x + b_ih (3H, T*B); h_0 in the first B columns of cache.h.
// Out: gates r, z, n; hidden_gates = W_hh h_{t-1} + b_hh; h_1..h_T.
template <typename S>
void GruForward(const RecurrentParams<S>& p, LayerCache<S>& cache);

// In: dh_out (H, T*B) = dL/dh_t from above; back.dh = dL/dh_T.
// Out: back.dgates, back.dgates_h; back.dh = dL/dh_0; grad.weight_hh, grad.bias_hh += ...
template <typename S>
void GruBackward(const RecurrentParams<S>& p, const LayerCache<S>& cache,
                 const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad);

}  // namespace bptt
