#include "kernels/gemv.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "bptt/error.h"
#include "kernels/cpu.h"
#include "kernels/threads.h"

// GCC 12's AVX-512 intrinsics start some results from _mm512_undefined_*, which its own
// -Wuninitialized then reports at every inlined call; the values are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace bptt {

namespace {

constexpr Eigen::Index kBf16Rows = 16;  // rows of a bfloat16 panel: one AVX-512 register of float sums
constexpr Eigen::Index kInt8Rows = 64;  // rows of an int8 panel: four AVX-512 registers of int32 sums
constexpr Eigen::Index kGroup = 64;     // rows of a thread's unit of work
// How far ahead of the stream the int8 product asks for the weights: the weights of a 512-unit
// model (3 MB in int8) come from L3, and the hardware prefetcher alone leaves the core waiting
// (2x512 LSTM: 43 us per symbol without, 36 us with 4 KB; 1 and 8 KB were slower).
constexpr Eigen::Index kPrefetchBytes = 4096;

}  // namespace

// Bit for bit the AVX-512 BF16 conversion (VCVTNEPS2BF16), so that both paths of ToBf16Pairs and
// every build agree: NaN quieted, subnormals to signed zero, the rest rounded to nearest even.
uint16_t ToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float FromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

namespace {

// The kernels for AVX-512 (BF16, VNNI) and AVX2, compiled for their instruction sets and chosen at
// run time (cpu.h); each returns how far it got, and plain C++ does the rest.
#define BPTT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define BPTT_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
#define BPTT_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#define BPTT_AVX2 __attribute__((target("avx2,fma")))

// ToBf16Pairs' whole groups of 16: 16 values make 8 words; the store is through the intrinsic's
// own (aliasing) type.
BPTT_AVX512_BF16 Eigen::Index Avx512Bf16Pairs(const float* x, Eigen::Index K, uint32_t* pairs) {
  Eigen::Index k = 0;
  for (; k + 16 <= K; k += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + k / 2), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + k)));
  return k;
}

// ToUint8Quads' whole groups of 16: |x_k / a| <= 127 (up to rounding), so the rounded value
// needs no clamping beyond the plain path's.
BPTT_AVX512 Eigen::Index Avx512Quads(const float* x, Eigen::Index K, float inverse, uint32_t* quads) {
  const __m512 vinv = _mm512_set1_ps(inverse);
  const __m512i v128 = _mm512_set1_epi32(128);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  Eigen::Index k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));  // nearest even
    q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quads + k / 4), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, v128)));
  }
  return k;
}

// StepMatrix's int8 copy for whole groups of 16 rows (within one panel) by 4 columns at a time:
// their 16 quads are one 64-byte store. Rounding and clamping as in the plain path, so both give
// the same bytes. Returns the rows done.
BPTT_AVX512 Eigen::Index Avx512PackInt8(const float* w, Eigen::Index M, Eigen::Index K, const float* scales,
                                        int8_t* int8, int32_t* offset) {
  const Eigen::Index quads = (K + 3) / 4;
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), low_byte = _mm512_set1_epi32(0xff);
  Eigen::Index r0 = 0;
  for (; r0 + 16 <= M; r0 += 16) {
    const __m512 scale = _mm512_loadu_ps(scales + r0);
    __m512i sum = _mm512_setzero_si512();
    for (Eigen::Index k4 = 0; k4 < quads; ++k4) {
      __m512i word = _mm512_setzero_si512();
      for (Eigen::Index i = 0; i < 4 && 4 * k4 + i < K; ++i) {
        const __m512 v = _mm512_div_ps(_mm512_loadu_ps(w + (4 * k4 + i) * M + r0), scale);
        __m512i q = _mm512_cvtps_epi32(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        sum = _mm512_add_epi32(sum, q);
        word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(q, low_byte), static_cast<unsigned>(8 * i)));
      }
      _mm512_storeu_si512(int8 + ((r0 / kInt8Rows * quads + k4) * kInt8Rows + r0 % kInt8Rows) * 4, word);
    }
    _mm512_storeu_si512(offset + r0, _mm512_slli_epi32(sum, 7));  // 128 sum
  }
  return r0;
}

