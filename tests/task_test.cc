// The long-lag benchmark tasks: every generated sequence checked against the papers' rules,
// recomputed from the inputs; the stream independent of batch size and offset; the memoryless
// baselines measured over 100k sequences; Judge against perfect, constant and boundary
// predictors (copy against SoftmaxCrossEntropy); the stop criterion and the solved bars on
// constructed streams; Make's one-line refusals.
#include "bptt/task.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numbers>
#include <set>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/rng.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

constexpr uint64_t kSeed = 20240611;

Batch<float> Generate(const Task& task, uint64_t seed, uint64_t first, int B) {
  Batch<float> batch;
  task.Generate(seed, first, B, batch);
  return batch;
}

// Every number of sequence b of a batch, step by step, to compare sequences across batches.
struct Sequence {
  std::vector<float> dense, values;
  std::vector<int32_t> ids, classes;
  std::vector<uint8_t> scored;
  bool operator==(const Sequence&) const = default;
};

Sequence Extract(const Batch<float>& batch, Eigen::Index b) {
  Sequence s;
  for (Eigen::Index t = 0; t < batch.T; ++t) {
    const Eigen::Index j = t * batch.B + b;
    for (Eigen::Index d = 0; d < batch.dense.rows(); ++d) s.dense.push_back(batch.dense(d, j));
    for (Eigen::Index o = 0; o < batch.values.rows(); ++o) s.values.push_back(batch.values(o, j));
    if (batch.ids.size() > 0) s.ids.push_back(batch.ids(j));
    if (batch.classes.size() > 0) s.classes.push_back(batch.classes(j));
    s.scored.push_back(batch.scored(j));
  }
  return s;
}

// Checks that the buffers of a batch match the task's shape.
void ExpectShapes(const Task& task, const Batch<float>& batch, int B) {
  const TaskShape shape = task.shape();
  const Eigen::Index N = static_cast<Eigen::Index>(task.max_length()) * B;
  ASSERT_EQ(batch.T, task.max_length());
  ASSERT_EQ(batch.B, B);
  ASSERT_EQ(batch.scored.size(), N);
  if (shape.V() > 0) {
    ASSERT_EQ(shape.D, 0);
    ASSERT_EQ(batch.ids.size(), N);
    ASSERT_EQ(batch.dense.size(), 0);
    EXPECT_GE(batch.ids.minCoeff(), 0);
    EXPECT_LT(batch.ids.maxCoeff(), shape.V());
  } else {
    ASSERT_GT(shape.D, 0);
    ASSERT_EQ(batch.ids.size(), 0);
    ASSERT_EQ(batch.dense.rows(), shape.D);
    ASSERT_EQ(batch.dense.cols(), N);
  }
  if (shape.head == Head::kSoftmax) {
    ASSERT_EQ(static_cast<int>(shape.classes.size()), shape.O);
    ASSERT_EQ(batch.classes.size(), N);
    ASSERT_EQ(batch.values.size(), 0);
    for (Eigen::Index j = 0; j < N; ++j) {
      if (!batch.scored(j)) continue;
      EXPECT_GE(batch.classes(j), 0);
      EXPECT_LT(batch.classes(j), shape.O);
    }
  } else {
    ASSERT_EQ(batch.classes.size(), 0);
    ASSERT_EQ(batch.values.rows(), shape.O);
    ASSERT_EQ(batch.values.cols(), N);
  }
}

// Sequence k of a stream is the same in one batch of `total`, alone, and in batches of 7 from
// an offset; different seeds and different k give different sequences.
void ExpectStreamIndependentOfBatching(const Task& task) {
  const int total = 40;
  const Batch<float> whole = Generate(task, kSeed, 0, total);
  ExpectShapes(task, whole, total);
  for (int k = 0; k < total; ++k) {
    const Batch<float> one = Generate(task, kSeed, static_cast<uint64_t>(k), 1);
    ASSERT_TRUE(Extract(whole, k) == Extract(one, 0)) << task.info().name << " sequence " << k << " alone";
  }
  Batch<float> reused;  // one buffer reused across calls, as a trainer does
  for (int first = 3; first + 7 <= total; first += 7) {
    task.Generate(kSeed, static_cast<uint64_t>(first), 7, reused);
    for (int b = 0; b < 7; ++b) {
      ASSERT_TRUE(Extract(whole, first + b) == Extract(reused, b))
          << task.info().name << " sequence " << first + b << " at offset " << first;
    }
  }
  // A neighbouring seed's stream shares no sequence with this one, not even shifted (a test set
  // is another seed's stream), and no two sequences of a stream are the same.
  const Batch<float> other = Generate(task, kSeed + 1, 0, total);
  int same_across_seeds = 0, same_within = 0;
  for (int i = 0; i < total; ++i) {
    for (int j = 0; j < total; ++j) {
      same_across_seeds += Extract(whole, i) == Extract(other, j);
      if (i < j) same_within += Extract(whole, i) == Extract(whole, j);
    }
  }
  EXPECT_EQ(same_across_seeds, 0) << task.info().name;
  EXPECT_EQ(same_within, 0) << task.info().name;
}

