// Matrix-vector products for one stream — the step mode's products (stepper.h) — with the weights
// held in float32, bfloat16 or int8.
//
//   float32   Eigen's GEMV over the float matrix.
//   bfloat16  the matrix in panels of 16 rows, each holding for every pair of columns (k, k+1)
//             the 16 rows' two values side by side, as the AVX-512 BF16 dot-product instruction
//             reads them; the vector rounded to bfloat16 per product; float sums.
//   int8      q_rk = round(w_rk / s_r) with one scale per row, s_r = max_k |w_rk| / 127, in panels
//             of 64 rows holding for every four columns k..k+3 the 64 rows' four values side by
//             side, as the AVX-512 VNNI instruction reads them (a panel is read as one stream);
//             the vector as unsigned bytes u_k = round(x_k / a) + 128 with a = max_k |x_k| / 127;
//             int32 sums, y_r = s_r a (sum_k q_rk u_k - 128 sum_k q_rk).
//   int8, block-sparse  the same numbers, for a matrix with many zero blocks of 16 rows by 4
//             columns (a pruned one: bptt/prune.h): each group of 16 rows keeps only its blocks
//             that are not all zero, 64 bytes each (the 16 rows' four values side by side) with
//             their column quad, and a product reads those alone, one VNNI instruction per block.
//             A block of zeros adds nothing to the int32 sums, so the outputs are those of the
//             dense int8 product bit for bit. Chosen when at least kSparseFrom of the blocks are
//             zero after rounding to int8.
// Rows and columns past the matrix are zero in the panels. The kernels are chosen at run time
// (kernels/cpu.h): bfloat16 on AVX-512 BF16, else AVX2 (each bfloat16 widened to a float, float
// FMAs); int8 on AVX-512 VNNI, else AVX2 (VPMADDUBSW to the same int32 sums: the same results);
// else a plain C++ loop over the same layout (tests/kernels_test.cc checks each against float,
// ctest once per level).
// Reading the weights is the cost of a step once they outgrow the core's cache, so fewer bytes
// is faster.
//
//   StepMatrix w(weight_hh, Precision::kInt8);
//   w.Multiply(h, y, /*accumulate=*/true, /*threads=*/1);   // y += W h
#pragma once

#include <cstdint>
#include <vector>

#include "bptt/compute.h"
#include "bptt/tensor.h"

namespace bptt {

// float -> bfloat16, rounding to nearest even; NaN stays NaN; a subnormal becomes a zero of its
// sign, as in the AVX-512 BF16 instructions (which also read subnormal bfloat16 as zero).
uint16_t ToBf16(float x);
float FromBf16(uint16_t b);

// x (K) as bfloat16 pairs (x_k, x_k+1) in 32-bit words, the low half first, zero-padded to
// (K + 1) / 2 words.
void ToBf16Pairs(const float* x, Eigen::Index K, uint32_t* pairs);

// x (K) as unsigned bytes u_k = round(x_k / a) + 128, four to a 32-bit word (little-endian),
// padded with 128 (i.e. zero) to (K + 3) / 4 words; returns a = max_k |x_k| / 127. A zero vector,
// or one whose largest magnitude is too small for a to be a normal float, is all 128 with a = 1
// (its products are 0); a vector with a NaN or infinity gives a = NaN, so that its products are
// NaN as they would be in float.
float ToUint8Quads(const float* x, Eigen::Index K, uint32_t* quads);

// The fraction of zero 16x4 blocks from which an int8 StepMatrix is block-sparse. Sampling a
// 2x512 LSTM (Zen 4), block-sparse over dense: at 10% zero blocks 1.05 on one thread but 0.77
// with the threads chosen as it runs; at 20% 1.14 and 1.05 (bench/README.md: block-sparse
// sampling).
inline constexpr double kSparseFrom = 0.2;

// A weight matrix (M, K) prepared for y = W x in one precision. Keeps a pointer to the float
// matrix (float32), or its own packed copy (bfloat16, int8).
class StepMatrix {
 public:
  StepMatrix() = default;
  // sparse: may be block-sparse (int8, at kSparseFrom or more zero blocks); false keeps it dense.
  StepMatrix(const Mat<float>& w, Precision precision, bool sparse = true);

  // y (M) = W x (+ y when accumulate). With threads > 1 each thread takes a contiguous range of
  // whole 64-row groups (small matrices run on one thread).
  void Multiply(const float* x, float* y, bool accumulate, int threads);

  Eigen::Index rows() const { return rows_; }
  Eigen::Index cols() const { return cols_; }
  // The weight bytes a product reads: 4, 2 or 1 per weight; block-sparse, 64 per kept block and
  // its index.
  size_t Bytes() const;
  bool sparse() const { return !block_start_.empty(); }

 private:
  void Rows(const float* x, float a, float* y, bool accumulate, Eigen::Index begin, Eigen::Index end) const;
  void SparseRows(float a, float* y, bool accumulate, Eigen::Index begin, Eigen::Index end) const;
  void MakeSparse();  // int8_ to the blocks below, when enough are zero

  const Mat<float>* w_ = nullptr;  // float32
  Precision precision_ = Precision::kFloat32;
  Eigen::Index rows_ = 0, cols_ = 0;
  std::vector<uint16_t> bf16_;   // bfloat16: (ceil(M/16), ceil(K/2), 16, 2)
  std::vector<int8_t> int8_;     // int8: (ceil(M/64), ceil(K/4), 64, 4)
  std::vector<float> scale_;     // int8: (ceil(M/64) 64) s_r
  std::vector<int32_t> offset_;  // int8: (ceil(M/64) 64) 128 sum_k q_rk
  std::vector<uint32_t> words_;  // the vector of one product: bfloat16 pairs or byte quads
  // int8, block-sparse (int8_ then empty): group g of 16 rows keeps blocks
  // [block_start_[g], block_start_[g + 1]), block b being the 64 bytes at int8_blocks_ + 64 b
  // (16 rows of 4) over the column quad block_quad_[b].
  std::vector<int8_t> int8_blocks_;     // (kept blocks, 16, 4)
  std::vector<uint32_t> block_quad_;    // (kept blocks)
  std::vector<uint32_t> block_start_;   // (ceil(M/16) + 1)
};

}  // namespace bptt