// The bfloat16 product for whole groups of four panels (64 rows) from panel p while they end by
// `end`, even and odd pairs into separate sums: eight chains. Returns the next panel.
BPTT_AVX512_BF16 Eigen::Index Avx512Bf16Panels(const uint16_t* base, Eigen::Index panel_size, Eigen::Index pairs,
                                               const uint32_t* words, Eigen::Index p, Eigen::Index end, float* y,
                                               bool accumulate) {
  for (; (p + 4) * kBf16Rows <= end; p += 4) {
    __m512 acc[8];
    for (auto& v : acc) v = _mm512_setzero_ps();
    const uint16_t* w = base + p * panel_size;
    Eigen::Index kp = 0;
    for (; kp + 2 <= pairs; kp += 2) {
      const __m512bh b0 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(words[kp])));
      const __m512bh b1 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(words[kp + 1])));
      for (int j = 0; j < 4; ++j) {
        const uint16_t* wj = w + j * panel_size + kp * kBf16Rows * 2;
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)(_mm512_loadu_si512(wj)), b0);
        acc[4 + j] = _mm512_dpbf16_ps(acc[4 + j], (__m512bh)(_mm512_loadu_si512(wj + kBf16Rows * 2)), b1);
      }
    }
    if (kp < pairs) {
      const __m512bh b0 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(words[kp])));
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)(_mm512_loadu_si512(w + j * panel_size + kp * kBf16Rows * 2)), b0);
    }
    for (int j = 0; j < 4; ++j) {
      float* yj = y + (p + j) * kBf16Rows;
      __m512 sum = _mm512_add_ps(acc[j], acc[4 + j]);
      if (accumulate) sum = _mm512_add_ps(sum, _mm512_loadu_ps(yj));
      _mm512_storeu_ps(yj, sum);
    }
  }
  return p;
}

// The same on AVX2, two panels (32 rows) at a time: a bfloat16 value is the top half of a float,
// so a pair word shifted left by 16 is its even value and masked its odd one; x_k and x_k+1
// likewise, then float FMAs, even and odd into separate sums: eight chains.
BPTT_AVX2 Eigen::Index Avx2Bf16Panels(const uint16_t* base, Eigen::Index panel_size, Eigen::Index pairs,
                                      const uint32_t* words, Eigen::Index p, Eigen::Index end, float* y,
                                      bool accumulate) {
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (; (p + 2) * kBf16Rows <= end; p += 2) {
    __m256 even[4], odd[4];
    for (int j = 0; j < 4; ++j) even[j] = odd[j] = _mm256_setzero_ps();
    const uint16_t* w = base + p * panel_size;
    for (Eigen::Index kp = 0; kp < pairs; ++kp) {
      const __m256i xw = _mm256_set1_epi32(static_cast<int>(words[kp]));
      const __m256 x0 = _mm256_castsi256_ps(_mm256_slli_epi32(xw, 16));
      const __m256 x1 = _mm256_castsi256_ps(_mm256_and_si256(xw, high));
      for (int j = 0; j < 4; ++j) {  // rows 8j.. of the two panels
        const uint16_t* wj = w + (j / 2) * panel_size + kp * kBf16Rows * 2 + (j % 2) * 16;
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wj));
        even[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), x0, even[j]);
        odd[j] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), x1, odd[j]);
      }
    }
    for (int j = 0; j < 4; ++j) {
      float* yj = y + p * kBf16Rows + 8 * j;
      __m256 sum = _mm256_add_ps(even[j], odd[j]);
      if (accumulate) sum = _mm256_add_ps(sum, _mm256_loadu_ps(yj));
      _mm256_storeu_ps(yj, sum);
    }
  }
  return p;
}