// Judges n sequences of the stream of `seed` with outputs from predict(batch) and sums them.
template <typename Predict>
Tally JudgeStream(const Task& task, uint64_t seed, int n, Predict predict) {
  Tally tally;
  Batch<float> batch;
  std::vector<uint8_t> right;
  std::vector<double> error;
  const int B = 1000;
  for (int first = 0; first < n; first += B) {
    task.Generate(seed, static_cast<uint64_t>(first), std::min(B, n - first), batch);
    const Mat<float> outputs = predict(batch);
    task.Judge(batch, outputs, right, error);
    EXPECT_EQ(right.size(), static_cast<size_t>(batch.B));
    EXPECT_EQ(error.size(), static_cast<size_t>(batch.B));
    tally.Add(right, error);
  }
  return tally;
}

// Regression outputs: the targets plus `offset` where scored, `fill` elsewhere.
Mat<float> TargetsPlus(const Batch<float>& batch, float offset) {
  Mat<float> out = batch.values;
  for (Eigen::Index j = 0; j < out.cols(); ++j) {
    if (batch.scored(j)) out.col(j).array() += offset;
  }
  return out;
}

Mat<float> Constant(const Batch<float>& batch, int O, float value) {
  return Mat<float>::Constant(O, batch.T * batch.B, value);
}

// Softmax logits putting `margin` on the target class of every position (0 elsewhere).
Mat<float> OneHotLogits(const Batch<float>& batch, int O, float margin) {
  Mat<float> out = Mat<float>::Zero(O, batch.T * batch.B);
  for (Eigen::Index j = 0; j < out.cols(); ++j) out(batch.classes(j), j) = margin;
  return out;
}

// Plug-in entropy in nats of the counts.
double Entropy(const std::map<int, int64_t>& counts) {
  int64_t n = 0;
  for (const auto& [_, c] : counts) n += c;
  double h = 0.0;
  for (const auto& [_, c] : counts) {
    const double p = static_cast<double>(c) / static_cast<double>(n);
    h -= p * std::log(p);
  }
  return h;
}

// ---------------------------------------------------------------- the table and Make

TEST(TaskTableTest, ListsEveryTaskAndMakesEach) {
  const std::vector<std::string> expected = {"adding", "temporal-order", "temporal-order-3", "adding-2ch", "copy"};
  ASSERT_EQ(Tasks().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const TaskInfo& info = Tasks()[i];
    EXPECT_EQ(info.name, expected[i]);
    EXPECT_FALSE(info.description.empty());
    EXPECT_FALSE(info.source.empty());
    const std::unique_ptr<Task> task = Task::Make(info.name);
    ASSERT_NE(task, nullptr);
    EXPECT_EQ(task->info().name, info.name);
    EXPECT_EQ(task->test_sequences(), 2560);
    const TaskShape shape = task->shape();
    EXPECT_TRUE((shape.V() > 0) != (shape.D > 0)) << info.name << ": exactly one kind of input";
    EXPECT_GT(shape.O, 0);
  }
}

TEST(TaskTableTest, MakeRefusesUnknownNamesAndBadT) {
  EXPECT_EQ(ErrorOf([] { Task::Make("addition"); }),
            "unknown task \"addition\" (the tasks are adding, temporal-order, temporal-order-3, adding-2ch, copy)");
  EXPECT_EQ(ErrorOf([] { Task::Make("adding", 5); }), "--T must be at least 20 for the adding problem, got 5");
  EXPECT_EQ(ErrorOf([] { Task::Make("adding", 2000000); }),
            "--T must be at most 1000000 for the adding problem, got 2000000");
  EXPECT_EQ(ErrorOf([] { Task::Make("adding-2ch", 1); }),
            "--T must be at least 2 for adding-2ch (one marker in each half), got 1");
  EXPECT_EQ(ErrorOf([] { Task::Make("copy", 0); }), "--T must be at least 1 for the copying problem, got 0");
  EXPECT_EQ(ErrorOf([] { Task::Make("temporal-order", 50); }),
            "--T does not apply to temporal-order, whose lengths 100-110 are the paper's (give 100 or leave it "
            "out), got 50");
  EXPECT_EQ(ErrorOf([] { Task::Make("temporal-order-3", 200); }),
            "--T does not apply to temporal-order-3, whose lengths 100-110 are the paper's (give 100 or leave it "
            "out), got 200");
  EXPECT_EQ(ErrorOf([] { Task::Make("temporal-order", 100); }), "");
  EXPECT_EQ(ErrorOf([] { Task::Make("adding", 20); }), "");
  EXPECT_EQ(ErrorOf([] { Task::Make("copy", 1); }), "");
  EXPECT_EQ(Task::Make("adding")->max_length(), 110);  // default T = 100
  EXPECT_EQ(Task::Make("adding", 1000)->max_length(), 1100);
  EXPECT_EQ(Task::Make("copy", 500)->max_length(), 520);
  EXPECT_EQ(Task::Make("adding-2ch", 400)->max_length(), 400);
}

