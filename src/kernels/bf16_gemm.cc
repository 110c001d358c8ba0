#include "kernels/bf16_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
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

constexpr Index kTile = 16;              // rows of a tile, and float columns of a float tile
constexpr Index kTileK = 32;             // bfloat16 values of k in a row tile
constexpr Index kBlock = kTile * kTileK; // bfloat16 values in a 1 KB tile block
// The bytes of a thread's own operand share that one pass over a K chunk reads again and again.
constexpr Index kChunkBytes = 1 << 20;

// Eight tiles of 16 rows x 64 bytes: 0-3 float sums, 4-5 row tiles of rhs^T, 6-7 pair tiles of lhs.
struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};
constexpr TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

// The tile instructions are inline assembly that does not tell the compiler which memory it reads
// or writes; this orders the plain loads and stores of a scratch tile around them.
inline void MemoryBarrier() { asm volatile("" ::: "memory"); }
inline void LoadTileConfig(const TileConfig& config) { asm volatile("ldtilecfg %0" ::"m"(config)); }
inline void ReleaseTiles() { asm volatile("tilerelease" ::: "memory"); }

// The first `count` lanes of 16 (none for count <= 0).
__mmask16 Mask(Index count) {
  return count >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<Index>(count, 0)) - 1);
}

// The word order that interleaves 16 bfloat16 of one row with 16 of the next: 0, 16, 1, 17, ...
alignas(64) constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                  8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// A 16x16 matrix of 32-bit units (16 registers, row i in r[i]) transposed in place.
__attribute__((target("avx512f"))) void Transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_i32x4(r[i + j], r[i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
  }
}

// Row tile (nb, kb) of rhs^T: out[i][j] = rhs(kb*32 + j, nb*16 + i), zero outside rhs.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void PackRowTile(const StridedMatrix& rhs, Index nb, Index kb,
                                                                         uint16_t* out) {
  const Index K = rhs.rows, N = rhs.cols, k0 = kb * kTileK, n0 = nb * kTile;
  if (rhs.row_stride == 1) {
    for (Index i = 0; i < kTile; ++i) {
      const Index n = n0 + i;
      __m512i v = _mm512_setzero_si512();
      if (n < N) {
        const float* src = rhs.data + n * rhs.col_stride + k0;
        const __m512 lo = _mm512_maskz_loadu_ps(Mask(K - k0), src);
        const __m512 hi = _mm512_maskz_loadu_ps(Mask(K - k0 - 16), src + 16);
        v = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
      }
      _mm512_storeu_si512(out + i * kTileK, v);
    }
  } else {  // rhs is a transpose (col_stride 1): pairs of k for 16 n, then transposed
    const __m512i order = _mm512_load_si512(kInterleave);
    const __mmask16 cols = Mask(N - n0);
    __m512i units[kTile];
    for (Index q = 0; q < kTile; ++q) {
      const Index k = k0 + 2 * q;
      const __m512 x0 = k < K ? _mm512_maskz_loadu_ps(cols, rhs.data + k * rhs.row_stride + n0) : _mm512_setzero_ps();
      const __m512 x1 =
          k + 1 < K ? _mm512_maskz_loadu_ps(cols, rhs.data + (k + 1) * rhs.row_stride + n0) : _mm512_setzero_ps();
      units[q] = _mm512_permutexvar_epi16(order, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0)));
    }
    Transpose16x16(units);
    for (Index i = 0; i < kTile; ++i) _mm512_storeu_si512(out + i * kTileK, units[i]);
  }
}

