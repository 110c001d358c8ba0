// Matrix products in bfloat16: dst (M, N) = or += lhs (M, K) * rhs (K, N), the operands rounded
// to bfloat16 (round to nearest even), each product exact in float, the sums in float. Training
// with --precision bf16 (compute.h) runs here the products over all T*B columns of a chunk
// (Bf16Product) and each step's recurrent product (PackBf16Pairs once per chunk, then
// Bf16StepProduct every step).
//
// Two engines compute the same sums, chosen at run time (cpu.h):
//   AMX          Intel's tile unit (TDPBF16PS: 16x32 bfloat16 tiles into 16x16 float tiles),
//                about ten times the float FMA rate on Sapphire Rapids.
//   AVX-512 BF16 VDPBF16PS: each of 16 float lanes += a pair of bfloat16 products, twice the
//                float FMA rate on Zen 4 (half of it on Intel's cores, where AMX is used).
// Both read the operands rounded into the same 1 KB blocks (16 x 32 bfloat16):
//   row tiles   rhs^T (N, K): 16 columns n x 32 k, k contiguous (a column's pairs side by side);
//   pair tiles  lhs (M, K): 16 rows of k pairs x 16 m x 2, TDPBF16PS's layout, which is also
//               one VDPBF16PS operand per k pair: the 16 rows' (k, k+1) values side by side.
// Each output element sums its K products in order of k, starting from dst (accumulate) or
// zero, whatever the engine's blocking and the thread count: results are the same on any
// number of threads. dst is column-major; tails (M, N or K not a multiple of 16 or 32) are
// zero-padded in the blocks and never written outside dst.
//
// AMX: each thread takes whole 32-column blocks of dst and runs 2x2 float tiles (32 x 32) over
// K; the tails go through a scratch tile. AVX-512 BF16: 48 rows x 8 columns of float sums in 24
// registers, three pair-tile rows by eight broadcast column pairs per k pair.
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

// The bytes a product keeps on the calling thread for its operands as its kernels read them
// (rounded to bfloat16, or packed into panels: sgemm.h), reused by the thread's later products
// and grown to the largest: what a memory estimate counts once per thread (model.h).
struct OperandBytes {
  size_t lhs = 0, rhs = 0;
};

// Sizes such a buffer to n elements. Growing frees the old buffer before taking the new one (its
// contents are rewritten anyway), so that a buffer that grows in training never holds its old
// and new sizes at once: a vector's own growth would, and a segment's products that outgrow the
// shorter last segment's would then peak above the estimate (measured: 60 MB at T = 4096, B = 8,
// segments of 1,366).
template <typename T>
void SizeOperandBuffer(std::vector<T>& buffer, size_t n) {
  if (n > buffer.capacity()) std::vector<T>().swap(buffer);
  buffer.resize(n);
}

// True when the processor has either engine (in force: cpu.h).
bool Bf16ProductsHere();

// dst (M, N) column-major with leading dimension ld_dst; lhs (M, K); rhs (K, N). On `threads`
// threads (>= 1), on AMX where it is in force, else on AVX-512 BF16. Requires Bf16ProductsHere().
void Bf16Product(float* dst, Eigen::Index ld_dst, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                 int threads);

// A time loop's recurrent product, the same weights at every step: W (M, K) rounded once into
// pair tiles (PackBf16Pairs: ceil(M/16) x ceil(K/32) tiles, tile (mt, kb) at (mt*ceil(K/32) + kb)
// * 512), then each step's C (M, cols) (+)= W X (K, cols) for the rows [row_begin, row_end) of C
// (row_begin a multiple of 16) on the calling thread (Bf16StepProduct). The step's X columns
// are rounded into row tiles first. Requires Bf16ProductsHere().
void PackBf16Pairs(const StridedMatrix& w, std::vector<uint16_t>& tiles);
// The bytes of PackBf16Pairs's tiles for W (M, K).
size_t Bf16PairTilesBytes(Eigen::Index M, Eigen::Index K);
// The bytes of the rounded operands Bf16Product keeps for a product (M, N) = (M, K) (K, N) on
// the engine in force: lhs's pair tiles and rhs^T's row tiles.
OperandBytes Bf16ProductOperandBytes(Eigen::Index M, Eigen::Index N, Eigen::Index K);
void Bf16StepProduct(const uint16_t* tiles, Eigen::Index M, Eigen::Index K, Eigen::Index row_begin,
                     Eigen::Index row_end, const float* x, Eigen::Index ldx, Eigen::Index cols, float* c,
                     Eigen::Index ldc, bool accumulate);

// Each engine on its own, for the tests (the dispatching functions above pick one).
// AmxProduct and AmxStepProduct require ThisCpu().amx; the Avx512Bf16 ones ThisCpu().avx512_bf16.
void AmxProduct(float* dst, Eigen::Index ld_dst, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                int threads);
void AmxStepProduct(const uint16_t* tiles, Eigen::Index M, Eigen::Index K, Eigen::Index row_begin,
                    Eigen::Index row_end, const float* x, Eigen::Index ldx, Eigen::Index cols, float* c,
                    Eigen::Index ldc, bool accumulate);
void Avx512Bf16Product(float* dst, Eigen::Index ld_dst, const StridedMatrix& lhs, const StridedMatrix& rhs,
                       bool accumulate, int threads);
void Avx512Bf16StepProduct(const uint16_t* tiles, Eigen::Index M, Eigen::Index K, Eigen::Index row_begin,
                           Eigen::Index row_end, const float* x, Eigen::Index ldx, Eigen::Index cols, float* c,
                           Eigen::Index ldc, bool accumulate);

}  // namespace bptt