TEST(TaskTableTest, GenerateRefusesAnEmptyBatchAndJudgeAWrongShape) {
  const auto task = Task::Make("adding");
  Batch<float> batch;
  EXPECT_EQ(ErrorOf([&] { task->Generate(kSeed, 0, 0, batch); }), "a task batch needs at least 1 sequence, got 0");
  task->Generate(kSeed, 0, 4, batch);
  std::vector<uint8_t> right;
  std::vector<double> error;
  const Mat<float> wrong(2, batch.T * batch.B);
  EXPECT_EQ(ErrorOf([&] { task->Judge(batch, wrong, right, error); }),
            "task outputs are (2, 440), expected (O, T*B) = (1, 440)");
}

// ---------------------------------------------------------------- adding (H&S Experiment 4)

void CheckAddingSequences(int T, int n) {
  const auto task = Task::Make("adding", T);
  const Batch<float> batch = Generate(*task, kSeed, 0, n);
  ExpectShapes(*task, batch, n);
  const int B = n;
  std::set<int> lengths;
  int first_marked_zero = 0, beyond_first_ten = 0, at_last_candidate = 0;
  for (int b = 0; b < B; ++b) {
    const auto at = [&](int t) { return static_cast<Eigen::Index>(t) * B + b; };
    // The one scored step is the last of the sequence.
    std::vector<int> scored;
    for (int t = 0; t < batch.T; ++t) {
      if (batch.scored(at(t))) scored.push_back(t);
    }
    ASSERT_EQ(scored.size(), 1u);
    const int L = scored[0] + 1;
    ASSERT_GE(L, T);
    ASSERT_LE(L, T + T / 10);
    lengths.insert(L);
    std::vector<int> marked;
    double sum = 0.0;
    for (int t = 0; t < L; ++t) {
      const float value = batch.dense(0, at(t)), marker = batch.dense(1, at(t));
      ASSERT_GE(value, -1.0f);
      ASSERT_LE(value, 1.0f);
      if (marker == 1.0f) {
        marked.push_back(t);
        sum += value;
      } else if (t == 0 || t == L - 1) {
        ASSERT_EQ(marker, -1.0f) << "first and last pair";
      } else {
        ASSERT_EQ(marker, 0.0f);
      }
    }
    ASSERT_EQ(marked.size(), 2u);
    ASSERT_LT(marked[0], 10) << "one marker among the first ten pairs";
    ASSERT_LE(marked[1], T / 2 - 1) << "both among the first T/2 - 1 unmarked pairs";
    ASSERT_NE(marked[1], L - 1);
    first_marked_zero += marked[0] == 0 && batch.dense(0, at(0)) == 0.0f;
    beyond_first_ten += marked[1] >= 10;
    at_last_candidate += marked[1] == T / 2 - 1;
    EXPECT_NEAR(batch.values(0, at(L - 1)), 0.5 + sum / 4.0, 1e-6);
    for (int t = L; t < batch.T; ++t) {
      ASSERT_EQ(batch.dense(0, at(t)), 0.0f);
      ASSERT_EQ(batch.dense(1, at(t)), 0.0f);
      ASSERT_EQ(batch.scored(at(t)), 0);
    }
  }
  EXPECT_EQ(*lengths.begin(), T);
  EXPECT_EQ(*lengths.rbegin(), T + T / 10);
  // X1 lands on the first pair (and is zeroed) one time in ten.
  EXPECT_NEAR(static_cast<double>(first_marked_zero) / n, 0.1, 0.035);  // 5 sd at n = 2000
  if (T > 22) {
    EXPECT_GT(beyond_first_ten, 0);
  }
  EXPECT_GT(at_last_candidate, 0);
}

TEST(AddingTest, SequencesFollowThePaper) {
  CheckAddingSequences(100, 4000);
  CheckAddingSequences(20, 2000);  // T/2 - 1 = 9 candidates for X2: all within the first ten
  CheckAddingSequences(41, 2000);  // odd T: T/2 and T/10 round down
}

TEST(AddingTest, StreamIsIndependentOfBatching) { ExpectStreamIndependentOfBatching(*Task::Make("adding", 100)); }