// Pair tile (mb, kb) of lhs: out[r][2i + e] = lhs(mb*16 + i, kb*32 + 2r + e), zero outside lhs.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void PackPairTile(const StridedMatrix& lhs, Index mb, Index kb,
                                                                          uint16_t* out) {
  const Index M = lhs.rows, K = lhs.cols, k0 = kb * kTileK, m0 = mb * kTile;
  if (lhs.row_stride == 1) {
    const __m512i order = _mm512_load_si512(kInterleave);
    const __mmask16 rows = Mask(M - m0);
    for (Index r = 0; r < kTile; ++r) {
      const Index k = k0 + 2 * r;
      const __m512 x0 = k < K ? _mm512_maskz_loadu_ps(rows, lhs.data + k * lhs.col_stride + m0) : _mm512_setzero_ps();
      const __m512 x1 =
          k + 1 < K ? _mm512_maskz_loadu_ps(rows, lhs.data + (k + 1) * lhs.col_stride + m0) : _mm512_setzero_ps();
      const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0));
      _mm512_storeu_si512(out + r * kTileK, _mm512_permutexvar_epi16(order, both));
    }
  } else {  // lhs is a transpose (col_stride 1): 32 k of each of 16 m, then transposed
    const __mmask16 lo = Mask(K - k0), hi = Mask(K - k0 - 16);
    __m512i units[kTile];
    for (Index i = 0; i < kTile; ++i) {
      units[i] = _mm512_setzero_si512();
      if (m0 + i >= M) continue;
      const float* src = lhs.data + (m0 + i) * lhs.row_stride + k0;
      units[i] = reinterpret_cast<__m512i>(
          _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src)));
    }
    Transpose16x16(units);
    for (Index r = 0; r < kTile; ++r) _mm512_storeu_si512(out + r * kTileK, units[r]);
  }
}

// Float tile (dst columns n0.., rows m0..) into / out of a 16x16 scratch, for tiles at dst's edges.
void ToScratch(const float* dst, Index ld, Index M, Index N, Index m0, Index n0, float* scratch) {
  for (Index i = 0; i < kTile; ++i)
    for (Index j = 0; j < kTile; ++j)
      scratch[i * kTile + j] = n0 + i < N && m0 + j < M ? dst[(n0 + i) * ld + m0 + j] : 0.0f;
}
void FromScratch(const float* scratch, Index ld, Index M, Index N, Index m0, Index n0, float* dst) {
  for (Index i = 0; i < kTile && n0 + i < N; ++i)
    for (Index j = 0; j < kTile && m0 + j < M; ++j) dst[(n0 + i) * ld + m0 + j] = scratch[i * kTile + j];
}

// Float tile i <- dst's 16x16 block of rows m.., columns n.. (zero without accumulate), and
// back; a block at dst's edges (inside[i] false) goes through scratch[i]. Macros, because a tile
// instruction names its tile in the instruction itself. They use dst, ld, M, N, accumulate,
// inside and scratch from the function around them.
#define BPTT_AMX_LOAD_SUM(i, m, n)                                                                  \
  {                                                                                                 \
    inside[i] = (m) + kTile <= M && (n) + kTile <= N;                                               \
    if (!accumulate) {                                                                              \
      _tile_zero(i);                                                                                \
    } else if (inside[i]) {                                                                         \
      _tile_loadd(i, dst + (n) * ld + (m), ld * sizeof(float));                                     \
    } else {                                                                                        \
      ToScratch(dst, ld, M, N, m, n, scratch[i]);                                                   \
      MemoryBarrier();                                                                              \
      _tile_loadd(i, scratch[i], kTile * sizeof(float));                                            \
    }                                                                                               \
  }
#define BPTT_AMX_STORE_SUM(i, m, n)                                                                 \
  {                                                                                                 \
    if (inside[i]) {                                                                                \
      _tile_stored(i, dst + (n) * ld + (m), ld * sizeof(float));                                    \
    } else if ((m) < M && (n) < N) {                                                                \
      _tile_stored(i, scratch[i], kTile * sizeof(float));                                           \
      MemoryBarrier();                                                                              \
      FromScratch(scratch[i], ld, M, N, m, n, dst);                                                 \
    }                                                                                               \
  }

