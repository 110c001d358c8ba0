#include "sequence_batch.h"

#include <algorithm>

#include "bptt/error.h"

namespace bptt {

void FillSequenceBatch(const SequenceSet& set, const SequenceSpec& spec, Pooling pooling,
                       std::span<const int64_t> index, int64_t first, int64_t count, bool targets,
                       Batch<float>& batch) {
  if (set.D != spec.features)
    throw Error(set.source + ": sequences of " + std::to_string(set.D) + " features a step, but the model reads " +
                std::to_string(spec.features));
  const bool per_step = spec.head == SequenceHead::kLabel;
  const bool every_step = per_step || pooling == Pooling::kMean;
  int64_t T = 0, whole_scored = 0;
  for (int64_t n : index) {
    T = std::max(T, set.length(n));
    whole_scored += every_step ? set.length(n) : 1;
  }
  const Eigen::Index B = count, D = set.D;
  batch.T = T;
  batch.B = B;
  batch.first = first;
  batch.whole = static_cast<Eigen::Index>(index.size());
  batch.whole_scored = whole_scored;
  batch.ids.resize(0);
  EnsureShape(batch.dense, D, T * B);
  batch.dense.setZero();
  batch.scored.setZero(T * B);
  const bool values = spec.head == SequenceHead::kRegress;
  if (targets && values) {
    EnsureShape(batch.values, spec.targets, T * B);
    batch.values.setZero();
    batch.classes.resize(0);
  } else {
    batch.classes.setZero(T * B);
    batch.values.resize(0, 0);
  }
  for (Eigen::Index b = 0; b < B; ++b) {
    const int64_t n = index[static_cast<size_t>(first + b)];
    const int64_t L = set.length(n);
    for (int64_t t = 0; t < L; ++t) {
      const float* x = set.step(n, t);
      float* out = batch.dense.col(t * B + b).data();
      for (Eigen::Index d = 0; d < D; ++d) out[d] = static_cast<float>(spec.inputs.Apply(x[d], static_cast<size_t>(d)));
    }
    for (int64_t t = every_step ? 0 : L - 1; t < L; ++t) {
      const Eigen::Index j = t * B + b;
      batch.scored(j) = 1;
      if (!targets) continue;
      if (per_step) {
        batch.classes(j) = set.classes[static_cast<size_t>(n * set.T + t)];
      } else if (values) {
        for (int o = 0; o < spec.targets; ++o)
          batch.values(o, j) =
              static_cast<float>(spec.outputs.Apply(set.values[static_cast<size_t>(n * spec.targets + o)], static_cast<size_t>(o)));
      } else {
        batch.classes(j) = set.classes[static_cast<size_t>(n)];
      }
    }
  }
}

void FillWindowBatch(const SequenceSet& series, const SequenceSpec& spec, std::span<const int64_t> starts, int64_t T,
                     int64_t first, int64_t count, int64_t scored_from, Batch<float>& batch) {
  const Eigen::Index B = count, D = series.D, H = spec.horizon;
  batch.T = T;
  batch.B = B;
  batch.first = first;
  batch.whole = static_cast<Eigen::Index>(starts.size());
  batch.ids.resize(0);
  batch.classes.resize(0);
  EnsureShape(batch.dense, D, T * B);
  EnsureShape(batch.values, H * D, T * B);
  int64_t whole_scored = 0;
  for (int64_t s : starts) whole_scored += std::clamp<int64_t>(s + T - scored_from, 0, T);
  batch.whole_scored = scored_from > 0 ? whole_scored : 0;
  if (scored_from > 0) batch.scored.setZero(T * B);
  else batch.scored.resize(0);
  const auto standard = [&](int64_t step, Eigen::Index d) {
    return static_cast<float>(spec.inputs.Apply(series.step(0, step)[d], static_cast<size_t>(d)));
  };
  for (Eigen::Index b = 0; b < B; ++b) {
    const int64_t s = starts[static_cast<size_t>(first + b)];
    if (s < 0 || s + T + H > series.T)
      throw Error("forecast window at step " + std::to_string(s) + " runs past the series' " + std::to_string(series.T) +
                  " steps");
    for (int64_t t = 0; t < T; ++t) {
      const Eigen::Index j = t * B + b;
      for (Eigen::Index d = 0; d < D; ++d) batch.dense(d, j) = standard(s + t, d);
      for (Eigen::Index h = 0; h < H; ++h)
        for (Eigen::Index d = 0; d < D; ++d) batch.values(h * D + d, j) = standard(s + t + 1 + h, d);
      if (scored_from > 0) batch.scored(j) = s + t >= scored_from ? 1 : 0;
    }
  }
}

SequenceSet SeriesPrefix(const SequenceSet& series, int64_t steps) {
  SequenceSet prefix;
  prefix.source = series.source;
  prefix.N = 1;
  prefix.T = steps;
  prefix.D = series.D;
  prefix.inputs = series.inputs;
  prefix.owner = series.owner;
  return prefix;
}

}  // namespace bptt
