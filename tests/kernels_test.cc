// The kernels of src/kernels/ against plain arithmetic in long double, at sizes that take every
// path they have, with the kernels the CPU runs (chosen at run time, kernels/cpu.h; ctest runs
// the suite once more capped at AVX2 and once at the plain C++ kernels with BPTT_MAX_ISA), in
// whichever build this is (Eigen's assertions in a Debug build):
//
//   packed_gemm.h  PackPanels / PackTransposedPanels (layout and zero padding) and PackedProduct
//                  (hence PanelProduct and its kernel) for float and double: M across the 32-row
//                  panels and their masked row tails, K from 1 up and across the float kernel's
//                  chunks of 128, N through the 8-column loop and every 1..7-column tail,
//                  accumulate on and off, leading dimensions larger than the rows (padding must be
//                  neither read nor written).
//   gemv.h         StepMatrix::Multiply in fp32, bf16 and int8: M across the 16-row bf16 and
//                  64-row int8 panels, odd and even K, 1 and 2 threads (the split needs M >= 256),
//                  accumulate on and off; on grid inputs that every precision represents exactly
//                  (the result must then be exact), and on random inputs within the bound of
//                  each precision's rounding; block-sparse int8 against dense int8, bit for
//                  bit, groups of rows keeping 0 to 9 blocks. The vector quantisers ToBf16, ToBf16Pairs and
//                  ToUint8Quads on ties, NaN, infinities, huge, tiny and zero vectors.
//   sgemm.h        FloatProduct (where the CPU has AVX2; skipped elsewhere) in whichever kernel is
//                  in force (ctest runs this suite again with BPTT_MAX_ISA=avx2 and =portable):
//                  M and N across the register blocks (32 x 12 on AVX-512, 16 x 6 on AVX2) and
//                  their tails, K across the 256-wide chunks, rows across the 16-panel blocks,
//                  both layouts of each operand, accumulate on and off, 1 to 3 threads, either
//                  dimension split between threads; against long double, and bit for bit across
//                  thread counts.
//   bf16_gemm.h    Bf16Product's engines, each where the CPU has it (skipped elsewhere): AMX
//                  and AVX-512 BF16, M and N across the 16-wide tiles, their 32-wide pairs, the
//                  48-row groups and every kind of tail, K across the 32-wide k blocks (and
//                  K = 0), both layouts of each operand (a matrix and a transpose), accumulate on
//                  and off, 1 to 3 threads, K split into chunks, either dimension split between
//                  threads, and a leading dimension larger than M; against the bfloat16-rounded
//                  operands (ToBf16) summed in long double, and bit for bit across thread counts.
//                  PackBf16Pairs + each engine's step product likewise: W and W^T, rows across
//                  the groups of three tiles and their tails, a range of rows (the others
//                  untouched), columns across several 16-column tiles, K across the chunks of
//                  the AVX-512 kernel.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "bptt/rng.h"
#include "kernels/bf16_gemm.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/packed_gemm.h"
#include "kernels/sgemm.h"

