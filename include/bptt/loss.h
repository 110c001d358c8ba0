// The losses of a model's head (model.h), averaged over the positions a Batch scores.
//
// Softmax cross-entropy, in nats, for logits z (O, N) and target classes y (N):
//   loss = (1/N_s) sum_{j scored} [ log sum_v exp(z_vj) - z_{y_j, j} ]
//   dloss/dz_j = (softmax(z_j) - onehot(y_j)) / N_s   on scored positions, 0 elsewhere
// computed with the max subtracted for stability.
// Mean squared error, for predictions p (O, N) and targets t (O, N):
//   loss = (1/(N_s O)) sum_{j scored} sum_o (p_oj - t_oj)^2
//   dloss/dp_oj = 2 (p_oj - t_oj) / (N_s O)          on scored positions, 0 elsewhere
// N_s is the number of scored positions (all N when the mask is empty); with none the loss is 0.
// Per-position terms are summed in position order, so results do not depend on the threads.
// A caller that scores one part of a larger batch passes divide_by, the N_s of the whole batch,
// so that the parts' losses and gradients sum to the whole batch's; HeadLoss does so for a
// slice of a batch (batch.h), whose whole batch has T * whole_B positions (a slice of a
// batch with a mask is refused: its whole count is not known to it).
//
// Note: with the whole count, each position's gradient is bit for bit the one the whole batch
// gives it.
//
//   double nats = SoftmaxCrossEntropy(logits, targets, &dlogits);
//   double loss = HeadLoss(config, cache.outputs, batch, &doutputs, threads);
#pragma once

#include "bptt/batch.h"
#include "bptt/model.h"
#include "bptt/tensor.h"

namespace bptt {

template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets, const Mask& scored, Mat<S>* dlogits,
                           int threads, int64_t divide_by = 0);

// Every position scored.
template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets, Mat<S>* dlogits = nullptr, int threads = 1) {
  return SoftmaxCrossEntropy<S>(logits, targets, Mask(), dlogits, threads);
}

template <typename S>
double MeanSquaredError(const Mat<S>& predictions, const Mat<S>& targets, const Mask& scored, Mat<S>* dpredictions,
                        int threads, int64_t divide_by = 0);

// The loss of the model's head on the batch's targets and mask, and its gradient when asked; for
// a slice of a batch, divided by the whole batch's positions (the slices' losses sum to its loss).
template <typename S>
double HeadLoss(const ModelConfig& config, const Mat<S>& outputs, const Batch<S>& batch, Mat<S>* doutputs,
                int threads);

// N_s: the positions of the batch that are scored.
template <typename S>
int64_t ScoredCount(const Batch<S>& batch) {
  return batch.scored.size() == 0 ? static_cast<int64_t>(batch.T * batch.B)
                                  : static_cast<int64_t>(batch.scored.template cast<int64_t>().sum());
}

}  // namespace bptt
