#include "bptt/sampler.h"

#include <omp.h>

#if defined(__AVX512BF16__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <sstream>

#include "bptt/error.h"
#include "bptt/loss.h"

namespace bptt {

namespace {

std::string Number(double x) {
  std::ostringstream out;
  out << x;
  return out.str();
}

// The symbol with the highest score; the lowest id among equals.
int32_t Argmax(std::span<const float> scores) {
  int32_t best = 0;
  for (size_t v = 1; v < scores.size(); ++v)
    if (scores[v] > scores[static_cast<size_t>(best)]) best = static_cast<int32_t>(v);
  return best;
}

std::string NameSymbols(const std::vector<std::string>& symbols) {
  constexpr size_t kNamed = 8;
  std::string names;
  for (size_t i = 0; i < symbols.size() && i < kNamed; ++i) {
    if (i > 0) names += ", ";
    names += '"' + DisplaySymbol(symbols[i]) + '"';
  }
  if (symbols.size() > kNamed) names += ", ...";
  return names;
}

// Runs the calling thread's parallel regions on one thread while it lives: those of the
// prime's Forward (B = 1), where a thread wake-up and a barrier per timestep and layer would
// cost more than the step itself on a busy machine. Step's products split by rows only when
// SampleOptions::threads asks for it (their parallel regions name their thread count).
class SingleThread {
 public:
  SingleThread() : previous_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(previous_); }
  SingleThread(const SingleThread&) = delete;
  SingleThread& operator=(const SingleThread&) = delete;

 private:
  int previous_;
};

// Round to nearest even; NaN stays NaN.
uint16_t ToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float FromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

constexpr Eigen::Index kBf16Rows = 16;  // rows of a panel: one AVX-512 register of float sums

// w (M, K) into the panel layout of Sampler::Bf16Matrix.
template <typename M>
void PackBf16(const Mat<float>& w, M& out) {
  out.rows = w.rows();
  out.cols = w.cols();
  const Eigen::Index panels = (w.rows() + kBf16Rows - 1) / kBf16Rows, pairs = (w.cols() + 1) / 2;
  out.data.assign(static_cast<size_t>(panels * pairs * kBf16Rows * 2), 0);
  for (Eigen::Index r = 0; r < w.rows(); ++r)
    for (Eigen::Index k = 0; k < w.cols(); ++k)
      out.data[static_cast<size_t>(((r / kBf16Rows * pairs + k / 2) * kBf16Rows + r % kBf16Rows) * 2 + k % 2)] =
          ToBf16(w(r, k));
}

// x (K) as bfloat16 in order, i.e. the pairs (x_k, x_k+1) as 32-bit words, zero-padded.
void ToBf16Pairs(const float* x, Eigen::Index K, uint32_t* pairs) {
  auto* out = reinterpret_cast<uint16_t*>(pairs);
  Eigen::Index k = 0;
#if defined(__AVX512BF16__)
  for (; k + 16 <= K; k += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + k)));
#endif
  for (; k < K; ++k) out[k] = ToBf16(x[k]);
  if (K % 2 == 1) out[K] = 0;
}

