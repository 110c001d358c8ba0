// Batches (batch.h) of the user's sequences (sequences.h), for training, validation and
// prediction alike: standardised inputs, the head's targets (standardised values for a
// regression) and the mask of the positions the head scores.
//
//   FillSequenceBatch(set, spec, config.pooling, index, 0, index.size(), true, batch);
#pragma once

#include <span>

#include "bptt/batch.h"
#include "bptt/sequences.h"

namespace bptt {

// The sequences `index` of `set` make one whole batch of T = the longest of them; `batch` gets
// sequences [first, first + count) of it (a rank's slice; the whole batch when first = 0 and
// count = index.size()). The mask scores each sequence's last step (Pooling::kLast), or every
// step within its length (kMean, per-step labels), and batch.whole_scored counts the whole
// batch's scored positions. Without `targets` the targets are left empty (data to predict).
void FillSequenceBatch(const SequenceSet& set, const SequenceSpec& spec, Pooling pooling,
                       std::span<const int64_t> index, int64_t first, int64_t count, bool targets,
                       Batch<float>& batch);

// Windows of one series for forecasting: window s reads steps starts[s] .. starts[s] + T - 1 and
// at each step t targets the H steps after it (every one of which the series must hold). The
// batch gets windows [first, first + count) of `starts`; a position is scored when its step is
// at least `scored_from` (0: every position, and the mask left empty).
void FillWindowBatch(const SequenceSet& series, const SequenceSpec& spec, std::span<const int64_t> starts, int64_t T,
                     int64_t first, int64_t count, int64_t scored_from, Batch<float>& batch);

// A set of one sequence holding the first `steps` steps of a series (the same memory).
SequenceSet SeriesPrefix(const SequenceSet& series, int64_t steps);

}  // namespace bptt
