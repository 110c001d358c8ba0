// Matrix products in bfloat16 on Intel's AMX tile unit: dst (M, N) = or += lhs (M, K) * rhs
// (K, N), the operands rounded to bfloat16 (round to nearest even), the sums in float.
//
// AMX multiplies 16x32 bfloat16 tiles into 16x16 float tiles (TDPBF16PS) about ten times as fast
// as AVX-512 FMAs in float (bench/README.md); training with --precision bf16 (compute.h) runs the
// products over all T*B columns of a chunk here (AmxProduct) and each step's recurrent product
// (PackAmxPairs, AmxStepProduct, below). For AmxProduct dst is column-major,
// so the kernel computes dst^T = rhs^T lhs^T: a float tile holds 16 columns of dst (tile rows) by
// 16 rows of dst (64 contiguous bytes of each column). Both operands are first rounded into
// tile-sized 1 KB blocks:
//   rhs^T  (N, K) as row tiles: 16 columns n x 32 k, k contiguous;
//   lhs    (M, K) in the pair layout TDPBF16PS takes: 16 rows of k pairs x 16 m x 2.
// Each thread takes whole 32-column blocks of dst and runs 2x2 float tiles (32 x 32) over K,
// so an element's sum is the same on any thread count. Tails (M, N or K not a multiple of the
// tile) are zero-padded in the blocks and go through a scratch tile in dst.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace bptt {

// An operand as a pointer and the strides of its rows and columns (in floats): a column-major
// matrix or block has row_stride 1, its transpose col_stride 1; one of the two must be 1.
struct StridedMatrix {
  const float* data;
  Eigen::Index rows, cols, row_stride, col_stride;
};

// True when this CPU has AMX-BF16 and AVX512-BF16 and the operating system lets the process use
// the tile registers (asked once, on the first call).
bool AmxAvailable();

// dst (M, N) column-major with leading dimension ld_dst; lhs (M, K); rhs (K, N). On
// `threads` threads (>= 1). Requires AmxAvailable().
void AmxProduct(float* dst, Eigen::Index ld_dst, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                int threads);
// The bytes of the rounded operands AmxProduct keeps on the calling thread for a product
// (M, N) = (M, K) (K, N): rhs^T's row tiles and lhs's pair tiles, each kept for the thread's
// later products and grown to the largest.
struct AmxOperandBytes {
  size_t row_tiles = 0, pair_tiles = 0;
};
AmxOperandBytes AmxProductOperandBytes(Eigen::Index M, Eigen::Index N, Eigen::Index K);

// A time loop's recurrent product, the same weights at every step: W (M, K) rounded once into
// pair tiles (PackAmxPairs: ceil(M/16) x ceil(K/32) tiles, tile (mt, kb) at (mt*ceil(K/32) + kb)
// * 512), then each step's C (M, cols) (+)= W X (K, cols) for the rows [row_begin, row_end) of C
// (row_begin a multiple of 16) on the calling thread (AmxStepProduct). The step's X columns
// are rounded into row tiles first; float tiles run three row tiles at a time over K. Requires
// AmxAvailable().
void PackAmxPairs(const StridedMatrix& w, std::vector<uint16_t>& tiles);
// The bytes of PackAmxPairs's tiles for W (M, K).
size_t AmxPairTilesBytes(Eigen::Index M, Eigen::Index K);
void AmxStepProduct(const uint16_t* tiles, Eigen::Index M, Eigen::Index K, Eigen::Index row_begin, Eigen::Index row_end,
                    const float* x, Eigen::Index ldx, Eigen::Index cols, float* c, Eigen::Index ldc, bool accumulate);

}  // namespace bptt