// Rows [begin, end) of y (M) = w x (+ y when accumulate) with x given as bfloat16 pairs;
// float sums. begin is a multiple of kBf16Rows.
template <typename M>
void Bf16Product(const M& w, const uint32_t* x, float* y, bool accumulate, Eigen::Index begin, Eigen::Index end) {
  const Eigen::Index panels = (end + kBf16Rows - 1) / kBf16Rows, pairs = (w.cols + 1) / 2;
  const uint16_t* base = w.data.data();
  const Eigen::Index panel_size = pairs * kBf16Rows * 2;
  Eigen::Index p = begin / kBf16Rows;
#if defined(__AVX512BF16__)
  // Four panels (64 rows) at a time, even and odd pairs into separate sums: eight chains.
  for (; (p + 4) * kBf16Rows <= end; p += 4) {
    __m512 acc[8];
    for (auto& v : acc) v = _mm512_setzero_ps();
    const uint16_t* a = base + p * panel_size;
    Eigen::Index kp = 0;
    for (; kp + 2 <= pairs; kp += 2) {
      const __m512bh b0 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(x[kp])));
      const __m512bh b1 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(x[kp + 1])));
      for (int j = 0; j < 4; ++j) {
        const uint16_t* aj = a + j * panel_size + kp * kBf16Rows * 2;
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)(_mm512_loadu_si512(aj)), b0);
        acc[4 + j] = _mm512_dpbf16_ps(acc[4 + j], (__m512bh)(_mm512_loadu_si512(aj + kBf16Rows * 2)), b1);
      }
    }
    if (kp < pairs) {
      const __m512bh b0 = (__m512bh)(_mm512_set1_epi32(static_cast<int>(x[kp])));
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)(_mm512_loadu_si512(a + j * panel_size + kp * kBf16Rows * 2)), b0);
    }
    for (int j = 0; j < 4; ++j) {
      float* yj = y + (p + j) * kBf16Rows;
      __m512 sum = _mm512_add_ps(acc[j], acc[4 + j]);
      if (accumulate) sum = _mm512_add_ps(sum, _mm512_loadu_ps(yj));
      _mm512_storeu_ps(yj, sum);
    }
  }
#endif
  for (; p < panels; ++p) {
    const uint16_t* a = base + p * panel_size;
    float acc[kBf16Rows] = {};
    for (Eigen::Index kp = 0; kp < pairs; ++kp) {
      const float x0 = FromBf16(static_cast<uint16_t>(x[kp] & 0xffffu)), x1 = FromBf16(static_cast<uint16_t>(x[kp] >> 16));
      for (Eigen::Index r = 0; r < kBf16Rows; ++r)
        acc[r] += FromBf16(a[(kp * kBf16Rows + r) * 2]) * x0 + FromBf16(a[(kp * kBf16Rows + r) * 2 + 1]) * x1;
    }
    for (Eigen::Index r = 0; r < kBf16Rows && p * kBf16Rows + r < end; ++r)
      y[p * kBf16Rows + r] = (accumulate ? y[p * kBf16Rows + r] : 0.0f) + acc[r];
  }
}

constexpr Eigen::Index kInt8Rows = 64;  // rows of a panel: four AVX-512 registers of int32 sums
// How far ahead of the stream Int8Product asks for the weights: the weights of a 512-unit model
// (3 MB in int8) come from L3, and the hardware prefetcher alone leaves the core waiting
// (2x512 LSTM: 43 us per symbol without, 36 us with 4 KB; 1 and 8 KB were slower).
constexpr Eigen::Index kPrefetchBytes = 4096;

// w (M, K) into the panel layout of Sampler::Int8Matrix, with its row scales and offsets.
template <typename M>
void PackInt8(const Mat<float>& w, M& out) {
  out.rows = w.rows();
  out.cols = w.cols();
  const Eigen::Index panels = (w.rows() + kInt8Rows - 1) / kInt8Rows, quads = (w.cols() + 3) / 4;
  out.data.assign(static_cast<size_t>(panels * quads * kInt8Rows * 4), 0);
  out.scale.assign(static_cast<size_t>(panels * kInt8Rows), 0.0f);
  out.offset.assign(static_cast<size_t>(panels * kInt8Rows), 0);
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    const float top = w.row(r).cwiseAbs().maxCoeff();
    const float s = top > 0 ? top / 127.0f : 1.0f;
    int32_t sum = 0;
    for (Eigen::Index k = 0; k < w.cols(); ++k) {
      const auto q = static_cast<int8_t>(std::clamp(std::nearbyint(w(r, k) / s), -127.0f, 127.0f));
      out.data[static_cast<size_t>(((r / kInt8Rows * quads + k / 4) * kInt8Rows + r % kInt8Rows) * 4 + k % 4)] = q;
      sum += q;
    }
    out.scale[static_cast<size_t>(r)] = s;
    out.offset[static_cast<size_t>(r)] = 128 * sum;
  }
}

