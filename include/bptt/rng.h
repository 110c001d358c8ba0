// Rng: the one seeded random number generator behind initialisation, dropout, generated data and
// sampling. The engine is std::mt19937_64, whose output sequence the C++ standard fixes, and the
// conversions to uniform and normal variates are bptt's own, so the same seed gives the same
// numbers bit for bit with any compiler or standard library.
//
// Every random stream of a run comes from its one --seed: stream k is seeded with
// StreamSeed(seed, k), so the streams differ from each other and from every other seed's.
//
//   Rng rng(seed);  double u = rng.Uniform();  std::string s = rng.Save();  rng.Restore(s);
//   Rng dropout(StreamSeed(seed, kDropoutStream));
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace bptt {

// The streams of a training run. Initialisation draws from Rng(seed) itself.
inline constexpr uint64_t kDropoutStream = 1;
inline constexpr uint64_t kTrainDataStream = 2;  // generated training sequences (tasks)
inline constexpr uint64_t kTestDataStream = 3;   // generated test sequences (tasks)
inline constexpr uint64_t kFeedbackStream = 4;   // the fixed random matrices of FA / DFA
inline constexpr uint64_t kCreditStream = 5;     // UORO's random signs (credit.h)

// A seed for stream `stream` of `seed` (splitmix64 of both): well mixed, so nearby seeds and
// streams give unrelated generators.
constexpr uint64_t StreamSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : engine_(seed) {}

  uint64_t Next() { return engine_(); }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Standard normal by the Box-Muller transform (one variate per call, no hidden state).
  double Normal();
  // Uniform integer in [0, n).
  uint64_t Below(uint64_t n);
  // Advances as if n numbers had been drawn (each Uniform or Next draws one).
  void Discard(uint64_t n) { engine_.discard(n); }

  // The full engine state as text, and back (for exact resume).
  std::string Save() const;
  void Restore(const std::string& state);  // throws bptt::Error on malformed state

 private:
  std::mt19937_64 engine_;
};

}  // namespace bptt
