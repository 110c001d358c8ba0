// Layer normalisation of one column (Ba, Kiros & Hinton 2016), the op that the LSTM and GRU
// cells apply to their projections (and the LSTM to its cell state) under --layer-norm (cell.h).
// For z of N elements:
//   mean = sum(z) / N,   var = sum((z - mean)^2) / N,   rstd = 1 / sqrt(var + eps)
//   ẑ = (z - mean) * rstd,   LN(z; g, b) = g * ẑ + b         eps = 1e-5, PyTorch's LayerNorm default
// The caches keep ẑ and rstd. LN's Jacobian with respect to z is the symmetric matrix
//   ∂ẑ/∂z = rstd (I - 1 1^T / N - ẑ ẑ^T / N)
// so one function serves the forward-mode tangent (dẑ from dz) and the backward pass (dz from
// dL/dẑ = g * dL/dy); dL/dg = sum over columns of dL/dy * ẑ and dL/db = sum of dL/dy, formed by
// the cells after their sweeps.
#pragma once

#include <cmath>

#include "bptt/tensor.h"

namespace bptt::cells {

inline constexpr double kLayerNormEpsilon = 1e-5;

// The mean of x's elements, summed in an order that does not depend on where they lie in memory
// (Eigen's own reductions start their vector lanes at the first aligned element), so that a
// column gives the same bits wherever it sits in a cache: 16 interleaved sums, added in order.
template <typename X>
typename X::Scalar FixedOrderMean(const X& x) {
  using S = typename X::Scalar;
  constexpr int kLanes = 16;
  S lanes[kLanes] = {};
  const Eigen::Index n = x.size();
  Eigen::Index i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += x(i + l);
  for (int l = 0; i < n; ++i, ++l) lanes[l] += x(i);
  S sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum / S(n);
}

// ẑ (N) out (may be z itself) from z (N) in; returns rstd.
template <typename S>
S LayerNormalize(Eigen::Index n, const S* z, S* z_hat) {
  using ConstArray = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;
  const S mean = FixedOrderMean(ConstArray(z, n));
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>> out(z_hat, n);
  out = ConstArray(z, n) - mean;
  const S rstd = S(1) / std::sqrt(FixedOrderMean(out.square()) + S(kLayerNormEpsilon));
  out *= rstd;
  return rstd;
}

// ∂ẑ/∂z · v for a column with normalised values z_hat and its rstd: rstd (v - mean(v) -
// ẑ mean(ẑ v)). As the tangent: v = dz, the result dẑ. As the backward pass: v = g * dL/dy,
// the result dL/dz.
template <typename V, typename Z, typename S>
auto LayerNormJacobian(const V& v, const Z& z_hat, S rstd) {
  return rstd * (v - FixedOrderMean(v) - z_hat * FixedOrderMean(z_hat * v));
}

}  // namespace bptt::cells
