// Packed panels for the recurrent product of a time loop.
//
// Every step of a cell's forward sweep multiplies the same weight matrix W_hh (G*H, H) by the
// state (H, B), and every step of its backward sweep multiplies W_hh^T (H, G*H) by the gate
// gradients (G*H, B). A general GEMM copies ("packs") its left operand into the layout of its
// inner kernel on every call, i.e. the whole weight matrix every step. Here the weights are
// packed once per chunk into panels of kPanelRows rows and the steps run a register-blocked
// kernel straight over the panels (for float: 32 rows x 8 columns of sums on AVX-512, 16 x 4 on
// AVX2, chosen at run time in sgemm.h; plain C++ otherwise):
//
//   W (M, K) -> PanelBlocks(M) panels (kPanelRows, K): element (r, k) of panel q at
//               packed(r, q*K + k) = W(q*kPanelRows + r, k); rows past M are zero
//   PanelProduct:  C (rows of panel q, N) (+)= panel_q · X (K, N)
//
//   PackedProduct: C (M, N) (+)= W · X, every panel in turn
// Each output element sums over k in order, so results do not depend on the thread count.
//
// The time loops share their steps between threads as StepShare (below) says: by columns of the
// batch when every thread gets columns, by panels of rows otherwise.
#pragma once

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>

#include "bptt/compute.h"
#include "bptt/error.h"
#include "bptt/tensor.h"
#include "kernels/bf16_gemm.h"
#include "kernels/sgemm.h"
#include "kernels/threads.h"