// x (K) as unsigned bytes u_k = round(x_k / a) + 128 in order (four to a 32-bit word, padded
// with 128, i.e. zero); returns the scale a = max_k |x_k| / 127 (1 for a zero vector).
float ToUint8Quads(const float* x, Eigen::Index K, uint32_t* quads) {
  const Eigen::Map<const Eigen::VectorXf> xv(x, K);
  const float top = K > 0 ? xv.cwiseAbs().maxCoeff() : 0.0f;
  const float a = top > 0 && std::isfinite(top) ? top / 127.0f : 1.0f, inverse = 1.0f / a;
  auto* out = reinterpret_cast<uint8_t*>(quads);
  Eigen::Index k = 0;
#if defined(__AVX512F__)
  // |x_k / a| <= 127, so the rounded value fits without clamping; 16 at a time.
  const __m512 vinv = _mm512_set1_ps(inverse);
  const __m512i v128 = _mm512_set1_epi32(128);
  for (; k + 16 <= K; k += 16) {
    const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));  // nearest even
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtepi32_epi8(_mm512_add_epi32(q, v128)));
  }
#endif
  for (; k < K; ++k)
    out[k] = static_cast<uint8_t>(static_cast<int>(std::clamp(std::nearbyint(x[k] * inverse), -127.0f, 127.0f)) + 128);
  for (; k < (K + 3) / 4 * 4; ++k) out[k] = 128;
  return a;
}

// Rows [begin, end) of y (M) = w x (+ y when accumulate), x given as unsigned-byte quads with
// scale a: y_r = s_r a (sum_k q_rk u_k - 128 sum_k q_rk). begin is a multiple of kInt8Rows.
template <typename M>
void Int8Product(const M& w, const uint32_t* x, float a, float* y, bool accumulate, Eigen::Index begin,
                 Eigen::Index end) {
  const Eigen::Index quads = (w.cols + 3) / 4;
  const Eigen::Index panel_size = quads * kInt8Rows * 4;
  for (Eigen::Index r0 = begin; r0 < end; r0 += kInt8Rows) {
    const int8_t* q = w.data.data() + r0 / kInt8Rows * panel_size;
#if defined(__AVX512VNNI__)
    // The panel is one contiguous stream, 256 bytes per four columns; even and odd quads go to
    // separate sums: eight chains.
    __m512i acc[8];
    for (auto& v : acc) v = _mm512_setzero_si512();
    Eigen::Index kq = 0;
    for (; kq + 2 <= quads; kq += 2, q += 2 * kInt8Rows * 4) {
      const __m512i b0 = _mm512_set1_epi32(static_cast<int>(x[kq]));
      const __m512i b1 = _mm512_set1_epi32(static_cast<int>(x[kq + 1]));
      // (A prefetch past the end of the weights is harmless: it never faults.)
      for (int j = 0; j < 8; ++j) _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 64 * j, _MM_HINT_T0);
      for (int j = 0; j < 4; ++j) {
        acc[j] = _mm512_dpbusd_epi32(acc[j], b0, _mm512_loadu_si512(q + 64 * j));
        acc[4 + j] = _mm512_dpbusd_epi32(acc[4 + j], b1, _mm512_loadu_si512(q + 256 + 64 * j));
      }
    }
    if (kq < quads) {
      const __m512i b0 = _mm512_set1_epi32(static_cast<int>(x[kq]));
      for (int j = 0; j < 4; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], b0, _mm512_loadu_si512(q + 64 * j));
    }
    const __m512 va = _mm512_set1_ps(a);
    for (int j = 0; j < 4 && r0 + 16 * j < w.rows; ++j) {
      const Eigen::Index r = r0 + 16 * j;
      const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(acc[j], acc[4 + j]), _mm512_loadu_si512(w.offset.data() + r));
      __m512 out = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(_mm512_loadu_ps(w.scale.data() + r), va));
      const __mmask16 live = w.rows - r >= 16 ? __mmask16(0xffff) : __mmask16((1u << (w.rows - r)) - 1);
      if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(live, y + r));
      _mm512_mask_storeu_ps(y + r, live, out);
    }
