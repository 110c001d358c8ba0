// The losses of a model's head (model.h), averaged over the positions a Batch scores.
//
// Softmax cross-entropy, in nats, for logits z (O, N) and target classes y (N):
//   loss = (1/N_s) sum_{j scored} [ log sum_v exp(z_vj) - z_{y_j, j} ]
//   dloss/dz_j = (softmax(z_j) - onehot(y_j)) / N_s   on scored positions, 0 elsewhere
// computed with the max subtracted for stability.
// Regression errors, for predictions p (O, N), targets t (O, N) and r = p - t:
//   squared  loss = (1/(N_s O)) sum_{j scored} sum_o r_oj^2          dloss/dp_oj = 2 r_oj / (N_s O)
//   absolute loss = (1/(N_s O)) sum |r_oj|                           dloss/dp_oj = sign(r_oj) / (N_s O)
//   Huber    loss = (1/(N_s O)) sum h(r_oj), h(r) = r^2 / 2 for |r| <= delta, delta (|r| - delta/2)
//            beyond (PyTorch's HuberLoss)                            dloss/dp_oj = clamp(r_oj, +-delta) / (N_s O)
// on scored positions, 0 elsewhere (sign(0) = 0).
// Mean pooling (model.h Pooling::kMean): the outputs of each sequence b's scored positions
// S_b are averaged, z_b = (1/|S_b|) sum_{j in S_b} z_j, and the loss above is taken over the
// sequences with |S_b| > 0 (N_s of them) against the target of each one's first scored
// position; dloss/dz_j = dloss/dz_b / |S_b| for j in S_b, 0 elsewhere.
// N_s is the number of scored positions (all N when the mask is empty); with none the loss is 0.
// Per-position terms are summed in position order, so results do not depend on the threads.
// A caller that scores one part of a larger batch passes divide_by, the N_s of the whole batch,
// so that the parts' losses and gradients sum to the whole batch's; HeadLoss does so for a
// slice of a batch (batch.h), whose whole batch has T * whole_B positions, or with a mask
// batch.whole_scored of them (a slice with a mask and no whole_scored is refused), or with
// mean pooling whole_B sequences (every sequence of a pooled batch must have a scored position).
//
// Note: with the whole count, each position's gradient is bit for bit the one the whole batch
// gives it.
//
//   double nats = SoftmaxCrossEntropy(logits, targets, &dlogits);
//   double loss = HeadLoss(config, cache.outputs, batch, &doutputs, threads);
#pragma once

#include <vector>

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

template <typename S>
double RegressionError(RegressionLoss loss, double huber_delta, const Mat<S>& predictions, const Mat<S>& targets,
                       const Mask& scored, Mat<S>* dpredictions, int threads, int64_t divide_by = 0);

// Mean pooling: (O, B) the mean of each sequence's outputs over its scored positions (a
// sequence without one gets zeros), and `first`, (B), the position of each one's first scored
// position (-1 without one).
template <typename S>
Mat<S> PoolOutputs(const Mat<S>& outputs, const Batch<S>& batch, std::vector<Eigen::Index>* first = nullptr);

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