// The 32x32 block of dst at (m0, n0) over k blocks [kb0, kb1): row tiles 2*nb2, 2*nb2 + 1 of rhs^T
// and pair tiles 2*mb2, 2*mb2 + 1 of lhs.
void Block(float* dst, Index ld, Index M, Index N, Index mb2, Index nb2, Index kblocks, Index kb0, Index kb1,
           const uint16_t* row_tiles, const uint16_t* pair_tiles, bool accumulate, float (*scratch)[kTile * kTile]) {
  const Index m0 = mb2 * 2 * kTile, n0 = nb2 * 2 * kTile;
  bool inside[4];
  // Tile 2*a + b holds the columns n0 + 16a.., rows m0 + 16b...
  BPTT_AMX_LOAD_SUM(0, m0, n0)
  BPTT_AMX_LOAD_SUM(1, m0 + kTile, n0)
  BPTT_AMX_LOAD_SUM(2, m0, n0 + kTile)
  BPTT_AMX_LOAD_SUM(3, m0 + kTile, n0 + kTile)
  const uint16_t* r0 = row_tiles + (2 * nb2) * kblocks * kBlock;
  const uint16_t* r1 = r0 + kblocks * kBlock;
  const uint16_t* p0 = pair_tiles + (2 * mb2) * kblocks * kBlock;
  const uint16_t* p1 = p0 + kblocks * kBlock;
  for (Index kb = kb0; kb < kb1; ++kb) {
    _tile_loadd(4, r0 + kb * kBlock, 64);
    _tile_loadd(5, r1 + kb * kBlock, 64);
    _tile_loadd(6, p0 + kb * kBlock, 64);
    _tile_loadd(7, p1 + kb * kBlock, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  BPTT_AMX_STORE_SUM(0, m0, n0)
  BPTT_AMX_STORE_SUM(1, m0 + kTile, n0)
  BPTT_AMX_STORE_SUM(2, m0, n0 + kTile)
  BPTT_AMX_STORE_SUM(3, m0 + kTile, n0 + kTile)
  MemoryBarrier();
}

// Float tiles 0..g-1 (g <= 3) of dst's rows m0 + 16i.., columns n0..: sums over every k block of
// a row tile of X (tile 3; at a, kBlock apart) by pair tiles of W (tiles 4-6; at p, one W row tile
// kblocks * kBlock apart).
void StepGroup(const uint16_t* a, const uint16_t* p, Index kblocks, Index g, float* dst, Index ld, Index M, Index N,
               Index m0, Index n0, bool accumulate, float (*scratch)[kTile * kTile]) {
  bool inside[3] = {false, false, false};
  BPTT_AMX_LOAD_SUM(0, m0, n0)
  if (g > 1) BPTT_AMX_LOAD_SUM(1, m0 + kTile, n0)
  if (g > 2) BPTT_AMX_LOAD_SUM(2, m0 + 2 * kTile, n0)
  const Index stride = kblocks * kBlock;  // from one row tile of W to the next
  if (g == 3) {
    for (Index kb = 0; kb < kblocks; ++kb) {
      _tile_loadd(3, a + kb * kBlock, 64);
      _tile_loadd(4, p + kb * kBlock, 64);
      _tile_loadd(5, p + stride + kb * kBlock, 64);
      _tile_loadd(6, p + 2 * stride + kb * kBlock, 64);
      _tile_dpbf16ps(0, 3, 4);
      _tile_dpbf16ps(1, 3, 5);
      _tile_dpbf16ps(2, 3, 6);
    }
  } else {
    for (Index kb = 0; kb < kblocks; ++kb) {
      _tile_loadd(3, a + kb * kBlock, 64);
      _tile_loadd(4, p + kb * kBlock, 64);
      _tile_dpbf16ps(0, 3, 4);
      if (g > 1) {
        _tile_loadd(5, p + stride + kb * kBlock, 64);
        _tile_dpbf16ps(1, 3, 5);
      }
    }
  }
  BPTT_AMX_STORE_SUM(0, m0, n0)
  if (g > 1) BPTT_AMX_STORE_SUM(1, m0 + kTile, n0)
  if (g > 2) BPTT_AMX_STORE_SUM(2, m0 + 2 * kTile, n0)
  MemoryBarrier();
}

// ---------------------------------------------------------------------------- AVX-512 BF16

constexpr Index kDotPanels = 3;  // pair-tile rows (of 16 rows each) in one kernel call
constexpr Index kDotCols = 8;    // columns in one kernel call
// The k blocks one call of the step product's kernel covers: the 3 pair-tile rows' share (24 KB)
// stays in L1 while the two 8-column halves of a row tile read it.
constexpr Index kStepChunk = 8;

// C rows [0, 16 G) x columns [0, NR), of which the first `rows` and `cols` are written, = (with
// `load`: C +) G pair-tile rows of lhs (the first at a, the next a_panel values on) times NR
// columns of row tiles (column j of a k block at b + 32 j), over `kblocks` k blocks (each kBlock
// values on in both). Per k pair: G loads of 16 rows' pairs, NR broadcast column pairs, G * NR
// VDPBF16PS into as many registers of float sums.
template <int G, int NR>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void DotKernel(const uint16_t* a, Index a_panel,
                                                                       const uint16_t* b, Index kblocks, float* c,
                                                                       Index ldc, Index rows, Index cols, bool load) {
  __m512 acc[G][NR];
  __mmask16 live[G];
  for (int g = 0; g < G; ++g) live[g] = Mask(rows - kTile * g);
  for (int j = 0; j < NR; ++j)
    for (int g = 0; g < G; ++g)
      acc[g][j] = load && j < cols ? _mm512_maskz_loadu_ps(live[g], c + j * ldc + kTile * g) : _mm512_setzero_ps();
  for (Index kb = 0; kb < kblocks; ++kb, a += kBlock, b += kBlock) {
#pragma GCC unroll 4
    for (int r = 0; r < kTile; ++r) {
      __m512bh av[G];
      for (int g = 0; g < G; ++g)
        av[g] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(a + g * a_panel + r * kTileK));
      for (int j = 0; j < NR; ++j) {
        int32_t pair;
        std::memcpy(&pair, b + j * kTileK + 2 * r, sizeof pair);
        const __m512bh bw = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
        for (int g = 0; g < G; ++g) acc[g][j] = _mm512_dpbf16_ps(acc[g][j], av[g], bw);
      }
    }
  }
  for (int j = 0; j < NR; ++j) {
    if (j >= cols) break;
    for (int g = 0; g < G; ++g) _mm512_mask_storeu_ps(c + j * ldc + kTile * g, live[g], acc[g][j]);
  }
}

// The same for `panels` (1 to kDotPanels) pair-tile rows and the first `cols` (up to 16) columns
// of a row tile, in halves of kDotCols.
void DotTile(const uint16_t* a, Index a_panel, Index panels, const uint16_t* b, Index kblocks, float* c, Index ldc,
             Index rows, Index cols, bool load) {
  for (Index j0 = 0; j0 < cols; j0 += kDotCols) {
    const Index n = std::min(kDotCols, cols - j0);
    const uint16_t* bj = b + j0 * kTileK;
    float* cj = c + j0 * ldc;
    if (panels == 3) DotKernel<3, kDotCols>(a, a_panel, bj, kblocks, cj, ldc, rows, n, load);
    else if (panels == 2) DotKernel<2, kDotCols>(a, a_panel, bj, kblocks, cj, ldc, rows, n, load);
    else DotKernel<1, kDotCols>(a, a_panel, bj, kblocks, cj, ldc, rows, n, load);
  }
}

}  // namespace