#else
    const auto* u = reinterpret_cast<const uint8_t*>(x);
    int32_t acc[kInt8Rows] = {};
    for (Eigen::Index kq = 0; kq < quads; ++kq)
      for (Eigen::Index r = 0; r < kInt8Rows; ++r)
        for (Eigen::Index i = 0; i < 4; ++i) acc[r] += q[(kq * kInt8Rows + r) * 4 + i] * u[kq * 4 + i];
    for (Eigen::Index r = 0; r < kInt8Rows && r0 + r < w.rows; ++r) {
      const auto row = static_cast<size_t>(r0 + r);
      const float v = w.scale[row] * a * static_cast<float>(acc[r] - w.offset[row]);
      y[row] = (accumulate ? y[row] : 0.0f) + v;
    }
#endif
  }
}

}  // namespace

const char* PrecisionName(SamplePrecision precision) {
  switch (precision) {
    case SamplePrecision::kBfloat16: return "bf16";
    case SamplePrecision::kInt8: return "int8";
    default: return "fp32";
  }
}

SamplePrecision ParsePrecision(const std::string& name, const std::string& flag) {
  for (const SamplePrecision p : {SamplePrecision::kFloat32, SamplePrecision::kBfloat16, SamplePrecision::kInt8})
    if (name == PrecisionName(p)) return p;
  throw Error(flag + " must be fp32, bf16 or int8, got '" + name + "'");
}

void SampleOptions::Validate() const {
  if (length < 0) throw Error("--length must be non-negative, got " + std::to_string(length));
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw Error("--temperature must be positive, got " + Number(temperature));
  if (top_k < 0) throw Error("--top-k must be non-negative (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) throw Error("--top-p must be in (0, 1], got " + Number(top_p));
  if (num < 1) throw Error("--num must be positive, got " + std::to_string(num));
  if (threads < 1) throw Error("--threads must be positive, got " + std::to_string(threads));
}

size_t SelectCandidates(std::span<const float> scores, std::span<const double> probs, int top_k,
                        double top_p, std::vector<int32_t>& order) {
  const size_t n = scores.size();
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  if (n == 0) return 0;
  const auto before = [&scores](int32_t a, int32_t b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  };
  size_t kept = n;
  if (top_k > 0 && static_cast<size_t>(top_k) < n) {
    kept = static_cast<size_t>(top_k);
    std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(kept), order.end(), before);
  }
  std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(kept), before);

  // The smallest prefix whose mass reaches top_p of the candidates' total. Both sums run over
  // the same prefix in the same order, so the running sum ends exactly at the total.
  double total = 0;
  for (size_t i = 0; i < kept; ++i) total += probs[static_cast<size_t>(order[i])];
  const double threshold = top_p * total;
  double mass = 0;
  for (size_t i = 0; i < kept; ++i) {
    mass += probs[static_cast<size_t>(order[i])];
    if (mass >= threshold) return i + 1;
  }
  return kept;
}

Sampler::Sampler(ModelConfig config, ModelParams<float> params, Vocab vocab)
    : config_(config), params_(std::move(params)), vocab_(std::move(vocab)) {
  config_.Validate();
  if (vocab_.size() != config_.vocab_size)
    throw Error("the vocabulary has " + std::to_string(vocab_.size()) + " symbols but the model expects " +
                std::to_string(config_.vocab_size));
  if (params_.decoder_weight.rows() != config_.vocab_size ||
      params_.layers.size() != static_cast<size_t>(config_.layers))
    throw Error("the parameters do not match the model configuration");
  state_ = State<float>::Zeros(config_, 1);
  const Eigen::Index GH = GateCount(config_.cell) * static_cast<Eigen::Index>(config_.hidden_size);
  step_gates_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(GH));
  if (config_.cell == CellType::kGru) step_hidden_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(GH));
  step_logits_ = Eigen::VectorXf::Zero(config_.vocab_size);
  step_input_ = Eigen::VectorXf::Zero(config_.embed_size);
  probs_.resize(static_cast<size_t>(config_.vocab_size));
  order_.resize(static_cast<size_t>(config_.vocab_size));
}

std::span<const float> Sampler::Prime(const std::vector<int32_t>& ids) {
  const auto T = static_cast<Eigen::Index>(ids.size());
  prime_ids_.resize(T);
  for (Eigen::Index t = 0; t < T; ++t) prime_ids_(t) = ids[static_cast<size_t>(t)];
  state_.SetZero();
  Forward(config_, params_, prime_ids_, T, 1, state_, prime_cache_);
  FinalState(config_, prime_cache_, state_);
  return {prime_cache_.logits.col(T - 1).data(), static_cast<size_t>(config_.vocab_size)};
}