// One int8 panel (64 rows from r0, of which those below `rows` are written) with AVX-512 VNNI.
// The panel is one contiguous stream, 256 bytes per four columns; even and odd quads go to
// separate sums: eight chains.
BPTT_AVX512_VNNI void VnniPanel(const int8_t* q, Eigen::Index quads, const uint32_t* words, const int32_t* offset,
                                const float* scale, float a, Eigen::Index r0, Eigen::Index rows, float* y,
                                bool accumulate) {
  __m512i acc[8];
  for (auto& v : acc) v = _mm512_setzero_si512();
  Eigen::Index kq = 0;
  for (; kq + 2 <= quads; kq += 2, q += 2 * kInt8Rows * 4) {
    const __m512i b0 = _mm512_set1_epi32(static_cast<int>(words[kq]));
    const __m512i b1 = _mm512_set1_epi32(static_cast<int>(words[kq + 1]));
    // (A prefetch past the end of the weights is harmless: it never faults.)
    for (int j = 0; j < 8; ++j) _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 64 * j, _MM_HINT_T0);
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm512_dpbusd_epi32(acc[j], b0, _mm512_loadu_si512(q + 64 * j));
      acc[4 + j] = _mm512_dpbusd_epi32(acc[4 + j], b1, _mm512_loadu_si512(q + 256 + 64 * j));
    }
  }
  if (kq < quads) {
    const __m512i b0 = _mm512_set1_epi32(static_cast<int>(words[kq]));
    for (int j = 0; j < 4; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], b0, _mm512_loadu_si512(q + 64 * j));
  }
  const __m512 va = _mm512_set1_ps(a);
  for (int j = 0; j < 4 && r0 + 16 * j < rows; ++j) {
    const Eigen::Index r = r0 + 16 * j;
    const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(acc[j], acc[4 + j]), _mm512_loadu_si512(offset + r));
    __m512 out = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(_mm512_loadu_ps(scale + r), va));
    const __mmask16 live = rows - r >= 16 ? __mmask16(0xffff) : __mmask16((1u << (rows - r)) - 1);
    if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(live, y + r));
    _mm512_mask_storeu_ps(y + r, live, out);
  }
}

// The same on AVX2, to the same int32 sums: with s_k = u_k - 128 (a signed byte),
// sum_k q_rk s_k = sum_k q_rk u_k - 128 sum_k q_rk, which VPMADDUBSW forms from |q_rk| and s_k
// carrying q_rk's sign, 2 * 127 * 127 at most per pair, so nothing saturates; VPMADDWD then sums
// a row's four products. Eight rows per register, eight registers per panel.
BPTT_AVX2 void Avx2Int8Panel(const int8_t* q, Eigen::Index quads, const uint32_t* words, const float* scale, float a,
                             Eigen::Index r0, Eigen::Index rows, float* y, bool accumulate) {
  __m256i acc[8];
  for (auto& v : acc) v = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (Eigen::Index kq = 0; kq < quads; ++kq, q += kInt8Rows * 4) {
    const __m256i s = _mm256_set1_epi32(static_cast<int>(words[kq] ^ 0x80808080u));  // u - 128, signed
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 128, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 192, _MM_HINT_T0);
    for (int j = 0; j < 8; ++j) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * j));
      const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(s, w));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pairs, ones));
    }
  }
  const __m256 va = _mm256_set1_ps(a);
  for (int j = 0; j < 8 && r0 + 8 * j < rows; ++j) {
    const Eigen::Index r = r0 + 8 * j, live = std::min<Eigen::Index>(8, rows - r);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(live)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 out = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[j]), _mm256_mul_ps(_mm256_maskload_ps(scale + r, mask), va));
    if (accumulate) out = _mm256_add_ps(out, _mm256_maskload_ps(y + r, mask));
    _mm256_maskstore_ps(y + r, mask, out);
  }
}