namespace bptt {
namespace {

using Real = long double;  // the reference: 64-bit significand, so its own rounding is negligible

template <typename S>
Mat<S> RandomMat(Eigen::Index rows, Eigen::Index cols, Rng& rng, double lo = -1, double hi = 1) {
  Mat<S> m(rows, cols);
  for (Eigen::Index k = 0; k < m.size(); ++k) m(k) = static_cast<S>(rng.Uniform(lo, hi));
  return m;
}

// ------------------------------------------------------------------------------ packed_gemm.h

constexpr Eigen::Index kM[] = {1, 5, 31, 32, 33, 64, 70, 280};
constexpr Eigen::Index kK[] = {1, 7, 31, 70, 128, 300};  // 300: the float kernel's chunks of 128
constexpr Eigen::Index kN[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 16, 17};

TEST(PackPanels, HoldsEveryRowOncePaddedWithZeros) {
  Rng rng(1);
  for (const Eigen::Index M : kM)
    for (const Eigen::Index K : kK) {
      const Mat<float> w = RandomMat<float>(M, K, rng);
      Mat<float> packed, packed_t;
      PackPanels(w, packed);
      ASSERT_EQ(packed.rows(), kPanelRows);
      ASSERT_EQ(packed.cols(), PanelBlocks(M) * K);
      for (Eigen::Index q = 0; q < PanelBlocks(M); ++q)
        for (Eigen::Index r = 0; r < kPanelRows; ++r)
          for (Eigen::Index k = 0; k < K; ++k) {
            const Eigen::Index row = q * kPanelRows + r;
            ASSERT_EQ(packed(r, q * K + k), row < M ? w(row, k) : 0.0f) << M << "x" << K << " " << row << "," << k;
          }
      // W^T (K, M): panels over the K columns of W, depth M.
      PackTransposedPanels(w, packed_t);
      ASSERT_EQ(packed_t.cols(), PanelBlocks(K) * M);
      for (Eigen::Index q = 0; q < PanelBlocks(K); ++q)
        for (Eigen::Index r = 0; r < kPanelRows; ++r)
          for (Eigen::Index m = 0; m < M; ++m) {
            const Eigen::Index col = q * kPanelRows + r;
            ASSERT_EQ(packed_t(r, q * M + m), col < K ? w(m, col) : 0.0f) << M << "x" << K;
          }
    }
}

// C (M, N) (+)= A (M, K) X (K, N) through the packed kernel, A = W or, transposed, A = W^T for
// W (K, M), against a long double reference. X and C live in buffers with leading dimensions
// K + 3 and M + 5 and one column more than used; the padding of X holds NaN (a read of it would
// poison the result) and that of C a sentinel that must survive.
//
// Tolerance: each output sums K products in order (with FMA one rounding per step, without two),
// then adds the old value when accumulating. The recursive-summation bound (Higham, Accuracy and
// Stability, 3.1) gives |error| <= gamma_{K+2} (|c| + sum_k |a_k x_k|), gamma_n = n u / (1 - n u),
// u = eps / 2. We allow (K + 2) eps (|c| + sum_k |a_k x_k|): twice that, and still ~1e-5
// relative for float at K = 128, far below what a wrong element or a lost column would cost.
template <typename S>
void CheckPackedProduct(bool transposed, Eigen::Index M, Eigen::Index K, Eigen::Index N, bool accumulate, Rng& rng,
                        double& worst) {
  SCOPED_TRACE(std::string(transposed ? "W^T " : "W ") + std::to_string(M) + "x" + std::to_string(K) + " · " +
               std::to_string(K) + "x" + std::to_string(N) + (accumulate ? " accumulate" : ""));
  const Mat<S> w = transposed ? RandomMat<S>(K, M, rng) : RandomMat<S>(M, K, rng);
  const Mat<S> a = transposed ? Mat<S>(w.transpose()) : w;  // (M, K)
  Mat<S> packed;
  if (transposed) PackTransposedPanels(w, packed);
  else PackPanels(w, packed);

  const Eigen::Index ldx = K + 3, ldc = M + 5;
  const S nan = std::numeric_limits<S>::quiet_NaN(), sentinel = S(-12345.5);
  Mat<S> x = Mat<S>::Constant(ldx, N + 1, nan);
  x.topLeftCorner(K, N) = RandomMat<S>(K, N, rng);
  Mat<S> c = Mat<S>::Constant(ldc, N + 1, sentinel);
  if (accumulate) c.topLeftCorner(M, N) = RandomMat<S>(M, N, rng);
  else c.topLeftCorner(M, N).setConstant(nan);  // must be overwritten, not read
  const Mat<S> c0 = c;

  PackedProduct(packed, M, K, x.data(), ldx, N, c.data(), ldc, accumulate);

  const double eps = std::numeric_limits<S>::epsilon();
  for (Eigen::Index j = 0; j <= N; ++j)
    for (Eigen::Index r = 0; r < ldc; ++r) {
      if (r >= M || j == N) {
        ASSERT_EQ(c(r, j), sentinel) << "padding written at " << r << "," << j;
        continue;
      }
      Real want = accumulate ? Real(c0(r, j)) : 0, magnitude = accumulate ? std::abs(Real(c0(r, j))) : 0;
      for (Eigen::Index k = 0; k < K; ++k) {
        want += Real(a(r, k)) * Real(x(k, j));
        magnitude += std::abs(Real(a(r, k)) * Real(x(k, j)));
      }
      const double bound = static_cast<double>((K + 2) * eps * magnitude);
      const double err = static_cast<double>(std::abs(Real(c(r, j)) - want));
      ASSERT_LE(err, bound) << "element " << r << "," << j << ": " << c(r, j) << " vs " << static_cast<double>(want);
      worst = std::max(worst, err / static_cast<double>(magnitude));
    }
}

template <typename S>
void CheckAllPackedProducts(bool transposed) {
  Rng rng(transposed ? 3 : 2);
  double worst = 0;
  for (const Eigen::Index M : kM)
    for (const Eigen::Index K : kK)
      for (const Eigen::Index N : kN)
        for (const bool accumulate : {false, true}) {
          CheckPackedProduct<S>(transposed, M, K, N, accumulate, rng, worst);
          if (::testing::Test::HasFatalFailure()) return;
        }
  std::printf("[  error   ] %s%s: max |error| / sum|a x| = %.3g (%.2f eps)\n",
              std::is_same_v<S, float> ? "float" : "double", transposed ? " transposed" : "", worst,
              worst / std::numeric_limits<S>::epsilon());
}

TEST(PackedProduct, FloatMatchesTheProduct) { CheckAllPackedProducts<float>(false); }
TEST(PackedProduct, DoubleMatchesTheProduct) { CheckAllPackedProducts<double>(false); }
TEST(PackedProduct, FloatTransposedMatchesTheProduct) { CheckAllPackedProducts<float>(true); }
TEST(PackedProduct, DoubleTransposedMatchesTheProduct) { CheckAllPackedProducts<double>(true); }

// One panel on its own: only the first `rows` rows of C are written.
TEST(PanelProduct, WritesOnlyTheRowsAskedFor) {
  Rng rng(4);
  const Eigen::Index K = 9, N = 11;
  const Mat<float> w = RandomMat<float>(70, K, rng);
  Mat<float> packed;
  PackPanels(w, packed);
  const Mat<float> x = RandomMat<float>(K, N, rng);
  for (const Eigen::Index rows : {1, 5, 16, 17, 31, 32}) {
    Mat<float> c = Mat<float>::Constant(40, N, 7.0f);
    PanelProduct(packed, 1, K, x.data(), K, N, c.data(), 40, rows, false);
    const Mat<float> want = w.middleRows(32, rows) * x;
    EXPECT_LE((c.topRows(rows) - want).cwiseAbs().maxCoeff(), 1e-5f) << rows;
    EXPECT_TRUE((c.bottomRows(40 - rows).array() == 7.0f).all()) << rows;
  }
}

// ------------------------------------------------------------------------------ gemv.h

constexpr Eigen::Index kStepM[] = {1, 15, 16, 17, 63, 64, 65, 130, 256, 300};
constexpr Eigen::Index kStepK[] = {1, 2, 3, 5, 70, 513};
constexpr Precision kPrecisions[] = {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8};

uint32_t Bits(float x) { return std::bit_cast<uint32_t>(x); }
float FromBits(uint32_t u) { return std::bit_cast<float>(u); }

// Grid inputs: row r of W is s_r q_rk with s_r = 2^-(r mod 5) and integers |q_rk| <= 127, one of
// them +-127; x is 2^-3 v_k with integers |v_k| <= 127, one of them 127. Every precision holds
// these exactly (8 significant bits for bf16; int8 finds s_r and a = 2^-3 exactly, so q and v are
// its bytes), each product and each partial sum is an integer times 2^-(r mod 5 + 3) below 2^24
// of those units (|q v| K <= 127^2 * 513 < 2^23), so float sums them exactly too, as it does
// y_0 + sum when y_0 is on the same grid and small. The result must be exact, bit for bit.
TEST(StepMatrix, IsExactOnGridInputs) {
  Rng rng(5);
  for (const Eigen::Index M : kStepM)
    for (const Eigen::Index K : kStepK) {
      Mat<float> w(M, K);
      for (Eigen::Index r = 0; r < M; ++r) {
        const float s = std::ldexp(1.0f, -static_cast<int>(r % 5));
        for (Eigen::Index k = 0; k < K; ++k) w(r, k) = s * static_cast<float>(static_cast<int>(rng.Below(255)) - 127);
        w(r, static_cast<Eigen::Index>(rng.Below(K))) = s * (rng.Below(2) ? 127.0f : -127.0f);
      }
      Eigen::VectorXf x(K);
      for (Eigen::Index k = 0; k < K; ++k) x(k) = 0.125f * static_cast<float>(static_cast<int>(rng.Below(255)) - 127);
      x(static_cast<Eigen::Index>(rng.Below(K))) = 0.125f * 127;
      Eigen::VectorXf y0(M);
      for (Eigen::Index r = 0; r < M; ++r)
        y0(r) = std::ldexp(static_cast<float>(static_cast<int>(rng.Below(2001)) - 1000), -static_cast<int>(r % 5) - 3);
      for (const Precision precision : kPrecisions) {
        StepMatrix sm(w, precision);
        for (const int threads : {1, 2})
          for (const bool accumulate : {false, true}) {
            SCOPED_TRACE(std::string(PrecisionName(precision)) + " " + std::to_string(M) + "x" + std::to_string(K) +
                         " threads " + std::to_string(threads) + (accumulate ? " accumulate" : ""));
            Eigen::VectorXf y = accumulate ? y0 : Eigen::VectorXf::Constant(M, std::nanf(""));
            sm.Multiply(x.data(), y.data(), accumulate, threads);
            for (Eigen::Index r = 0; r < M; ++r) {
              double want = accumulate ? y0(r) : 0.0;
              for (Eigen::Index k = 0; k < K; ++k) want += static_cast<double>(w(r, k)) * x(k);
              ASSERT_EQ(static_cast<double>(y(r)), want) << "row " << r;
            }
          }
      }
    }
}

// Random inputs, bounds from each precision's rounding, with p_k = |w_rk x_k|, P = sum_k p_k and
// c = |y_0| when accumulating (u = 2^-24 the float unit roundoff, eps = 2u):
//   fp32  |error| <= (K + 2) eps (c + P)                         summation, as for PackedProduct
//   bf16  w and x each rounded to 8 significant bits, relative error <= 2^-8 each, so
//         |w^ x^ - w x| <= (2^-7 + 2^-16) p_k; the bf16 products are exact in float and their
//         sum rounds as above:
//         |error| <= (2^-7 + 2^-16) P + (K + 2) eps (c + 1.01 P)
//   int8  w_rk = s_r q_rk + d_rk with |d_rk| <= s_r / 2, s_r = max_k |w_rk| / 127, and
//         x_k = a (u_k - 128) + e_k with |e_k| <= a / 2, a = max_k |x_k| / 127, so
//         |w^ x^ - w x| <= |d| |x^| + |w| |e| <= (s_r / 2)(|x_k| + a / 2) + |w_rk| a / 2 = b_k.
//         The integer sum is exact; converting it and scaling by s_r a rounds three times:
//         |error| <= 1.001 sum_k b_k + 4 eps (c + P + sum_k b_k)
//         (1.001: s_r, a and x_k / a are themselves computed in float).
struct Bound {
  double fp32, bf16, int8;
};

Bound Bounds(const Mat<float>& w, const Eigen::VectorXf& x, Eigen::Index r, double c) {
  const double eps = std::numeric_limits<float>::epsilon(), K = static_cast<double>(x.size());
  const double s = w.row(r).cwiseAbs().maxCoeff() / 127.0, a = x.cwiseAbs().maxCoeff() / 127.0;
  double P = 0, Q = 0;
  for (Eigen::Index k = 0; k < x.size(); ++k) {
    const double wk = std::abs(w(r, k)), xk = std::abs(x(k));
    P += wk * xk;
    Q += s / 2 * (xk + a / 2) + wk * a / 2;
  }
  return {(K + 2) * eps * (c + P), (0x1p-7 + 0x1p-16) * P + (K + 2) * eps * (c + 1.01 * P),
          1.001 * Q + 4 * eps * (c + P + Q)};
}

double BoundOf(const Bound& b, Precision precision) {
  return precision == Precision::kFloat32 ? b.fp32 : precision == Precision::kBfloat16 ? b.bf16 : b.int8;
}

TEST(StepMatrix, IsWithinTheQuantisationBoundOnRandomInputs) {
  Rng rng(6);
  double worst[3] = {0, 0, 0};  // error / bound
  for (const Eigen::Index M : kStepM)
    for (const Eigen::Index K : kStepK) {
      Mat<float> w = RandomMat<float>(M, K, rng);
      for (Eigen::Index r = 0; r < M; ++r) w.row(r) *= std::ldexp(1.0f, static_cast<int>(r % 7) - 3);  // row scales
      const Eigen::VectorXf x = RandomMat<float>(K, 1, rng);
      const Eigen::VectorXf y0 = RandomMat<float>(M, 1, rng, -4, 4);
      for (const Precision precision : kPrecisions) {
        StepMatrix sm(w, precision);
        Eigen::VectorXf y1;
        for (const int threads : {1, 2})
          for (const bool accumulate : {false, true}) {
            SCOPED_TRACE(std::string(PrecisionName(precision)) + " " + std::to_string(M) + "x" + std::to_string(K) +
                         " threads " + std::to_string(threads) + (accumulate ? " accumulate" : ""));
            Eigen::VectorXf y = accumulate ? y0 : Eigen::VectorXf::Constant(M, std::nanf(""));
            sm.Multiply(x.data(), y.data(), accumulate, threads);
            for (Eigen::Index r = 0; r < M; ++r) {
              Real want = accumulate ? Real(y0(r)) : 0;
              for (Eigen::Index k = 0; k < K; ++k) want += Real(w(r, k)) * Real(x(k));
              const double bound = BoundOf(Bounds(w, x, r, accumulate ? std::abs(y0(r)) : 0.0), precision);
              const double err = static_cast<double>(std::abs(Real(y(r)) - want));
              ASSERT_LE(err, bound) << "row " << r << ": " << y(r) << " vs " << static_cast<double>(want);
              double& wst = worst[static_cast<int>(precision)];
              wst = std::max(wst, err / bound);
            }
            // Rows are split between threads in whole 64-row groups, each computed the same way.
            if (precision != Precision::kFloat32 && !accumulate) {
              if (threads == 1) y1 = y;
              else EXPECT_EQ(y, y1) << "the thread count changed the result";
            }
          }
      }
    }
  for (const Precision p : kPrecisions)
    std::printf("[  error   ] %s: max error / bound = %.3g\n", PrecisionName(p), worst[static_cast<int>(p)]);
}

// Block-sparse int8 (a matrix with many zero 16x4 blocks): the same outputs as the dense int8
// product, bit for bit, in every kernel (zero blocks add nothing to the int32 sums). Zero blocks
// drawn at several densities, including groups of 16 rows with no block kept and with 1 to 9
// (across the kernels' runs of four and two blocks), rows and columns ending inside a block,
// 1 and 2 threads; and a matrix with too few zero blocks stays dense.
TEST(StepMatrix, BlockSparseInt8GivesTheDenseInt8Outputs) {
  Rng rng(21);
  for (const Eigen::Index M : {Eigen::Index{17}, Eigen::Index{64}, Eigen::Index{300}, Eigen::Index{2048}})
    for (const Eigen::Index K : {Eigen::Index{3}, Eigen::Index{37}, Eigen::Index{512}})
      for (const double zero : {0.3, 0.5, 0.9, 1.0}) {
        Mat<float> w = RandomMat<float>(M, K, rng);
        const Eigen::Index groups = (M + 15) / 16, quads = (K + 3) / 4;
        Eigen::Index zeros = 0;
        for (Eigen::Index g = 0; g < groups; ++g) {
          // Group g keeps about (1 - zero) of its blocks; with zero 0.9, groups 0..9 keep exactly
          // g of them where the columns allow.
          for (Eigen::Index k = 0; k < quads; ++k) {
            const bool drop = zero == 0.9 && g < 10 ? k >= g : rng.Uniform(0, 1) < zero;
            if (!drop) continue;
            w.block(16 * g, 4 * k, std::min<Eigen::Index>(16, M - 16 * g), std::min<Eigen::Index>(4, K - 4 * k))
                .setZero();
            ++zeros;
          }
        }
        const Eigen::VectorXf x = RandomMat<float>(K, 1, rng);
        const Eigen::VectorXf y0 = RandomMat<float>(M, 1, rng, -4, 4);
        StepMatrix sparse(w, Precision::kInt8), dense(w, Precision::kInt8, /*sparse=*/false);
        SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(K) + ", " + std::to_string(zeros) + " of " +
                     std::to_string(groups * quads) + " blocks zero");
        ASSERT_FALSE(dense.sparse());
        ASSERT_EQ(sparse.sparse(), static_cast<double>(zeros) >= kSparseFrom * static_cast<double>(groups * quads));
        if (sparse.sparse()) {  // 64 bytes and a quad index per kept block, and each group's start
          ASSERT_EQ(sparse.Bytes(), 68 * static_cast<size_t>(groups * quads - zeros) + 4 * static_cast<size_t>(groups + 1));
        }
        for (const int threads : {1, 2})
          for (const bool accumulate : {false, true}) {
            Eigen::VectorXf want = accumulate ? y0 : Eigen::VectorXf::Constant(M, std::nanf(""));
            Eigen::VectorXf got = want;
            dense.Multiply(x.data(), want.data(), accumulate, threads);
            sparse.Multiply(x.data(), got.data(), accumulate, threads);
            for (Eigen::Index r = 0; r < M; ++r)
              ASSERT_EQ(std::bit_cast<uint32_t>(got(r)), std::bit_cast<uint32_t>(want(r)))
                  << "row " << r << ": " << got(r) << " vs " << want(r) << ", threads " << threads
                  << (accumulate ? " accumulate" : "");
          }
      }
}

// A vector near the top of the float range (1e38) with small weights: every precision stays
// finite and within its bound (int8's a = 1e38 / 127 and bfloat16's range both hold it).
TEST(StepMatrix, HugeVectorIsWithinTheBound) {
  Rng rng(11);
  const Eigen::Index M = 70, K = 37;
  const Mat<float> w = RandomMat<float>(M, K, rng, -1e-3, 1e-3);
  Eigen::VectorXf x = RandomMat<float>(K, 1, rng, -1e38, 1e38);
  x(5) = 1e38f;
  for (const Precision precision : kPrecisions) {
    StepMatrix sm(w, precision);
    Eigen::VectorXf y(M);
    sm.Multiply(x.data(), y.data(), false, 1);
    for (Eigen::Index r = 0; r < M; ++r) {
      Real want = 0;
      for (Eigen::Index k = 0; k < K; ++k) want += Real(w(r, k)) * Real(x(k));
      const double bound = BoundOf(Bounds(w, x, r, 0.0), precision);
      ASSERT_TRUE(std::isfinite(y(r))) << PrecisionName(precision) << " row " << r;
      ASSERT_LE(static_cast<double>(std::abs(Real(y(r)) - want)), bound) << PrecisionName(precision) << " row " << r;
    }
  }
}

// A NaN or an infinity in x makes every output non-finite in every precision, and NaN in int8
// (ToUint8Quads returns a = NaN).
TEST(StepMatrix, NonFiniteVectorGivesNonFiniteOutputs) {
  Rng rng(7);
  const Eigen::Index M = 70, K = 37;
  const Mat<float> w = RandomMat<float>(M, K, rng);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()})
    for (const Eigen::Index at : {Eigen::Index{0}, Eigen::Index{20}, K - 1}) {
      Eigen::VectorXf x = RandomMat<float>(K, 1, rng);
      x(at) = bad;
      for (const Precision precision : kPrecisions)
        for (const bool accumulate : {false, true}) {
          SCOPED_TRACE(std::string(PrecisionName(precision)) + " x(" + std::to_string(at) + ") = " +
                       std::to_string(bad));
          StepMatrix sm(w, precision);
          Eigen::VectorXf y = Eigen::VectorXf::Ones(M);
          sm.Multiply(x.data(), y.data(), accumulate, 1);
          for (Eigen::Index r = 0; r < M; ++r) {
            EXPECT_FALSE(std::isfinite(y(r))) << r;
            if (precision == Precision::kInt8) {
              EXPECT_TRUE(std::isnan(y(r))) << r;
            }
          }
        }
    }
}

