// Training data from a generated long-lag task (task.h): independent sequences from the zero
// state, the paper's stop criterion on the training stream, and its judgement of a test set.
#include <algorithm>
#include <sstream>

#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/rng.h"
#include "bptt/task.h"
#include "train_data.h"

namespace bptt {

namespace {

// Test sequences run through the model at a time.
constexpr int kTestBatch = 256;

template <typename T, typename S>
Batch<T> CastBatch(const Batch<S>& b) {
  Batch<T> out;
  out.T = b.T;
  out.B = b.B;
  out.ids = b.ids;
  out.dense = b.dense.template cast<T>();
  out.classes = b.classes;
  out.values = b.values.template cast<T>();
  out.scored = b.scored;
  return out;
}

class TaskData final : public TrainData {
 public:
  explicit TaskData(const TrainOptions& o)
      : o_(o), task_(Task::Make(o.task, o.task_length)), shape_(task_->shape()), stop_(task_->stop_criterion()) {}

  void Shape(ModelConfig& config) const override {
    config.vocab_size = shape_.D > 0 ? 0 : shape_.V();
    config.input_size = shape_.D;
    config.embed_size = 0;
    config.head = shape_.head;
    config.output_size = shape_.O;
  }
  const Vocab& vocab() const override { return shape_.vocab; }
  int timesteps() const override { return task_->max_length(); }
  std::string Describe() const override {
    std::ostringstream out;
    out << "task " << task_->info().name << " (" << task_->info().source << "), T = " << o_.task_length
        << ", sequences of up to " << task_->max_length() << " steps; test set " << o_.test_size
        << " sequences; memoryless baseline " << task_->baseline();
    return out.str();
  }

  bool Next(Batch<float>& batch) override {
    task_->Generate(StreamSeed(o_.seed, kTrainDataStream), next_ * static_cast<uint64_t>(o_.batch), o_.batch, batch);
    ++next_;
    return true;
  }
  void Rewind() override {}
  bool carries_state() const override { return false; }
  double EpochFraction() const override { return 0; }
  bool Observe(const Batch<float>& batch, const Mat<float>& outputs) override {
    if (!stop_) return false;
    task_->Judge(batch, outputs, right_, error_);
    for (size_t b = 0; b < right_.size(); ++b) stop_->Add(right_[b] != 0, error_[b]);
    return stop_->Met();
  }

  const char* ItemName() const override { return "seq/s"; }
  int64_t ItemsPerStep(const Batch<float>& batch) const override { return batch.B; }
  std::string Progress(int64_t) const override {
    return "seq " + std::to_string(next_ * static_cast<uint64_t>(o_.batch));
  }
  void NameRate(nlohmann::json& metrics, double rate) const override {
    metrics["sequences_per_s"] = rate;
    metrics["sequences"] = next_ * static_cast<uint64_t>(o_.batch);
    if (stop_) {
      metrics["recent_wrong"] = stop_->wrong();
      metrics["recent_error"] = stop_->mean_error();
    }
  }

  nlohmann::json Validate(const ModelConfig& config, const ModelParams<float>& params, int threads) override {
    const TestResult r = Test(config, params, threads);
    return {{"val_loss", r.loss}, {"test_wrong", r.tally.sequences - r.tally.right}, {"test_size", r.tally.sequences},
            {"test_error", r.tally.mean_error()}};
  }
  std::string DescribeValidation(const nlohmann::json& m) const override {
    std::ostringstream out;
    out << "test " << (shape_.head == Head::kRegression ? "MSE " : "nats ") << m["val_loss"].get<double>() << ", wrong "
        << m["test_wrong"] << "/" << m["test_size"];
    return out.str();
  }