// The block-sparse int8 product for groups of 16 rows [g, end_group): per group its kept blocks,
// four sums in turn (four chains), then as VnniPanel.
BPTT_AVX512_VNNI void VnniSparse(const int8_t* blocks, const uint32_t* quad, const uint32_t* start,
                                 const uint32_t* words, const int32_t* offset, const float* scale, float a,
                                 Eigen::Index g, Eigen::Index end_group, Eigen::Index rows, float* y,
                                 bool accumulate) {
  const __m512 va = _mm512_set1_ps(a);
  for (; g < end_group; ++g) {
    __m512i acc[4];
    for (auto& v : acc) v = _mm512_setzero_si512();
    uint32_t b = start[g];
    const uint32_t last = start[g + 1];
    for (; b + 4 <= last; b += 4) {
      _mm_prefetch(reinterpret_cast<const char*>(blocks + 64 * b) + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(blocks + 64 * b) + kPrefetchBytes + 128, _MM_HINT_T0);
      for (uint32_t j = 0; j < 4; ++j)
        acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_set1_epi32(static_cast<int>(words[quad[b + j]])),
                                     _mm512_loadu_si512(blocks + 64 * (b + j)));
    }
    for (uint32_t j = 0; b < last; ++b, ++j)
      acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_set1_epi32(static_cast<int>(words[quad[b]])),
                                   _mm512_loadu_si512(blocks + 64 * b));
    const Eigen::Index r = 16 * g;
    const __m512i sum = _mm512_sub_epi32(
        _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3])),
        _mm512_loadu_si512(offset + r));
    __m512 out = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(_mm512_loadu_ps(scale + r), va));
    const __mmask16 live = rows - r >= 16 ? __mmask16(0xffff) : __mmask16((1u << (rows - r)) - 1);
    if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(live, y + r));
    _mm512_mask_storeu_ps(y + r, live, out);
  }
}

// One block of Avx2Sparse into the sums of its two halves (rows 0-7, 8-15).
BPTT_AVX2 inline void Avx2SparseBlock(const int8_t* block, uint32_t word, __m256i& lo, __m256i& hi) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i s = _mm256_set1_epi32(static_cast<int>(word ^ 0x80808080u));  // u - 128, signed
  for (int h = 0; h < 2; ++h) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * h));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(s, w));
    __m256i& acc = h == 0 ? lo : hi;
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
  }
}

// The same on AVX2 as Avx2Int8Panel: a block is two registers of eight rows; even and odd
// blocks into separate sums.
BPTT_AVX2 void Avx2Sparse(const int8_t* blocks, const uint32_t* quad, const uint32_t* start, const uint32_t* words,
                          const float* scale, float a, Eigen::Index g, Eigen::Index end_group, Eigen::Index rows,
                          float* y, bool accumulate) {
  const __m256 va = _mm256_set1_ps(a);
  for (; g < end_group; ++g) {
    __m256i acc[4];
    for (auto& v : acc) v = _mm256_setzero_si256();
    uint32_t b = start[g];
    for (; b + 2 <= start[g + 1]; b += 2) {
      Avx2SparseBlock(blocks + 64 * b, words[quad[b]], acc[0], acc[1]);
      Avx2SparseBlock(blocks + 64 * (b + 1), words[quad[b + 1]], acc[2], acc[3]);
    }
    if (b < start[g + 1]) Avx2SparseBlock(blocks + 64 * b, words[quad[b]], acc[0], acc[1]);
    for (int h = 0; h < 2 && 16 * g + 8 * h < rows; ++h) {
      const Eigen::Index r = 16 * g + 8 * h, live = std::min<Eigen::Index>(8, rows - r);
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(live)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const __m256i sum = _mm256_add_epi32(acc[h], acc[2 + h]);
      __m256 out = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(_mm256_maskload_ps(scale + r, mask), va));
      if (accumulate) out = _mm256_add_ps(out, _mm256_maskload_ps(y + r, mask));
      _mm256_maskstore_ps(y + r, mask, out);
    }
  }
}

}  // namespace

void ToBf16Pairs(const float* x, Eigen::Index K, uint32_t* pairs) {
  Eigen::Index k = ThisCpu().avx512_bf16 ? Avx512Bf16Pairs(x, K, pairs) : 0;
  for (; k < K; k += 2) {
    const uint32_t lo = ToBf16(x[k]), hi = k + 1 < K ? ToBf16(x[k + 1]) : 0u;
    pairs[k / 2] = lo | (hi << 16);
  }
}

