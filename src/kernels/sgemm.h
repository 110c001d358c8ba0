// Float matrix products on the FMA units, with kernels for AVX-512 and for AVX2 chosen at run
// time (cpu.h): the large products of training (FloatProduct) and each step's recurrent product
// over packed panels (FloatPanelProduct, packed_gemm.h).
//
// FloatProduct: dst (M, N) = or += lhs (M, K) * rhs (K, N), dst column-major. Both operands are
// first copied ("packed") into the layout of the register kernel, each along its contiguous
// dimension:
//   lhs  panels of MR rows: element (r, k) of panel p at p*MR*K + k*MR + r (rows past M zero);
//   rhs  panels of NR columns: element (k, j) of panel q at q*NR*K + k*NR + j (columns past N zero).
// The kernel keeps MR x NR float sums in registers: per k, MR/16 (or MR/8) loads of lhs, NR
// broadcasts of rhs, (MR/16) * NR FMAs. AVX-512: MR = 32, NR = 12 (24 zmm sums); AVX2: MR = 16,
// NR = 6 (12 ymm sums). Each thread takes whole panels of whichever dimension has more of them
// and runs K in chunks that keep its share of that operand in L2; every element sums its K
// products in order of k from dst (accumulate) or zero, so the result is the same on any number
// of threads and in either kernel.
//
// FloatPanelProduct: C (rows, N) (+)= A (32, K) X (K, N) for one 32-row panel of packed_gemm.h
// (A column after column), X and C column-major: the time loops' recurrent product.
#pragma once

#include <Eigen/Core>

#include "kernels/bf16_gemm.h"  // StridedMatrix

namespace bptt {

// True when this CPU runs the kernels here (AVX2 and FMA at least; cpu.h).
bool FloatProductsHere();

// Whether training's large float products run here (ParallelProduct, threads.h): where the CPU
// has the kernels and the build does not route them to OpenBLAS through Eigen (BPTT_EIGEN_BLAS).
inline bool LargeFloatProductsHere() {
#if defined(EIGEN_USE_BLAS)
  return false;
#else
  return FloatProductsHere();
#endif
}

// dst (M, N) column-major with leading dimension ld_dst; lhs (M, K); rhs (K, N); on `threads`
// threads. Requires FloatProductsHere().
void FloatProduct(float* dst, Eigen::Index ld_dst, const StridedMatrix& lhs, const StridedMatrix& rhs,
                  bool accumulate, int threads);

// The bytes of the packed operands FloatProduct keeps for a product (M, N) = (M, K) (K, N) with
// the kernel in force: lhs's panels of MR rows and rhs's panels of NR columns.
OperandBytes FloatProductOperandBytes(Eigen::Index M, Eigen::Index N, Eigen::Index K);

// C (rows, N) (+)= panel (32, K) * X (K, N); only the first `rows` (<= 32) rows of C are written.
// Requires FloatProductsHere().
void FloatPanelProduct(const float* panel, Eigen::Index K, const float* x, Eigen::Index ldx, Eigen::Index N, float* c,
                       Eigen::Index ldc, Eigen::Index rows, bool accumulate);

}  // namespace bptt
