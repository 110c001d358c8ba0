// Sampler: generates text from a trained model one symbol at a time.
//
// The prime (or, without one, "\n") is run through the model as one chunk (T = its length,
// B = 1); then each step turns the logits z (V) of the last position into a distribution,
// draws the next symbol, emits its text and runs that symbol through the model (T = 1, B = 1):
//
//   p = softmax(z / temperature)                       in double
//   top-k:  keep the k symbols with the highest z     (ties: lower id first)
//   top-p:  of those, keep the smallest set, in decreasing z, whose probability reaches
//           top_p of their total
//   draw u = Rng::Uniform() * (kept total) and walk the kept symbols in id order
//   argmax: the symbol with the highest z (lowest id on ties), no draw
//
// Candidates are ranked by the logits themselves, so --top-k 1 and --argmax pick the same
// symbol at any temperature; and since the draw walks the kept symbols in id order, a filter
// that keeps every symbol (top-k >= V, top-p = 1) gives the same text as no filter.
// A step costs the two matrix-vector products of each layer and the decoder's (Eigen's GEMV:
// a chunk of T = 1 through Forward would run the GEMM path of training, which repacks the
// weights every call); the Sampler owns a copy of the model and every buffer, so nothing is
// allocated per symbol.
//
//   Sampler sampler(checkpoint.config, checkpoint.params, checkpoint.vocab);
//   sampler.Generate(options, [](std::string_view text) { std::cout << text << std::flush; });
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/model.h"
#include "bptt/rng.h"
#include "bptt/vocab.h"

namespace bptt {

// Arithmetic of the per-symbol products; the prime is always run in float32.
//   kFloat32   float weights, float sums.
//   kBfloat16  bfloat16 copies of the weights and of the vector, float sums (AVX-512 BF16):
//              half the bytes read per symbol; logits move by about 1% of their spread.
//   kInt8      int8 weights with a float scale per row, s_r = max_k |w_rk| / 127, and the
//              vector rounded to 8 bits with one scale per product, a = max_k |x_k| / 127;
//              int32 sums (AVX-512 VNNI), y_r = s_r a sum_k q_rk u_k. A quarter of the bytes.
// Reading the weights is the cost of a step once they outgrow the core's cache (4 MB per
// 512-unit LSTM layer in float), so fewer bytes is faster. tests/sampler_precision_test.cc
// bounds how far the reduced precisions move the logits; `bptt eval --precision` measures
// what they cost in nats on real text.
enum class SamplePrecision { kFloat32, kBfloat16, kInt8 };

// "fp32", "bf16", "int8" and back. ParsePrecision throws bptt::Error naming `flag` for
// anything else.
const char* PrecisionName(SamplePrecision precision);
SamplePrecision ParsePrecision(const std::string& name, const std::string& flag);

struct SampleOptions {
  int64_t length = 500;      // symbols generated per sample (not counting the prime)
  double temperature = 1.0;  // > 0; below 1 sharpens the distribution, above 1 flattens it
  int top_k = 0;             // keep the k most probable symbols; 0 = off
  double top_p = 1.0;        // nucleus: keep the most probable symbols up to this mass; 1 = off
  std::string prime;         // UTF-8 text to condition on, emitted before each sample
  uint64_t seed = 1;         // the same seed (and options) gives the same text
  bool argmax = false;       // always pick the most probable symbol (greedy decoding)
  std::string stop;          // end a sample once its generated text ends with this; "" = off
  int num = 1;               // samples, each restarted from the prime, separated by "\n"
  SamplePrecision precision = SamplePrecision::kFloat32;  // of the per-symbol products
  int threads = 1;           // threads splitting each per-symbol product by rows (>= 1)

  // Throws bptt::Error naming the flag: "--temperature must be positive", ...
  // (The prime is checked against the vocabulary by Sampler::Generate.)
  void Validate() const;
};

// Receives the text of each symbol as it is generated; the view is valid only during the call.
using TextSink = std::function<void(std::string_view text)>;

class Sampler {
 public:
  // Takes its own copy of the model. Throws bptt::Error if the configuration is invalid or
  // the vocabulary's size is not config.vocab_size.
  Sampler(ModelConfig config, ModelParams<float> params, Vocab vocab);

  // Streams options.num samples to emit: for each, the prime's text, then options.length
  // generated symbols (fewer when options.stop is met), with "\n" between samples. Without a
  // prime each sample starts after "\n" when the vocabulary has it, else from a symbol drawn
  // uniformly with the seed (emitted, and counted in the length). Throws bptt::Error for
  // invalid options or prime symbols outside the vocabulary (naming them; a word vocabulary
  // with "<unk>" reads them as "<unk>" instead).
  void Generate(const SampleOptions& options, const TextSink& emit);

  // The logits (V) after running `context` (at least one symbol) from the zero state: the
  // first symbol as the prime, each later one as a generation step of `precision`. For tests.
  std::span<const float> Logits(const std::vector<int32_t>& context, SamplePrecision precision);

