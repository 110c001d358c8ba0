// Gradient clipping, the guard against exploding gradients.
//
//   by global L2 norm (Pascanu et al. 2013):  g <- g * c / ||g||  when ||g|| > c
//   by element value (as char-rnn does):      g <- clamp(g, -c, c)
// ||g|| is the L2 norm over every tensor of the model taken together. Both return the
// pre-clip global norm so that callers can log it and count how often clipping fired.
//
//   double norm = ClipGradNorm(grads, 5.0);  bool clipped = norm > 5.0;
#pragma once

#include "bptt/model.h"

namespace bptt {

template <typename S>
double GradNorm(const ModelParams<S>& grads);

// Scales every gradient by c/||g|| when ||g|| > c (c > 0). Returns ||g|| before clipping.
template <typename S>
double ClipGradNorm(ModelParams<S>& grads, double max_norm);

// Clamps every element to [-c, c] (c > 0). Returns ||g|| before clipping.
template <typename S>
double ClipGradValue(ModelParams<S>& grads, double max_value);

}  // namespace bptt
