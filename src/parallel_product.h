// Large products split between the threads by hand.
//
// Eigen's own parallel GEMM has its threads share packed blocks and wait for each other many
// times per product. On a machine whose cores are also running other processes, a thread that
// loses its core for a time slice stalls the other at every such wait. Here each thread
// computes its own rows (or columns) of the result with a single-threaded Eigen product
// (Eigen does not thread a product called inside a parallel region), so the threads meet once,
// at the end. Each output element is summed by one thread in Eigen's order for its block.
//
//   ParallelProduct(dst, lhs, rhs, /*accumulate=*/true);   // dst += lhs * rhs
#pragma once

#include <omp.h>

#include "bptt/tensor.h"

namespace bptt {

// dst (M, N) = lhs (M, K) * rhs (K, N), or += with accumulate. dst must not alias lhs or rhs.
template <typename Dst, typename Lhs, typename Rhs>
void ParallelProduct(Dst&& dst, const Lhs& lhs, const Rhs& rhs, bool accumulate) {
  const Eigen::Index M = dst.rows(), N = dst.cols();
  constexpr Eigen::Index kAlign = 16;  // split on whole vectors of floats
  const bool by_rows = M >= N;
#pragma omp parallel
  {
    const Eigen::Index n = omp_get_num_threads(), id = omp_get_thread_num();
    const Eigen::Index extent = by_rows ? M : N, units = (extent + kAlign - 1) / kAlign;
    const Eigen::Index begin = std::min(extent, units * id / n * kAlign);
    const Eigen::Index end = std::min(extent, units * (id + 1) / n * kAlign);
    if (begin < end) {
      if (by_rows) {
        auto d = dst.middleRows(begin, end - begin);
        if (accumulate) d.noalias() += lhs.middleRows(begin, end - begin) * rhs;
        else d.noalias() = lhs.middleRows(begin, end - begin) * rhs;
      } else {
        auto d = dst.middleCols(begin, end - begin);
        if (accumulate) d.noalias() += lhs * rhs.middleCols(begin, end - begin);
        else d.noalias() = lhs * rhs.middleCols(begin, end - begin);
      }
    }
  }
}

}  // namespace bptt
