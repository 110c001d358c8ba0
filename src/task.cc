#include "bptt/task.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>

#include "bptt/error.h"
#include "bptt/rng.h"

namespace bptt {

namespace {

constexpr int kMaxT = 1000000;

// Sebastiano Vigna's splitmix64 finaliser: a bijection of 64-bit words whose output bits each
// depend on every input bit.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The generator of sequence k of the stream of `seed`: a function of (seed, k) alone.
Rng SequenceRng(uint64_t seed, uint64_t k) { return Rng(SplitMix64(SplitMix64(seed) ^ k)); }

int Draw(Rng& rng, int n) { return static_cast<int>(rng.Below(static_cast<uint64_t>(n))); }
// Uniform integer in [lo, hi].
int Draw(Rng& rng, int lo, int hi) { return lo + Draw(rng, hi - lo + 1); }

Vocab SymbolVocab(std::vector<std::string> symbols) {
  std::vector<uint64_t> counts(symbols.size(), 0);
  return Vocab(TokenizerOptions{}, std::move(symbols), std::move(counts), -1, "task symbols");
}

// Column of step t of sequence b in a batch of B.
Eigen::Index At(int t, int b, int B) { return static_cast<Eigen::Index>(t) * B + b; }

// Zeroed buffers of a dense-input, regression-head batch: dense (D, T*B), values (O, T*B).
void PrepareDense(Batch<float>& batch, int T, int B, int D, int O) {
  batch.T = T;
  batch.B = B;
  const Eigen::Index N = static_cast<Eigen::Index>(T) * B;
  EnsureShape(batch.dense, D, N);
  batch.dense.setZero();
  EnsureShape(batch.values, O, N);
  batch.values.setZero();
  batch.ids.resize(0);
  batch.classes.resize(0);
  batch.scored.setZero(N);
}

// Zeroed buffers of a symbol-input, softmax-head batch: ids (T*B), classes (T*B).
void PrepareSymbols(Batch<float>& batch, int T, int B) {
  batch.T = T;
  batch.B = B;
  const Eigen::Index N = static_cast<Eigen::Index>(T) * B;
  batch.ids.setZero(N);
  batch.classes.setZero(N);
  batch.dense.resize(0, 0);
  batch.values.resize(0, 0);
  batch.scored.setZero(N);
}

void CheckBatchSize(int B) {
  if (B < 1) throw Error("a task batch needs at least 1 sequence, got " + std::to_string(B));
}

void CheckOutputs(const Batch<float>& batch, const Mat<float>& outputs, int O) {
  if (outputs.rows() != O || outputs.cols() != batch.T * batch.B) {
    throw Error("task outputs are (" + std::to_string(outputs.rows()) + ", " + std::to_string(outputs.cols()) +
                "), expected (O, T*B) = (" + std::to_string(O) + ", " + std::to_string(batch.T * batch.B) + ")");
  }
}

// Judges each sequence of the batch by `step`, which scores one scored column j and returns
// {right, error}: the sequence is right when every scored step is, and its error is the mean
// over its scored steps.
template <typename Step>
void JudgeSteps(const Batch<float>& batch, std::vector<uint8_t>& right, std::vector<double>& error, Step step) {
  const auto B = static_cast<size_t>(batch.B);
  right.assign(B, 1);
  error.assign(B, 0.0);
  std::vector<int64_t> steps(B, 0);
  for (Eigen::Index j = 0; j < batch.T * batch.B; ++j) {
    if (!batch.IsScored(j)) continue;
    const auto b = static_cast<size_t>(j % batch.B);
    const auto [ok, e] = step(j);
    right[b] = right[b] && ok;
    error[b] += e;
    ++steps[b];
  }
  for (size_t b = 0; b < B; ++b) {
    if (steps[b] > 0) error[b] /= static_cast<double>(steps[b]);
  }
}

// Regression head: right when every output is within `tolerance` of its target; error the
// squared error (mean over the O outputs).
void JudgeRegression(const Batch<float>& batch, const Mat<float>& outputs, int O, double tolerance,
                     std::vector<uint8_t>& right, std::vector<double>& error) {
  CheckOutputs(batch, outputs, O);
  JudgeSteps(batch, right, error, [&](Eigen::Index j) {
    bool ok = true;
    double squared = 0.0;
    for (Eigen::Index o = 0; o < outputs.rows(); ++o) {
      const double diff = static_cast<double>(outputs(o, j)) - static_cast<double>(batch.values(o, j));
      ok = ok && std::abs(diff) < tolerance;
      squared += diff * diff;
    }
    return std::pair{ok, squared / static_cast<double>(outputs.rows())};
  });
}

// Softmax probabilities of column j of logits (O, N), in double.
void Softmax(const Mat<float>& logits, Eigen::Index j, std::vector<double>& p) {
  const auto O = static_cast<size_t>(logits.rows());
  p.resize(O);
  const double max = static_cast<double>(logits.col(j).maxCoeff());
  double sum = 0.0;
  for (size_t k = 0; k < O; ++k) {
    sum += p[k] = std::exp(static_cast<double>(logits(static_cast<Eigen::Index>(k), j)) - max);
  }
  for (double& x : p) x /= sum;
}

// Softmax head judged as the paper's output units: right when every unit's probability is
// within `tolerance` of the one-hot target; error the mean over units of the squared error.
void JudgeUnits(const Batch<float>& batch, const Mat<float>& logits, int O, double tolerance,
                std::vector<uint8_t>& right, std::vector<double>& error) {
  CheckOutputs(batch, logits, O);
  std::vector<double> p;
  JudgeSteps(batch, right, error, [&](Eigen::Index j) {
    Softmax(logits, j, p);
    bool ok = true;
    double squared = 0.0;
    for (int k = 0; k < O; ++k) {
      const double diff = p[static_cast<size_t>(k)] - (k == batch.classes(j) ? 1.0 : 0.0);
      ok = ok && std::abs(diff) < tolerance;
      squared += diff * diff;
    }
    return std::pair{ok, squared / O};
  });
}

// Softmax head judged by recall: right when the argmax is the target at every scored step;
// error the cross-entropy in nats per scored step.
void JudgeRecall(const Batch<float>& batch, const Mat<float>& logits, int O, std::vector<uint8_t>& right,
                 std::vector<double>& error) {
  CheckOutputs(batch, logits, O);
  JudgeSteps(batch, right, error, [&](Eigen::Index j) {
    Eigen::Index argmax = 0;
    const double max = static_cast<double>(logits.col(j).maxCoeff(&argmax));
    double sum = 0.0;
    for (Eigen::Index k = 0; k < logits.rows(); ++k) sum += std::exp(static_cast<double>(logits(k, j)) - max);
    const double nats = max + std::log(sum) - static_cast<double>(logits(batch.classes(j), j));
    return std::pair{argmax == batch.classes(j), nats};
  });
}

// T, or the task's default; refuses a T outside [min_T, kMaxT]. `what` names the task in the
// message ("the adding problem").
int CheckT(const TaskInfo& info, std::optional<int> T, int min_T, std::string_view what) {
  const int t = T.value_or(info.default_T);
  const auto refuse = [&](std::string_view bound, int limit) {
    return Error("--T must be " + std::string(bound) + " " + std::to_string(limit) + " for " + std::string(what) +
                 ", got " + std::to_string(t));
  };
  if (t < min_T) throw refuse("at least", min_T);
  if (t > kMaxT) throw refuse("at most", kMaxT);
  return t;
}

// Temporal order fixes its lengths: T may only repeat the default.
void RefuseT(const TaskInfo& info, std::optional<int> T) {
  if (T && *T != info.default_T) {
    throw Error("--T does not apply to " + std::string(info.name) + ", whose lengths 100-110 are the paper's (give " +
                std::to_string(info.default_T) + " or leave it out), got " + std::to_string(*T));
  }
}

// ---- adding: Hochreiter & Schmidhuber 1997, Experiment 4 (see task.h) ----

class AddingTask final : public Task {
 public:
  static constexpr double kTolerance = 0.04;
  static constexpr int kFirstPairs = 10;  // X1 is one of the first ten pairs

