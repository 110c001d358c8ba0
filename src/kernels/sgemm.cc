#include "kernels/sgemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/threads.h"

// GCC 12's AVX-512 intrinsics start some results from _mm512_undefined_*, which its own
// -Wuninitialized then reports at every inlined call; the values are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace bptt {
namespace {

using Index = Eigen::Index;

#define BPTT_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define BPTT_AVX2 __attribute__((target("avx2,fma")))

// ------------------------------------------------------------------------------ packing

// Panel p of lhs (MR rows from p*MR, rows past M zero) over all K: out[k*MR + r].
template <Index MR>
void PackRows(const StridedMatrix& lhs, Index p, float* out) {
  const Index M = lhs.rows, K = lhs.cols, m0 = p * MR, n = std::min(MR, M - m0);
  if (lhs.row_stride == 1) {  // columns of lhs contiguous: MR rows of one k at a time
    for (Index k = 0; k < K; ++k) {
      const float* src = lhs.data + k * lhs.col_stride + m0;
      float* dst = out + k * MR;
      for (Index r = 0; r < n; ++r) dst[r] = src[r];
      for (Index r = n; r < MR; ++r) dst[r] = 0.0f;
    }
  } else {  // rows of lhs contiguous: one row over all k at a time
    for (Index r = 0; r < MR; ++r) {
      if (r >= n) {
        for (Index k = 0; k < K; ++k) out[k * MR + r] = 0.0f;
        continue;
      }
      const float* src = lhs.data + (m0 + r) * lhs.row_stride;
      for (Index k = 0; k < K; ++k) out[k * MR + r] = src[k];
    }
  }
}

// Panel q of rhs (NR columns from q*NR, columns past N zero) over all K: out[k*NR + j].
template <Index NR>
void PackColumns(const StridedMatrix& rhs, Index q, float* out) {
  const Index N = rhs.cols, K = rhs.rows, n0 = q * NR, n = std::min(NR, N - n0);
  if (rhs.col_stride == 1) {  // rows of rhs contiguous: NR columns of one k at a time
    for (Index k = 0; k < K; ++k) {
      const float* src = rhs.data + k * rhs.row_stride + n0;
      float* dst = out + k * NR;
      for (Index j = 0; j < n; ++j) dst[j] = src[j];
      for (Index j = n; j < NR; ++j) dst[j] = 0.0f;
    }
  } else {  // columns of rhs contiguous: one column over all k at a time
    for (Index j = 0; j < NR; ++j) {
      if (j >= n) {
        for (Index k = 0; k < K; ++k) out[k * NR + j] = 0.0f;
        continue;
      }
      const float* src = rhs.data + (n0 + j) * rhs.col_stride;
      for (Index k = 0; k < K; ++k) out[k * NR + j] = src[k];
    }
  }
}

// ------------------------------------------------------------------------------ kernels

// C (rows, cols) of an MR x NR block (+)= a (MR, kc) * b (kc, NR), a and b packed as above; C
// column-major, only its first `rows` rows and `cols` columns read and written.
using Kernel = void (*)(const float* a, const float* b, Index kc, float* c, Index ldc, Index rows, Index cols,
                        bool load);

inline __mmask16 Mask16(Index count) {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// Both kernels sum the chunk's products in registers from C (with `load`) or from zero, then store:
// each element is one chain of k in order, across chunks and across calls that accumulate.
// AVX-512: 32 rows (two registers) x 12 columns.
BPTT_AVX512 void Avx512Kernel(const float* a, const float* b, Index kc, float* c, Index ldc, Index rows, Index cols,
                              bool load) {
  constexpr int NR = 12;
  for (int j = 0; j < NR && j < cols; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc + 31), _MM_HINT_T0);
  }
  // The sums start from C (load) or zero, so that each element is one chain of k in order however
  // K is cut into chunks or calls.
  const __mmask16 mlo = Mask16(rows), mhi = Mask16(rows - 16);
  __m512 lo[NR], hi[NR];
  for (int j = 0; j < NR; ++j) {
    const bool from_c = load && j < cols;
    lo[j] = from_c ? _mm512_maskz_loadu_ps(mlo, c + j * ldc) : _mm512_setzero_ps();
    hi[j] = from_c ? _mm512_maskz_loadu_ps(mhi, c + j * ldc + 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (Index k = 0; k < kc; ++k) {
    const __m512 a0 = _mm512_loadu_ps(a + k * 32), a1 = _mm512_loadu_ps(a + k * 32 + 16);
    for (int j = 0; j < NR; ++j) {
      const __m512 bj = _mm512_set1_ps(b[k * NR + j]);
      lo[j] = _mm512_fmadd_ps(a0, bj, lo[j]);
      hi[j] = _mm512_fmadd_ps(a1, bj, hi[j]);
    }
  }
  for (int j = 0; j < NR && j < cols; ++j) {
    _mm512_mask_storeu_ps(c + j * ldc, mlo, lo[j]);
    _mm512_mask_storeu_ps(c + j * ldc + 16, mhi, hi[j]);
  }
}

// The lanes [0, count) of 8, as AVX2's masked loads and stores take them.
BPTT_AVX2 inline __m256i Mask8(Index count) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<Index>(count, 0, 8))), lanes);
}