TEST(AddingTest, BaselineIsTheMseOfTheConstantHalf) {
  const auto task = Task::Make("adding", 100);
  EXPECT_DOUBLE_EQ(task->baseline(), 19.0 / 480.0);
  const Tally tally = JudgeStream(*task, kSeed, 100000, [](const Batch<float>& b) { return Constant(b, 1, 0.5f); });
  // The squared error has a standard deviation below 0.06: 1e-3 is more than 5 standard errors.
  EXPECT_NEAR(tally.mean_error(), task->baseline(), 1e-3);
  EXPECT_GT(tally.wrong_fraction(), 0.8) << "a constant is mostly wrong";
}

TEST(AddingTest, JudgeUsesTheToleranceOfTheSquaredError) {
  const auto task = Task::Make("adding", 100);
  Batch<float> batch;
  task->Generate(kSeed, 0, 64, batch);
  std::vector<uint8_t> right;
  std::vector<double> error;
  for (const float offset : {0.0f, 0.039f, -0.039f}) {
    task->Judge(batch, TargetsPlus(batch, offset), right, error);
    for (int b = 0; b < 64; ++b) {
      EXPECT_EQ(right[b], 1) << offset;
      EXPECT_NEAR(error[b], offset * offset, 1e-7);
    }
  }
  for (const float offset : {0.041f, -0.041f}) {
    task->Judge(batch, TargetsPlus(batch, offset), right, error);
    for (int b = 0; b < 64; ++b) {
      EXPECT_EQ(right[b], 0) << offset;
      EXPECT_NEAR(error[b], offset * offset, 1e-7);
    }
  }
}

TEST(AddingTest, StopCriterionAndSolvedBarAreThePapers) {
  const auto task = Task::Make("adding");
  const std::optional<StopCriterion> stop = task->stop_criterion();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->window(), 2000);
  EXPECT_EQ(stop->max_mean_error(), 0.01);
  Tally test{2560, 2557, 0.0099 * 2560};
  EXPECT_TRUE(task->Solved(test));
  test.right = 2556;  // 4 wrong
  EXPECT_FALSE(task->Solved(test));
  test = {2560, 2560, 0.0101 * 2560};
  EXPECT_FALSE(task->Solved(test));
  EXPECT_FALSE(task->Solved(Tally{}));
}

// ---------------------------------------------------------------- temporal order (H&S 6a, 6b)

struct Range {
  int lo, hi;
};

void CheckTemporalOrderSequences(const std::string& name, const std::vector<Range>& ranges, int n) {
  const auto task = Task::Make(name);
  const TaskShape shape = task->shape();
  ASSERT_EQ(shape.V(), 8);
  const auto id = [&](const char* symbol) { return shape.vocab.Find(symbol).value(); };
  const int32_t E = id("E"), B_ = id("B"), X = id("X"), Y = id("Y");
  const std::set<int32_t> distractors = {id("a"), id("b"), id("c"), id("d")};
  ASSERT_EQ(shape.O, 1 << ranges.size());
  const Batch<float> batch = Generate(*task, kSeed, 0, n);
  ExpectShapes(*task, batch, n);
  std::set<int> lengths;
  std::map<int, int64_t> class_counts;
  std::vector<std::set<int>> positions(ranges.size());
  for (int b = 0; b < n; ++b) {
    const auto at = [&](int t) { return static_cast<Eigen::Index>(t) * n + b; };
    std::vector<int> scored;
    for (int t = 0; t < batch.T; ++t) {
      if (batch.scored(at(t))) scored.push_back(t);
    }
    ASSERT_EQ(scored.size(), 1u);
    const int L = scored[0] + 1;
    ASSERT_GE(L, 100);
    ASSERT_LE(L, 110);
    lengths.insert(L);
    ASSERT_EQ(batch.ids(at(0)), E);
    ASSERT_EQ(batch.ids(at(L - 1)), B_);
    std::vector<int> relevant;
    int label = 0;
    for (int t = 1; t < L - 1; ++t) {
      const int32_t s = batch.ids(at(t));
      if (s == X || s == Y) {
        relevant.push_back(t);
        label = 2 * label + (s == Y ? 1 : 0);
      } else {
        ASSERT_TRUE(distractors.contains(s)) << "step " << t;
      }
    }
    ASSERT_EQ(relevant.size(), ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
      ASSERT_GE(relevant[i], ranges[i].lo);
      ASSERT_LE(relevant[i], ranges[i].hi);
      positions[i].insert(relevant[i]);
    }
    ASSERT_EQ(batch.classes(at(L - 1)), label);
    ++class_counts[label];
    for (int t = L; t < batch.T; ++t) ASSERT_EQ(batch.scored(at(t)), 0);
  }
  EXPECT_EQ(*lengths.begin(), 100);
  EXPECT_EQ(*lengths.rbegin(), 110);
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(*positions[i].begin(), ranges[i].lo);
    EXPECT_EQ(*positions[i].rbegin(), ranges[i].hi);
  }
  EXPECT_EQ(static_cast<int>(class_counts.size()), shape.O) << "every class occurs";
}

