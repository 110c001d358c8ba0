// Batch: B sequences side by side over T timesteps — what a model reads, and what its head is
// scored against. Columns follow tensor.h: column t*B + b is timestep t of sequence b.
//
// Inputs are symbols (ids, read through a one-hot gather or an embedding) or dense vectors of
// D features. Targets are classes (softmax head) or values (regression head, mean squared
// error). `scored` says which positions carry a target: a language model scores every
// position (scored left empty), a classifier only the last step of each sequence, a copy task
// every step. Sequences of different lengths share a batch by padding at the end: positions
// past a sequence's end are not scored, and since a recurrent model is causal they cannot
// change anything that is.
//
// When several processes train one model (distributed.h), each holds a slice of the whole
// batch: sequences [first, first + B) of whole_B(). Dropout (model.h) and the loss's
// normalisation (loss.h) then treat the slice as those columns of the whole batch, so the
// slices' gradients sum to the whole batch's gradient.
//
//   Batch<float> b;  b.T = 100;  b.B = 32;
//   b.dense = ...;   b.values = ...;  b.scored = ...;   // the adding problem
#pragma once

#include <cstdint>

#include "bptt/tensor.h"

namespace bptt {

template <typename S>
struct Batch {
  Eigen::Index T = 0, B = 0;
  Ids ids;        // (T*B) symbol input; empty for a dense input
  Mat<S> dense;   // (D, T*B) dense input; empty for a symbol input
  Ids classes;    // (T*B) softmax head: the target class of each position (any value where not scored)
  Mat<S> values;  // (O, T*B) regression head: the target of each position (any value where not scored)
  Mask scored;    // (T*B) 1 where the position is scored; empty = every position is

  // A slice of a larger batch: these B sequences are sequences [first, first + B) of `whole`
  // (0 = this batch is whole).
  Eigen::Index first = 0;
  Eigen::Index whole = 0;
  // A slice with a mask: the scored positions of the whole batch, which its loss is divided by
  // (loss.h; 0 = not known, and such a slice is refused).
  int64_t whole_scored = 0;

  bool IsScored(Eigen::Index j) const { return scored.size() == 0 || scored(j) != 0; }
  Eigen::Index whole_B() const { return whole > 0 ? whole : B; }
};

// Sequences [begin, end) of a batch of B: the share of rank r of n is [r B / n, (r + 1) B / n),
// so that the shares of the ranks in order are the whole batch.
struct StreamShare {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
  static StreamShare OfRank(int B, int rank, int ranks) {
    const auto at = [&](int r) { return static_cast<int>(static_cast<int64_t>(B) * r / ranks); };
    return {at(rank), at(rank + 1)};
  }
};

}  // namespace bptt
