// The parts of the gradient-decay measurement (bptt/decay.h) that its tests reach directly: the
// lags it measures the Jacobian at, and the power iteration that measures it.
#pragma once

#include <functional>
#include <vector>

#include "bptt/cell.h"
#include "bptt/decay.h"

namespace bptt {

// Lag 0 plus at most n lags in [1, max_lag], evenly spaced on a log scale, always with max_lag.
std::vector<int> LogSpacedLags(int max_lag, int n);

// ‖∂h^l_s/∂h^l_{s-k}‖₂ for each sequence (B values) at every lag in `lags` (rows of the
// result, (lags, B)), by power iteration on the cached forward pass of layer l over steps
// 1..s (cache.T = s). `between_chunks` is called before each lag.
Mat<double> JacobianNorms(const Cell& cell, const RecurrentParams<double>& params,
                          const LayerCache<double>& cache, const std::vector<int>& lags,
                          const DecayOptions& options, const std::function<void()>& between_chunks = {});

}  // namespace bptt
