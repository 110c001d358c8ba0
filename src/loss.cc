#include "bptt/loss.h"

#include <cmath>

namespace bptt {

template <typename S>
double SoftmaxCrossEntropy(const Mat<S>& logits, const Ids& targets, Mat<S>* dlogits) {
  const Eigen::Index N = logits.cols();
  if (dlogits) EnsureShape(*dlogits, logits.rows(), N);
  // Per-column losses summed in order afterwards, so the total does not depend on the threads.
  Eigen::VectorXd column_loss(N);
#pragma omp parallel for schedule(static)
  for (Eigen::Index j = 0; j < N; ++j) {
    const auto z = logits.col(j);
    const S zmax = z.maxCoeff();
    const double sum = (z.array() - zmax).exp().template cast<double>().sum();
    column_loss(j) = std::log(sum) + zmax - z(targets(j));
    if (dlogits) {
      auto d = dlogits->col(j);
      d = ((z.array() - zmax).exp() * static_cast<S>(1.0 / (sum * N))).matrix();
      d(targets(j)) -= S(1) / static_cast<S>(N);
    }
  }
  return column_loss.sum() / static_cast<double>(N);
}

template double SoftmaxCrossEntropy<float>(const Mat<float>&, const Ids&, Mat<float>*);
template double SoftmaxCrossEntropy<double>(const Mat<double>&, const Ids&, Mat<double>*);

}  // namespace bptt
