#include "bptt/clip.h"

#include <cmath>

namespace bptt {

template <typename S>
double GradNorm(const ModelParams<S>& grads) {
  double sum = 0;
  grads.ForEach([&sum](const std::string&, const Mat<S>& g) {
    sum += g.template cast<double>().squaredNorm();
  });
  return std::sqrt(sum);
}

template <typename S>
double ClipGradNorm(ModelParams<S>& grads, double max_norm) {
  const double norm = GradNorm(grads);
  if (norm > max_norm) {
    const S scale = static_cast<S>(max_norm / norm);
    grads.ForEach([scale](const std::string&, Mat<S>& g) { g *= scale; });
  }
  return norm;
}

template <typename S>
double ClipGradValue(ModelParams<S>& grads, double max_value) {
  const double norm = GradNorm(grads);
  const S c = static_cast<S>(max_value);
  grads.ForEach([c](const std::string&, Mat<S>& g) { g = g.cwiseMax(-c).cwiseMin(c); });
  return norm;
}

template double GradNorm<float>(const ModelParams<float>&);
template double GradNorm<double>(const ModelParams<double>&);
template double ClipGradNorm<float>(ModelParams<float>&, double);
template double ClipGradNorm<double>(ModelParams<double>&, double);
template double ClipGradValue<float>(ModelParams<float>&, double);
template double ClipGradValue<double>(ModelParams<double>&, double);

}  // namespace bptt
