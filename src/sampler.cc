#include "bptt/sampler.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <sstream>

#include "bptt/error.h"

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

// Runs the calling thread's parallel regions on one thread while it lives. A step of one
// stream is a chain of matrix-vector products that Eigen runs on one thread anyway; the only
// parallel region left in it (the one-hot gather of a single column) would cost a thread
// wake-up and a barrier per layer and symbol, ten times the step itself on a busy machine.
class SingleThread {
 public:
  SingleThread() : previous_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(previous_); }
  SingleThread(const SingleThread&) = delete;
  SingleThread& operator=(const SingleThread&) = delete;

 private:
  int previous_;
};

}  // namespace

void SampleOptions::Validate() const {
  if (length < 0) throw Error("--length must be non-negative, got " + std::to_string(length));
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw Error("--temperature must be positive, got " + Number(temperature));
  if (top_k < 0) throw Error("--top-k must be non-negative (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) throw Error("--top-p must be in (0, 1], got " + Number(top_p));
  if (num < 1) throw Error("--num must be positive, got " + std::to_string(num));
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
  step_id_.resize(1);
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

std::span<const float> Sampler::Step(int32_t id) {
  step_id_(0) = id;
  Forward(config_, params_, step_id_, 1, 1, state_, step_cache_);
  FinalState(config_, step_cache_, state_);
  return {step_cache_.logits.data(), static_cast<size_t>(config_.vocab_size)};
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
  int32_t last = Argmax(logits);  // kept by every filter; reached only if rounding ends the walk
  for (size_t v = 0; v < V; ++v) {
    if (probs_[v] == 0) continue;
    mass += probs_[v];
    last = static_cast<int32_t>(v);
    if (target < mass) return last;
  }
  return last;
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
      if (!done && generated < options.length) logits = Step(id);
    }
  }
}

}  // namespace bptt
