// How bptt splits work between threads. The thread count is always passed in by the caller
// (an options field that travels to every compute call); nothing here reads or sets a
// process-wide count.
//
// Inside a parallel region each thread takes one contiguous range of the work (ThreadRange), so
// the threads meet once, at the end of the region, and every output element is computed by
// one thread in a fixed order: results do not depend on how the threads are scheduled.
//
//   #pragma omp parallel num_threads(threads)
//   { const auto [j0, j1] = ThreadRange(B); ... }
//   ParallelProduct(dst, lhs, rhs, /*accumulate=*/true, compute);   // dst += lhs * rhs
#pragma once

#include <omp.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>

#include "bptt/compute.h"
#include "bptt/error.h"
#include "bptt/tensor.h"
#include "kernels/bf16_gemm.h"
#include "kernels/sgemm.h"

namespace bptt {

// The calling thread's share [begin, end) of n items inside a parallel region, cut at multiples
// of `unit` (the last range ends at n).
inline std::pair<Eigen::Index, Eigen::Index> ThreadRange(Eigen::Index n, Eigen::Index unit = 1) {
  const Eigen::Index count = omp_get_num_threads(), id = omp_get_thread_num(), units = (n + unit - 1) / unit;
  return {std::min(n, units * id / count * unit), std::min(n, units * (id + 1) / count * unit)};
}

template <typename X>
struct IsTranspose : std::false_type {};
template <typename X>
struct IsTranspose<Eigen::Transpose<X>> : std::true_type {};

// An Eigen matrix, block or transpose of one as the kernels' strided operand (bf16_gemm.h).
template <typename X>
StridedMatrix Strided(const X& x) {
  if constexpr (IsTranspose<std::remove_cvref_t<X>>::value) {
    const StridedMatrix n = Strided(x.nestedExpression());
    return {n.data, n.cols, n.rows, n.col_stride, n.row_stride};
  } else {
    return {x.data(), x.rows(), x.cols(), x.innerStride(), x.outerStride()};
  }
}

// dst (M, N) = lhs (M, K) * rhs (K, N), or += with accumulate, on compute.threads threads, in
// compute.products' precision. bfloat16: Bf16Product (bf16_gemm.h: AMX or AVX-512 BF16; float
// matrices only). float: FloatProduct (sgemm.h: packed AVX-512 or AVX2 kernels) where the CPU has
// AVX2 and the build does not route Eigen's products to OpenBLAS (BPTT_EIGEN_BLAS); otherwise,
// and for double, each thread computes its own rows (or columns, when N > M) with a
// single-threaded Eigen product (Eigen does not thread a product called inside a parallel
// region), split on whole vectors of floats. Either way a thread that loses its core for a time
// slice delays only the end of the product, not a barrier inside it as in Eigen's own threaded
// GEMM. dst must not alias lhs or rhs.
template <typename Dst, typename Lhs, typename Rhs>
void ParallelProduct(Dst&& dst, const Lhs& lhs, const Rhs& rhs, bool accumulate, Compute compute) {
  using S = typename std::remove_cvref_t<Dst>::Scalar;
  if (compute.products == Precision::kBfloat16) {
    if constexpr (std::is_same_v<S, float>) {
      const StridedMatrix l = Strided(lhs), r = Strided(rhs);
      if (dst.innerStride() != 1 || (l.row_stride != 1 && l.col_stride != 1) ||
          (r.row_stride != 1 && r.col_stride != 1))
        throw Error("bfloat16 products need matrices with contiguous rows or columns");
      Bf16Product(dst.data(), dst.outerStride(), l, r, accumulate, compute.threads);
      return;
    } else {
      throw Error("bfloat16 products are for float models only");
    }
  }
  if (compute.products != Precision::kFloat32)
    throw Error(std::string("training products run in fp32 or bf16, not ") + PrecisionName(compute.products));
  if constexpr (std::is_same_v<S, float>) {
    if (LargeFloatProductsHere()) {
      const StridedMatrix l = Strided(lhs), r = Strided(rhs);
      if (dst.innerStride() == 1 && (l.row_stride == 1 || l.col_stride == 1) &&
          (r.row_stride == 1 || r.col_stride == 1)) {
        FloatProduct(dst.data(), dst.outerStride(), l, r, accumulate, compute.threads);
        return;
      }
    }
  }
  constexpr Eigen::Index kAlign = 16;
  const bool by_rows = dst.rows() >= dst.cols();
#pragma omp parallel num_threads(compute.threads)
  {
    const auto [begin, end] = ThreadRange(by_rows ? dst.rows() : dst.cols(), kAlign);
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
