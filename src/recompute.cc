#include "bptt/recompute.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <optional>
#include <sstream>

#include "bptt/error.h"
#include "bptt/model.h"

namespace bptt {

RecomputeSchedule::RecomputeSchedule(int segments, int slots) : segments_(segments), slots_(slots) {
  if (slots < 1 || slots >= segments || segments > kMaxScheduledSegments)
    throw Error("a recomputation schedule needs 1 <= slots < segments <= " + std::to_string(kMaxScheduledSegments) +
                ", got " + std::to_string(slots) + " slots for " + std::to_string(segments) + " segments");
  const size_t size = At(segments, slots) + 1;
  split_.assign(size, 0);
  spine_split_.assign(size, 0);
  spine_cost_.assign(size, 0);
  std::vector<int64_t> cost(size, 0);  // F
  for (int m = 1; m <= slots; ++m) {
    for (int n = 1; n <= segments; ++n) {
      const int64_t N = n;
      int64_t& f = cost[At(n, m)];
      int64_t& g = spine_cost_[At(n, m)];
      if (n == 1) {
        f = 1;
        g = 0;
      } else if (m == 1) {
        f = N * (N + 1) / 2;
        g = N * (N - 1) / 2;
      } else if (m >= n) {
        f = 2 * N - 1;
        g = N - 1;
      } else {
        f = g = std::numeric_limits<int64_t>::max();
        for (int y = 1; y < n; ++y) {
          const int64_t left = cost[At(y, m)];
          const int64_t whole = y + cost[At(n - y, m - 1)] + left;
          if (whole < f) {
            f = whole;
            split_[At(n, m)] = static_cast<int16_t>(y);
          }
          const int64_t spine = spine_cost_[At(n - y, m - 1)] + left;
          if (spine < g) {
            g = spine;
            spine_split_[At(n, m)] = static_cast<int16_t>(y);
          }
        }
      }
    }
  }
}

int RecomputeSchedule::Split(int n, int m, bool spine) const {
  if (n < 2 || m < 2 || m >= n || n > segments_ || m > slots_)
    throw Error("no split for " + std::to_string(n) + " segments with " + std::to_string(m) + " slots");
  return (spine ? spine_split_ : split_)[At(n, m)];
}

int64_t RecomputeSchedule::Recomputations(int n, int m) const {
  if (n < 1 || m < 1 || n > segments_ || m > slots_)
    throw Error("no cost for " + std::to_string(n) + " segments with " + std::to_string(m) + " slots");
  return spine_cost_[At(n, m)];
}

uint64_t RecomputeSchedule::Bytes(int segments, int slots) {
  const uint64_t size = (static_cast<uint64_t>(segments) + 1) * (static_cast<uint64_t>(slots) + 1);
  return size * (2 * sizeof(int16_t) + sizeof(int64_t));
}

namespace {

std::string MiB(uint64_t bytes) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << static_cast<double>(bytes) / (1 << 20) << " MiB";
  return out.str();
}

std::string Steps(int K) { return std::to_string(K) + (K == 1 ? " step" : " steps"); }

}  // namespace