void PackBf16Pairs(const StridedMatrix& w, std::vector<uint16_t>& tiles) {
  const Index mtiles = (w.rows + kTile - 1) / kTile, kblocks = (w.cols + kTileK - 1) / kTileK;
  tiles.resize(static_cast<size_t>(mtiles * kblocks * kBlock));
  for (Index t = 0; t < mtiles * kblocks; ++t) {  // along w's contiguous dimension, as in AmxProduct
    const Index mb = w.row_stride == 1 ? t % mtiles : t / kblocks, kb = w.row_stride == 1 ? t / mtiles : t % kblocks;
    PackPairTile(w, mb, kb, tiles.data() + (mb * kblocks + kb) * kBlock);
  }
}

size_t Bf16PairTilesBytes(Index M, Index K) {
  const Index mtiles = (M + kTile - 1) / kTile, kblocks = (K + kTileK - 1) / kTileK;
  return static_cast<size_t>(mtiles * kblocks * kBlock) * sizeof(uint16_t);
}

OperandBytes Bf16ProductOperandBytes(Index M, Index N, Index K) {
  if (K == 0) return {};
  const Index kblocks = (K + kTileK - 1) / kTileK;
  // AMX rounds whole pairs of tiles (AmxProduct), AVX-512 BF16 single tiles (Avx512Bf16Product).
  const Index rows = ThisCpu().amx ? 2 * kTile : kTile;
  const Index mtiles = (M + rows - 1) / rows * (rows / kTile), ntiles = (N + rows - 1) / rows * (rows / kTile);
  return {static_cast<size_t>(mtiles * kblocks * kBlock) * sizeof(uint16_t),
          static_cast<size_t>(ntiles * kblocks * kBlock) * sizeof(uint16_t)};
}

