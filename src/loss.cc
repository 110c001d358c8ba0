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
double RegressionError(RegressionLoss loss, double huber_delta, const Mat<S>& predictions, const Mat<S>& targets,
                       const Mask& scored, Mat<S>* dpredictions, int threads, int64_t divide_by) {
  if (loss == RegressionLoss::kSquared)
    return MeanSquaredError(predictions, targets, scored, dpredictions, threads, divide_by);
  const Eigen::Index N = predictions.cols(), O = predictions.rows();
  if (targets.rows() != O || targets.cols() != N || (scored.size() != 0 && scored.size() != N))
    throw Error("regression error: targets must be (O, N) and the mask have one entry per position");
  const int64_t count = divide_by > 0 ? divide_by : Scored(scored, N);
  if (dpredictions) EnsureShape(*dpredictions, O, N);
  const double scale = count == 0 ? 0.0 : 1.0 / (static_cast<double>(count) * static_cast<double>(O));
  const double delta = huber_delta;
  Eigen::VectorXd column_loss = Eigen::VectorXd::Zero(N);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (Eigen::Index j = 0; j < N; ++j) {
    const bool on = scored.size() == 0 || scored(j) != 0;
    if (!on) {
      if (dpredictions) dpredictions->col(j).setZero();
      continue;
    }
    double sum = 0;
    for (Eigen::Index o = 0; o < O; ++o) {
      const double r = static_cast<double>(predictions(o, j)) - static_cast<double>(targets(o, j));
      double d;
      if (loss == RegressionLoss::kAbsolute) {
        sum += std::abs(r);
        d = r > 0 ? 1.0 : r < 0 ? -1.0 : 0.0;
      } else if (std::abs(r) <= delta) {  // Huber, quadratic part
        sum += 0.5 * r * r;
        d = r;
      } else {  // Huber, linear part
        sum += delta * (std::abs(r) - 0.5 * delta);
        d = r > 0 ? delta : -delta;
      }
      if (dpredictions) (*dpredictions)(o, j) = static_cast<S>(d * scale);
    }
    column_loss(j) = sum;
  }
  return column_loss.sum() * scale;
}

template <typename S>
Mat<S> PoolOutputs(const Mat<S>& outputs, const Batch<S>& batch, std::vector<Eigen::Index>* first) {
  const Eigen::Index B = batch.B, T = batch.T;
  if (outputs.cols() != T * B) throw Error("pooling: the outputs do not have the batch's T*B columns");
  Mat<S> pooled = Mat<S>::Zero(outputs.rows(), B);
  if (first) first->assign(static_cast<size_t>(B), -1);
  for (Eigen::Index b = 0; b < B; ++b) {
    Eigen::Index count = 0;
    for (Eigen::Index t = 0; t < T; ++t) {
      const Eigen::Index j = t * B + b;
      if (!batch.IsScored(j)) continue;
      if (count++ == 0 && first) (*first)[static_cast<size_t>(b)] = j;
      pooled.col(b) += outputs.col(j);
    }
    if (count > 0) pooled.col(b) /= static_cast<S>(count);
  }
  return pooled;
}

namespace {

// The head's loss on mean-pooled outputs (loss.h): each sequence's scored positions averaged
// into one prediction, scored against the target of its first scored position.
template <typename S>
double PooledLoss(const ModelConfig& config, const Mat<S>& outputs, const Batch<S>& batch, Mat<S>* doutputs,
                  int threads, int64_t count) {
  std::vector<Eigen::Index> first;
  const Mat<S> pooled = PoolOutputs(outputs, batch, &first);
  const Eigen::Index B = batch.B;
  Mask has(B);
  Ids classes = Ids::Zero(B);
  Mat<S> values;
  if (config.head == Head::kRegression) values = Mat<S>::Zero(outputs.rows(), B);
  for (Eigen::Index b = 0; b < B; ++b) {
    const Eigen::Index j = first[static_cast<size_t>(b)];
    has(b) = j >= 0;
    if (j < 0) continue;
    if (config.head == Head::kRegression) values.col(b) = batch.values.col(j);
    else classes(b) = batch.classes(j);
  }
  Mat<S> dpooled;
  const double loss =
      config.head == Head::kRegression
          ? RegressionError(config.regression_loss, config.huber_delta, pooled, values, has, doutputs ? &dpooled : nullptr,
                            threads, count)
          : SoftmaxCrossEntropy(pooled, classes, has, doutputs ? &dpooled : nullptr, threads, count);
  if (doutputs) {
    // dL/dz_j = dL/dz_b / |S_b| on the scored positions of sequence b.
    EnsureShape(*doutputs, outputs.rows(), outputs.cols());
    doutputs->setZero();
    for (Eigen::Index b = 0; b < B; ++b) {
      Eigen::Index n = 0;
      for (Eigen::Index t = 0; t < batch.T; ++t) n += batch.IsScored(t * B + b) ? 1 : 0;
      for (Eigen::Index t = 0; t < batch.T; ++t)
        if (batch.IsScored(t * B + b)) doutputs->col(t * B + b) = dpooled.col(b) / static_cast<S>(n);
    }
  }
  return loss;
}

}  // namespace

template <typename S>
double HeadLoss(const ModelConfig& config, const Mat<S>& outputs, const Batch<S>& batch, Mat<S>* doutputs,
                int threads) {
  int64_t count = 0;  // N_s of the batch itself
  if (batch.whole_B() != batch.B) {
    if (config.pooling == Pooling::kMean) count = static_cast<int64_t>(batch.whole_B());
    else if (batch.scored.size() == 0) count = static_cast<int64_t>(batch.T * batch.whole_B());
    else if (batch.whole_scored > 0) count = batch.whole_scored;
    else
      throw Error("the loss of a slice of a batch needs the scored positions of the whole batch: "
                  "a batch with a mask and no whole_scored cannot be split");
  }
  if (config.pooling == Pooling::kMean) return PooledLoss(config, outputs, batch, doutputs, threads, count);
  if (config.head == Head::kRegression)
    return RegressionError(config.regression_loss, config.huber_delta, outputs, batch.values, batch.scored, doutputs,
                           threads, count);
  return SoftmaxCrossEntropy(outputs, batch.classes, batch.scored, doutputs, threads, count);
}

#define BPTT_INSTANTIATE(S)                                                                                   \
  template double SoftmaxCrossEntropy<S>(const Mat<S>&, const Ids&, const Mask&, Mat<S>*, int, int64_t);     \
  template double MeanSquaredError<S>(const Mat<S>&, const Mat<S>&, const Mask&, Mat<S>*, int, int64_t);     \
  template double RegressionError<S>(RegressionLoss, double, const Mat<S>&, const Mat<S>&, const Mask&, Mat<S>*, int, \
                                     int64_t);                                                                \
  template Mat<S> PoolOutputs<S>(const Mat<S>&, const Batch<S>&, std::vector<Eigen::Index>*);                 \
  template double HeadLoss<S>(const ModelConfig&, const Mat<S>&, const Batch<S>&, Mat<S>*, int);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE

}  // namespace bptt