// ------------------------------------------------------------------------------ quantisers

std::vector<uint8_t> Bytes(const std::vector<uint32_t>& quads) {
  std::vector<uint8_t> out;
  for (const uint32_t q : quads)
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(q >> (8 * i)));
  return out;
}

TEST(ToUint8Quads, NaNOrInfinityGivesNaN) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()})
    for (const Eigen::Index K : {1, 5, 37}) {
      std::vector<float> x(static_cast<size_t>(K), 0.5f);
      x[static_cast<size_t>(K / 2)] = bad;
      std::vector<uint32_t> quads((K + 3) / 4, 0);
      EXPECT_TRUE(std::isnan(ToUint8Quads(x.data(), K, quads.data()))) << K;
      for (const uint8_t b : Bytes(quads)) EXPECT_EQ(b, 128);
    }
}

TEST(ToUint8Quads, RoundsEachElementToTheNearestStep) {
  Rng rng(8);
  // Largest magnitudes from 1e-30 to 1e38, with K through the 16-wide vector loop and its tail.
  for (const double top : {1e38, 3.0, 1e-30})
    for (const Eigen::Index K : {1, 3, 4, 5, 16, 17, 37, 70}) {
      std::vector<float> x(static_cast<size_t>(K));
      for (float& v : x) v = static_cast<float>(rng.Uniform(-top, top));
      x[static_cast<size_t>(rng.Below(K))] = static_cast<float>(rng.Below(2) ? top : -top);
      std::vector<uint32_t> quads((K + 3) / 4, 0xdeadbeef);
      const float a = ToUint8Quads(x.data(), K, quads.data());
      float max_abs = 0;
      for (const float v : x) max_abs = std::max(max_abs, std::abs(v));
      EXPECT_EQ(a, max_abs / 127.0f) << K;
      const std::vector<uint8_t> bytes = Bytes(quads);
      for (Eigen::Index k = 0; k < K; ++k) {
        const uint8_t u = bytes[static_cast<size_t>(k)];
        EXPECT_GE(u, 1);  // -127
        EXPECT_LE(u, 255);
        // round(x / a) up to the rounding of x / a itself (x * (1/a) in float: a few ulps of 127).
        EXPECT_LE(std::abs((static_cast<double>(u) - 128) - static_cast<double>(x[k]) / a), 0.5 + 1e-4)
            << "top " << top << " K " << K << " k " << k;
      }
      for (size_t k = static_cast<size_t>(K); k < bytes.size(); ++k) EXPECT_EQ(bytes[k], 128) << "padding " << k;
    }
}