namespace bptt {

inline constexpr Eigen::Index kPanelRows = 32;

// Panels of kPanelRows rows covering M rows.
inline Eigen::Index PanelBlocks(Eigen::Index M) { return (M + kPanelRows - 1) / kPanelRows; }

// W (M, K) into PanelBlocks(M) panels.
template <typename S>
void PackPanels(const Mat<S>& w, Mat<S>& packed) {
  const Eigen::Index M = w.rows(), K = w.cols(), blocks = PanelBlocks(M);
  EnsureShape(packed, kPanelRows, blocks * K);
  for (Eigen::Index q = 0; q < blocks; ++q) {
    const Eigen::Index r0 = q * kPanelRows, n = std::min(kPanelRows, M - r0);
    auto panel = packed.middleCols(q * K, K);
    panel.topRows(n) = w.middleRows(r0, n);
    panel.bottomRows(kPanelRows - n).setZero();
  }
}

// W^T (K, M) for W (M, K) into PanelBlocks(K) panels of depth M.
template <typename S>
void PackTransposedPanels(const Mat<S>& w, Mat<S>& packed) {
  const Eigen::Index M = w.rows(), K = w.cols(), blocks = PanelBlocks(K);
  EnsureShape(packed, kPanelRows, blocks * M);
  for (Eigen::Index q = 0; q < blocks; ++q) {
    const Eigen::Index u0 = q * kPanelRows, n = std::min(kPanelRows, K - u0);
    auto panel = packed.middleCols(q * M, M);
    panel.topRows(n) = w.middleCols(u0, n).transpose();
    panel.bottomRows(kPanelRows - n).setZero();
  }
}

// W (M, K), or W^T with `transposed`, into `out` for StepShare::Product: float panels, or
// bfloat16 pair tiles (bf16_gemm.h) when `products` is kBfloat16 (float only).
template <typename S>
void Pack(const Mat<S>& w, bool transposed, Precision products, PackedMatrix<S>& out) {
  out.M = transposed ? w.cols() : w.rows();
  out.K = transposed ? w.rows() : w.cols();
  out.bf16 = products == Precision::kBfloat16;
  if (!out.bf16) {
    if (transposed) PackTransposedPanels(w, out.panels);
    else PackPanels(w, out.panels);
    return;
  }
  if constexpr (std::is_same_v<S, float>) {
    PackBf16Pairs(transposed ? StridedMatrix{w.data(), w.cols(), w.rows(), w.rows(), 1}
                             : StridedMatrix{w.data(), w.rows(), w.cols(), 1, w.rows()},
                  out.tiles);
  } else {
    throw Error("bfloat16 products are for float models only");
  }
}

// The bytes Pack keeps for a float W (M, K) (for W^T, the transpose's shape): PanelBlocks(M)
// float panels, or with bfloat16 products the tiles of PackBf16Pairs.
inline size_t PackedBytes(Eigen::Index M, Eigen::Index K, Precision products) {
  if (products == Precision::kBfloat16) return Bf16PairTilesBytes(M, K);
  return sizeof(float) * static_cast<size_t>(kPanelRows * K * PanelBlocks(M));
}

namespace packed_detail {

// C (rows, NR) (+)= A (kPanelRows, K) · X (K, NR); A packed column after column. Plain C++: for
// double, and for float where the CPU has no AVX2 (float otherwise runs FloatPanelProduct).
template <int NR, typename S>
inline void Kernel(const S* a, Eigen::Index K, const S* x, Eigen::Index ldx, S* c, Eigen::Index ldc,
                   Eigen::Index rows, bool accumulate) {
  S acc[NR][kPanelRows] = {};
  for (Eigen::Index k = 0; k < K; ++k)
    for (int j = 0; j < NR; ++j) {
      const S b = x[j * ldx + k];
      for (Eigen::Index r = 0; r < kPanelRows; ++r) acc[j][r] += a[k * kPanelRows + r] * b;
    }
  for (int j = 0; j < NR; ++j)
    for (Eigen::Index r = 0; r < rows; ++r) c[j * ldc + r] = (accumulate ? c[j * ldc + r] : S(0)) + acc[j][r];
}

}  // namespace packed_detail

// C (rows, N) (+)= panel p of `packed` (depth K) · X (K, N); X and C column-major with leading
// dimensions ldx and ldc; only the first `rows` (<= kPanelRows) rows of C are written.
template <typename S>
void PanelProduct(const Mat<S>& packed, Eigen::Index p, Eigen::Index K, const S* x, Eigen::Index ldx,
                  Eigen::Index N, S* c, Eigen::Index ldc, Eigen::Index rows, bool accumulate) {
  using packed_detail::Kernel;
  constexpr int kCols = 8;  // columns per kernel call
  const S* a = packed.data() + p * K * kPanelRows;
  if constexpr (std::is_same_v<S, float>) {
    if (FloatProductsHere()) {  // AVX-512 or AVX2, chosen at run time (sgemm.h)
      FloatPanelProduct(a, K, x, ldx, N, c, ldc, rows, accumulate);
      return;
    }
  }
  Eigen::Index j = 0;
  for (; j + kCols <= N; j += kCols) Kernel<kCols>(a, K, x + j * ldx, ldx, c + j * ldc, ldc, rows, accumulate);
  S* cj = c + j * ldc;
  const S* xj = x + j * ldx;
  switch (N - j) {
    case 7: Kernel<7>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 6: Kernel<6>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 5: Kernel<5>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 4: Kernel<4>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 3: Kernel<3>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 2: Kernel<2>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    case 1: Kernel<1>(a, K, xj, ldx, cj, ldc, rows, accumulate); break;
    default: break;
  }
}

// C (M, N) (+)= W · X for W (M, K) packed by PackPanels (or W^T by PackTransposedPanels, with M
// and K its transpose's), X (K, N) and C column-major with leading dimensions ldx and ldc.
template <typename S>
void PackedProduct(const Mat<S>& packed, Eigen::Index M, Eigen::Index K, const S* x, Eigen::Index ldx,
                   Eigen::Index N, S* c, Eigen::Index ldc, bool accumulate) {
  for (Eigen::Index q = 0; q < PanelBlocks(M); ++q) {
    const Eigen::Index r0 = q * kPanelRows;
    PanelProduct(packed, q, K, x, ldx, N, c + r0, ldc, std::min(kPanelRows, M - r0), accumulate);
  }
}

// How the threads of a time loop's parallel region share each step: the product over the packed
// weights, C (M, B) (+)= W · X, and the pointwise passes over C's columns.
//
// By columns, when there are at least as many columns as threads: each thread takes its own
// columns of the batch (ThreadRange) for the product and the pointwise passes of the whole sweep,
// so the threads never wait for each other inside the loop, which on a shared machine (a core
// taken by another process for a time slice) costs more than reading the weights once per
// thread and step (training a 2x512 LSTM split by rows instead: 2.5-11% faster on a quiet
// machine, 23-27% slower beside one other busy process; bench/README.md).
// By rows, with fewer columns than threads (one stream: `bptt eval`, the end-of-run score): a
// split of the columns would leave threads idle while one streams all of W for a single column,
// so each thread takes its share of W's panels for every column, and the threads meet (Join)
// after the product, before the pointwise pass reads it, and after the pointwise pass, before
// the next product reads its output. The pointwise passes still go by columns. (A 2x512 LSTM's
// one-stream score on two cores: 2.8x faster than on one on a quiet machine; on an
// oversubscribed one the meetings can cost more than they save: bench/README.md.)
// Either way each element of C sums over k in the same order: results do not depend on the
// thread count or the split.
//
//   #pragma omp parallel num_threads(threads)
//   { const StepShare share(M, B);
//     for (t = 0; t < T && share.active(); ++t) {
//       share.Product(packed, K, x, ldx, c, ldc, accumulate);  share.Join();
//       for (b = share.j0; b < share.j1; ++b) ...pointwise...;  share.Join(); } }
class StepShare {
 public:
  // Inside the parallel region: M rows of each step's product, B columns.
  StepShare(Eigen::Index M, Eigen::Index B) : M_(M), B_(B), by_rows_(B < omp_get_num_threads()) {
    std::tie(j0, j1) = ThreadRange(B);
    if (by_rows_) std::tie(q0_, q1_) = ThreadRange(PanelBlocks(M));
  }