void AmxStepProduct(const uint16_t* tiles, Index M, Index K, Index row_begin, Index row_end, const float* x,
                    Index ldx, Index cols, float* c, Index ldc, bool accumulate) {
  if (row_begin >= row_end || cols <= 0) return;
  const Index kblocks = (K + kTileK - 1) / kTileK, ntiles = (cols + kTile - 1) / kTile;
  thread_local std::vector<uint16_t> row_tiles;
  SizeOperandBuffer(row_tiles, static_cast<size_t>(ntiles * kblocks * kBlock));
  const StridedMatrix xs{x, K, cols, 1, ldx};
  for (Index t = 0; t < ntiles * kblocks; ++t) PackRowTile(xs, t / kblocks, t % kblocks, row_tiles.data() + t * kBlock);
  LoadTileConfig(kTileConfig);
  alignas(64) float scratch[3][kTile * kTile];
  const Index mt_begin = row_begin / kTile, mt_end = (row_end + kTile - 1) / kTile;
  for (Index nb = 0; nb < ntiles; ++nb)
    for (Index mt = mt_begin; mt < mt_end; mt += 3)
      StepGroup(row_tiles.data() + nb * kblocks * kBlock, tiles + mt * kblocks * kBlock, kblocks,
                std::min<Index>(3, mt_end - mt), c, ldc, std::min(M, row_end), cols, mt * kTile, nb * kTile,
                accumulate, scratch);
  ReleaseTiles();
}

