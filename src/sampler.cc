#include "bptt/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <sstream>

#include <omp.h>

#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/options.h"
#include "sampler_internal.h"

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

}  // namespace

void SampleOptions::Validate() const {
  if (length < 0) throw Error("--length must be non-negative, got " + std::to_string(length));
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw Error("--temperature must be positive, got " + Number(temperature));
  if (top_k < 0) throw Error("--top-k must be non-negative (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) throw Error("--top-p must be in (0, 1], got " + Number(top_p));
  if (num < 1) throw Error("--num must be positive, got " + std::to_string(num));
  CheckThreads(threads, 0);
  if (dynamic.enabled) {
    dynamic.Validate();
    if (prime.empty() && prime_file.empty())
      throw Error("--dynamic adapts the weights to the prime: give --prime or --prime-file");
  }
}

std::span<const OptionSpec<SampleOptions>> SampleOptionSpecs() {
  using S = SampleOptions;
  constexpr OnResume kNone = OnResume::kNone;
  const char* group = "Sampling";
  const auto not_with_argmax = [](const S& s) {
    return s.argmax ? "does not apply with --argmax, which always takes the most probable symbol" : "";
  };
  static const std::vector<OptionSpec<S>> specs = [&] {
    std::vector<OptionSpec<S>> rows = {
      Field<S>(kAnyCommand, "length", "", group, "symbols to generate per sample (after the prime)", kNone,
               [](S& s) -> auto& { return s.length; }),
      Restrict(Field<S>(kAnyCommand, "temperature", "", group,
                        "divide the logits by this (> 0): lower is more conservative", kNone,
                        [](S& s) -> auto& { return s.temperature; }),
               not_with_argmax),
      Restrict(Field<S>(kAnyCommand, "top-k", "", group, "sample from the k most probable symbols (0 = all)", kNone,
                        [](S& s) -> auto& { return s.top_k; }),
               not_with_argmax),
      Restrict(Field<S>(kAnyCommand, "top-p", "", group,
                        "sample from the most probable symbols up to this probability mass (1 = all)", kNone,
                        [](S& s) -> auto& { return s.top_p; }),
               not_with_argmax),
      Field<S>(kAnyCommand, "prime", "", group, "text to start from, printed before each sample (default: a line start)",
               kNone, [](S& s) -> auto& { return s.prime; }),
      Restrict(Field<S>(kAnyCommand, "prime-file", "", group,
                        "read the prime from this text file (printed before each sample, as --prime is)", kNone,
                        [](S& s) -> auto& { return s.prime_file; }),
               [](const S& s) { return s.prime.empty() ? "" : "cannot be combined with --prime"; }),
      Field<S>(kAnyCommand, "seed", "", group, "random seed: the same seed gives the same text", kNone,
               [](S& s) -> auto& { return s.seed; }),
      Field<S>(kAnyCommand, "argmax", "", group, "always take the most probable symbol (greedy decoding)", kNone,
               [](S& s) -> auto& { return s.argmax; }),
      Field<S>(kAnyCommand, "stop", "", group, "end a sample once its generated text ends with this string", kNone,
               [](S& s) -> auto& { return s.stop; }),
      Field<S>(kAnyCommand, "num", "", group, "samples to generate, separated by a newline", kNone,
               [](S& s) -> auto& { return s.num; }),
      Choice<S>(kAnyCommand, "precision", "", group,
                "arithmetic of the per-symbol products: fp32; bf16 (bfloat16 weights, float sums: about twice as "
                "fast); int8 (8-bit weights and vector, int32 sums: about four times; see bptt eval --precision for "
                "what it costs; the default where the CPU has AVX-512 VNNI or AVX2)",
                kNone, [](S& s) -> auto& { return s.precision; }, PrecisionName,
                [](const std::string& v, const std::string& f) { return ParsePrecision(v, f); }),
      Threads<S>(kAnyCommand, "", group,
                 "threads splitting each per-symbol product by rows (0 = timed as it runs: one thread, or the cores "
                 "whose caches hold the weights; the text is the same either way)",
                 kNone, [](S& s) -> auto& { return s.threads; }, 0),
    };
    for (OptionSpec<S>& row : Nest<S>(DynamicOptionSpecs(), kAnyCommand, "", [](S& s) -> auto& { return s.dynamic; }))
      rows.push_back(std::move(row));
    return rows;
  }();
  return specs;
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
    : stepper_(config, std::move(params)), vocab_(std::move(vocab)) {
  if (!config.language_model())
    throw Error("sampling needs a language model (symbol input, softmax over the same symbols); this model has " +
                std::string(config.dense_input() ? "dense input" : "another head"));
  if (vocab_.size() != config.vocab_size)
    throw Error("the vocabulary has " + std::to_string(vocab_.size()) + " symbols but the model expects " +
                std::to_string(config.vocab_size));
  probs_.resize(static_cast<size_t>(config.vocab_size));
  order_.resize(static_cast<size_t>(config.vocab_size));
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
  Start(options);
  std::string_view piece;
  while (Next(&piece)) emit(piece);
}

void Sampler::Start(const SampleOptions& options) {
  options.Validate();
  prime_.clear();
  std::string prime = options.prime;
  const std::string flag = options.prime_file.empty() ? "--prime" : "--prime-file " + options.prime_file;
  if (!options.prime_file.empty()) {
    try {
      CheckTextFile(options.prime_file);
      ReadInPieces(options.prime_file, [&prime](std::string_view piece) { prime += piece; });
    } catch (const Error& e) {
      throw Error("--prime-file: " + std::string(e.what()));
    }
  }
  if (!prime.empty()) {
    std::vector<std::string> missing;
    prime_ = vocab_.Encode(prime, &missing);
    if (!missing.empty())
      throw Error(flag + " has " + std::to_string(missing.size()) + " symbol" + (missing.size() == 1 ? "" : "s") +
                  " not in the vocabulary: " + NameSymbols(missing));
  }
  prime_text_ = vocab_.Decode(prime_);
  adapted_.reset();
  if (options.dynamic.enabled) {
    if (prime_.size() < 2)
      throw Error("--dynamic adapts the weights to the prime, which needs at least 2 symbols; " + flag + " has " +
                  std::to_string(prime_.size()));
    DynamicAdapter adapter(stepper_.config(), stepper_.params(), options.dynamic,
                           options.threads > 0 ? options.threads : std::max(1, omp_get_num_procs()));
    if (options.dynamic.rule == DynamicRule::kRms) {
      if (options.dynamic.stats_file.empty()) {
        adapter.GatherStatistics(prime_);
      } else {
        try {
          adapter.GatherStatistics(EncodeFile(options.dynamic.stats_file, vocab_).ids);
        } catch (const Error& e) {
          throw Error("--dynamic-stats " + options.dynamic.stats_file + ": " + e.what());
        }
      }
    }
    adapter.Score(prime_);
    adapted_.emplace(stepper_.config(), adapter.weights());
  }
  options_ = options;
  active().Configure(options.precision, options.threads);
  tail_.clear();
  tail_.reserve(options.stop.size() + 64);
  newline_ = vocab_.Find("\n");
  rng_ = Rng(options.seed);
  sample_ = 0;
  phase_ = Phase::kSeparate;
}

// The tail keeps only the last stop.size() - 1 bytes between calls.
bool Sampler::Stopped(const std::string& text) {
  const std::string& stop = options_.stop;
  if (stop.empty()) return false;
  tail_ += text;
  if (tail_.ends_with(stop)) return true;
  if (tail_.size() >= stop.size()) tail_.erase(0, tail_.size() - (stop.size() - 1));
  return false;
}

bool Sampler::Next(std::string_view* piece) {
  while (sample_ < options_.num) {
    switch (phase_) {
      case Phase::kSeparate:  // "\n" between samples
        phase_ = Phase::kBegin;
        if (sample_ > 0) {
          *piece = "\n";
          return true;
        }
        break;
      case Phase::kBegin: {  // the prime, a line start, or a first symbol drawn uniformly
        phase_ = Phase::kGenerate;
        tail_.clear();
        generated_ = 0;
        done_ = false;
        if (!prime_.empty()) {
          logits_ = active().Prime(prime_);
          *piece = prime_text_;
          return true;
        }
        if (newline_) {
          logits_ = active().Prime(std::span<const int32_t>(&*newline_, 1));
          break;
        }
        if (options_.length == 0) break;
        const auto first = static_cast<int32_t>(rng_.Below(static_cast<uint64_t>(vocab_.size())));
        ++generated_;
        done_ = Stopped(vocab_.symbol(first));
        logits_ = active().Prime(std::span<const int32_t>(&first, 1));
        *piece = vocab_.symbol(first);
        return true;
      }
      case Phase::kGenerate: {
        if (done_ || generated_ >= options_.length) {
          ++sample_;
          phase_ = Phase::kSeparate;
          break;
        }
        const int32_t id = Pick(logits_, options_, rng_);
        const std::string& text = vocab_.symbol(id);
        ++generated_;
        done_ = Stopped(text);
        if (!done_ && generated_ < options_.length) logits_ = active().Step(id);
        *piece = text;
        return true;
      }
    }
  }
  return false;
}

}  // namespace bptt