TEST(ToUint8Quads, ZeroAndTinyVectorsAreZero) {
  // All zero; subnormal (1e-40); normal but with top / 127 below the smallest normal float.
  for (const float top : {0.0f, 1e-40f, 1e-37f})
    for (const Eigen::Index K : {1, 5, 16, 19}) {
      std::vector<float> x(static_cast<size_t>(K), 0.0f);
      x[0] = top;
      if (K > 1) x[1] = -top / 2;
      std::vector<uint32_t> quads((K + 3) / 4, 0);
      EXPECT_EQ(ToUint8Quads(x.data(), K, quads.data()), 1.0f) << top;
      for (const uint8_t b : Bytes(quads)) EXPECT_EQ(b, 128) << top;
      // And so the int8 product is exactly 0 (or y0).
      const Mat<float> w = Mat<float>::Constant(3, K, 0.75f);
      StepMatrix sm(w, Precision::kInt8);
      Eigen::VectorXf y = Eigen::VectorXf::Constant(3, 2.5f);
      sm.Multiply(x.data(), y.data(), true, 1);
      EXPECT_TRUE((y.array() == 2.5f).all()) << top;
      sm.Multiply(x.data(), y.data(), false, 1);
      EXPECT_TRUE((y.array() == 0.0f).all()) << top;
    }
}