  AddingTask(const TaskInfo& info, int T) : info_(info), T_(T) {}

  const TaskInfo& info() const override { return info_; }
  TaskShape shape() const override {
    TaskShape shape;
    shape.D = 2;
    shape.head = Head::kRegression;
    shape.O = 1;
    return shape;
  }
  int max_length() const override { return T_ + T_ / 10; }

  void Generate(uint64_t seed, uint64_t first, int B, Batch<float>& batch) const override {
    CheckBatchSize(B);
    PrepareDense(batch, max_length(), B, 2, 1);
    for (int b = 0; b < B; ++b) {
      Rng rng = SequenceRng(seed, first + static_cast<uint64_t>(b));
      const int L = Draw(rng, T_, T_ + T_ / 10);
      for (int t = 0; t < L; ++t) batch.dense(0, At(t, b, B)) = static_cast<float>(rng.Uniform(-1.0, 1.0));
      batch.dense(1, At(0, b, B)) = -1.0f;
      batch.dense(1, At(L - 1, b, B)) = -1.0f;
      // X1 among the first ten pairs; X2 the r-th of the first T/2 - 1 pairs other than X1's.
      const int p1 = Draw(rng, kFirstPairs);
      const int r = Draw(rng, T_ / 2 - 1);
      const int p2 = r < p1 ? r : r + 1;
      batch.dense(1, At(p1, b, B)) = 1.0f;
      batch.dense(1, At(p2, b, B)) = 1.0f;
      if (p1 == 0) batch.dense(0, At(0, b, B)) = 0.0f;
      const double x1 = batch.dense(0, At(p1, b, B));
      const double x2 = batch.dense(0, At(p2, b, B));
      batch.values(0, At(L - 1, b, B)) = static_cast<float>(0.5 + (x1 + x2) / 4.0);
      batch.scored(At(L - 1, b, B)) = 1;
    }
  }