// One timestep of Forward (model.h, cell.h) for a single stream, with vectors:
//   a = W_ih x + b_ih (a column of W_ih for one-hot input); then the cell's step from state_
//   logits = W_dec h + b_dec
std::span<const float> Sampler::Step(int32_t id, SamplePrecision precision) {
  using Vec = Eigen::VectorXf;
  using MapVec = Eigen::Map<Vec>;
  const Eigen::Index H = config_.hidden_size;
  const bool reduced = precision != SamplePrecision::kFloat32;
  for (size_t l = 0; l < static_cast<size_t>(config_.layers); ++l) {
    const RecurrentParams<float>& p = params_.layers[l];
    static const ReducedLayer kFloatOnly;
    const ReducedLayer& p16 = reduced ? reduced_[l] : kFloatOnly;
    Vec& a = step_gates_[l];
    MapVec h(state_.h[l].data(), H);
    if (l > 0) {
      Product(p.weight_ih, p16, false, precision, state_.h[l - 1].data(), a.data(), false);  // h_t below
      a += p.bias_ih.col(0);
    } else if (config_.embed_size > 0) {
      step_input_ = params_.encoder.row(id).transpose();
      Product(p.weight_ih, p16, false, precision, step_input_.data(), a.data(), false);
      a += p.bias_ih.col(0);
    } else {
      a = p.weight_ih.col(id) + p.bias_ih.col(0);
    }
    switch (config_.cell) {
      case CellType::kLstm: {
        Product(p.weight_hh, p16, true, precision, h.data(), a.data(), true);
        a += p.bias_hh.col(0);
        MapVec c(state_.c[l].data(), H);
        const auto i = a.segment(0, H).array().logistic(), f = a.segment(H, H).array().logistic(),
                   o = a.segment(3 * H, H).array().logistic();
        const auto g = a.segment(2 * H, H).array().tanh();
        c = (f * c.array() + i * g).matrix();
        h = (o * c.array().tanh()).matrix();
        break;
      }
      case CellType::kGru: {
        Vec& u = step_hidden_[l];
        Product(p.weight_hh, p16, true, precision, h.data(), u.data(), false);
        u += p.bias_hh.col(0);
        a.segment(0, 2 * H) = (a.segment(0, 2 * H) + u.segment(0, 2 * H)).array().logistic().matrix();
        const auto r = a.segment(0, H).array(), z = a.segment(H, H).array();
        a.segment(2 * H, H) = (a.segment(2 * H, H).array() + r * u.segment(2 * H, H).array()).tanh().matrix();
        h = ((1.0f - z) * a.segment(2 * H, H).array() + z * h.array()).matrix();
        break;
      }
      default: {
        Product(p.weight_hh, p16, true, precision, h.data(), a.data(), true);
        a += p.bias_hh.col(0);
        if (config_.cell == CellType::kRnnTanh) h = a.array().tanh().matrix();
        else if (config_.cell == CellType::kRnnSigmoid) h = a.array().logistic().matrix();
        else h = a.array().max(0.0f).matrix();
        break;
      }
    }
  }
  Product(params_.decoder_weight, reduced_decoder_, true, precision, state_.h.back().data(), step_logits_.data(), false);
  step_logits_ += params_.decoder_bias.col(0);
  return {step_logits_.data(), static_cast<size_t>(config_.vocab_size)};
}