float ToUint8Quads(const float* x, Eigen::Index K, uint32_t* quads) {
  const Eigen::Map<const Eigen::VectorXf> xv(x, K);
  const Eigen::Index words = (K + 3) / 4;
  const auto fill = [&](uint32_t word) { std::fill(quads, quads + words, word); };
  if (K > 0 && !xv.allFinite()) {
    fill(0x80808080u);
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float top = K > 0 ? xv.cwiseAbs().maxCoeff() : 0.0f;
  const float a = top / 127.0f;
  if (!(a >= std::numeric_limits<float>::min())) {  // zero, or too small to invert
    fill(0x80808080u);
    return 1.0f;
  }
  const float inverse = 1.0f / a;  // finite: a is a normal float
  Eigen::Index k = ThisCpu().avx512 ? Avx512Quads(x, K, inverse, quads) : 0;
  for (; k < words * 4; k += 4) {
    uint32_t word = 0;
    for (Eigen::Index i = 0; i < 4; ++i) {
      const float v = k + i < K ? std::clamp(std::nearbyint(x[k + i] * inverse), -127.0f, 127.0f) : 0.0f;
      word |= static_cast<uint32_t>(static_cast<int>(v) + 128) << (8 * i);
    }
    quads[k / 4] = word;
  }
  return a;
}

StepMatrix::StepMatrix(const Mat<float>& w, Precision precision, bool sparse)
    : w_(&w), precision_(precision), rows_(w.rows()), cols_(w.cols()) {
  const Eigen::Index M = rows_, K = cols_;
  if (precision != Precision::kFloat32 && !w.allFinite())
    throw Error(std::string("weights with a non-finite value have no ") + PrecisionName(precision) + " copy");
  if (precision == Precision::kBfloat16) {
    const Eigen::Index panels = (M + kBf16Rows - 1) / kBf16Rows, pairs = (K + 1) / 2;
    bf16_.assign(static_cast<size_t>(panels * pairs * kBf16Rows * 2), 0);
    // Column by column, as w is stored: a walk along rows would read one value per cache line.
    for (Eigen::Index k = 0; k < K; ++k)
      for (Eigen::Index r = 0; r < M; ++r)
        bf16_[static_cast<size_t>(((r / kBf16Rows * pairs + k / 2) * kBf16Rows + r % kBf16Rows) * 2 + k % 2)] =
            ToBf16(w(r, k));
    words_.assign(static_cast<size_t>(pairs + 16), 0);
  } else if (precision == Precision::kInt8) {
    const Eigen::Index panels = (M + kInt8Rows - 1) / kInt8Rows, quads = (K + 3) / 4;
    int8_.assign(static_cast<size_t>(panels * quads * kInt8Rows * 4), 0);
    scale_.assign(static_cast<size_t>(panels * kInt8Rows), 0.0f);
    offset_.assign(static_cast<size_t>(panels * kInt8Rows), 0);
    // Each row's scale from its largest magnitude; then column by column, as w is stored.
    const Eigen::VectorXf top = w.cwiseAbs().rowwise().maxCoeff();
    for (Eigen::Index r = 0; r < M; ++r) scale_[static_cast<size_t>(r)] = top(r) > 0 ? top(r) / 127.0f : 1.0f;
    Eigen::Index r0 = 0;
    if (ThisCpu().avx512) r0 = Avx512PackInt8(w.data(), M, K, scale_.data(), int8_.data(), offset_.data());
    for (Eigen::Index k = 0; k < K; ++k)
      for (Eigen::Index r = r0; r < M; ++r) {
        const auto q = static_cast<int8_t>(
            std::clamp(std::nearbyint(w(r, k) / scale_[static_cast<size_t>(r)]), -127.0f, 127.0f));
        int8_[static_cast<size_t>(((r / kInt8Rows * quads + k / 4) * kInt8Rows + r % kInt8Rows) * 4 + k % 4)] = q;
        offset_[static_cast<size_t>(r)] += 128 * q;
      }
    words_.assign(static_cast<size_t>(quads + 16), 0);
    if (sparse) MakeSparse();
  }
}

void StepMatrix::MakeSparse() {
  const Eigen::Index quads = (cols_ + 3) / 4, groups = (rows_ + 15) / 16;
  // Group g's block at quad k: 64 bytes inside its panel's stream.
  const auto block = [&](Eigen::Index g, Eigen::Index k) {
    return int8_.data() + ((g / 4 * quads + k) * kInt8Rows + 16 * (g % 4)) * 4;
  };
  const auto zero = [](const int8_t* b) { return std::all_of(b, b + 64, [](int8_t v) { return v == 0; }); };
  size_t kept = 0;
  for (Eigen::Index g = 0; g < groups; ++g)
    for (Eigen::Index k = 0; k < quads; ++k) kept += zero(block(g, k)) ? 0 : 1;
  const auto blocks = static_cast<size_t>(groups * quads);
  if (blocks == 0 || static_cast<double>(blocks - kept) < kSparseFrom * static_cast<double>(blocks)) return;
  int8_blocks_.resize(64 * kept);
  block_quad_.resize(kept);
  block_start_.assign(static_cast<size_t>(groups + 1), 0);
  size_t b = 0;
  for (Eigen::Index g = 0; g < groups; ++g) {
    block_start_[static_cast<size_t>(g)] = static_cast<uint32_t>(b);
    for (Eigen::Index k = 0; k < quads; ++k) {
      const int8_t* q = block(g, k);
      if (zero(q)) continue;
      std::copy(q, q + 64, int8_blocks_.begin() + static_cast<ptrdiff_t>(64 * b));
      block_quad_[b++] = static_cast<uint32_t>(k);
    }
  }
  block_start_[static_cast<size_t>(groups)] = static_cast<uint32_t>(b);
  int8_ = {};
}

size_t StepMatrix::Bytes() const {
  if (sparse()) return int8_blocks_.size() + 4 * (block_quad_.size() + block_start_.size());
  const auto weights = static_cast<size_t>(rows_ * cols_);
  return precision_ == Precision::kFloat32 ? 4 * weights : precision_ == Precision::kBfloat16 ? 2 * weights : weights;
}

void StepMatrix::Multiply(const float* x, float* y, bool accumulate, int threads) {
  float a = 1;
  if (precision_ == Precision::kBfloat16) ToBf16Pairs(x, cols_, words_.data());
  if (precision_ == Precision::kInt8) a = ToUint8Quads(x, cols_, words_.data());
  if (threads <= 1 || rows_ < 4 * kGroup) {
    Rows(x, a, y, accumulate, 0, rows_);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const auto [begin, end] = ThreadRange(rows_, kGroup);
    if (begin < end) Rows(x, a, y, accumulate, begin, end);
  }
}

// Rows [begin, end) of y = W x (+ y); begin is a multiple of kGroup.
void StepMatrix::Rows(const float* x, float a, float* y, bool accumulate, Eigen::Index begin, Eigen::Index end) const {
  if (precision_ == Precision::kFloat32) {
    const Eigen::Map<const Eigen::VectorXf> xv(x, cols_);
    Eigen::Map<Eigen::VectorXf> yv(y + begin, end - begin);
    if (accumulate) yv.noalias() += w_->middleRows(begin, end - begin) * xv;
    else yv.noalias() = w_->middleRows(begin, end - begin) * xv;
    return;
  }
  const uint32_t* words = words_.data();
  if (precision_ == Precision::kBfloat16) {
    const Eigen::Index panels = (end + kBf16Rows - 1) / kBf16Rows, pairs = (cols_ + 1) / 2;
    const uint16_t* base = bf16_.data();
    const Eigen::Index panel_size = pairs * kBf16Rows * 2;
    Eigen::Index p = begin / kBf16Rows;
    if (ThisCpu().avx512_bf16) p = Avx512Bf16Panels(base, panel_size, pairs, words, p, end, y, accumulate);
    else if (ThisCpu().avx2) p = Avx2Bf16Panels(base, panel_size, pairs, words, p, end, y, accumulate);
    for (; p < panels; ++p) {
      const uint16_t* w = base + p * panel_size;
      float acc[kBf16Rows] = {};
      for (Eigen::Index kp = 0; kp < pairs; ++kp) {
        const float x0 = FromBf16(static_cast<uint16_t>(words[kp] & 0xffffu));
        const float x1 = FromBf16(static_cast<uint16_t>(words[kp] >> 16));
        for (Eigen::Index r = 0; r < kBf16Rows; ++r)
          acc[r] += FromBf16(w[(kp * kBf16Rows + r) * 2]) * x0 + FromBf16(w[(kp * kBf16Rows + r) * 2 + 1]) * x1;
      }
      for (Eigen::Index r = 0; r < kBf16Rows && p * kBf16Rows + r < end; ++r)
        y[p * kBf16Rows + r] = (accumulate ? y[p * kBf16Rows + r] : 0.0f) + acc[r];
    }
    return;
  }
  if (sparse()) {
    SparseRows(a, y, accumulate, begin, end);
    return;
  }
  // int8
  const Eigen::Index quads = (cols_ + 3) / 4, panel_size = quads * kInt8Rows * 4;
  for (Eigen::Index r0 = begin; r0 < end; r0 += kInt8Rows) {
    const int8_t* q = int8_.data() + r0 / kInt8Rows * panel_size;
    if (ThisCpu().avx512_vnni) {
      VnniPanel(q, quads, words, offset_.data(), scale_.data(), a, r0, rows_, y, accumulate);
      continue;
    }
    if (ThisCpu().avx2) {
      Avx2Int8Panel(q, quads, words, scale_.data(), a, r0, rows_, y, accumulate);
      continue;
    }
    int32_t acc[kInt8Rows] = {};
    for (Eigen::Index kq = 0; kq < quads; ++kq)
      for (Eigen::Index i = 0; i < 4; ++i) {
        const auto u = static_cast<int32_t>((words[kq] >> (8 * i)) & 0xffu);
        for (Eigen::Index r = 0; r < kInt8Rows; ++r) acc[r] += q[(kq * kInt8Rows + r) * 4 + i] * u;
      }
    for (Eigen::Index r = 0; r < kInt8Rows && r0 + r < rows_; ++r) {
      const auto row = static_cast<size_t>(r0 + r);
      const float v = scale_[row] * a * static_cast<float>(acc[r] - offset_[row]);
      y[row] = (accumulate ? y[row] : 0.0f) + v;
    }
  }
}

}  // namespace bptt