// AVX2: 16 rows (two registers) x 6 columns.
BPTT_AVX2 void Avx2Kernel(const float* a, const float* b, Index kc, float* c, Index ldc, Index rows, Index cols,
                          bool load) {
  constexpr int NR = 6;
  for (int j = 0; j < NR && j < cols; ++j) _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_T0);
  const __m256i mlo = Mask8(rows), mhi = Mask8(rows - 8);
  __m256 lo[NR], hi[NR];
  for (int j = 0; j < NR; ++j) {
    const bool from_c = load && j < cols;
    lo[j] = from_c ? _mm256_maskload_ps(c + j * ldc, mlo) : _mm256_setzero_ps();
    hi[j] = from_c ? _mm256_maskload_ps(c + j * ldc + 8, mhi) : _mm256_setzero_ps();
  }
#pragma GCC unroll 2
  for (Index k = 0; k < kc; ++k) {
    const __m256 a0 = _mm256_loadu_ps(a + k * 16), a1 = _mm256_loadu_ps(a + k * 16 + 8);
    for (int j = 0; j < NR; ++j) {
      const __m256 bj = _mm256_broadcast_ss(b + k * NR + j);
      lo[j] = _mm256_fmadd_ps(a0, bj, lo[j]);
      hi[j] = _mm256_fmadd_ps(a1, bj, hi[j]);
    }
  }
  for (int j = 0; j < NR && j < cols; ++j) {
    _mm256_maskstore_ps(c + j * ldc, mlo, lo[j]);
    _mm256_maskstore_ps(c + j * ldc + 8, mhi, hi[j]);
  }
}

// ------------------------------------------------------------------------------ the product