  void Judge(const Batch<float>& batch, const Mat<float>& outputs, std::vector<uint8_t>& right,
             std::vector<double>& error) const override {
    JudgeRegression(batch, outputs, 1, kTolerance, right, error);
  }

  // Var(0.5 + (X1 + X2)/4): X2 ~ U[-1, 1] has variance 1/3; X1 too, but is 0 when it lands on
  // the first pair (probability 1/10).
  double baseline() const override { return (0.9 / 3.0 + 1.0 / 3.0) / 16.0; }
  std::optional<StopCriterion> stop_criterion() const override { return StopCriterion(2000, 0.01); }
  SolvedBar solved_bar() const override { return {0.01, 3.0 / 2560.0}; }

 private:
  const TaskInfo& info_;
  int T_;
};

// ---- temporal-order, temporal-order-3: Hochreiter & Schmidhuber 1997, Experiment 6 ----

class TemporalOrderTask final : public Task {
 public:
  static constexpr double kTolerance = 0.3;
  static constexpr int kMinLength = 100, kMaxLength = 110;
  // Symbol ids, in byte order of the symbols: B E X Y, then the distractors a b c d.
  enum : int32_t { kB, kE, kX, kY, kDistractors };

  struct Range {
    int lo, hi;
  };

  // `relevant` = 2 (Task 6a) or 3 (Task 6b).
  TemporalOrderTask(const TaskInfo& info, int relevant) : info_(info), relevant_(relevant) {}

  const TaskInfo& info() const override { return info_; }
  TaskShape shape() const override {
    TaskShape shape;
    shape.vocab = SymbolVocab({"B", "E", "X", "Y", "a", "b", "c", "d"});
    shape.head = Head::kSoftmax;
    shape.O = 1 << relevant_;
    shape.classes = relevant_ == 2 ? std::vector<std::string>{"Q", "R", "S", "U"}
                                   : std::vector<std::string>{"Q", "R", "S", "U", "V", "A", "B", "C"};
    return shape;
  }
  int max_length() const override { return kMaxLength; }