namespace bptt {

// Rows [begin, end) of the block-sparse int8 product; begin is a multiple of 16.
void StepMatrix::SparseRows(float a, float* y, bool accumulate, Eigen::Index begin, Eigen::Index end) const {
  const uint32_t* words = words_.data();
  const Eigen::Index g0 = begin / 16, g1 = (end + 15) / 16;
  if (ThisCpu().avx512_vnni) {
    VnniSparse(int8_blocks_.data(), block_quad_.data(), block_start_.data(), words, offset_.data(), scale_.data(), a,
               g0, g1, rows_, y, accumulate);
    return;
  }
  if (ThisCpu().avx2) {
    Avx2Sparse(int8_blocks_.data(), block_quad_.data(), block_start_.data(), words, scale_.data(), a, g0, g1, rows_,
               y, accumulate);
    return;
  }
  for (Eigen::Index g = g0; g < g1; ++g) {
    int32_t acc[16] = {};
    for (uint32_t b = block_start_[static_cast<size_t>(g)]; b < block_start_[static_cast<size_t>(g) + 1]; ++b) {
      const int8_t* q = int8_blocks_.data() + 64 * static_cast<size_t>(b);
      const uint32_t word = words[block_quad_[b]];
      for (Eigen::Index i = 0; i < 4; ++i) {
        const auto u = static_cast<int32_t>((word >> (8 * i)) & 0xffu);
        for (Eigen::Index r = 0; r < 16; ++r) acc[r] += q[r * 4 + i] * u;
      }
    }
    for (Eigen::Index r = 0; r < 16 && 16 * g + r < rows_; ++r) {
      const auto row = static_cast<size_t>(16 * g + r);
      const float v = scale_[row] * a * static_cast<float>(acc[r] - offset_[row]);
      y[row] = (accumulate ? y[row] : 0.0f) + v;
    }
  }
}

}  // namespace bptt