MemoryPlan PlanMemory(const ModelConfig& config, int T, int B, int optimizer_slots, Precision products,
                      uint64_t budget) {
  const auto bytes = [&](int K, int slots) {
    return EstimateTrainingBytes(config, T, B, optimizer_slots, products, K, slots);
  };
  const auto fits = [&](uint64_t b) { return static_cast<double>(b) <= kBudgetShare * static_cast<double>(budget); };
  const uint64_t plain = bytes(0, 0);
  if (fits(plain)) return {0, 0, plain, T};
  const int most = std::min(T, kMaxScheduledSegments);
  std::optional<RecomputeSchedule> table;
  if (most > 2) table.emplace(most, most - 1);
  MemoryPlan best;
  uint64_t least = plain;
  int least_K = T;
  for (int S = 2; S <= most; ++S) {
    const int K = (T + S - 1) / S;  // the shortest segments that make S of them
    if ((T + K - 1) / K != S) continue;
    const uint64_t one = bytes(K, 1);
    if (one < least) {
      least = one;
      least_K = K;
    }
    if (!fits(one)) continue;
    MemoryPlan plan;
    plan.checkpoint_steps = K;
    if (const uint64_t every = bytes(K, 0); fits(every)) {
      plan.bytes = every;
      plan.forward_steps = T + static_cast<int64_t>(S - 1) * K;
    } else {
      int lo = 1, hi = S - 1;  // the most slots that fit: bytes grow with the slots
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (fits(bytes(K, mid))) lo = mid;
        else hi = mid - 1;
      }
      plan.slots = lo;
      plan.bytes = bytes(K, lo);
      // The last segment stays in the buffers after the forward pass: every recomputed one is K long.
      plan.forward_steps = T + (S == 2 ? 1 : table->Recomputations(S, lo)) * K;
    }
    if (best.forward_steps == 0 || plan.forward_steps < best.forward_steps ||
        (plan.forward_steps == best.forward_steps && plan.bytes < best.bytes))
      best = plan;
  }
  if (best.forward_steps == 0) {
    const auto needed = static_cast<uint64_t>(std::ceil(static_cast<double>(least) / kBudgetShare)) + 1;
    throw Error("--memory-budget " + BytesText(budget) + " is less than this model needs to train a chunk of " +
                std::to_string(T) + " steps: at least " + std::to_string(needed) + " bytes, about " + MiB(needed) +
                " (segments of " + Steps(least_K) + ", one start kept)");
  }
  return best;
}

std::string MemoryPlanText(const MemoryPlan& plan, int T) {
  const std::string mib = MiB(plan.bytes);
  if (plan.checkpoint_steps == 0) return "every step kept (plain BPTT): about " + mib;
  std::ostringstream out;
  out.precision(3);
  out << "segments of " << Steps(plan.checkpoint_steps) << ", "
      << (plan.slots == 0 ? std::string("every start kept")
                          : "at most " + std::to_string(plan.slots) + " of their starts kept")
      << ": about " << mib << ", " << static_cast<double>(plan.forward_steps) / T
      << "x the forward steps of plain BPTT";
  return out.str();
}

void KeepLargeBlocksOutOfTheHeap() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
#endif
}

uint64_t ParseBytes(const std::string& text, const std::string& flag) {
  const auto refuse = [&] {
    return Error(flag + " must be a size such as 512M, 1.5G or 65536 (bytes), got '" + text + "'");
  };
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  if (end == begin || !std::isfinite(value) || value <= 0 || text.find_first_of("eExXpP") != std::string::npos)
    throw refuse();
  std::string suffix(end);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() == 3 && suffix.substr(1) == "IB") suffix.resize(1);
  if (suffix.size() == 2 && suffix[1] == 'B' && suffix[0] != 'B') suffix.resize(1);
  const std::string units = "KMGT";
  double scale = 1;
  if (suffix == "B") suffix.clear();
  if (!suffix.empty()) {
    const size_t i = units.find(suffix);
    if (suffix.size() != 1 || i == std::string::npos) throw refuse();
    scale = std::ldexp(1.0, 10 * static_cast<int>(i + 1));
  }
  const double bytes = std::round(value * scale);
  if (bytes < 1 || bytes > 9.0e18) throw refuse();
  return static_cast<uint64_t>(bytes);
}

std::string BytesText(uint64_t bytes) {
  const char* units = "KMGT";
  for (int i = 3; i >= 0; --i) {
    const uint64_t unit = uint64_t{1} << (10 * (i + 1));
    if (bytes >= unit && bytes % unit == 0) return std::to_string(bytes / unit) + units[i];
  }
  return std::to_string(bytes);
}

}  // namespace bptt
