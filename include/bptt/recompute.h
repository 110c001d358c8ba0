// Memory-bounded BPTT under a budget: which segment starts the forward pass keeps, and what the
// backward sweep recomputes from them.
//
// A chunk runs in S segments of K steps (model.h ModelCache::checkpoint_steps); b_s is the state
// at the start of segment s (b_0 the initial state, b_S the final one). Plain segmenting
// (Chen et al. 2016) keeps every b_s and recomputes each segment's caches once in the backward
// sweep. With at most m of b_0 .. b_{S-1} kept (m < S slots), the sweep recomputes some segments
// more than once: the schedule of Gruslys et al. 2016 ("Memory-efficient backpropagation through
// time", BPTT-HSM), here over segments rather than single steps. Sweeping segments [a, a+n) newest
// first from a kept b_a with m slots (b_a's one of them):
//   n = 1      recompute the segment's caches from b_a (unless the buffers hold them) and sweep it;
//   m >= n     run forward from b_a keeping every start, then sweep newest first;
//   m = 1      for each segment, newest first, run forward from b_a to it;
//   otherwise  run y segments forward from b_a and keep b_{a+y}; sweep [a+y, a+n) with m - 1
//              slots; release b_{a+y}; sweep [a, a+y) with m slots.
// The split y minimises the segment forward passes F(n, m) of that sweep:
//   F(n, m) = min_{0<y<n} y + F(n - y, m - 1) + F(y, m),
//   F(1, m) = 1,   F(n, 1) = n (n + 1) / 2,   F(n, m >= n) = 2n - 1.
// The chunk's forward pass keeps, on its way, the starts that the sweep of the whole chunk would
// keep first along its newest-first path (the "spine": b_{y1}, b_{y1 + y2}, ... of the splits
// taken on the right), and leaves the last segment's caches in the buffers, so the whole sweep
// costs
//   G(n, m) = min_{0<y<n} G(n - y, m - 1) + F(y, m),
//   G(1, m) = 0,   G(n, 1) = n (n - 1) / 2,   G(n, m >= n) = n - 1
// recomputed segments after the chunk's own forward pass (n - 1 is plain segmenting's).
// Every segment is still swept once, newest first, so the gradient is the same bits with any
// schedule (tests/checkpoint_steps_test.cc).
//
// --memory-budget picks K and m: among the segment lengths whose schedule fits the budget as
// EstimateTrainingBytes counts it (model.h), the one that runs the fewest steps forward, each with
// as many slots as fit (PlanMemory).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bptt/compute.h"  // Precision

namespace bptt {

struct ModelConfig;

// A scheduled sweep keeps its split tables for at most this many segments (K is then at least
// T / kMaxScheduledSegments); plain segmenting has no such limit.
inline constexpr int kMaxScheduledSegments = 512;

// The splits and costs above for every n <= segments and m <= slots.
class RecomputeSchedule {
 public:
  RecomputeSchedule() = default;  // no table: every start kept
  // Requires 1 <= slots < segments <= kMaxScheduledSegments.
  RecomputeSchedule(int segments, int slots);

  int segments() const { return segments_; }
  int slots() const { return slots_; }
  // The y of the sweep of n segments with m slots (1 < n, 1 < m < n), on the spine or off it.
  int Split(int n, int m, bool spine) const;
  // G(n, m): the segments a whole chunk's sweep recomputes (n <= segments, m <= slots).
  int64_t Recomputations(int n, int m) const;
  // Bytes of the tables of a schedule of (segments, slots).
  static uint64_t Bytes(int segments, int slots);

 private:
  size_t At(int n, int m) const { return static_cast<size_t>(n) * static_cast<size_t>(slots_ + 1) + static_cast<size_t>(m); }
  int segments_ = 0, slots_ = 0;
  std::vector<int16_t> split_, spine_split_;  // (segments + 1) x (slots + 1)
  std::vector<int64_t> spine_cost_;           // G, the same shape
};

// What --memory-budget chose for a (T, B) chunk: segments of checkpoint_steps steps (0: every
// step kept, plain BPTT), at most `slots` segment starts kept (0: every one), the training bytes
// EstimateTrainingBytes counts for it, and the steps each chunk runs forward (T for plain BPTT;
// T + the recomputed segments' steps otherwise).
inline constexpr double kBudgetShare = 0.98;

struct MemoryPlan {
  int checkpoint_steps = 0;
  int slots = 0;
  uint64_t bytes = 0;
  int64_t forward_steps = 0;
};

// The plan whose estimate fits kBudgetShare of `budget` bytes with the fewest forward steps (ties:
// the fewer bytes); throws bptt::Error saying the least this model needs when nothing fits. The
// rest of the budget is for what the estimate leaves out (the allocator's own overhead).
MemoryPlan PlanMemory(const ModelConfig& config, int T, int B, int optimizer_slots, Precision products,
                      uint64_t budget);
// "segments of 32 steps, at most 9 of their starts kept: about 61.2 MiB, 1.73x the forward steps
// of plain BPTT" (or "every step kept (plain BPTT): about 320.4 MiB").
std::string MemoryPlanText(const MemoryPlan& plan, int T);

// Makes glibc's malloc serve every block of 128 KiB or more by a mapping of its own, returned
// to the system when freed. (By default the threshold rises to the largest block freed, up to 32
// MiB, and such blocks then come from the heap: the buffers of a segment shorter than the others,
// resized twice a chunk, leave holes there that the resident set keeps: 15% over the estimate at
// T = 4096, B = 8 with segments of 342, and 8% with B = 1 and segments of 456 under a 4 MiB
// threshold.) Process-wide; training calls it when it runs in segments (--checkpoint-steps or
// --memory-budget). Elsewhere than glibc, nothing.
void KeepLargeBlocksOutOfTheHeap();

// A size in bytes: a number with an optional suffix K, M, G or T (powers of 1024; KiB, MiB ...
// and lower case also read), e.g. 512M, 1.5G, 65536; throws bptt::Error naming `flag`.
uint64_t ParseBytes(const std::string& text, const std::string& flag);
// The shortest such text that reads back to `bytes` (2G, 640M, 1000).
std::string BytesText(uint64_t bytes);

}  // namespace bptt