  // Mean nats per symbol of predicting ids[1..] one symbol at a time from the zero state, the
  // first symbol run as the prime and each later one as a step of `precision`: the cost of a
  // precision on real text, through the same path as Generate. Throws bptt::Error if `ids`
  // has fewer than two symbols.
  double Score(std::span<const int32_t> ids, SamplePrecision precision);

  const ModelConfig& config() const { return config_; }
  const Vocab& vocab() const { return vocab_; }

 private:
  // Runs `ids` (at least one) through the model from the zero state as one chunk; leaves the
  // state after it in state_ and returns the logits (V) of its last position.
  std::span<const float> Prime(const std::vector<int32_t>& ids);
  // A weight matrix (M, K) in bfloat16 for the kBfloat16 products: panels of 16 rows, each
  // holding for every pair of columns (k, k+1) the 16 rows' two values side by side, as the
  // AVX-512 BF16 dot-product instruction reads them; rows and columns past the matrix are zero.
  struct Bf16Matrix {
    Eigen::Index rows = 0, cols = 0;
    std::vector<uint16_t> data;  // (ceil(M/16), ceil(K/2), 16, 2)
  };
  // A weight matrix (M, K) in int8 for the kInt8 products: q_rk = round(w_rk / s_r) in panels
  // of 64 rows, each holding for every four columns k..k+3 the 64 rows' four values side by
  // side, as the AVX-512 VNNI instruction reads them (a panel is read as one stream); rows and
  // columns past the matrix are zero.
  struct Int8Matrix {
    Eigen::Index rows = 0, cols = 0;
    std::vector<int8_t> data;     // (ceil(M/64), ceil(K/4), 64, 4)
    std::vector<float> scale;     // (ceil(M/64) 64) s_r
    std::vector<int32_t> offset;  // (ceil(M/64) 64) 128 sum_k q_rk: the vector is read as
                                  //   unsigned bytes u_k = round(x_k / a) + 128
  };
  // The reduced copies of one layer's matrices; layer 0 with one-hot input keeps weight_ih in
  // float (its step is a column gather).
  struct ReducedLayer {
    Bf16Matrix weight_ih16, weight_hh16;
    Int8Matrix weight_ih8, weight_hh8;
  };
  // Runs one symbol from state_; updates state_ and returns the next logits (V).
  std::span<const float> Step(int32_t id, SamplePrecision precision);
  // Fills the reduced copies of `precision` (once; nothing for kFloat32).
  void BuildReduced(SamplePrecision precision);
  // y (M) = w x (+ y when accumulate), in float or with w's reduced copy in `reduced`.
  void Product(const Mat<float>& w, const ReducedLayer& reduced, bool hh, SamplePrecision precision,
               const float* x, float* y, bool accumulate);
  // The next symbol given the logits.
  int32_t Pick(std::span<const float> logits, const SampleOptions& options, Rng& rng);

  ModelConfig config_;
  ModelParams<float> params_;
  Vocab vocab_;

  State<float> state_;            // (H, 1) per layer
  ModelCache<float> prime_cache_; // T = prime length, B = 1
  std::vector<Eigen::VectorXf> step_gates_;   // L of (G*H): a step's gate pre-activations
  std::vector<Eigen::VectorXf> step_hidden_;  // GRU: L of (3H) W_hh h_{t-1} + b_hh
  Eigen::VectorXf step_logits_;               // (V)
  Eigen::VectorXf step_input_;                // (E) embedding input: the symbol's encoder row
  std::vector<ReducedLayer> reduced_;         // L: built on the first Generate that needs them
  ReducedLayer reduced_decoder_;              // its weight_hh* hold the decoder (V, H)
  bool have_bf16_ = false, have_int8_ = false;
  std::vector<uint32_t> vector_words_;        // the vector of a reduced product: bfloat16
                                              //   pairs or unsigned-byte quads, zero-padded
  int step_threads_ = 1;                      // SampleOptions::threads of the running Generate
  Ids prime_ids_;                 // (T)
  std::vector<double> probs_;     // (V)
  std::vector<int32_t> order_;    // (V) candidate ranking for top-k / top-p
  std::string tail_;              // the end of the generated text, for the stop check
};

// The candidates for the next symbol under top-k and top-p (as described above). Fills
// `order` with the ids 0..n-1 so that the kept ones come first, ranked by decreasing score
// (ties: lower id first), and returns how many are kept (at least 1).
//   scores  (n) the ranking key: the logits, or any increasing function of the probabilities
//   probs   (n) the probabilities (any positive scale; only ratios matter)
//   top_k   0 = off; k >= n keeps every symbol
//   top_p   in (0, 1]; the smallest prefix whose probability reaches top_p of the total of the
//           top-k candidates (all of them when rounding keeps the sum below it)
// Only the kept prefix of `order` is sorted. `order` is resized to n, which allocates only the
// first time.
size_t SelectCandidates(std::span<const float> scores, std::span<const double> probs, int top_k,
                        double top_p, std::vector<int32_t>& order);

}  // namespace bptt