void AmxProduct(float* dst, Index ld, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                int threads) {
  const Index M = lhs.rows, N = rhs.cols, K = lhs.cols;
  if (K == 0) {  // an empty sum
    if (!accumulate)
      for (Index n = 0; n < N; ++n) std::fill(dst + n * ld, dst + n * ld + M, 0.0f);
    return;
  }
  const Index kblocks = (K + kTileK - 1) / kTileK;
  const Index mpairs = (M + 2 * kTile - 1) / (2 * kTile), npairs = (N + 2 * kTile - 1) / (2 * kTile);
  // The rounded operands, reused from call to call by the calling thread.
  thread_local std::vector<uint16_t> row_tiles, pair_tiles;
  SizeOperandBuffer(row_tiles, static_cast<size_t>(2 * npairs * kblocks * kBlock));
  SizeOperandBuffer(pair_tiles, static_cast<size_t>(2 * mpairs * kblocks * kBlock));
  uint16_t* const rt = row_tiles.data();
  uint16_t* const pt = pair_tiles.data();
  const Index row_count = 2 * npairs * kblocks, pair_count = 2 * mpairs * kblocks;
  // Split dst by whichever of its dimensions has more 32-wide blocks.
  const bool by_columns = npairs >= mpairs;
#pragma omp parallel num_threads(threads)
  {
    // Each operand is read along its contiguous dimension: the tiles of one k block for every
    // row (or column) in turn when rows (columns) are contiguous, else every k block of one.
    const auto [r_begin, r_end] = ThreadRange(row_count);
    for (Index t = r_begin; t < r_end; ++t) {
      const Index nb = rhs.row_stride == 1 ? t / kblocks : t % (2 * npairs);
      const Index kb = rhs.row_stride == 1 ? t % kblocks : t / (2 * npairs);
      PackRowTile(rhs, nb, kb, rt + (nb * kblocks + kb) * kBlock);
    }
    const auto [p_begin, p_end] = ThreadRange(pair_count);
    for (Index t = p_begin; t < p_end; ++t) {
      const Index mb = lhs.row_stride == 1 ? t % (2 * mpairs) : t / kblocks;
      const Index kb = lhs.row_stride == 1 ? t / (2 * mpairs) : t % kblocks;
      PackPairTile(lhs, mb, kb, pt + (mb * kblocks + kb) * kBlock);
    }
#pragma omp barrier
    LoadTileConfig(kTileConfig);
    alignas(64) float scratch[4][kTile * kTile];
    // The thread's own 32-wide blocks are the inner loop, so its share of their operand is read
    // again for every block of the other operand: K runs in chunks that keep that share within
    // kChunkBytes (in L2); each chunk after the first adds to the float sums left in dst.
    const Index own = by_columns ? npairs : mpairs, other = by_columns ? mpairs : npairs;
    const auto [begin, end] = ThreadRange(own);
    const Index own_bytes = std::max<Index>(1, (end - begin) * 2 * kTile * kTileK * 2);  // per k block
    const Index chunk = std::clamp<Index>(kChunkBytes / own_bytes, 1, kblocks);
    for (Index kb0 = 0; kb0 < kblocks; kb0 += chunk) {
      const Index kb1 = std::min(kblocks, kb0 + chunk);
      for (Index o = 0; o < other; ++o)
        for (Index a = begin; a < end; ++a)
          Block(dst, ld, M, N, by_columns ? o : a, by_columns ? a : o, kblocks, kb0, kb1, rt, pt,
                accumulate || kb0 > 0, scratch);
    }
    ReleaseTiles();
  }
}

void Avx512Bf16Product(float* dst, Index ld, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                       int threads) {
  const Index M = lhs.rows, N = rhs.cols, K = lhs.cols;
  if (K == 0) {  // an empty sum
    if (!accumulate)
      for (Index n = 0; n < N; ++n) std::fill(dst + n * ld, dst + n * ld + M, 0.0f);
    return;
  }
  const Index kblocks = (K + kTileK - 1) / kTileK;
  const Index mtiles = (M + kTile - 1) / kTile, ntiles = (N + kTile - 1) / kTile;
  const Index mgroups = (mtiles + kDotPanels - 1) / kDotPanels;
  thread_local std::vector<uint16_t> row_tiles, pair_tiles;
  SizeOperandBuffer(row_tiles, static_cast<size_t>(ntiles * kblocks * kBlock));
  SizeOperandBuffer(pair_tiles, static_cast<size_t>(mtiles * kblocks * kBlock));
  uint16_t* const rt = row_tiles.data();
  uint16_t* const pt = pair_tiles.data();
  // Split dst by whichever has more: 16-column tiles or groups of kDotPanels 16-row tiles.
  const bool by_columns = ntiles >= mgroups;
#pragma omp parallel num_threads(threads)
  {
    // Each operand is read along its contiguous dimension, as in AmxProduct.
    const auto [r_begin, r_end] = ThreadRange(ntiles * kblocks);
    for (Index t = r_begin; t < r_end; ++t) {
      const Index nb = rhs.row_stride == 1 ? t / kblocks : t % ntiles;
      const Index kb = rhs.row_stride == 1 ? t % kblocks : t / ntiles;
      PackRowTile(rhs, nb, kb, rt + (nb * kblocks + kb) * kBlock);
    }
    const auto [p_begin, p_end] = ThreadRange(mtiles * kblocks);
    for (Index t = p_begin; t < p_end; ++t) {
      const Index mb = lhs.row_stride == 1 ? t % mtiles : t / kblocks;
      const Index kb = lhs.row_stride == 1 ? t / mtiles : t % kblocks;
      PackPairTile(lhs, mb, kb, pt + (mb * kblocks + kb) * kBlock);
    }
#pragma omp barrier
    // The thread's own blocks are the inner loop; K runs in chunks that keep the thread's share
    // of their operand within kChunkBytes (in L2), as in AmxProduct.
    const Index own = by_columns ? ntiles : mgroups, other = by_columns ? mgroups : ntiles;
    const auto [begin, end] = ThreadRange(own);
    const Index unit_bytes = by_columns ? kTile * kTileK * 2 : kDotPanels * kTile * kTileK * 2;  // per k block
    const Index chunk = std::clamp<Index>(kChunkBytes / std::max<Index>(1, (end - begin) * unit_bytes), 1, kblocks);
    for (Index kb0 = 0; kb0 < kblocks; kb0 += chunk) {
      const Index kb1 = std::min(kblocks, kb0 + chunk);
      for (Index o = 0; o < other; ++o)
        for (Index u = begin; u < end; ++u) {
          const Index mg = by_columns ? o : u, nt = by_columns ? u : o;
          const Index m0 = mg * kDotPanels * kTile, n0 = nt * kTile;
          DotTile(pt + (mg * kDotPanels * kblocks + kb0) * kBlock, kblocks * kBlock,
                  std::min(kDotPanels, mtiles - mg * kDotPanels), rt + (nt * kblocks + kb0) * kBlock, kb1 - kb0,
                  dst + n0 * ld + m0, ld, std::min(kDotPanels * kTile, M - m0), std::min(kTile, N - n0),
                  accumulate || kb0 > 0);
        }
    }
  }
}

