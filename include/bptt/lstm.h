// The LSTM cell, in PyTorch's nn.LSTM form (gate order i, f, g, o):
//   i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
//   f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
//   g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
//   o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
//   c_t = f_t * c_{t-1} + i_t * g_t
//   h_t = o_t * tanh(c_t)
// Buffers and the calling protocol are described in cell.h.
#pragma once

#include "bptt/cell.h"

namespace bptt {

// In: cache.gates = W_ih x + b_ih (4H, T*B); h_0, c_0 in the first B columns of cache.h, cache.c.
// Out: gates i, f, g, o; h_1..h_T; c_1..c_T; tanh(c_t).
template <typename S>
void LstmForward(const RecurrentParams<S>& p, LayerCache<S>& cache);

// In: dh_out (H, T*B) = dL/dh_t from above; back.dh, back.dc = dL/dh_T, dL/dc_T.
// Out: back.dgates; back.dh, back.dc = dL/dh_0, dL/dc_0; grad.weight_hh, grad.bias_hh += ...
template <typename S>
void LstmBackward(const RecurrentParams<S>& p, const LayerCache<S>& cache,
                  const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad);

}  // namespace bptt