TEST(ToUint8Quads, PadsTheLastWordWith128) {
  const float x[5] = {127, -127, 0, 1, 2};
  uint32_t quads[2] = {0, 0};
  EXPECT_EQ(ToUint8Quads(x, 5, quads), 1.0f);
  EXPECT_EQ(quads[0], 255u | 1u << 8 | 128u << 16 | 129u << 24);
  EXPECT_EQ(quads[1], 130u | 0x808080u << 8);
}

TEST(ToBf16, RoundsToNearestEven) {
  struct Case {
    uint32_t in;
    uint16_t out;
  };
  const Case cases[] = {
      {0x3f800000, 0x3f80},  // 1
      {0x3f808000, 0x3f80},  // 1 + 2^-8: a tie, to the even 1
      {0x3f818000, 0x3f82},  // 1 + 3 2^-8: a tie, to the even 1 + 2^-6
      {0x3f808001, 0x3f81},  // just above the tie
      {0x3f807fff, 0x3f80},  // just below it
      {0xbf808000, 0xbf80},  // -(1 + 2^-8)
      {0xbf818000, 0xbf82},
      {0x3f7fffff, 0x3f80},  // 1 - 2^-24 rounds up across the exponent
      {0x7f7fffff, 0x7f80},  // the largest float rounds to infinity
      {0x7f800000, 0x7f80},  // +inf
      {0xff800000, 0xff80},  // -inf
      {0x00000000, 0x0000},
      {0x80000000, 0x8000},
      {0x00800000, 0x0080},  // the smallest normal
      {0x00018000, 0x0000},  // subnormals become a zero of their sign, as in AVX-512 BF16
      {0x807fffff, 0x8000},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ToBf16(FromBits(c.in)), c.out) << std::hex << c.in;
    EXPECT_EQ(Bits(FromBf16(c.out)), static_cast<uint32_t>(c.out) << 16);
  }
}

TEST(ToBf16, KeepsNaNANaN) {
  // Quiet, signalling (payload only in the low half, which plain rounding would turn into an
  // infinity) and negative NaNs.
  for (const uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0xffc00000u, 0xff800001u}) {
    const uint16_t b = ToBf16(FromBits(nan));
    EXPECT_TRUE(std::isnan(FromBf16(b))) << std::hex << nan;
    EXPECT_EQ(static_cast<uint32_t>(b >> 15), nan >> 31) << "sign";
  }
}