// K runs in chunks of kKc; within a chunk, rows in blocks of kMc panels of lhs (kept in L2), and
// for each panel of rhs (kept in L1) every panel of the block. The chunks are the same on any
// thread count, so are the sums.
template <Index MR, Index NR, Index kKc, Index kMc, Kernel kKernel>
void Product(float* dst, Index ld, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate, int threads) {
  const Index M = lhs.rows, N = rhs.cols, K = lhs.cols;
  if (K == 0) {  // an empty sum
    if (!accumulate)
      for (Index n = 0; n < N; ++n) std::fill(dst + n * ld, dst + n * ld + M, 0.0f);
    return;
  }
  const Index mpanels = (M + MR - 1) / MR, npanels = (N + NR - 1) / NR;
  // The packed operands, reused from call to call by the calling thread.
  thread_local std::vector<float> packed_lhs, packed_rhs;
  SizeOperandBuffer(packed_lhs, static_cast<size_t>(mpanels * MR * K));
  SizeOperandBuffer(packed_rhs, static_cast<size_t>(npanels * NR * K));
  float* const pa = packed_lhs.data();
  float* const pb = packed_rhs.data();
  // Split dst by whichever dimension has more panels.
  const bool by_columns = npanels >= mpanels;
#pragma omp parallel num_threads(threads)
  {
    {
      const auto [begin, end] = ThreadRange(mpanels);
      for (Index p = begin; p < end; ++p) PackRows<MR>(lhs, p, pa + p * MR * K);
    }
    {
      const auto [begin, end] = ThreadRange(npanels);
      for (Index q = begin; q < end; ++q) PackColumns<NR>(rhs, q, pb + q * NR * K);
    }
#pragma omp barrier
    const auto [p_begin, p_end] = by_columns ? std::pair<Index, Index>{0, mpanels} : ThreadRange(mpanels);
    const auto [q_begin, q_end] = by_columns ? ThreadRange(npanels) : std::pair<Index, Index>{0, npanels};
    for (Index k0 = 0; k0 < K; k0 += kKc) {
      const Index kc = std::min(kKc, K - k0);
      for (Index p0 = p_begin; p0 < p_end; p0 += kMc)
        for (Index q = q_begin; q < q_end; ++q)
          for (Index p = p0; p < std::min(p_end, p0 + kMc); ++p)
            kKernel(pa + p * MR * K + k0 * MR, pb + q * NR * K + k0 * NR, kc, dst + q * NR * ld + p * MR, ld,
                    std::min(MR, M - p * MR), std::min(NR, N - q * NR), accumulate || k0 > 0);
    }
  }
}

// ------------------------------------------------------------------------------ panels

// C (rows, NR) (+)= A (32, K) X (K, NR), A packed column after column, X's columns ldx apart, its
// sums in registers from zero, or, with `from`, from partial sums of earlier k (column j's 32 at
// from + 32 j); with `to`, the sums go there instead of to C, for a later call to go on from.
// Stored and reloaded floats are exact, so a product run in chunks of k sums as one run whole.
template <int NR>
BPTT_AVX512 void Avx512Panel(const float* a, Index K, const float* x, Index ldx, float* c, Index ldc, Index rows,
                             bool accumulate, const float* from, float* to) {
  __m512 lo[NR], hi[NR];
  for (int j = 0; j < NR; ++j) {
    lo[j] = from ? _mm512_loadu_ps(from + 32 * j) : _mm512_setzero_ps();
    hi[j] = from ? _mm512_loadu_ps(from + 32 * j + 16) : _mm512_setzero_ps();
  }
  for (Index k = 0; k < K; ++k) {
    const __m512 a0 = _mm512_loadu_ps(a + k * 32), a1 = _mm512_loadu_ps(a + k * 32 + 16);
    for (int j = 0; j < NR; ++j) {
      const __m512 b = _mm512_set1_ps(x[j * ldx + k]);
      lo[j] = _mm512_fmadd_ps(a0, b, lo[j]);
      hi[j] = _mm512_fmadd_ps(a1, b, hi[j]);
    }
  }
  if (to) {
    for (int j = 0; j < NR; ++j) {
      _mm512_storeu_ps(to + 32 * j, lo[j]);
      _mm512_storeu_ps(to + 32 * j + 16, hi[j]);
    }
    return;
  }
  const __mmask16 mlo = Mask16(rows), mhi = Mask16(rows - 16);
  for (int j = 0; j < NR; ++j) {
    float* cj = c + j * ldc;
    if (accumulate) {
      lo[j] = _mm512_add_ps(lo[j], _mm512_maskz_loadu_ps(mlo, cj));
      hi[j] = _mm512_add_ps(hi[j], _mm512_maskz_loadu_ps(mhi, cj + 16));
    }
    _mm512_mask_storeu_ps(cj, mlo, lo[j]);
    _mm512_mask_storeu_ps(cj + 16, mhi, hi[j]);
  }
}