TEST(TemporalOrderTest, SequencesFollowThePaper) {
  CheckTemporalOrderSequences("temporal-order", {{10, 20}, {50, 60}}, 4000);
  CheckTemporalOrderSequences("temporal-order-3", {{10, 20}, {33, 43}, {66, 76}}, 4000);
  EXPECT_EQ(Task::Make("temporal-order")->shape().classes, (std::vector<std::string>{"Q", "R", "S", "U"}));
  EXPECT_EQ(Task::Make("temporal-order-3")->shape().classes,
            (std::vector<std::string>{"Q", "R", "S", "U", "V", "A", "B", "C"}));
}

TEST(TemporalOrderTest, StreamIsIndependentOfBatching) {
  ExpectStreamIndependentOfBatching(*Task::Make("temporal-order"));
  ExpectStreamIndependentOfBatching(*Task::Make("temporal-order-3"));
}

TEST(TemporalOrderTest, BaselineIsTheEntropyOfTheClasses) {
  for (const auto& [name, classes] : {std::pair{"temporal-order", 4}, std::pair{"temporal-order-3", 8}}) {
    const auto task = Task::Make(name);
    EXPECT_NEAR(task->baseline(), std::log(static_cast<double>(classes)), 1e-12);
    std::map<int, int64_t> counts;
    Batch<float> batch;
    for (int first = 0; first < 100000; first += 1000) {
      task->Generate(kSeed, static_cast<uint64_t>(first), 1000, batch);
      for (Eigen::Index j = 0; j < batch.scored.size(); ++j) {
        if (batch.scored(j)) ++counts[batch.classes(j)];
      }
    }
    // The plug-in entropy of 100k uniform draws falls short of ln O by about (O - 1) / 2e5.
    EXPECT_NEAR(Entropy(counts), task->baseline(), 1e-3) << name;
  }
}

TEST(TemporalOrderTest, JudgeAppliesThePapersUnitToleranceToTheSoftmax) {
  const auto task = Task::Make("temporal-order");
  Batch<float> batch;
  task->Generate(kSeed, 0, 32, batch);
  std::vector<uint8_t> right;
  std::vector<double> error;
  // Logit z on the class, 0 on the other three: p = e^z / (e^z + 3).
  const auto judge_at = [&](double p) {
    const auto margin = static_cast<float>(std::log(3.0 * p / (1.0 - p)));
    task->Judge(batch, OneHotLogits(batch, 4, margin), right, error);
    const double q = (1.0 - p) / 3.0;  // each other class
    const double expected = ((1.0 - p) * (1.0 - p) + 3.0 * q * q) / 4.0;
    for (int b = 0; b < 32; ++b) EXPECT_NEAR(error[b], expected, 1e-6) << p;
  };
  judge_at(0.71);
  for (int b = 0; b < 32; ++b) EXPECT_EQ(right[b], 1);
  judge_at(0.69);  // the argmax is still the class, but the class unit is off by more than 0.3
  for (int b = 0; b < 32; ++b) EXPECT_EQ(right[b], 0);
  const Tally perfect =
      JudgeStream(*task, kSeed, 3000, [](const Batch<float>& b) { return OneHotLogits(b, 4, 30.0f); });
  EXPECT_EQ(perfect.right, 3000);
  EXPECT_LT(perfect.mean_error(), 1e-20);
  const Tally uniform = JudgeStream(*task, kSeed, 3000, [](const Batch<float>& b) { return Constant(b, 4, 0.0f); });
  EXPECT_EQ(uniform.right, 0);
  EXPECT_NEAR(uniform.mean_error(), 3.0 / 16.0, 1e-12);
}

TEST(TemporalOrderTest, StopCriterionAndSolvedBarAreThePapers) {
  for (const char* name : {"temporal-order", "temporal-order-3"}) {
    const auto task = Task::Make(name);
    const std::optional<StopCriterion> stop = task->stop_criterion();
    ASSERT_TRUE(stop.has_value());
    EXPECT_EQ(stop->window(), 2000);
    EXPECT_EQ(stop->max_mean_error(), 0.1);
    EXPECT_TRUE(task->Solved(Tally{2560, 2557, 0.099 * 2560}));
    EXPECT_FALSE(task->Solved(Tally{2560, 2556, 0.05 * 2560}));
    EXPECT_FALSE(task->Solved(Tally{2560, 2560, 0.101 * 2560}));
  }
}

// ---------------------------------------------------------------- adding-2ch (Le et al. 2015)

