// Elementwise activations shared by the cells, as Eigen array expressions (vectorised for
// float by Eigen's packet math) and the derivatives written in terms of the activation's
// output y, which is what the caches hold:
//   sigmoid(x) = 1 / (1 + e^-x)   sigmoid' = y (1 - y)  <= 1/4
//   tanh(x)                       tanh'    = 1 - y^2    <= 1
//   relu(x)    = max(x, 0)        relu'    = [y > 0]
#pragma once

#include <Eigen/Core>

namespace bptt {

template <typename X>
auto Sigmoid(const X& x) { return x.array().logistic(); }
template <typename X>
auto Tanh(const X& x) { return x.array().tanh(); }
template <typename X>
auto Relu(const X& x) { return x.array().max(typename X::Scalar(0)); }

template <typename Y>
auto SigmoidGradFromOutput(const Y& y) { return y.array() * (typename Y::Scalar(1) - y.array()); }
template <typename Y>
auto TanhGradFromOutput(const Y& y) { return typename Y::Scalar(1) - y.array().square(); }
template <typename Y>
auto ReluGradFromOutput(const Y& y) {
  using S = typename Y::Scalar;
  return (y.array() > S(0)).template cast<S>();
}

}  // namespace bptt