void Avx512Bf16StepProduct(const uint16_t* tiles, Index M, Index K, Index row_begin, Index row_end, const float* x,
                           Index ldx, Index cols, float* c, Index ldc, bool accumulate) {
  if (row_begin >= row_end || cols <= 0) return;
  const Index kblocks = (K + kTileK - 1) / kTileK, ntiles = (cols + kTile - 1) / kTile;
  thread_local std::vector<uint16_t> row_tiles;
  SizeOperandBuffer(row_tiles, static_cast<size_t>(ntiles * kblocks * kBlock));
  const StridedMatrix xs{x, K, cols, 1, ldx};
  for (Index t = 0; t < ntiles * kblocks; ++t) PackRowTile(xs, t / kblocks, t % kblocks, row_tiles.data() + t * kBlock);
  const Index end = std::min(M, row_end);
  const Index mt_begin = row_begin / kTile, mt_end = (end + kTile - 1) / kTile;
  for (Index nt = 0; nt < ntiles; ++nt)
    for (Index mt = mt_begin; mt < mt_end; mt += kDotPanels)
      for (Index kb0 = 0; kb0 < kblocks; kb0 += kStepChunk)
        DotTile(tiles + (mt * kblocks + kb0) * kBlock, kblocks * kBlock, std::min(kDotPanels, mt_end - mt),
                row_tiles.data() + (nt * kblocks + kb0) * kBlock, std::min(kStepChunk, kblocks - kb0),
                c + nt * kTile * ldc + mt * kTile, ldc, std::min(kDotPanels * kTile, end - mt * kTile),
                std::min(kTile, cols - nt * kTile), accumulate || kb0 > 0);
}

bool Bf16ProductsHere() { return ThisCpu().avx512_bf16; }

void Bf16Product(float* dst, Index ld, const StridedMatrix& lhs, const StridedMatrix& rhs, bool accumulate,
                 int threads) {
  if (ThisCpu().amx) AmxProduct(dst, ld, lhs, rhs, accumulate, threads);
  else Avx512Bf16Product(dst, ld, lhs, rhs, accumulate, threads);
}

void Bf16StepProduct(const uint16_t* tiles, Index M, Index K, Index row_begin, Index row_end, const float* x,
                     Index ldx, Index cols, float* c, Index ldc, bool accumulate) {
  if (ThisCpu().amx) AmxStepProduct(tiles, M, K, row_begin, row_end, x, ldx, cols, c, ldc, accumulate);
  else Avx512Bf16StepProduct(tiles, M, K, row_begin, row_end, x, ldx, cols, c, ldc, accumulate);
}

}  // namespace bptt
