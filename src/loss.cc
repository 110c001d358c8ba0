#include "bptt/loss.h"

#include <cmath>

#include "bptt/error.h"

namespace bptt {

namespace {

int64_t Scored(const Mask& scored, Eigen::Index N) {
  return scored.size() == 0 ? static_cast<int64_t>(N) : static_cast<int64_t>(scored.cast<int64_t>().sum());
}

}  // namespace

template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets, const Mask& scored, Mat<S>* dlogits,
                           int threads, int64_t divide_by) {
  const Eigen::Index N = logits.cols();
  if (targets.size() != N || (scored.size() != 0 && scored.size() != N))
    throw Error("softmax cross-entropy: targets and mask must have one entry per position");
  const int64_t count = divide_by > 0 ? divide_by : Scored(scored, N);
  for (Eigen::Index j = 0; j < N; ++j)
    if ((scored.size() == 0 || scored(j) != 0) && (targets(j) < 0 || targets(j) >= logits.rows()))
      throw Error("target class " + std::to_string(targets(j)) + " is outside the " + std::to_string(logits.rows()) +
                  " classes of the head");
  if (dlogits) EnsureShape(*dlogits, logits.rows(), N);
  Eigen::VectorXd column_loss = Eigen::VectorXd::Zero(N);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (Eigen::Index j = 0; j < N; ++j) {
    if (scored.size() != 0 && scored(j) == 0) {
      if (dlogits) dlogits->col(j).setZero();
      continue;
    }
    const auto z = logits.col(j);
    const S zmax = z.maxCoeff();
    const double sum = (z.array() - zmax).exp().template cast<double>().sum();
    column_loss(j) = std::log(sum) + zmax - z(targets(j));
    if (dlogits) {
      auto d = dlogits->col(j);
      d = ((z.array() - zmax).exp() * static_cast<S>(1.0 / (sum * static_cast<double>(count)))).matrix();
      d(targets(j)) -= S(1) / static_cast<S>(count);
    }
  }
  return count == 0 ? 0.0 : column_loss.sum() / static_cast<double>(count);
}

template <typename S>
double MeanSquaredError(const Mat<S>& predictions, const Mat<S>& targets, const Mask& scored, Mat<S>* dpredictions,
                        int threads, int64_t divide_by) {
  const Eigen::Index N = predictions.cols(), O = predictions.rows();
  if (targets.rows() != O || targets.cols() != N || (scored.size() != 0 && scored.size() != N))
    throw Error("mean squared error: targets must be (O, N) and the mask have one entry per position");
  const int64_t count = divide_by > 0 ? divide_by : Scored(scored, N);
  if (dpredictions) EnsureShape(*dpredictions, O, N);
  const double scale = count == 0 ? 0.0 : 1.0 / (static_cast<double>(count) * static_cast<double>(O));
  Eigen::VectorXd column_loss = Eigen::VectorXd::Zero(N);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (Eigen::Index j = 0; j < N; ++j) {
    const bool on = scored.size() == 0 || scored(j) != 0;
    if (on) column_loss(j) = (predictions.col(j) - targets.col(j)).template cast<double>().squaredNorm();
    if (dpredictions) {
      if (on) dpredictions->col(j) = (predictions.col(j) - targets.col(j)) * static_cast<S>(2 * scale);
      else dpredictions->col(j).setZero();
    }
  }
  return column_loss.sum() * scale;
}

template <typename S>
double HeadLoss(const ModelConfig& config, const Mat<S>& outputs, const Batch<S>& batch, Mat<S>* doutputs,
                int threads) {
  int64_t count = 0;  // N_s of the batch itself
  if (batch.whole_B() != batch.B) {
    if (batch.scored.size() != 0)
      throw Error("the loss of a slice of a batch needs the scored positions of the whole batch: "
                  "a batch with a mask cannot be split");
    count = static_cast<int64_t>(batch.T * batch.whole_B());
  }
  if (config.head == Head::kRegression)
    return MeanSquaredError(outputs, batch.values, batch.scored, doutputs, threads, count);
  return SoftmaxCrossEntropy(outputs, batch.classes, batch.scored, doutputs, threads, count);
}

#define BPTT_INSTANTIATE(S)                                                                                   \
  template double SoftmaxCrossEntropy<S>(const Mat<S>&, const Ids&, const Mask&, Mat<S>*, int, int64_t);     \
  template double MeanSquaredError<S>(const Mat<S>&, const Mat<S>&, const Mask&, Mat<S>*, int, int64_t);     \
  template double HeadLoss<S>(const ModelConfig&, const Mat<S>&, const Batch<S>&, Mat<S>*, int);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE

}  // namespace bptt
