// The candidate selection of the sampler (bptt/sampler.h: top-k, then top-p), reached directly
// by its tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bptt {

// The candidates for the next symbol under top-k and top-p (as sampler.h describes them). Fills
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
