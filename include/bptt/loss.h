// Softmax cross-entropy, the loss of a character-level language model, in nats.
//
// For logits z (V, N) and targets y (N):
//   loss = (1/N) sum_j [ log sum_v exp(z_vj) - z_{y_j, j} ]
//   dloss/dz_j = (softmax(z_j) - onehot(y_j)) / N
// computed with the max subtracted for stability.
//
//   double nats = SoftmaxCrossEntropy(logits, targets, &dlogits);
#pragma once

#include "bptt/tensor.h"

namespace bptt {

// Mean loss over the N columns. When dlogits is given it receives dloss/dlogits (V, N).
template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets, Mat<S>* dlogits);

template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets) {
  return SoftmaxCrossEntropy<S>(logits, targets, nullptr);
}

}  // namespace bptt
