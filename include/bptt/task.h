// Task: one of the classic long-time-lag benchmarks — a deterministic stream of sequences, the
// paper's judgement of one sequence, the paper's stop criterion and the memoryless baseline.
//
// A task is the data side of `bptt task NAME`: it says what model it needs (TaskShape), fills
// Batches (batch.h) with sequences padded to max_length(), and judges the model's outputs on
// them. Sequence k of the stream of `seed` depends only on (seed, k), so a batch can be made
// again for an exact resume, and a test set is simply another seed's stream.
//
//   std::unique_ptr<Task> task = Task::Make("adding", 100);
//   std::optional<StopCriterion> stop = task->stop_criterion();
//   task->Generate(seed, k, B, batch);            // sequences [k, k + B)
//   ... model reads batch, outputs (O, T*B) ...
//   task->Judge(batch, outputs, right, error);    // per sequence b
//   for (int b = 0; b < B; ++b) stop->Add(right[b], error[b]);
//   if (stop->Met()) ...                          // the paper would stop training here
//
// Shapes (tensor.h): T = max_length(), B sequences; dense input (D, T*B) or symbol ids (T*B);
// targets values (O, T*B) or classes (T*B); scored (T*B), always filled; column t*B + b is step
// t of sequence b. Steps past a sequence's end are padding: input 0 (id 0 or zeros), target 0,
// never scored. Positions below count steps from 0.
//
// The tasks:
//
// adding (Hochreiter & Schmidhuber 1997, "Long short-term memory", Section 5.4, Experiment 4)
//   Each step is a pair (value, marker): D = 2 dense input, rows (value, marker); O = 1
//   regression. Length L uniform in [T, T + T/10] (integer division); value U[-1, 1]. Exactly
//   two pairs are marked (marker 1): X1 uniform among positions 0..9, X2 uniform among "the
//   first T/2 - 1 still unmarked pairs", i.e. the first T/2 - 1 positions other than X1's.
//   Every other marker is 0 except the first and last pair's, which are -1 (a marked first pair
//   keeps marker 1). "In the rare case where the first pair of the sequence gets marked, we set
//   X1 to zero": when X1 is at position 0 its value is 0. The paper does not say what happens
//   when X2 lands on position 0; we read the sentence as being about X1 and keep X2's value.
//   Target at step L - 1 only: 0.5 + (X1 + X2) / 4, so the lag from X2 to the target is at
//   least T/2 (the paper's "minimal time lag"). Right: |output - target| < 0.04.
//   Error: (output - target)^2. Stop: the 2,000 most recent training sequences right and their
//   mean error below 0.01. Test set: 2,560 sequences; solved when the test mean error is below
//   0.01 and at most 3 of 2,560 are wrong (the paper's results: "the average test set error was
//   always below 0.01, and there were never more than 3 incorrectly processed sequences").
//   Baseline: the constant 0.5, MSE = Var(target) = (0.9/3 + 1/3) / 16 = 19/480 = 0.03958.
//   T: at least 20, so that X1's ten positions and X2's T/2 - 1 lie before the last pair.
//
// temporal-order, temporal-order-3 (same paper, Section 5.6, Tasks 6a and 6b)
//   Symbol input over B, E, X, Y, a, b, c, d (V = 8, ids in that byte order). Length L uniform
//   in [100, 110]; E at position 0, B (the "trigger symbol") at L - 1, X or Y (each with
//   probability 1/2) at t1 in [10, 20] and t2 in [50, 60] (6a), or t1 in [10, 20],
//   t2 in [33, 43], t3 in [66, 76] (6b); a, b, c or d everywhere else. Softmax head over the
//   paper's classes Q R S U (6a: XX XY YX YY) or Q R S U V A B C (6b: XXX ... YYY); class id =
//   the X/Y string read as binary with X = 0, Y = 1. Target at step L - 1 only. The paper does
//   not say whether t1, t2, t3 count from 0 or 1; we read them as step indices, E at step 0.
//   The paper's output units are sigmoids with 0/1 targets; with a softmax head we judge its
//   probabilities p the same way: right when "the final absolute error of all output units is
//   below 0.3", i.e. |p_k - onehot_k| < 0.3 for every k (equivalently p_class > 0.7, which
//   implies the argmax is the class); error = mean over the O units of (p_k - onehot_k)^2, the
//   mean squared error of the paper's units. Stop: the 2,000 most recent sequences right and
//   their mean error below 0.1. Test set 2,560; solved when the mean error is below 0.1 and at
//   most 3 of 2,560 are wrong (the paper's results). Baseline: the class prior, ln 4 (ln 8)
//   nats. T: the paper fixes the lengths, so --T is refused unless it is 100.
//
// adding-2ch (Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks of
//   rectified linear units", Section 4.1; positions as in Arjovsky, Shah & Bengio 2016)
//   D = 2 dense input, rows (value, marker); O = 1 regression. Length exactly T; value U[0, 1];
//   marker 1 at exactly two steps, 0 elsewhere. Le et al. say only that two steps are marked;
//   we place them as Arjovsky et al.'s version of this task does, one uniform in the first half
//   [0, T/2) and one uniform in the second half [T/2, T). Target at step T - 1 only: the sum of
//   the two marked values. Error: squared error (the test mean is the MSE). Right:
//   |output - target| < 0.08, Hochreiter & Schmidhuber's 0.04 scaled to this target's range
//   [0, 2]. No stop criterion in the paper. Solved: test MSE below 1% of the baseline, i.e.
//   the model explains 99% of the target's variance. Test set: 2,560 (our choice). Baseline:
//   always 1, MSE = Var(sum of two U[0, 1]) = 1/6 = 0.1667 (Le et al. print "around 0.1767";
//   Arjovsky et al. "0.167, the variance of the sum of two independent uniform
//   distributions"). T: at least 2.
//
// copy (Arjovsky, Shah & Bengio 2016, "Unitary evolution recurrent neural networks", the
//   copying memory problem)
//   Symbol input of the paper's 10 categories a_0 .. a_9 as ids 0 .. 9, shown as "0" .. "7"
//   (data), "_" (a_8, blank) and "|" (a_9, delimiter); softmax head over the same 10. Length
//   T + 20: ten data symbols drawn uniformly from a_0 .. a_7, T - 1 blanks, the delimiter, ten
//   blanks. Target: blank for the first T + 10 steps, then the ten data symbols in order; every
//   step is scored. Error: the sequence's mean cross-entropy in nats per step (so the mean over
//   sequences is the paper's "average cross entropy"). Right: the argmax is the target at every
//   step, the whole output reproduced. No stop criterion in the paper. Solved: at least 99% of
//   the test sequences right — recall of all ten symbols is the point of the task, and nats
//   alone can sit well below the baseline while symbols are still wrong. Test set: 2,560 (our
//   choice). Baseline: the paper's memoryless strategy, blank for T + 10 steps then uniform
//   over the 8 data symbols: 10 ln 8 / (T + 20) nats per step. T: at least 1.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/batch.h"
#include "bptt/model.h"
#include "bptt/vocab.h"