// ToBf16Pairs agrees with ToBf16 element by element, through the 16-wide vector loop and the
// scalar tail, and leaves the high half of the last word 0 when K is odd.
TEST(ToBf16Pairs, MatchesToBf16AndPadsOddK) {
  Rng rng(9);
  const uint32_t special[] = {0x3f808000, 0x3f818000, 0xbf808000, 0x7fc00000, 0x7f800001, 0x7f800000,
                              0x7f7fffff, 0x00000000, 0x80000000, 0x3f807fff, 0x00018000, 0x80018000};
  for (const Eigen::Index K : {1, 2, 3, 15, 16, 17, 33, 35, 70}) {
    std::vector<float> x(static_cast<size_t>(K));
    for (Eigen::Index k = 0; k < K; ++k)
      x[static_cast<size_t>(k)] = k % 3 == 0 ? FromBits(special[(k / 3) % std::size(special)])
                                             : static_cast<float>(rng.Uniform(-3, 3));
    std::vector<uint32_t> pairs(static_cast<size_t>((K + 1) / 2), 0xdeadbeef);
    ToBf16Pairs(x.data(), K, pairs.data());
    for (Eigen::Index k = 0; k < K; ++k) {
      const uint16_t half = static_cast<uint16_t>(pairs[static_cast<size_t>(k / 2)] >> (16 * (k % 2)));
      const float v = x[static_cast<size_t>(k)];
      EXPECT_EQ(half, ToBf16(v)) << "K " << K << " k " << k << " x " << v;
    }
    if (K % 2 == 1) {
      EXPECT_EQ(pairs.back() >> 16, 0u) << K;
    }
  }
}

// Every kind of float, as random bit patterns: the vector conversion (where the build has one) and
// ToBf16 give the same bits.
TEST(ToBf16Pairs, AgreesWithToBf16OnRandomBitPatterns) {
  Rng rng(10);
  const Eigen::Index K = 1 << 16;
  std::vector<float> x(static_cast<size_t>(K));
  for (float& v : x) v = FromBits(static_cast<uint32_t>(rng.Next()));
  std::vector<uint32_t> pairs(static_cast<size_t>(K / 2));
  ToBf16Pairs(x.data(), K, pairs.data());
  int mismatches = 0;
  for (Eigen::Index k = 0; k < K; ++k) {
    const uint16_t half = static_cast<uint16_t>(pairs[static_cast<size_t>(k / 2)] >> (16 * (k % 2)));
    mismatches += half != ToBf16(x[static_cast<size_t>(k)]);
  }
  EXPECT_EQ(mismatches, 0);
}


// ------------------------------------------------------------------------------ sgemm.h

// dst = (or +=) lhs * rhs through FloatProduct, each operand stored as given or transposed; dst
// has 3 rows of padding below M, which must keep their values.
Mat<float> RunFloat(Eigen::Index M, Eigen::Index N, Eigen::Index K, bool lt, bool rt, bool accumulate, int threads,
                    const Mat<float>& lhs_store, const Mat<float>& rhs_store, const Mat<float>& start) {
  Mat<float> dst = start;
  const StridedMatrix lhs = lt ? StridedMatrix{lhs_store.data(), M, K, lhs_store.rows(), 1}
                               : StridedMatrix{lhs_store.data(), M, K, 1, lhs_store.rows()};
  const StridedMatrix rhs = rt ? StridedMatrix{rhs_store.data(), K, N, rhs_store.rows(), 1}
                               : StridedMatrix{rhs_store.data(), K, N, 1, rhs_store.rows()};
  FloatProduct(dst.data(), dst.rows(), lhs, rhs, accumulate, threads);
  return dst;
}

void CheckFloat(Eigen::Index M, Eigen::Index N, Eigen::Index K, bool lt, bool rt, bool accumulate, int threads,
                Rng& rng) {
  const Mat<float> lhs_store = lt ? RandomMat<float>(K, M, rng) : RandomMat<float>(M, K, rng);
  const Mat<float> rhs_store = rt ? RandomMat<float>(N, K, rng) : RandomMat<float>(K, N, rng);
  const Mat<float> start = RandomMat<float>(M + 3, N, rng);
  const Mat<float> dst = RunFloat(M, N, K, lt, rt, accumulate, threads, lhs_store, rhs_store, start);
  const std::string what = std::string(IsaName(ThisCpu().level)) + " M " + std::to_string(M) + " N " +
                           std::to_string(N) + " K " + std::to_string(K) + " lhs^T " + std::to_string(lt) +
                           " rhs^T " + std::to_string(rt) + " acc " + std::to_string(accumulate) + " threads " +
                           std::to_string(threads);
  for (Eigen::Index n = 0; n < N; ++n) {
    for (Eigen::Index m = 0; m < M; ++m) {
      Real sum = accumulate ? Real(start(m, n)) : Real(0), size = std::fabs(sum);
      for (Eigen::Index k = 0; k < K; ++k) {
        const Real term = Real(lt ? lhs_store(k, m) : lhs_store(m, k)) * Real(rt ? rhs_store(n, k) : rhs_store(k, n));
        sum += term;
        size += std::fabs(term);
      }
      // K fused multiply-adds and one addition per chunk: at most K + 1 + K / 256 roundings.
      const Real bound = Real(K + 2 + K / 256) * std::ldexp(Real(1), -24) * size;
      ASSERT_LE(std::fabs(Real(dst(m, n)) - sum), bound) << what << " at (" << m << ", " << n << ")";
    }
    for (Eigen::Index m = M; m < M + 3; ++m) ASSERT_EQ(dst(m, n), start(m, n)) << what << ": padding written";
  }
}

