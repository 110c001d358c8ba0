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

// ẑ (N) out (may be z itself) from z (N) in; returns rstd.
template <typename S>
S LayerNormalize(Eigen::Index n, const S* z, S* z_hat) {
  using ConstArray = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;
  const S mean = ConstArray(z, n).mean();
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>> out(z_hat, n);
  out = ConstArray(z, n) - mean;
  const S rstd = S(1) / std::sqrt(out.square().mean() + S(kLayerNormEpsilon));
  out *= rstd;
  return rstd;
}

// ∂ẑ/∂z · v for a column with normalised values z_hat and its rstd: rstd (v - mean(v) -
// ẑ mean(ẑ v)). As the tangent: v = dz, the result dẑ. As the backward pass: v = g * dL/dy,
// the result dL/dz.
template <typename V, typename Z, typename S>
auto LayerNormJacobian(const V& v, const Z& z_hat, S rstd) {
  return rstd * (v - v.mean() - z_hat * (z_hat * v).mean());
}

}  // namespace bptt::cells