namespace bptt {

// A task as `bptt task --list` shows it.
struct TaskInfo {
  std::string_view name;         // "adding"
  std::string_view description;  // one line: what the model must do
  std::string_view source;       // the paper and the experiment
  int default_T;                 // T when --T is not given
};

// Every task, in the order of --list.
std::span<const TaskInfo> Tasks();

// The model a task needs: its input and its head.
struct TaskShape {
  Vocab vocab;    // symbol input: the V symbols in id order; empty for a dense input
  int D = 0;      // dense input: features per step; 0 for a symbol input
  Head head = Head::kRegression;
  int O = 0;      // outputs per step: classes of a softmax head or values of a regression head
  std::vector<std::string> classes;  // softmax head: the paper's name of each class, (O)

  int V() const { return vocab.size(); }
};

// Hochreiter & Schmidhuber's stop criterion over the stream of judged training sequences: met
// once the `window` most recent sequences are all right and their mean error is below
// `max_mean_error`. (The paper's "average training error" is read as the mean over the same
// window: an average over all of training would be held up by the untrained start.)
class StopCriterion {
 public:
  StopCriterion(int window, double max_mean_error);

  void Add(bool right, double error);
  bool Met() const;

  int window() const { return window_; }
  double max_mean_error() const { return max_mean_error_; }
  int64_t seen() const { return seen_; }
  // Over the most recent min(seen, window) sequences.
  int wrong() const { return wrong_; }
  double mean_error() const;