TEST(FloatProduct, MatchesTheProduct) {
  if (!FloatProductsHere()) GTEST_SKIP() << "this CPU has no AVX2 (or BPTT_MAX_ISA caps it below)";
  Rng rng(21);
  int threads = 0;  // 1, 2, 3 in turn
  for (const Eigen::Index M : {1, 15, 17, 32, 33, 70})
    for (const Eigen::Index N : {1, 5, 7, 12, 13, 25})
      for (const Eigen::Index K : {1, 31, 257})
        for (const int layout : {0, 1, 2, 3})
          for (const bool accumulate : {false, true})
            CheckFloat(M, N, K, (layout & 1) != 0, (layout & 2) != 0, accumulate, threads++ % 3 + 1, rng);
  // Several 16-panel blocks of rows, split by rows and by columns, K in three chunks.
  CheckFloat(600, 20, 600, false, true, true, 2, rng);
  CheckFloat(20, 600, 600, true, false, false, 3, rng);
}

TEST(FloatProduct, GivesTheSameBitsOnAnyThreadCount) {
  if (!FloatProductsHere()) GTEST_SKIP() << "this CPU has no AVX2 (or BPTT_MAX_ISA caps it below)";
  Rng rng(22);
  for (const auto& [M, N] : {std::pair<Eigen::Index, Eigen::Index>{70, 300}, {300, 70}}) {
    const Mat<float> lhs = RandomMat<float>(M, 300, rng), rhs = RandomMat<float>(300, N, rng);
    const Mat<float> start = RandomMat<float>(M + 3, N, rng);
    const Mat<float> one = RunFloat(M, N, 300, false, false, true, 1, lhs, rhs, start);
    for (const int threads : {2, 3, 5})
      EXPECT_TRUE((RunFloat(M, N, 300, false, false, true, threads, lhs, rhs, start).array() == one.array()).all())
          << threads << " threads, M " << M;
  }
}

// ------------------------------------------------------------------------------ bf16_gemm.h

// One engine of the bfloat16 products (bf16_gemm.h) and whether this CPU runs it.
struct Bf16Engine {
  const char* name;
  bool here;
  void (*product)(float*, Eigen::Index, const StridedMatrix&, const StridedMatrix&, bool, int);
  void (*step)(const uint16_t*, Eigen::Index, Eigen::Index, Eigen::Index, Eigen::Index, const float*, Eigen::Index,
               Eigen::Index, float*, Eigen::Index, bool);
};

std::vector<Bf16Engine> Bf16Engines() {
  std::vector<Bf16Engine> engines;
  if (ThisCpu().amx) engines.push_back({"amx", true, &AmxProduct, &AmxStepProduct});
  if (ThisCpu().avx512_bf16) engines.push_back({"avx512-bf16", true, &Avx512Bf16Product, &Avx512Bf16StepProduct});
  return engines;
}