// The same on AVX2 for 16 of the panel's 32 rows (a, c, from and to at the first of them) and
// `cols` (1 to 4) columns, each sum a named variable: with arrays of sums GCC 12 at -O3 stores
// every one to the stack after each FMA, which halves the speed.
BPTT_AVX2 void Avx2Panel(const float* a, Index K, const float* x, Index ldx, Index cols, float* c, Index ldc,
                         Index rows, bool accumulate, const float* from, float* to) {
  const float* x0 = x;  // columns past `cols` read column 0 again, and are not stored
  const float* x1 = x + (cols > 1 ? ldx : 0);
  const float* x2 = x + (cols > 2 ? 2 * ldx : 0);
  const float* x3 = x + (cols > 3 ? 3 * ldx : 0);
  __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
  if (from) {
    l0 = _mm256_loadu_ps(from), h0 = _mm256_loadu_ps(from + 8);
    if (cols > 1) l1 = _mm256_loadu_ps(from + 32), h1 = _mm256_loadu_ps(from + 40);
    if (cols > 2) l2 = _mm256_loadu_ps(from + 64), h2 = _mm256_loadu_ps(from + 72);
    if (cols > 3) l3 = _mm256_loadu_ps(from + 96), h3 = _mm256_loadu_ps(from + 104);
  }
  for (Index k = 0; k < K; ++k) {
    const __m256 a0 = _mm256_loadu_ps(a + k * 32), a1 = _mm256_loadu_ps(a + k * 32 + 8);
    __m256 b = _mm256_broadcast_ss(x0 + k);
    l0 = _mm256_fmadd_ps(a0, b, l0), h0 = _mm256_fmadd_ps(a1, b, h0);
    b = _mm256_broadcast_ss(x1 + k);
    l1 = _mm256_fmadd_ps(a0, b, l1), h1 = _mm256_fmadd_ps(a1, b, h1);
    b = _mm256_broadcast_ss(x2 + k);
    l2 = _mm256_fmadd_ps(a0, b, l2), h2 = _mm256_fmadd_ps(a1, b, h2);
    b = _mm256_broadcast_ss(x3 + k);
    l3 = _mm256_fmadd_ps(a0, b, l3), h3 = _mm256_fmadd_ps(a1, b, h3);
  }
  __m256 lo[4] = {l0, l1, l2, l3}, hi[4] = {h0, h1, h2, h3};
  if (to) {
    for (Index j = 0; j < cols; ++j) {
      _mm256_storeu_ps(to + 32 * j, lo[j]);
      _mm256_storeu_ps(to + 32 * j + 8, hi[j]);
    }
    return;
  }
  const __m256i mlo = Mask8(rows), mhi = Mask8(rows - 8);
  for (Index j = 0; j < cols; ++j) {
    float* cj = c + j * ldc;
    if (accumulate) {
      lo[j] = _mm256_add_ps(lo[j], _mm256_maskload_ps(cj, mlo));
      hi[j] = _mm256_add_ps(hi[j], _mm256_maskload_ps(cj + 8, mhi));
    }
    _mm256_maskstore_ps(cj, mlo, lo[j]);
    _mm256_maskstore_ps(cj + 8, mhi, hi[j]);
  }
}

// Offsets a partial-sums pointer that may be null.
inline const float* Skip(const float* p, Index n) { return p ? p + n : nullptr; }
inline float* Skip(float* p, Index n) { return p ? p + n : nullptr; }