  uint64_t position() const override { return next_; }
  nlohmann::json SaveState() const override {
    nlohmann::json s = {{"task", task_->info().name}, {"T", o_.task_length}};
    if (stop_) s["stop"] = stop_->Save();
    return s;
  }
  void Seek(uint64_t position, const nlohmann::json& state, const std::string& source) override {
    if (!state.contains("task") || state.at("task") != task_->info().name)
      throw Error(source + ": the checkpoint's data state is not that of task " + std::string(task_->info().name));
    next_ = position;
    if (stop_) {
      if (!state.contains("stop")) throw Error(source + ": the checkpoint has no stop-criterion state for the task");
      stop_->Restore(state.at("stop"), source);
    }
  }

  // B test sequences up to the end of the shortest, each scored there (decay.h ScoredAt).
  Batch<double> DecayProbe(int, int B) const override {
    Batch<float> batch;
    task_->Generate(StreamSeed(o_.seed, kTestDataStream), 0, B, batch);
    return ScoredAt(CastBatch<double>(batch), 0);
  }

  nlohmann::json Summary(const ModelConfig& config, const ModelParams<float>& params, int64_t steps, bool solved,
                         int threads) override {
    const TestResult r = Test(config, params, threads);
    nlohmann::json s = {{"task", task_->info().name},
                        {"T", o_.task_length},
                        {"cell", config.cell->name},
                        {"hidden", config.hidden_size},
                        {"layers", config.layers},
                        {"seed", o_.seed},
                        {"solved", task_->Solved(r.tally)},
                        {"stop_criterion_met", solved},
                        {"train_sequences", static_cast<uint64_t>(steps) * static_cast<uint64_t>(o_.batch)},
                        {"test_size", r.tally.sequences},
                        {"test_wrong", r.tally.sequences - r.tally.right},
                        {"test_error", r.tally.mean_error()},
                        {"baseline", task_->baseline()}};
    s[shape_.head == Head::kRegression ? "test_mse" : "test_nats"] = r.loss;
    return s;
  }

  // The test set runs kTestBatch sequences at a time, its batch and cache kept between runs.
  uint64_t EvaluationBytes(const ModelConfig& config) const override {
    return TaskEvaluationBytes(config, task_->max_length(), o_.test_size);
  }

 private:
  struct TestResult {
    double loss = 0;  // the head's loss per scored position
    Tally tally;
  };

  // The test set: o_.test_size sequences of the test stream, from the zero state.
  TestResult Test(const ModelConfig& config, const ModelParams<float>& params, int threads) {
    TestResult r;
    const uint64_t seed = StreamSeed(o_.seed, kTestDataStream);
    double loss_sum = 0;
    int64_t scored = 0;
    for (int first = 0; first < o_.test_size; first += kTestBatch) {
      const int B = std::min(kTestBatch, o_.test_size - first);
      task_->Generate(seed, static_cast<uint64_t>(first), B, test_batch_);
      Forward(config, params, test_batch_, State<float>::Zeros(config, B), test_cache_, threads);
      const int64_t n = ScoredCount(test_batch_);
      loss_sum += HeadLoss<float>(config, test_cache_.outputs, test_batch_, nullptr, threads) * static_cast<double>(n);
      scored += n;
      task_->Judge(test_batch_, test_cache_.outputs, right_, error_);
      r.tally.Add(right_, error_);
    }
    r.loss = scored > 0 ? loss_sum / static_cast<double>(scored) : 0;
    return r;
  }

  TrainOptions o_;
  std::unique_ptr<Task> task_;
  TaskShape shape_;
  std::optional<StopCriterion> stop_;
  uint64_t next_ = 0;  // the next batch of the training stream
  std::vector<uint8_t> right_;
  std::vector<double> error_;
  Batch<float> test_batch_;
  ModelCache<float> test_cache_;
};

}  // namespace

uint64_t TaskEvaluationBytes(const ModelConfig& config, int max_length, int test_size) {
  return EstimateEvaluationBytes(config, max_length, std::min(kTestBatch, test_size));
}

std::unique_ptr<TrainData> MakeTaskData(const TrainOptions& options) { return std::make_unique<TaskData>(options); }

}  // namespace bptt