void CheckAddingTwoChannelSequences(int T, int n) {
  const auto task = Task::Make("adding-2ch", T);
  const Batch<float> batch = Generate(*task, kSeed, 0, n);
  ExpectShapes(*task, batch, n);
  ASSERT_EQ(batch.T, T);
  std::set<int> first_positions, second_positions;
  for (int b = 0; b < n; ++b) {
    const auto at = [&](int t) { return static_cast<Eigen::Index>(t) * n + b; };
    std::vector<int> marked;
    double sum = 0.0;
    for (int t = 0; t < T; ++t) {
      const float value = batch.dense(0, at(t)), marker = batch.dense(1, at(t));
      ASSERT_GE(value, 0.0f);
      ASSERT_LE(value, 1.0f);
      ASSERT_TRUE(marker == 0.0f || marker == 1.0f);
      if (marker == 1.0f) {
        marked.push_back(t);
        sum += value;
      }
      ASSERT_EQ(batch.scored(at(t)), t == T - 1 ? 1 : 0);
    }
    ASSERT_EQ(marked.size(), 2u);
    ASSERT_LT(marked[0], T / 2) << "one marker in the first half";
    ASSERT_GE(marked[1], T / 2) << "one in the second";
    first_positions.insert(marked[0]);
    second_positions.insert(marked[1]);
    EXPECT_NEAR(batch.values(0, at(T - 1)), sum, 1e-6);
  }
  EXPECT_EQ(static_cast<int>(first_positions.size()), T / 2) << "every first-half step gets marked";
  EXPECT_EQ(static_cast<int>(second_positions.size()), T - T / 2);
}

TEST(AddingTwoChannelTest, SequencesFollowThePaper) {
  CheckAddingTwoChannelSequences(100, 4000);
  CheckAddingTwoChannelSequences(7, 2000);
  CheckAddingTwoChannelSequences(2, 100);
}

TEST(AddingTwoChannelTest, StreamIsIndependentOfBatching) {
  ExpectStreamIndependentOfBatching(*Task::Make("adding-2ch", 100));
}

TEST(AddingTwoChannelTest, BaselineIsTheVarianceOfTheSum) {
  const auto task = Task::Make("adding-2ch", 100);
  EXPECT_DOUBLE_EQ(task->baseline(), 1.0 / 6.0);
  const Tally tally = JudgeStream(*task, kSeed, 100000, [](const Batch<float>& b) { return Constant(b, 1, 1.0f); });
  // (S - 1)^2 has standard deviation sqrt(7/180) = 0.197: the standard error is 6.2e-4.
  EXPECT_NEAR(tally.mean_error(), 1.0 / 6.0, 3e-3);
  EXPECT_GT(tally.wrong_fraction(), 0.8) << "a constant is mostly wrong";
}

TEST(AddingTwoChannelTest, JudgeAndSolvedBar) {
  const auto task = Task::Make("adding-2ch", 100);
  const Tally perfect = JudgeStream(*task, kSeed, 2000, [](const Batch<float>& b) { return TargetsPlus(b, 0.0f); });
  EXPECT_EQ(perfect.right, 2000);
  EXPECT_EQ(perfect.mean_error(), 0.0);
  const Tally near = JudgeStream(*task, kSeed, 2000, [](const Batch<float>& b) { return TargetsPlus(b, 0.079f); });
  EXPECT_EQ(near.right, 2000);
  const Tally off = JudgeStream(*task, kSeed, 2000, [](const Batch<float>& b) { return TargetsPlus(b, -0.081f); });
  EXPECT_EQ(off.right, 0);
  EXPECT_FALSE(task->stop_criterion().has_value());
  EXPECT_TRUE(task->Solved(Tally{2560, 0, 0.99 / 600.0 * 2560}));  // MSE just under 1% of 1/6
  EXPECT_FALSE(task->Solved(Tally{2560, 2560, 1.01 / 600.0 * 2560}));
}

// ---------------------------------------------------------------- copy (Arjovsky et al. 2016)

