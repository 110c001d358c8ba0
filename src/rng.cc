#include "bptt/rng.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "bptt/error.h"

namespace bptt {

double Rng::Normal() {
  const double u1 = 1.0 - Uniform();  // (0, 1]
  const double u2 = Uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

uint64_t Rng::Below(uint64_t n) {
  // Rejection sampling removes the modulo bias.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = engine_();
  while (x >= limit);
  return x % n;
}

std::string Rng::Save() const {
  std::ostringstream out;
  out << engine_;
  return out.str();
}

void Rng::Restore(const std::string& state) {
  std::istringstream in(state);
  std::mt19937_64 engine;
  in >> engine;
  if (in.fail()) throw Error("random number generator state is malformed");
  engine_ = engine;
}

}  // namespace bptt