  void Generate(uint64_t seed, uint64_t first, int B, Batch<float>& batch) const override {
    CheckBatchSize(B);
    PrepareSymbols(batch, max_length(), B);
    const std::span<const Range> ranges = Positions();
    for (int b = 0; b < B; ++b) {
      Rng rng = SequenceRng(seed, first + static_cast<uint64_t>(b));
      const int L = Draw(rng, kMinLength, kMaxLength);
      batch.ids(At(0, b, B)) = kE;
      for (int t = 1; t < L - 1; ++t) batch.ids(At(t, b, B)) = kDistractors + Draw(rng, 4);
      batch.ids(At(L - 1, b, B)) = kB;
      int32_t label = 0;
      for (const Range& range : ranges) {
        const int t = Draw(rng, range.lo, range.hi);
        const int y = Draw(rng, 2);
        batch.ids(At(t, b, B)) = y ? kY : kX;
        label = 2 * label + y;
      }
      batch.classes(At(L - 1, b, B)) = label;
      batch.scored(At(L - 1, b, B)) = 1;
    }
  }

  void Judge(const Batch<float>& batch, const Mat<float>& outputs, std::vector<uint8_t>& right,
             std::vector<double>& error) const override {
    JudgeUnits(batch, outputs, 1 << relevant_, kTolerance, right, error);
  }

  // The class prior is uniform and the trigger B says nothing of the class.
  double baseline() const override { return relevant_ * std::numbers::ln2; }
  std::optional<StopCriterion> stop_criterion() const override { return StopCriterion(2000, 0.1); }
  SolvedBar solved_bar() const override { return {0.1, 3.0 / 2560.0}; }

 private:
  // Where the relevant symbols go: t1, t2 (and t3), each uniform in its range.
  std::span<const Range> Positions() const {
    static constexpr std::array<Range, 2> k6a{{{10, 20}, {50, 60}}};
    static constexpr std::array<Range, 3> k6b{{{10, 20}, {33, 43}, {66, 76}}};
    if (relevant_ == 2) return k6a;
    return k6b;
  }

  const TaskInfo& info_;
  int relevant_;
};

// ---- adding-2ch: Le, Jaitly & Hinton 2015, Section 4.1 (see task.h) ----

class AddingTwoChannelTask final : public Task {
 public:
  static constexpr double kTolerance = 0.08;

  AddingTwoChannelTask(const TaskInfo& info, int T) : info_(info), T_(T) {}

  const TaskInfo& info() const override { return info_; }
  TaskShape shape() const override {
    TaskShape shape;
    shape.D = 2;
    shape.head = Head::kRegression;
    shape.O = 1;
    return shape;
  }
  int max_length() const override { return T_; }

  void Generate(uint64_t seed, uint64_t first, int B, Batch<float>& batch) const override {
    CheckBatchSize(B);
    PrepareDense(batch, T_, B, 2, 1);
    const int half = T_ / 2;
    for (int b = 0; b < B; ++b) {
      Rng rng = SequenceRng(seed, first + static_cast<uint64_t>(b));
      for (int t = 0; t < T_; ++t) batch.dense(0, At(t, b, B)) = static_cast<float>(rng.Uniform());
      const int p1 = Draw(rng, 0, half - 1);
      const int p2 = Draw(rng, half, T_ - 1);
      batch.dense(1, At(p1, b, B)) = 1.0f;
      batch.dense(1, At(p2, b, B)) = 1.0f;
      const double sum =
          static_cast<double>(batch.dense(0, At(p1, b, B))) + static_cast<double>(batch.dense(0, At(p2, b, B)));
      batch.values(0, At(T_ - 1, b, B)) = static_cast<float>(sum);
      batch.scored(At(T_ - 1, b, B)) = 1;
    }
  }

  void Judge(const Batch<float>& batch, const Mat<float>& outputs, std::vector<uint8_t>& right,
             std::vector<double>& error) const override {
    JudgeRegression(batch, outputs, 1, kTolerance, right, error);
  }

  // Var(U1 + U2) = 2/12: the MSE of always answering the mean, 1.
  double baseline() const override { return 1.0 / 6.0; }
  std::optional<StopCriterion> stop_criterion() const override { return std::nullopt; }
  SolvedBar solved_bar() const override { return {baseline() / 100.0, 1.0}; }

 private:
  const TaskInfo& info_;
  int T_;
};

// ---- copy: Arjovsky, Shah & Bengio 2016, the copying memory problem (see task.h) ----

class CopyTask final : public Task {
 public:
  static constexpr int kRecall = 10;  // symbols to remember
  static constexpr int kData = 8;     // a_0 .. a_7
  static constexpr int32_t kBlank = 8, kDelimiter = 9;