  // Whether this thread runs the sweep (split by rows, every thread does: they meet at Join).
  bool active() const { return by_rows_ || j0 < j1; }

  // This thread's share of C (M, B) (+)= W · X (K, B), W packed by Pack (float panels or
  // bfloat16 tiles), or a float W packed by PackPanels (or W^T by PackTransposedPanels); x and c
  // point at column 0, column-major with leading dimensions ldx and ldc.
  template <typename S>
  void Product(const PackedMatrix<S>& w, const S* x, Eigen::Index ldx, S* c, Eigen::Index ldc,
               bool accumulate) const {
    if constexpr (std::is_same_v<S, float>) {
      if (w.bf16) {
        if (by_rows_)
          Bf16StepProduct(w.tiles.data(), M_, w.K, q0_ * kPanelRows, std::min(M_, q1_ * kPanelRows), x, ldx, B_, c,
                         ldc, accumulate);
        else
          Bf16StepProduct(w.tiles.data(), M_, w.K, 0, M_, x + j0 * ldx, ldx, j1 - j0, c + j0 * ldc, ldc, accumulate);
        return;
      }
    }
    Product(w.panels, w.K, x, ldx, c, ldc, accumulate);
  }
  template <typename S>
  void Product(const Mat<S>& packed, Eigen::Index K, const S* x, Eigen::Index ldx, S* c, Eigen::Index ldc,
               bool accumulate) const {
    if (!by_rows_) {
      PackedProduct(packed, M_, K, x + j0 * ldx, ldx, j1 - j0, c + j0 * ldc, ldc, accumulate);
      return;
    }
    for (Eigen::Index q = q0_; q < q1_; ++q) {
      const Eigen::Index r0 = q * kPanelRows;
      PanelProduct(packed, q, K, x, ldx, B_, c + r0, ldc, std::min(kPanelRows, M_ - r0), accumulate);
    }
  }

  // Waits for the other threads when the rows are split.
  void Join() const {
    if (by_rows_) {
#pragma omp barrier
    }
  }

  Eigen::Index j0 = 0, j1 = 0;  // this thread's columns in the pointwise passes

 private:
  Eigen::Index M_, B_;
  bool by_rows_;
  Eigen::Index q0_ = 0, q1_ = 0;  // this thread's panels when split by rows
};

}  // namespace bptt