void CheckCopySequences(int T, int n) {
  const auto task = Task::Make("copy", T);
  const TaskShape shape = task->shape();
  ASSERT_EQ(shape.V(), 10);
  ASSERT_EQ(shape.O, 10);
  const int blank = shape.vocab.Find("_").value(), delimiter = shape.vocab.Find("|").value();
  ASSERT_EQ(blank, 8);  // the paper's a_8 and a_9
  ASSERT_EQ(delimiter, 9);
  const Batch<float> batch = Generate(*task, kSeed, 0, n);
  ExpectShapes(*task, batch, n);
  ASSERT_EQ(batch.T, T + 20);
  std::map<int, int64_t> data_counts;
  for (int b = 0; b < n; ++b) {
    const auto at = [&](int t) { return static_cast<Eigen::Index>(t) * n + b; };
    std::vector<int32_t> input;
    for (int t = 0; t < T + 20; ++t) {
      input.push_back(batch.ids(at(t)));
      ASSERT_EQ(batch.scored(at(t)), 1) << "every step is scored";
    }
    for (int t = 0; t < 10; ++t) {
      ASSERT_GE(input[t], 0);
      ASSERT_LT(input[t], 8);
      ++data_counts[input[t]];
    }
    for (int t = 10; t < T + 9; ++t) ASSERT_EQ(input[t], blank);
    ASSERT_EQ(input[T + 9], delimiter);
    for (int t = T + 10; t < T + 20; ++t) ASSERT_EQ(input[t], blank);
    for (int t = 0; t < T + 10; ++t) ASSERT_EQ(batch.classes(at(t)), blank);
    for (int i = 0; i < 10; ++i) ASSERT_EQ(batch.classes(at(T + 10 + i)), input[i]);
    if (b == 0) {
      const std::string text = shape.vocab.Decode(input);
      EXPECT_EQ(text.substr(10), std::string(T - 1, '_') + "|" + std::string(10, '_'));
      EXPECT_EQ(text.find_first_not_of("01234567"), 10u);
    }
  }
  EXPECT_EQ(data_counts.size(), 8u);
}

TEST(CopyTest, SequencesFollowThePaper) {
  CheckCopySequences(100, 3000);
  CheckCopySequences(1, 1000);  // no blank between the data and the delimiter
  CheckCopySequences(17, 1000);
}

TEST(CopyTest, StreamIsIndependentOfBatching) { ExpectStreamIndependentOfBatching(*Task::Make("copy", 100)); }

// The paper's memoryless strategy: blank for T + 10 steps, then uniform over the 8 data symbols.
Mat<float> MemorylessLogits(const Batch<float>& batch, int T) {
  const float never = -1e30f;
  Mat<float> out = Mat<float>::Constant(10, batch.T * batch.B, never);
  for (Eigen::Index j = 0; j < out.cols(); ++j) {
    if (j / batch.B < T + 10) {
      out(8, j) = 0.0f;
    } else {
      out.topRows(8).col(j).setZero();
    }
  }
  return out;
}

TEST(CopyTest, BaselineIsTheMemorylessStrategy) {
  for (const int T : {100, 500}) {
    const auto task = Task::Make("copy", T);
    EXPECT_NEAR(task->baseline(), 10.0 * std::log(8.0) / (T + 20), 1e-15);
    const Tally tally = JudgeStream(*task, kSeed, T == 100 ? 100000 : 10000,
                                    [T](const Batch<float>& b) { return MemorylessLogits(b, T); });
    EXPECT_NEAR(tally.mean_error(), task->baseline(), 1e-6);
    EXPECT_EQ(tally.right, 0) << "ties go to a_0: never the whole sequence";
  }
  EXPECT_NEAR(Task::Make("copy", 100)->baseline(), 0.1733, 1e-4);
  // The strategy's ln 8 assumes uniform data symbols: their entropy over 100k sequences.
  const auto task = Task::Make("copy", 1);
  std::map<int, int64_t> counts;
  Batch<float> batch;
  for (int first = 0; first < 100000; first += 1000) {
    task->Generate(kSeed, static_cast<uint64_t>(first), 1000, batch);
    for (Eigen::Index j = 0; j < 10 * batch.B; ++j) ++counts[batch.ids(j)];
  }
  EXPECT_NEAR(Entropy(counts), std::log(8.0), 1e-4);
}

TEST(CopyTest, JudgeIsCrossEntropyAndWholeSequenceRecall) {
  const int T = 30, B = 16;
  const auto task = Task::Make("copy", T);
  Batch<float> batch;
  task->Generate(kSeed, 0, B, batch);
  std::vector<uint8_t> right;
  std::vector<double> error;
  // Random logits: each sequence's error is SoftmaxCrossEntropy over its own columns.
  Rng rng(7);
  Mat<float> logits(10, batch.T * B);
  for (Eigen::Index i = 0; i < logits.size(); ++i) logits(i) = static_cast<float>(rng.Normal());
  task->Judge(batch, logits, right, error);
  for (int b = 0; b < B; ++b) {
    Mat<float> own(10, batch.T);
    Ids targets(batch.T);
    for (Eigen::Index t = 0; t < batch.T; ++t) {
      own.col(t) = logits.col(t * B + b);
      targets(t) = batch.classes(t * B + b);
    }
    EXPECT_NEAR(error[b], SoftmaxCrossEntropy<float>(own, targets), 1e-5);
    EXPECT_EQ(right[b], 0);
  }
  // Perfect recall, then one recalled symbol wrong in sequence 3.
  Mat<float> perfect = OneHotLogits(batch, 10, 30.0f);
  task->Judge(batch, perfect, right, error);
  for (int b = 0; b < B; ++b) {
    EXPECT_EQ(right[b], 1);
    EXPECT_LT(error[b], 1e-10);
  }
  const Eigen::Index j = static_cast<Eigen::Index>(T + 15) * B + 3;
  perfect.col(j).setZero();
  perfect((batch.classes(j) + 1) % 8, j) = 30.0f;
  task->Judge(batch, perfect, right, error);
  for (int b = 0; b < B; ++b) EXPECT_EQ(right[b], b == 3 ? 0 : 1);
  EXPECT_NEAR(error[3], 30.0 / batch.T, 1e-5);
}