#define BPTT_FOR_EACH_BF16_ENGINE(engine)                                                   \
  const std::vector<Bf16Engine> engines = Bf16Engines();                                     \
  if (engines.empty()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX-512 BF16";     \
  for (const Bf16Engine& engine : engines)

// dst = (or +=) lhs * rhs through an engine's product, lhs (M, K) stored as given or as its
// transpose, rhs (K, N) likewise; dst has 3 rows of padding below M, which must keep their values.
struct Bf16Case {
  Eigen::Index M, N, K;
  bool lhs_transposed, rhs_transposed, accumulate;
  int threads;
};

Mat<float> RunBf16(const Bf16Engine& engine, const Bf16Case& c, const Mat<float>& lhs_store,
                   const Mat<float>& rhs_store, const Mat<float>& start) {
  Mat<float> dst = start;
  const StridedMatrix lhs = c.lhs_transposed ? StridedMatrix{lhs_store.data(), c.M, c.K, lhs_store.rows(), 1}
                                             : StridedMatrix{lhs_store.data(), c.M, c.K, 1, lhs_store.rows()};
  const StridedMatrix rhs = c.rhs_transposed ? StridedMatrix{rhs_store.data(), c.K, c.N, rhs_store.rows(), 1}
                                             : StridedMatrix{rhs_store.data(), c.K, c.N, 1, rhs_store.rows()};
  engine.product(dst.data(), dst.rows(), lhs, rhs, c.accumulate, c.threads);
  return dst;
}

void CheckBf16(const Bf16Engine& engine, const Bf16Case& c, Rng& rng) {
  const Mat<float> lhs_store = c.lhs_transposed ? RandomMat<float>(c.K, c.M, rng) : RandomMat<float>(c.M, c.K, rng);
  const Mat<float> rhs_store = c.rhs_transposed ? RandomMat<float>(c.N, c.K, rng) : RandomMat<float>(c.K, c.N, rng);
  const Mat<float> start = RandomMat<float>(c.M + 3, c.N, rng);
  const auto lhs = [&](Eigen::Index m, Eigen::Index k) {
    return FromBf16(ToBf16(c.lhs_transposed ? lhs_store(k, m) : lhs_store(m, k)));
  };
  const auto rhs = [&](Eigen::Index k, Eigen::Index n) {
    return FromBf16(ToBf16(c.rhs_transposed ? rhs_store(n, k) : rhs_store(k, n)));
  };
  const Mat<float> dst = RunBf16(engine, c, lhs_store, rhs_store, start);
  const std::string what = std::string(engine.name) + " M " + std::to_string(c.M) + " N " + std::to_string(c.N) +
                           " K " + std::to_string(c.K) + " lhs^T " + std::to_string(c.lhs_transposed) + " rhs^T " +
                           std::to_string(c.rhs_transposed) + " acc " + std::to_string(c.accumulate) +
                           " threads " + std::to_string(c.threads);
  for (Eigen::Index n = 0; n < c.N; ++n) {
    for (Eigen::Index m = 0; m < c.M; ++m) {
      Real sum = c.accumulate ? Real(start(m, n)) : Real(0), size = c.accumulate ? std::fabs(Real(start(m, n))) : 0;
      for (Eigen::Index k = 0; k < c.K; ++k) {
        sum += Real(lhs(m, k)) * Real(rhs(k, n));
        size += std::fabs(Real(lhs(m, k)) * Real(rhs(k, n)));
      }
      // float sums of c.K products of bfloat16 values (exact in float): at most K + 1 roundings.
      const Real bound = Real(c.K + 2) * std::ldexp(Real(1), -24) * size;
      ASSERT_LE(std::fabs(Real(dst(m, n)) - sum), bound) << what << " at (" << m << ", " << n << ")";
    }
    for (Eigen::Index m = c.M; m < c.M + 3; ++m) ASSERT_EQ(dst(m, n), start(m, n)) << what << ": padding written";
  }
}

TEST(Bf16Product, MatchesTheRoundedOperandsProduct) {
  BPTT_FOR_EACH_BF16_ENGINE(engine) {
    Rng rng(11);
    int threads = 0;  // 1, 2, 3 in turn
    for (const Eigen::Index M : {1, 17, 48, 49, 97})
      for (const Eigen::Index N : {1, 9, 16, 17, 70})
        for (const Eigen::Index K : {1, 31, 32, 33, 97})
          for (const int layout : {0, 1, 2, 3})
            for (const bool accumulate : {false, true})
              CheckBf16(engine, {M, N, K, (layout & 1) != 0, (layout & 2) != 0, accumulate, threads++ % 3 + 1}, rng);
  }
}

TEST(Bf16Product, EmptyKGivesZerosOrLeavesTheSums) {
  BPTT_FOR_EACH_BF16_ENGINE(engine) {
    Rng rng(15);
    const Mat<float> lhs(5, 0), rhs(0, 7), start = RandomMat<float>(8, 7, rng);
    for (const bool accumulate : {false, true}) {
      Mat<float> dst = start;
      engine.product(dst.data(), dst.rows(), {lhs.data(), 5, 0, 1, 5}, {rhs.data(), 0, 7, 1, 0}, accumulate, 2);
      for (Eigen::Index n = 0; n < 7; ++n)
        for (Eigen::Index m = 0; m < 8; ++m)
          ASSERT_EQ(dst(m, n), m < 5 && !accumulate ? 0.0f : start(m, n))
              << engine.name << " " << m << ", " << n << " acc " << accumulate;
    }
  }
}

TEST(Bf16Product, SplitsLongKIntoChunksAndEitherDimensionBetweenThreads) {
  BPTT_FOR_EACH_BF16_ENGINE(engine) {
    Rng rng(12);
    // N = 2048 on one thread: its 128 column tiles take 128 KB per k block, so K = 300 (10
    // blocks) runs as two chunks; M = 2048 does the same split by rows.
    for (const int layout : {0, 3}) {
      CheckBf16(engine, {20, 2048, 300, (layout & 1) != 0, (layout & 2) != 0, true, 1}, rng);
      CheckBf16(engine, {2048, 20, 300, (layout & 1) != 0, (layout & 2) != 0, false, 2}, rng);
    }
  }
}

TEST(Bf16StepProduct, MatchesTheRoundedOperandsProductOnItsRows) {
  BPTT_FOR_EACH_BF16_ENGINE(engine) {
    Rng rng(14);
    std::vector<uint16_t> tiles;
    for (const Eigen::Index M : {1, 16, 40, 70, 100})
      for (const Eigen::Index K : {1, 33, 70, 300})
        for (const Eigen::Index cols : {1, 5, 16, 17, 40})
          for (const bool transposed : {false, true})
            for (const bool accumulate : {false, true})
              for (const auto& [row_begin, row_end] :
                   {std::pair<Eigen::Index, Eigen::Index>{0, M}, {32, M}, {0, 64}}) {
                if (row_begin >= M) continue;
                const Eigen::Index end = std::min(row_end, M);
                const Mat<float> store = transposed ? RandomMat<float>(K, M, rng) : RandomMat<float>(M, K, rng);
                const Mat<float> x = RandomMat<float>(K + 2, cols, rng);  // leading dimension K + 2
                const Mat<float> start = RandomMat<float>(M + 3, cols, rng);
                PackBf16Pairs(transposed ? StridedMatrix{store.data(), M, K, store.rows(), 1}
                                         : StridedMatrix{store.data(), M, K, 1, store.rows()},
                              tiles);
                Mat<float> c = start;
                engine.step(tiles.data(), M, K, row_begin, end, x.data(), x.rows(), cols, c.data(), c.rows(),
                            accumulate);
                const std::string what = std::string(engine.name) + " M " + std::to_string(M) + " K " +
                                         std::to_string(K) + " cols " + std::to_string(cols) + " W^T " +
                                         std::to_string(transposed) + " acc " + std::to_string(accumulate) +
                                         " rows " + std::to_string(row_begin) + ".." + std::to_string(end);
                for (Eigen::Index n = 0; n < cols; ++n)
                  for (Eigen::Index m = 0; m < M + 3; ++m) {
                    if (m < row_begin || m >= end) {
                      ASSERT_EQ(c(m, n), start(m, n)) << what << ": row " << m << " written";
                      continue;
                    }
                    Real sum = accumulate ? Real(start(m, n)) : Real(0), size = std::fabs(sum);
                    for (Eigen::Index k = 0; k < K; ++k) {
                      const Real w = FromBf16(ToBf16(transposed ? store(k, m) : store(m, k)));
                      const Real v = FromBf16(ToBf16(x(k, n)));
                      sum += w * v;
                      size += std::fabs(w * v);
                    }
                    ASSERT_LE(std::fabs(Real(c(m, n)) - sum), Real(K + 2) * std::ldexp(Real(1), -24) * size)
                        << what << " at (" << m << ", " << n << ")";
                  }
              }
  }
}

TEST(Bf16Product, GivesTheSameBitsOnAnyThreadCount) {
  BPTT_FOR_EACH_BF16_ENGINE(engine) {
    Rng rng(13);
    for (const auto& [M, N] : {std::pair<Eigen::Index, Eigen::Index>{70, 300}, {300, 70}}) {
      const Mat<float> lhs = RandomMat<float>(M, 200, rng), rhs = RandomMat<float>(200, N, rng);
      const Mat<float> start = RandomMat<float>(M + 3, N, rng);
      const Mat<float> one = RunBf16(engine, {M, N, 200, false, false, true, 1}, lhs, rhs, start);
      for (const int threads : {2, 3, 5})
        EXPECT_TRUE(
            (RunBf16(engine, {M, N, 200, false, false, true, threads}, lhs, rhs, start).array() == one.array()).all())
            << engine.name << " " << threads << " threads, M " << M;
    }
  }
}

}  // namespace
}  // namespace bptt