  CopyTask(const TaskInfo& info, int T) : info_(info), T_(T) {}

  const TaskInfo& info() const override { return info_; }
  TaskShape shape() const override {
    TaskShape shape;
    shape.vocab = SymbolVocab({"0", "1", "2", "3", "4", "5", "6", "7", "_", "|"});
    shape.head = Head::kSoftmax;
    shape.O = 10;
    shape.classes = {"a_0", "a_1", "a_2", "a_3", "a_4", "a_5", "a_6", "a_7", "a_8", "a_9"};
    return shape;
  }
  int max_length() const override { return T_ + 2 * kRecall; }

  void Generate(uint64_t seed, uint64_t first, int B, Batch<float>& batch) const override {
    CheckBatchSize(B);
    const int L = max_length();
    PrepareSymbols(batch, L, B);
    const int delimiter_at = kRecall + T_ - 1;
    const int recall_from = T_ + kRecall;
    for (int b = 0; b < B; ++b) {
      Rng rng = SequenceRng(seed, first + static_cast<uint64_t>(b));
      for (int t = 0; t < L; ++t) {
        const int32_t id = t < kRecall ? Draw(rng, kData) : t == delimiter_at ? kDelimiter : kBlank;
        batch.ids(At(t, b, B)) = id;
        batch.classes(At(t, b, B)) = t < recall_from ? kBlank : batch.ids(At(t - recall_from, b, B));
        batch.scored(At(t, b, B)) = 1;
      }
    }
  }

  void Judge(const Batch<float>& batch, const Mat<float>& outputs, std::vector<uint8_t>& right,
             std::vector<double>& error) const override {
    JudgeRecall(batch, outputs, 10, right, error);
  }

  double baseline() const override { return kRecall * std::log(static_cast<double>(kData)) / max_length(); }
  std::optional<StopCriterion> stop_criterion() const override { return std::nullopt; }
  SolvedBar solved_bar() const override { return {std::numeric_limits<double>::infinity(), 0.01}; }