TEST(CopyTest, SolvedBarIsRecallOfNinetyNinePercent) {
  const auto task = Task::Make("copy", 100);
  EXPECT_FALSE(task->stop_criterion().has_value());
  EXPECT_TRUE(task->Solved(Tally{10000, 9900, 50.0}));
  EXPECT_FALSE(task->Solved(Tally{10000, 9899, 0.0}));
}

// ---------------------------------------------------------------- StopCriterion

TEST(StopCriterionTest, NeedsAFullWindowOfRightSequences) {
  StopCriterion stop(2000, 0.01);
  for (int i = 0; i < 1999; ++i) {
    stop.Add(true, 0.001);
    ASSERT_FALSE(stop.Met()) << i;
  }
  stop.Add(true, 0.001);
  EXPECT_TRUE(stop.Met());
  EXPECT_EQ(stop.seen(), 2000);
  EXPECT_NEAR(stop.mean_error(), 0.001, 1e-15);
  stop.Add(false, 0.001);  // one wrong: not met until it leaves the window
  EXPECT_EQ(stop.wrong(), 1);
  for (int i = 0; i < 1999; ++i) {
    ASSERT_FALSE(stop.Met()) << i;
    stop.Add(true, 0.001);
  }
  EXPECT_FALSE(stop.Met());
  stop.Add(true, 0.001);
  EXPECT_EQ(stop.wrong(), 0);
  EXPECT_TRUE(stop.Met());
}

TEST(StopCriterionTest, NeedsTheWindowsMeanErrorBelowTheBar) {
  StopCriterion stop(2000, 0.01);
  for (int i = 0; i < 2000; ++i) stop.Add(true, 0.0101);
  EXPECT_FALSE(stop.Met());
  // k sequences of 0.0099 make the mean (0.0101 (2000 - k) + 0.0099 k) / 2000, below 0.01 for k > 1000.
  for (int k = 1; k <= 999; ++k) {
    stop.Add(true, 0.0099);
    ASSERT_FALSE(stop.Met()) << k;
  }
  stop.Add(true, 0.0099);
  stop.Add(true, 0.0099);  // k = 1001
  EXPECT_TRUE(stop.Met());
  EXPECT_LT(stop.mean_error(), 0.01);
}

TEST(StopCriterionTest, SmallWindowByHand) {
  StopCriterion stop(3, 0.5);
  EXPECT_EQ(stop.mean_error(), 0.0);
  stop.Add(true, 0.9);
  stop.Add(true, 0.3);
  EXPECT_FALSE(stop.Met()) << "only 2 seen";
  EXPECT_DOUBLE_EQ(stop.mean_error(), 0.6);
  stop.Add(true, 0.3);
  EXPECT_FALSE(stop.Met()) << "mean 0.5 is not below 0.5";
  stop.Add(true, 0.2);  // window 0.3, 0.3, 0.2
  EXPECT_TRUE(stop.Met());
  stop.Add(false, 0.0);
  EXPECT_FALSE(stop.Met());
  stop.Add(true, 0.0);
  stop.Add(true, 0.0);
  EXPECT_FALSE(stop.Met()) << "the wrong one is still in the window";
  stop.Add(true, 0.0);
  EXPECT_TRUE(stop.Met());
  EXPECT_EQ(ErrorOf([] { StopCriterion(0, 0.1); }), "a stop criterion needs a window of at least 1 sequence, got 0");
}

TEST(TallyTest, SumsJudgements) {
  Tally tally;
  tally.Add(std::vector<uint8_t>{1, 0, 1}, std::vector<double>{0.5, 1.5, 1.0});
  EXPECT_EQ(tally.sequences, 3);
  EXPECT_EQ(tally.right, 2);
  EXPECT_DOUBLE_EQ(tally.mean_error(), 1.0);
  EXPECT_DOUBLE_EQ(tally.wrong_fraction(), 1.0 / 3.0);
  EXPECT_EQ(ErrorOf([&] { tally.Add(std::vector<uint8_t>{1}, std::vector<double>{}); }),
            "tally: 1 judgements but 0 errors");
}

}  // namespace
}  // namespace bptt
