// Rng: the one seeded random number generator behind initialisation, dropout, data order and
// sampling. The engine is std::mt19937_64, whose output sequence the C++ standard fixes, and the
// conversions to uniform and normal variates are bptt's own, so the same seed gives the same
// numbers bit for bit with any compiler or standard library.
//
//   Rng rng(seed);  double u = rng.Uniform();  std::string s = rng.Save();  rng.Restore(s);
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace bptt {

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

  // The full engine state as text, and back (for exact resume).
  std::string Save() const;
  void Restore(const std::string& state);  // throws bptt::Error on malformed state

 private:
  std::mt19937_64 engine_;
};

}  // namespace bptt
