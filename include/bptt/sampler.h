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
// The model runs through a Stepper (stepper.h): the prime as one chunk, then one step per symbol
// in the precision SampleOptions asks for. With options.dynamic the weights first adapt to the
// prime as dynamic evaluation reads a text (dynamic_evaluation.h), and the samples come from the
// adapted copy; the model the Sampler was made with is kept for the next Generate. The Sampler does the decoding; it owns the Stepper
// and every buffer, so nothing is allocated per symbol.
//
//   Sampler sampler(checkpoint.config, checkpoint.params, checkpoint.vocab);
//   sampler.Generate(options, [](std::string_view text) { std::cout << text << std::flush; });
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/dynamic_evaluation.h"
#include "bptt/model.h"
#include "bptt/rng.h"
#include "bptt/stepper.h"
#include "bptt/vocab.h"

namespace bptt {

struct SampleOptions {
  int64_t length = 500;      // symbols generated per sample (not counting the prime)
  double temperature = 1.0;  // > 0; below 1 sharpens the distribution, above 1 flattens it
  int top_k = 0;             // keep the k most probable symbols; 0 = off
  double top_p = 1.0;        // nucleus: keep the most probable symbols up to this mass; 1 = off
  std::string prime;         // UTF-8 text to condition on, emitted before each sample
  std::string prime_file;    // read the prime from this text file instead
  uint64_t seed = 1;         // the same seed (and options) gives the same text
  bool argmax = false;       // always pick the most probable symbol (greedy decoding)
  std::string stop;          // end a sample once its generated text ends with this; "" = off
  int num = 1;               // samples, each restarted from the prime, separated by "\n"
  Precision precision = DefaultSamplePrecision();  // of the per-symbol products (stepper.h)
  int threads = 0;           // threads splitting each per-symbol product by rows; 0 = chosen as it runs
                             //   (and of dynamic adaptation's products; 0 = every core)
  DynamicOptions dynamic;    // adapt the weights to the prime before sampling (needs a prime of
                             //   at least 2 symbols)

  // Throws bptt::Error naming the flag: "--temperature must be positive", ...
  // (The prime is checked against the vocabulary by Sampler::Generate.)
  void Validate() const;
};

template <typename Options>
struct OptionSpec;  // options.h

// The sampling options (--length, --temperature, ..., --precision, --threads, --prime-file and
// the --dynamic-* rows of DynamicOptionSpecs), declared once (options.h) for `bptt sample` and the
// Python module's Model.sample and Model.stream. --temperature, --top-k and --top-p are refused
// with --argmax, which takes the most probable symbol whatever they say; --prime-file with --prime.
std::span<const OptionSpec<SampleOptions>> SampleOptionSpecs();

// Receives the text of each symbol as it is generated; the view is valid only during the call.
using TextSink = std::function<void(std::string_view text)>;

class Sampler {
 public:
  // Takes its own copy of the model. Throws bptt::Error if the model is not a language model
  // (symbol input, softmax over the same symbols), its configuration is invalid or the
  // vocabulary's size is not config.vocab_size.
  Sampler(ModelConfig config, ModelParams<float> params, Vocab vocab);

  // Streams options.num samples to emit: for each, the prime's text, then options.length
  // generated symbols (fewer when options.stop is met), with "\n" between samples. Without a
  // prime each sample starts after "\n" when the vocabulary has it, else from a symbol drawn
  // uniformly with the seed (emitted, and counted in the length). Throws bptt::Error for
  // invalid options, an unreadable prime file, or prime symbols outside the vocabulary (naming
  // them; a word vocabulary with "<unk>" reads them as "<unk>" instead).
  void Generate(const SampleOptions& options, const TextSink& emit);

  // Generate as a stream that the caller pulls from (the Python module's generator): Start
  // validates and takes the options, then each Next sets *piece to the next text that Generate
  // would emit, until it returns false. The view is valid until the next call. Start throws as
  // Generate does.
  void Start(const SampleOptions& options);
  bool Next(std::string_view* piece);

  const ModelConfig& config() const { return stepper_.config(); }
  // The weights the samples come from: the model's, or after Start with options.dynamic its copy
  // adapted to the prime.
  const ModelParams<float>& params() const { return active().params(); }
  const Vocab& vocab() const { return vocab_; }

 private:
  // The next symbol given the logits.
  int32_t Pick(std::span<const float> logits, const SampleOptions& options, Rng& rng);

  // Appends generated text to tail_; true when the generated text now ends with options_.stop.
  bool Stopped(const std::string& text);

  Stepper& active() { return adapted_ ? *adapted_ : stepper_; }
  const Stepper& active() const { return adapted_ ? *adapted_ : stepper_; }

  Stepper stepper_;                 // the model as given
  std::optional<Stepper> adapted_;  // options.dynamic: the copy adapted to the prime
  Vocab vocab_;
  // The stream of Start and Next.
  SampleOptions options_;
  std::vector<int32_t> prime_;    // the prime's ids
  std::string prime_text_;        // the prime as the model sees it (NFC)
  std::optional<int32_t> newline_;  // the id of "\n", when the vocabulary has it
  Rng rng_;
  enum class Phase { kSeparate, kBegin, kGenerate } phase_ = Phase::kSeparate;
  int sample_ = 0;                // the sample being generated
  int64_t generated_ = 0;         // symbols of it generated so far
  bool done_ = false;             // this sample met the stop string
  std::span<const float> logits_; // (V) of the last position
  std::vector<double> probs_;     // (V)
  std::vector<int32_t> order_;    // (V) candidate ranking for top-k / top-p
  std::string tail_;              // the end of the generated text, for the stop check
};

}  // namespace bptt