template <int NR>
void PanelColumns(const float* a, Index K, const float* x, Index ldx, float* c, Index ldc, Index rows,
                  bool accumulate, const float* from, float* to) {
  if (ThisCpu().avx512) {
    Avx512Panel<NR>(a, K, x, ldx, c, ldc, rows, accumulate, from, to);
    return;
  }
  for (Index j = 0; j < NR; j += 4) {  // AVX2 has 16 registers: 2 x 4 sums at a time
    const Index cols = std::min<Index>(4, NR - j);
    Avx2Panel(a, K, x + j * ldx, ldx, cols, c + j * ldc, ldc, rows, accumulate, Skip(from, 32 * j), Skip(to, 32 * j));
    if (rows > 16)
      Avx2Panel(a + 16, K, x + j * ldx, ldx, cols, c + j * ldc + 16, ldc, rows - 16, accumulate,
                Skip(from, 32 * j + 16), Skip(to, 32 * j + 16));
  }
}

// Every column of C (rows, N) over the k of `a` (K of them) and of x: groups of 8, then the rest.
void PanelPass(const float* a, Index K, const float* x, Index ldx, Index N, float* c, Index ldc, Index rows,
               bool accumulate, const float* from, float* to) {
  constexpr int kCols = 8;  // columns per kernel call: 2 x 8 sums of 16 floats (AVX-512)
  Index j = 0;
  for (; j + kCols <= N; j += kCols)
    PanelColumns<kCols>(a, K, x + j * ldx, ldx, c + j * ldc, ldc, rows, accumulate, Skip(from, 32 * j),
                        Skip(to, 32 * j));
  const float* xj = x + j * ldx;
  float* cj = c + j * ldc;
  const float* fj = Skip(from, 32 * j);
  float* tj = Skip(to, 32 * j);
  switch (N - j) {
    case 7: PanelColumns<7>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 6: PanelColumns<6>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 5: PanelColumns<5>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 4: PanelColumns<4>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 3: PanelColumns<3>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 2: PanelColumns<2>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    case 1: PanelColumns<1>(a, K, xj, ldx, cj, ldc, rows, accumulate, fj, tj); break;
    default: break;
  }
}

}  // namespace

bool FloatProductsHere() { return ThisCpu().avx2; }

void FloatProduct(float* dst, Index ld, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                  int threads) {
  // kKc: a panel of rhs over a chunk (12 KB on AVX-512, 6 KB on AVX2) stays in L1; kMc: a
  // block of lhs over a chunk (512 KB, 256 KB) in L2.
  if (ThisCpu().avx512) Product<32, 12, 256, 16, &Avx512Kernel>(dst, ld, lhs, rhs, accumulate, threads);
  else Product<16, 6, 256, 16, &Avx2Kernel>(dst, ld, lhs, rhs, accumulate, threads);
}

OperandBytes FloatProductOperandBytes(Index M, Index N, Index K) {
  if (K == 0) return {};
  const Index MR = ThisCpu().avx512 ? 32 : 16, NR = ThisCpu().avx512 ? 12 : 6;
  return {sizeof(float) * static_cast<size_t>((M + MR - 1) / MR * MR * K),
          sizeof(float) * static_cast<size_t>((N + NR - 1) / NR * NR * K)};
}

void FloatPanelProduct(const float* a, Index K, const float* x, Index ldx, Index N, float* c, Index ldc, Index rows,
                       bool accumulate) {
  // K in chunks whose slice of the panel (16 KB) stays in L1 while every column group reads it:
  // the panel comes from beyond L2 once per step, not once per group of columns.
  constexpr Index kChunk = 128;
  if (K <= kChunk) {
    PanelPass(a, K, x, ldx, N, c, ldc, rows, accumulate, nullptr, nullptr);
    return;
  }
  thread_local std::vector<float> partial;  // the sums of the chunks so far, 32 per column
  SizeOperandBuffer(partial, static_cast<size_t>(32 * N));
  for (Index k0 = 0; k0 < K; k0 += kChunk) {
    const Index kc = std::min(kChunk, K - k0);
    PanelPass(a + k0 * 32, kc, x + k0, ldx, N, c, ldc, rows, accumulate, k0 > 0 ? partial.data() : nullptr,
              k0 + kc < K ? partial.data() : nullptr);
  }
}

}  // namespace bptt