  // Its state as JSON (for a checkpoint: exact resume), and back; Restore throws bptt::Error
  // naming `source` when the state does not fit this criterion.
  nlohmann::json Save() const;
  void Restore(const nlohmann::json& state, const std::string& source);

 private:
  int window_;
  double max_mean_error_;
  int64_t seen_ = 0;
  std::vector<uint8_t> right_;  // (window) ring buffers: sequence i sits in slot i % window
  std::vector<double> error_;   // (window) summed afresh by mean_error(), so no rounding drift
  int wrong_ = 0;               // wrong sequences in the ring
};

// A judged set of sequences (a test set), summed.
struct Tally {
  int64_t sequences = 0;
  int64_t right = 0;
  double error_sum = 0.0;

  void Add(std::span<const uint8_t> right, std::span<const double> error);
  double mean_error() const { return sequences > 0 ? error_sum / static_cast<double>(sequences) : 0.0; }
  double wrong_fraction() const {
    return sequences > 0 ? static_cast<double>(sequences - right) / static_cast<double>(sequences) : 0.0;
  }
};

// When a judged test set counts as solved: mean error below max_mean_error and at most
// max_wrong_fraction of the sequences wrong. A bound of +infinity (or 1 for the fraction) is
// no bound.
struct SolvedBar {
  double max_mean_error;
  double max_wrong_fraction;
};

class Task {
 public:
  // Throws bptt::Error for an unknown name (listing the known ones) or a T the task refuses
  // ("--T must be at least 20 for the adding problem, got 5"). No T: the task's default_T.
  static std::unique_ptr<Task> Make(std::string_view name, std::optional<int> T = std::nullopt);
  virtual ~Task();

  virtual const TaskInfo& info() const = 0;
  virtual TaskShape shape() const = 0;
  // T of every generated batch; shorter sequences are padded at the end.
  virtual int max_length() const = 0;

  // Fills `batch` with sequences [first, first + B) of the stream of `seed`. Sequence k depends
  // only on (seed, k): the same in a batch of 1 or of 64, at any offset. Buffers are resized
  // only when their shape changes.
  virtual void Generate(uint64_t seed, uint64_t first, int B, Batch<float>& batch) const = 0;

  // For each sequence b of a batch made by Generate, from the model's outputs (O, T*B) — logits
  // of a softmax head, predictions of a regression head: right[b] = 1 when the paper's
  // criterion counts the sequence as processed correctly, and error[b], the quantity the
  // stop criterion averages. Both are resized to B. Throws bptt::Error on an outputs shape
  // other than (O, T*B).
  virtual void Judge(const Batch<float>& batch, const Mat<float>& outputs, std::vector<uint8_t>& right,
                     std::vector<double>& error) const = 0;

  // The memoryless figure: MSE of the best constant prediction (regression), or nats per scored
  // step of the paper's memoryless strategy (softmax).
  virtual double baseline() const = 0;

  // A fresh stop criterion of the paper, or none when the paper has none.
  virtual std::optional<StopCriterion> stop_criterion() const = 0;
  virtual SolvedBar solved_bar() const = 0;
  bool Solved(const Tally& test) const;
  // Sequences in a test set (2,560 in Hochreiter & Schmidhuber).
  virtual int test_sequences() const { return 2560; }
};

}  // namespace bptt