 private:
  const TaskInfo& info_;
  int T_;
};

// ---- the table of tasks ----

struct Entry {
  TaskInfo info;
  std::unique_ptr<Task> (*make)(const TaskInfo& info, std::optional<int> T);
};

const std::array<Entry, 5> kEntries{{
    {{"adding", "sum of two marked values in [-1, 1] at the end of T to T + T/10 pairs (regression)",
      "Hochreiter & Schmidhuber 1997, Long short-term memory, Experiment 4", 100},
     [](const TaskInfo& info, std::optional<int> T) -> std::unique_ptr<Task> {
       return std::make_unique<AddingTask>(info, CheckT(info, T, 20, "the adding problem"));
     }},
    {{"temporal-order", "class of the order of X/Y at steps 10-20 and 50-60 of 100-110 symbols (4 classes)",
      "Hochreiter & Schmidhuber 1997, Long short-term memory, Experiment 6a", 100},
     [](const TaskInfo& info, std::optional<int> T) -> std::unique_ptr<Task> {
       RefuseT(info, T);
       return std::make_unique<TemporalOrderTask>(info, 2);
     }},
    {{"temporal-order-3", "class of the order of X/Y at steps 10-20, 33-43 and 66-76 of 100-110 symbols (8 classes)",
      "Hochreiter & Schmidhuber 1997, Long short-term memory, Experiment 6b", 100},
     [](const TaskInfo& info, std::optional<int> T) -> std::unique_ptr<Task> {
       RefuseT(info, T);
       return std::make_unique<TemporalOrderTask>(info, 3);
     }},
    {{"adding-2ch", "sum of two marked values in [0, 1], one in each half of T steps (regression)",
      "Le, Jaitly & Hinton 2015, A simple way to initialize recurrent networks of rectified linear units, Section 4.1",
      100},
     [](const TaskInfo& info, std::optional<int> T) -> std::unique_ptr<Task> {
       return std::make_unique<AddingTwoChannelTask>(info, CheckT(info, T, 2, "adding-2ch (one marker in each half)"));
     }},
    {{"copy", "recall 10 symbols of 8 after T - 1 blanks and a delimiter (10 classes, every step scored)",
      "Arjovsky, Shah & Bengio 2016, Unitary evolution recurrent neural networks, copying memory problem", 100},
     [](const TaskInfo& info, std::optional<int> T) -> std::unique_ptr<Task> {
       return std::make_unique<CopyTask>(info, CheckT(info, T, 1, "the copying problem"));
     }},
}};

}  // namespace

std::span<const TaskInfo> Tasks() {
  static const std::array<TaskInfo, kEntries.size()> infos = [] {
    std::array<TaskInfo, kEntries.size()> out{};
    for (size_t i = 0; i < kEntries.size(); ++i) out[i] = kEntries[i].info;
    return out;
  }();
  return infos;
}

std::unique_ptr<Task> Task::Make(std::string_view name, std::optional<int> T) {
  for (size_t i = 0; i < kEntries.size(); ++i) {
    if (kEntries[i].info.name == name) return kEntries[i].make(Tasks()[i], T);
  }
  std::string known;
  for (const TaskInfo& info : Tasks()) known += (known.empty() ? "" : ", ") + std::string(info.name);
  throw Error("unknown task \"" + std::string(name) + "\" (the tasks are " + known + ")");
}

Task::~Task() = default;

bool Task::Solved(const Tally& test) const {
  const SolvedBar bar = solved_bar();
  return test.sequences > 0 && test.mean_error() < bar.max_mean_error &&
         test.wrong_fraction() <= bar.max_wrong_fraction;
}

// ---- StopCriterion ----

StopCriterion::StopCriterion(int window, double max_mean_error)
    : window_(window), max_mean_error_(max_mean_error) {
  if (window < 1) {
    throw Error("a stop criterion needs a window of at least 1 sequence, got " + std::to_string(window));
  }
  right_.assign(static_cast<size_t>(window), 1);
  error_.assign(static_cast<size_t>(window), 0.0);
}

void StopCriterion::Add(bool right, double error) {
  const auto slot = static_cast<size_t>(seen_ % window_);
  if (seen_ >= window_ && !right_[slot]) --wrong_;
  right_[slot] = right;
  error_[slot] = error;
  if (!right) ++wrong_;
  ++seen_;
}

double StopCriterion::mean_error() const {
  const auto n = static_cast<size_t>(std::min<int64_t>(seen_, window_));
  if (n == 0) return 0.0;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += error_[i];
  return sum / static_cast<double>(n);
}

bool StopCriterion::Met() const { return seen_ >= window_ && wrong_ == 0 && mean_error() < max_mean_error_; }

nlohmann::json StopCriterion::Save() const {
  return {{"window", window_}, {"seen", seen_}, {"right", right_}, {"error", error_}};
}

void StopCriterion::Restore(const nlohmann::json& state, const std::string& source) {
  const auto bad = [&source](const std::string& what) {
    return Error(source + ": the stop criterion's state " + what);
  };
  try {
    if (state.at("window").get<int>() != window_) throw bad("has another window");
    const int64_t seen = state.at("seen").get<int64_t>();
    auto right = state.at("right").get<std::vector<uint8_t>>();
    auto error = state.at("error").get<std::vector<double>>();
    if (seen < 0 || right.size() != static_cast<size_t>(window_) || error.size() != static_cast<size_t>(window_))
      throw bad("is malformed");
    for (size_t i = 0; i < right.size(); ++i)
      if (right[i] > 1 || !std::isfinite(error[i]) || error[i] < 0) throw bad("is malformed");
    seen_ = seen;
    right_ = std::move(right);
    error_ = std::move(error);
    wrong_ = static_cast<int>(std::count(right_.begin(), right_.end(), uint8_t{0}));
  } catch (const nlohmann::json::exception&) {
    throw bad("is malformed");
  }
}

// ---- Tally ----

void Tally::Add(std::span<const uint8_t> right_flags, std::span<const double> errors) {
  if (right_flags.size() != errors.size()) {
    throw Error("tally: " + std::to_string(right_flags.size()) + " judgements but " + std::to_string(errors.size()) +
                " errors");
  }
  sequences += static_cast<int64_t>(right_flags.size());
  for (size_t i = 0; i < right_flags.size(); ++i) {
    right += right_flags[i] ? 1 : 0;
    error_sum += errors[i];
  }
}

}  // namespace bptt