// With step_threads_ > 1, each thread computes a contiguous range of rows (whole 64-row groups).
void Sampler::Product(const Mat<float>& w, const ReducedLayer& reduced, bool hh, SamplePrecision precision,
                      const float* x, float* y, bool accumulate) {
  const Bf16Matrix& w16 = hh ? reduced.weight_hh16 : reduced.weight_ih16;
  const Int8Matrix& w8 = hh ? reduced.weight_hh8 : reduced.weight_ih8;
  float a = 1;
  if (precision == SamplePrecision::kBfloat16) ToBf16Pairs(x, w16.cols, vector_words_.data());
  if (precision == SamplePrecision::kInt8) a = ToUint8Quads(x, w8.cols, vector_words_.data());
  const Eigen::Index M = w.rows();
  const auto rows = [&](Eigen::Index begin, Eigen::Index end) {
    if (precision == SamplePrecision::kBfloat16) {
      Bf16Product(w16, vector_words_.data(), y, accumulate, begin, end);
    } else if (precision == SamplePrecision::kInt8) {
      Int8Product(w8, vector_words_.data(), a, y, accumulate, begin, end);
    } else {
      const Eigen::Map<const Eigen::VectorXf> xv(x, w.cols());
      Eigen::Map<Eigen::VectorXf> yv(y + begin, end - begin);
      if (accumulate) yv.noalias() += w.middleRows(begin, end - begin) * xv;
      else yv.noalias() = w.middleRows(begin, end - begin) * xv;
    }
  };
  constexpr Eigen::Index kGroup = 64;
  if (step_threads_ <= 1 || M < 4 * kGroup) {
    rows(0, M);
    return;
  }
#pragma omp parallel num_threads(step_threads_)
  {
    const Eigen::Index n = omp_get_num_threads(), id = omp_get_thread_num(), groups = (M + kGroup - 1) / kGroup;
    const Eigen::Index begin = std::min(M, groups * id / n * kGroup), end = std::min(M, groups * (id + 1) / n * kGroup);
    if (begin < end) rows(begin, end);
  }
}

void Sampler::BuildReduced(SamplePrecision precision) {
  const bool bf16 = precision == SamplePrecision::kBfloat16, int8 = precision == SamplePrecision::kInt8;
  if ((!bf16 || have_bf16_) && (!int8 || have_int8_)) return;
  const auto pack = [&](const Mat<float>& w, Bf16Matrix& w16, Int8Matrix& w8) {
    if (bf16) PackBf16(w, w16);
    if (int8) PackInt8(w, w8);
  };
  Eigen::Index widest = config_.hidden_size;
  reduced_.resize(static_cast<size_t>(config_.layers));
  for (size_t l = 0; l < reduced_.size(); ++l) {
    const RecurrentParams<float>& p = params_.layers[l];
    ReducedLayer& r = reduced_[l];
    if (l > 0 || config_.embed_size > 0) {
      pack(p.weight_ih, r.weight_ih16, r.weight_ih8);
      widest = std::max(widest, p.weight_ih.cols());
    }
    pack(p.weight_hh, r.weight_hh16, r.weight_hh8);
  }
  pack(params_.decoder_weight, reduced_decoder_.weight_hh16, reduced_decoder_.weight_hh8);
  vector_words_.assign(static_cast<size_t>((widest + 1) / 2 + 16), 0);  // pairs take more words than quads
  have_bf16_ = have_bf16_ || bf16;
  have_int8_ = have_int8_ || int8;
}

std::span<const float> Sampler::Logits(const std::vector<int32_t>& context, SamplePrecision precision) {
  if (context.empty()) throw Error("Sampler::Logits needs at least one symbol");
  BuildReduced(precision);
  step_threads_ = 1;
  const SingleThread single_thread;
  std::span<const float> logits = Prime({context[0]});
  for (size_t t = 1; t < context.size(); ++t) logits = Step(context[t], precision);
  return logits;
}

double Sampler::Score(std::span<const int32_t> ids, SamplePrecision precision) {
  if (ids.size() < 2) throw Error("scoring needs at least two symbols, got " + std::to_string(ids.size()));
  BuildReduced(precision);
  step_threads_ = 1;
  const SingleThread single_thread;
  // The logits of up to kChunk steps side by side, scored by the training loss a chunk at a time.
  constexpr Eigen::Index kChunk = 1024;
  Mat<float> logits(config_.vocab_size, kChunk);
  Ids targets(kChunk);
  Eigen::Index filled = 0;
  double total = 0;
  const auto score = [&] {
    if (filled == kChunk) total += kChunk * SoftmaxCrossEntropy(logits, targets);
    else total += filled * SoftmaxCrossEntropy<float>(logits.leftCols(filled), targets.head(filled));
    filled = 0;
  };
  std::span<const float> z = Prime({ids[0]});
  for (size_t t = 1; t < ids.size(); ++t) {
    logits.col(filled) = Eigen::Map<const Eigen::VectorXf>(z.data(), config_.vocab_size);
    targets(filled++) = ids[t];
    if (filled == kChunk) score();
    if (t + 1 < ids.size()) z = Step(ids[t], precision);
  }
  if (filled > 0) score();
  return total / static_cast<double>(ids.size() - 1);
}

int32_t Sampler::Pick(std::span<const float> logits, const SampleOptions& options, Rng& rng) {
  if (options.argmax) return Argmax(logits);
  const size_t V = logits.size();
  // p_v = exp((z_v - max z) / temperature), unnormalised.
  const double zmax = *std::max_element(logits.begin(), logits.end());
  for (size_t v = 0; v < V; ++v) probs_[v] = std::exp((static_cast<double>(logits[v]) - zmax) / options.temperature);
  const bool top_k = options.top_k > 0 && static_cast<size_t>(options.top_k) < V;
  if (top_k || options.top_p < 1) {
    const size_t kept = SelectCandidates(logits, probs_, options.top_k, options.top_p, order_);
    for (size_t i = kept; i < V; ++i) probs_[static_cast<size_t>(order_[i])] = 0;
  }
  // Inverse CDF in id order over the kept symbols.
  double total = 0;
  for (size_t v = 0; v < V; ++v) total += probs_[v];
  const double target = rng.Uniform() * total;
  double mass = 0;
  int32_t last = -1;
  for (size_t v = 0; v < V; ++v) {
    if (probs_[v] == 0) continue;
    mass += probs_[v];
    last = static_cast<int32_t>(v);
    if (target < mass) return last;
  }
  // Rounding can leave target at the total: the last kept symbol. (The argmax always has
  // probability 1 before normalisation, so some symbol is kept.)
  return last >= 0 ? last : Argmax(logits);
}

void Sampler::Generate(const SampleOptions& options, const TextSink& emit) {
  options.Validate();
  std::vector<int32_t> prime;
  if (!options.prime.empty()) {
    std::vector<std::string> missing;
    prime = vocab_.Encode(options.prime, &missing);
    if (!missing.empty())
      throw Error("--prime has " + std::to_string(missing.size()) + " symbol" + (missing.size() == 1 ? "" : "s") +
                  " not in the vocabulary: " + NameSymbols(missing));
  }
  const std::string prime_text = vocab_.Decode(prime);  // the prime as the model sees it (NFC)
  const std::optional<int32_t> newline = vocab_.Find("\n");
  const std::string& stop = options.stop;
  BuildReduced(options.precision);
  step_threads_ = options.threads;
  const SingleThread single_thread;
  tail_.clear();
  tail_.reserve(stop.size() + 64);
  Rng rng(options.seed);

  // Appends a generated symbol to the tail and says whether the generated text now ends with
  // the stop string. The tail keeps only the last stop.size() - 1 bytes between calls.
  const auto stopped = [&](const std::string& text) {
    if (stop.empty()) return false;
    tail_ += text;
    if (tail_.ends_with(stop)) return true;
    if (tail_.size() >= stop.size()) tail_.erase(0, tail_.size() - (stop.size() - 1));
    return false;
  };

  for (int sample = 0; sample < options.num; ++sample) {
    if (sample > 0) emit("\n");
    tail_.clear();
    int64_t generated = 0;
    bool done = false;
    std::span<const float> logits;
    if (!prime.empty()) {
      emit(prime_text);
      logits = Prime(prime);
    } else if (newline) {
      logits = Prime({*newline});
    } else {
      if (options.length == 0) continue;
      const auto first = static_cast<int32_t>(rng.Below(static_cast<uint64_t>(vocab_.size())));
      emit(vocab_.symbol(first));
      ++generated;
      done = stopped(vocab_.symbol(first));
      logits = Prime({first});
    }
    while (!done && generated < options.length) {
      const int32_t id = Pick(logits, options, rng);
      const std::string& text = vocab_.symbol(id);
      emit(text);
      ++generated;
      done = stopped(text);
      if (!done && generated < options.length) logits = Step(id, options.precision);
    }
  }
}

}  // namespace bptt
