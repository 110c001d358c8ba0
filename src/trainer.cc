#include "bptt/trainer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <limits>
#include <numbers>
#include <sstream>
#include <thread>

#include "bptt/checkpoint.h"
#include "bptt/clip.h"
#include "bptt/corpus.h"
#include "bptt/curves.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/loss.h"
#include "bptt/plot.h"
#include "distributed.h"
#include "train_data.h"

namespace bptt {

namespace {

std::atomic<bool> stop_requested{false};

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Available memory from /proc/meminfo, or 0 when unknown.
uint64_t AvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

template <typename T>
T ParseWith(std::optional<T> (*parse)(std::string_view), const std::string& name, const std::string& flag,
            const char* choices) {
  const std::optional<T> v = parse(name);
  if (!v) throw Error(flag + " '" + name + "' is not one of " + choices);
  return *v;
}

// The commands of the table: which take an option.
constexpr unsigned kTrain = kTrainCommand, kTask = kTaskCommand, kBoth = kTrain | kTask;

std::vector<OptionSpec<TrainOptions>> MakeSpecs() {
  using O = TrainOptions;
  constexpr OnResume kFixed = OnResume::kFixed, kChanges = OnResume::kChanges, kNone = OnResume::kNone;
  const char* data = "Data";
  const char* task = "Task";
  const char* optim = "Optimisation";
  const char* schedule = "Schedule and output";
  std::vector<OptionSpec<O>> specs = {
      Field<O>(kTrain, "corpus", "corpus", data, "text file or directory of text files (repeatable)", kFixed,
               [](O& o) -> auto& { return o.corpus; }),
      Choice<O>(kTrain, "unit", "unit", data, "symbol unit: grapheme, codepoint, byte or word", kFixed,
                [](O& o) -> auto& { return o.tokenizer.unit; }, UnitName,
                [](const std::string& v, const std::string& f) {
                  return ParseWith<Unit>(ParseUnit, v, f, "grapheme, codepoint, byte, word");
                }),
      Field<O>(kTrain, "no-normalize", "normalize", data, "do not NFC-normalise the text", kFixed,
               [](O& o) -> auto& { return o.tokenizer.normalize; }),
      Field<O>(kTrain, "max-vocab", "max_vocab", data, "word unit: keep the most frequent words (0 = all)", kFixed,
               [](O& o) -> auto& { return o.tokenizer.max_vocab; }),
      Choice<O>(kTrain, "on-invalid", "on_invalid", data, "invalid UTF-8: error or replace (with U+FFFD)", kFixed,
                [](O& o) -> auto& { return o.tokenizer.on_invalid; },
                [](OnInvalid v) { return v == OnInvalid::kReplace ? "replace" : "error"; },
                [](const std::string& v, const std::string& f) {
                  if (v != "error" && v != "replace") throw Error(f + " must be error or replace, got '" + v + "'");
                  return v == "replace" ? OnInvalid::kReplace : OnInvalid::kError;
                }),
      Field<O>(kTrain, "val-frac", "val_frac", data, "fraction of the corpus (at its end) for validation", kFixed,
               [](O& o) -> auto& { return o.val_frac; }),
      Field<O>(kTrain, "test-frac", "test_frac", data, "fraction after the validation part held out for testing",
               kFixed, [](O& o) -> auto& { return o.test_frac; }),
      Field<O>(kTask, "T", "task.T", task, "the task's length: the lag to bridge", kFixed,
               [](O& o) -> auto& { return o.task_length; }),
      Field<O>(kTask, "test-size", "task.test_size", task, "sequences in the test set", kFixed,
               [](O& o) -> auto& { return o.test_size; }),
      Choice<O>(kBoth, "optimizer", "optimizer.type", optim, "sgd, adagrad, rmsprop or adam", kFixed,
                [](O& o) -> auto& { return o.optimizer.type; }, OptimizerName,
                [](const std::string& v, const std::string& f) {
                  return ParseWith<OptimizerType>(ParseOptimizer, v, f, "sgd, adagrad, rmsprop, adam");
                }),
      Field<O>(kBoth, "lr", "lr", optim, "learning rate", kChanges, [](O& o) -> auto& { return o.lr; }),
      Field<O>(kBoth, "lr-decay", "lr_decay", optim, "multiply the learning rate by this after each epoch...",
               kChanges, [](O& o) -> auto& { return o.lr_decay; }),
      Field<O>(kBoth, "lr-decay-after", "lr_decay_after", optim, "...once this many epochs are done", kChanges,
               [](O& o) -> auto& { return o.lr_decay_after; }),
      Field<O>(kBoth, "lr-anneal", "lr_anneal", optim,
               "over this last fraction of the run (by --max-steps, --max-epochs or --time-budget, whichever "
               "ends it first) the learning rate falls linearly to zero (0 = off)",
               kChanges, [](O& o) -> auto& { return o.lr_anneal; }),
      Field<O>(kBoth, "momentum", "optimizer.momentum", optim, "SGD momentum", kFixed,
               [](O& o) -> auto& { return o.optimizer.momentum; }),
      Field<O>(kBoth, "nesterov", "optimizer.nesterov", optim, "SGD: Nesterov momentum", kFixed,
               [](O& o) -> auto& { return o.optimizer.nesterov; }),
      Field<O>(kBoth, "beta1", "optimizer.beta1", optim, "Adam: first-moment decay", kFixed,
               [](O& o) -> auto& { return o.optimizer.beta1; }),
      Field<O>(kBoth, "beta2", "optimizer.beta2", optim, "Adam: second-moment decay", kFixed,
               [](O& o) -> auto& { return o.optimizer.beta2; }),
      Field<O>(kBoth, "rms-decay", "optimizer.rms_decay", optim, "RMSProp decay of the mean square", kFixed,
               [](O& o) -> auto& { return o.optimizer.rms_decay; }),
      Field<O>(kBoth, "eps", "optimizer.eps", optim, "Adam, RMSProp, Adagrad: added to the root of the second moment",
               kFixed, [](O& o) -> auto& { return o.optimizer.eps; }),
      Field<O>(kBoth, "weight-decay", "optimizer.weight_decay", optim,
               "decoupled weight decay of the weight matrices (not the biases)", kChanges,
               [](O& o) -> auto& { return o.optimizer.weight_decay; }),
      Field<O>(kBoth, "clip-norm", "clip_norm", optim, "clip the global gradient L2 norm to this (0 = off)", kChanges,
               [](O& o) -> auto& { return o.clip_norm; }),
      Field<O>(kBoth, "clip-value", "clip_value", optim, "clamp each gradient element to +-this (0 = off)", kChanges,
               [](O& o) -> auto& { return o.clip_value; }),
      Field<O>(kTrain, "seq-len", "seq_len", optim, "timesteps per chunk of truncated BPTT (T)", kFixed,
               [](O& o) -> auto& { return o.seq_len; }),
      Field<O>(kBoth, "batch", "batch", optim, "parallel streams or sequences per step (B)", kFixed,
               [](O& o) -> auto& { return o.batch; }),
      Choice<O>(kBoth, "feedback", "feedback", optim,
                "learning rule: bptt (backpropagation), fa (feedback alignment) or dfa (direct feedback alignment)",
                kFixed, [](O& o) -> auto& { return o.feedback; }, FeedbackName,
                [](const std::string& v, const std::string& f) { return ParseFeedback(v, f); }),
      Field<O>(kBoth, "seed", "seed", optim, "random seed of every stream: initialisation, dropout, task data", kFixed,
               [](O& o) -> auto& { return o.seed; }),
      Field<O>(kBoth, "threads", "threads", optim,
               "threads (0 = every core; distributed: the machine's cores shared between its ranks)", kChanges,
               [](O& o) -> auto& { return o.threads; }),
      Choice<O>(kBoth, "precision", "precision", optim,
                "number format of the matrix products: fp32, or bf16 (bfloat16 operands, float sums, on a CPU with "
                "AMX; the gate arithmetic, the gradient sums and the optimizer stay fp32)",
                kChanges, [](O& o) -> auto& { return o.precision; }, PrecisionName,
                [](const std::string& v, const std::string& f) {
                  const Precision p = ParsePrecision(v, f);
                  if (p == Precision::kInt8) throw Error(f + " must be fp32 or bf16 for training, got 'int8'");
                  return p;
                }),
      Field<O>(kTrain, "distributed", "", optim,
               "train with the other ranks of the MPI job, each on its share of the --batch streams (automatic "
               "under mpirun; docs/distributed.md)",
               kChanges, [](O& o) -> auto& { return o.distributed; }),
      Field<O>(kBoth, "max-steps", "max_steps", schedule, "stop after this many steps (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.max_steps; }),
      Field<O>(kTrain, "max-epochs", "max_epochs", schedule,
               "stop after this many epochs (0 = no limit; 50 when no limit is set)", kChanges,
               [](O& o) -> auto& { return o.max_epochs; }),
      Field<O>(kTask, "max-sequences", "max_sequences", schedule,
               "stop after this many training sequences (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.max_sequences; }),
      Field<O>(kBoth, "time-budget", "time_budget", schedule, "stop after this many seconds (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.time_budget; }),
      Field<O>(kBoth, "eval-every", "eval_every", schedule, "steps between validations", kChanges,
               [](O& o) -> auto& { return o.eval_every; }),
      Field<O>(kBoth, "checkpoint-every", "checkpoint_every", schedule, "steps between checkpoints", kChanges,
               [](O& o) -> auto& { return o.checkpoint_every; }),
      Field<O>(kBoth, "log-every", "log_every", schedule, "steps between progress lines when not on a terminal",
               kChanges, [](O& o) -> auto& { return o.log_every; }),
      Field<O>(kBoth, "decay-every", "decay_every", schedule,
               "record the gradient-decay profile every N steps into DIR/decay_train.csv and DIR/heatmap.svg (0 = off)",
               kChanges, [](O& o) -> auto& { return o.decay_every; }),
      Field<O>(kBoth, "decay-steps", "decay_steps", schedule, "timesteps of the decay probe", kChanges,
               [](O& o) -> auto& { return o.decay_steps; }),
      Field<O>(kBoth, "decay-batch", "decay_batch", schedule, "sequences of the decay probe", kChanges,
               [](O& o) -> auto& { return o.decay_batch; }),
      Choice<O>(kBoth, "on-divergence", "on_divergence", schedule,
                "on a non-finite loss, gradient or weight: stop, or rollback (reload latest, halve the learning rate)",
                kChanges, [](O& o) -> auto& { return o.rollback_on_divergence; },
                [](bool rollback) { return rollback ? "rollback" : "stop"; },
                [](const std::string& v, const std::string& f) {
                  if (v != "stop" && v != "rollback") throw Error(f + " must be stop or rollback, got '" + v + "'");
                  return v == "rollback";
                }),
      Field<O>(kBoth, "max-rollbacks", "max_rollbacks", schedule, "rollbacks before stopping", kChanges,
               [](O& o) -> auto& { return o.max_rollbacks; }),
      Field<O>(kBoth, "out", "", schedule, "run directory (default: a new directory under models/)", kNone,
               [](O& o) -> auto& { return o.out; }),
  };
  const auto insert_at = [&specs](std::string_view before) {
    return std::find_if(specs.begin(), specs.end(), [before](const auto& s) { return s.flag == before; });
  };
  const auto model_specs = Nest<O>(ModelOptionSpecs(), kBoth, "model.", [](O& o) -> auto& { return o.model; });
  specs.insert(insert_at("optimizer"), model_specs.begin(), model_specs.end());
  const auto init_specs = Nest<O>(InitOptionSpecs(), kBoth, "init.", [](O& o) -> auto& { return o.init; });
  specs.insert(insert_at("optimizer"), init_specs.begin(), init_specs.end());
  for (auto& spec : specs) {
    if (spec.flag == "no-normalize") spec.kind = OptionKind::kSwitchOff;
    if (spec.flag == "embed") spec.commands = kTrain;  // a task's input is what the task makes it
  }
  return specs;
}

// Keys the stored options carry for readers that no option sets: they come from the data.
constexpr std::string_view kDerivedKeys[] = {"model.vocab_size", "model.input_size", "model.output_size",
                                             "model.head", "task.name"};

}  // namespace

void TrainOptions::Validate() const {
  if (corpus.empty() && task.empty()) throw Error("--corpus is required (a text file or a directory of text files)");
  if (!corpus.empty() && !task.empty()) throw Error("a run trains on a corpus or on a task, not both");
  if (seq_len < 1) throw Error("--seq-len must be positive, got " + std::to_string(seq_len));
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  if (!(lr > 0)) throw Error("--lr must be positive");
  if (!(lr_decay > 0 && lr_decay <= 1)) throw Error("--lr-decay must be in (0, 1]");
  if (lr_decay_after < 0) throw Error("--lr-decay-after must not be negative");
  if (!(lr_anneal >= 0 && lr_anneal <= 1)) throw Error("--lr-anneal must be in [0, 1]");
  if (clip_norm < 0) throw Error("--clip-norm must be 0 (off) or positive");
  if (clip_value < 0) throw Error("--clip-value must be 0 (off) or positive");
  if (threads < 0) throw Error("--threads must be 0 (every core) or positive");
  if (precision == Precision::kBfloat16 && !Bf16ProductsAvailable())
    throw Error("--precision bf16 needs a CPU with AMX-BF16 (Intel Xeon, 4th generation or later), which this is not; "
                "use --precision fp32");
  if (max_steps < 0 || max_epochs < 0 || max_sequences < 0 || time_budget < 0)
    throw Error("--max-steps, --max-epochs, --max-sequences and --time-budget must not be negative");
  if (eval_every < 1) throw Error("--eval-every must be positive");
  if (checkpoint_every < 1) throw Error("--checkpoint-every must be positive");
  if (log_every < 1) throw Error("--log-every must be positive");
  if (max_rollbacks < 0) throw Error("--max-rollbacks must not be negative");
  if (decay_every < 0) throw Error("--decay-every must be 0 (off) or positive");
  if (decay_every > 0 && (decay_steps < 1 || decay_batch < 1))
    throw Error("--decay-steps and --decay-batch must be positive");
  if (test_size < 1) throw Error("--test-size must be positive, got " + std::to_string(test_size));
  if (!(optimizer.momentum >= 0 && optimizer.momentum < 1)) throw Error("--momentum must be in [0, 1)");
  if (!(optimizer.beta1 >= 0 && optimizer.beta1 < 1)) throw Error("--beta1 must be in [0, 1)");
  if (!(optimizer.beta2 >= 0 && optimizer.beta2 < 1)) throw Error("--beta2 must be in [0, 1)");
  if (!(optimizer.rms_decay >= 0 && optimizer.rms_decay < 1)) throw Error("--rms-decay must be in [0, 1)");
  if (!(optimizer.eps > 0)) throw Error("--eps must be positive");
  if (!(optimizer.weight_decay >= 0)) throw Error("--weight-decay must not be negative");
  if (out.empty()) throw Error("--out is required");
}

std::span<const OptionSpec<TrainOptions>> TrainOptionSpecs() {
  static const std::vector<OptionSpec<TrainOptions>> specs = MakeSpecs();
  return specs;
}

nlohmann::json TrainOptionsToJson(const TrainOptions& o) {
  nlohmann::json j = ToJson(TrainOptionSpecs(), o);
  j["model"] = ConfigToJson(o.model);
  if (!o.task.empty()) j["task"]["name"] = o.task;
  return j;
}

TrainOptions TrainOptionsFromJson(const nlohmann::json& j, const std::string& source) {
  TrainOptions o = FromJson(TrainOptionSpecs(), j, TrainOptions(), source, kDerivedKeys);
  // The stored model is the whole configuration, with the sizes the data set.
  if (!j.contains("model")) throw Error(source + ": stored options are malformed: they have no model");
  const ModelConfig m = ConfigFromJson(j.at("model"), source);
  o.model.vocab_size = m.vocab_size;
  o.model.input_size = m.input_size;
  o.model.output_size = m.output_size;
  o.model.head = m.head;
  try {
    o.task = TaskOf(j);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": stored options are malformed: " + e.what());
  } catch (const Error& e) {
    throw Error(source + ": stored options are malformed: " + e.what());
  }
  return o;
}


std::string TaskOf(const nlohmann::json& j) {
  if (!j.contains("task") || !j.at("task").is_object()) return "";
  const nlohmann::json& task = j.at("task");
  return task.contains("name") && task.at("name").is_string() ? task.at("name").get<std::string>() : "";
}

namespace {

// The state of one run, from setup to the last checkpoint. In a distributed run every rank has
// one, holding its share of the streams; rank 0's alone writes to the log and to DIR.
class Run {
 public:
  Run(TrainOptions options, std::ostream& log, bool live, const TrainHooks& hooks)
      : o_(std::move(options)),
        comm_(OpenCommunicator(o_.distributed)),
        share_{0, o_.batch},
        errors_(log),
        log_(root() ? log : quiet_),
        live_(live && root()),
        hooks_(hooks) {}

  TrainResult Start() {
    return Guarded([&] {
      Setup(nullptr);
      Rng init_rng(o_.seed);
      Initialize(o_.model, o_.init, init_rng, params_);
      Rng feedback_rng(StreamSeed(o_.seed, kFeedbackStream));
      feedback_ = FeedbackMatrices<float>::Draw(o_.feedback, o_.model, feedback_rng);
      state_ = State<float>::Zeros(o_.model, share_.size());
      if (root()) std::ofstream(dir_ / "metrics.jsonl", std::ios::trunc);
      log_ << "bptt train: " << o_.model.cell->name << " " << o_.model.layers << "x" << o_.model.hidden_size << ", "
           << params_.Count() << " parameters"
           << (o_.precision == Precision::kBfloat16 ? " (products in bf16 on AMX)"
               : Bf16ProductsAvailable()              ? " (this CPU has AMX: --precision bf16 trains faster)"
                                                      : "")
           << "; "
           << data_->Describe() << "; run directory " << dir_.string() << "\n";
      return Loop();
    });
  }

  TrainResult Continue(const Checkpoint& ck) {
    return Guarded([&] {
      Setup(&ck);
      Restore(ck);
      if (root()) TruncateMetrics();
      log_ << "bptt train: resuming " << dir_.string() << " at step " << step_ << "\n";
      return Loop();
    });
  }

 private:
  bool root() const { return comm_->rank() == 0; }
  bool distributed() const { return comm_->size() > 1; }

  // Runs the training; in a distributed run an error ends every rank's process (the others may
  // be waiting for this one), after saying which rank failed and why.
  template <typename F>
  TrainResult Guarded(F&& train) {
    try {
      return train();
    } catch (const std::exception& e) {
      if (!distributed()) throw;
      errors_ << "bptt train: rank " << comm_->rank() << " of " << comm_->size() << ": " << e.what() << "\n"
              << std::flush;
      comm_->Abort(1);
      throw;  // not reached: Abort ends the process
    }
  }

  void Setup(const Checkpoint* resume) {
    o_.Validate();
    if (distributed() && !o_.task.empty())
      throw Error("a task trains in one process: distributed training takes a corpus (bptt train)");
    if (o_.batch < comm_->size())
      throw Error("--batch " + std::to_string(o_.batch) + " is fewer streams than the " +
                  std::to_string(comm_->size()) + " ranks: each rank needs at least one");
    share_ = StreamShare::OfRank(o_.batch, comm_->rank(), comm_->size());
    dir_ = o_.out;
    std::filesystem::create_directories(dir_);
    if (root()) RemoveStaleTemporaries();
    threads_ = o_.threads > 0 ? o_.threads : DefaultThreads(*comm_);
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    if (distributed() && cores > 0 && comm_->local_size() * threads_ > cores)
      log_ << "bptt train: warning: " << comm_->local_size() << " ranks x " << threads_ << " threads on a machine of "
           << cores << " cores oversubscribe it; leave --threads at 0 for cores / ranks\n";
    if (distributed()) log_ << "bptt train: distributed over " << comm_->Describe() << ", " << threads_
                            << (threads_ == 1 ? " thread" : " threads") << " per rank\n";

    data_ = o_.task.empty() ? MakeCorpusData(o_, dir_, resume, log_, *comm_, share_) : MakeTaskData(o_);
    data_->Shape(o_.model);
    o_.model.Validate();
    vocab_ = data_->vocab();

    // Each rank's share, and what its validation holds beside it, times the ranks that share
    // this machine's memory.
    const uint64_t need = (EstimateTrainingBytes(o_.model, data_->timesteps(), share_.size(),
                                                 OptimizerSlots(o_.optimizer), o_.precision) +
                           data_->EvaluationBytes(o_.model)) *
                          static_cast<uint64_t>(comm_->local_size());
    const uint64_t have = AvailableBytes();
    if (have > 0 && need > have)
      throw Error("the model needs about " + std::to_string(need >> 20) + " MiB to train but only " +
                  std::to_string(have >> 20) + " MiB are available; reduce --hidden, --layers, --batch or --seq-len");
    if (o_.max_steps == 0 && o_.max_epochs == 0 && o_.time_budget == 0 && o_.max_sequences == 0 && o_.task.empty())
      o_.max_epochs = 50;
    if (o_.decay_every > 0 && root()) decay_probe_ = data_->DecayProbe(o_.decay_steps, o_.decay_batch);
    if (o_.feedback == Feedback::kDfa && o_.model.embed_size > 0)
      throw Error("--feedback dfa sends the error to the layers, not to an embedding: use one-hot input (--embed 0)");
    grads_ = ModelParams<float>::Zeros(o_.model);
    rng_ = Rng(StreamSeed(o_.seed, kDropoutStream));
  }

  // The next step's rate: --lr, halved by each rollback, decayed per epoch after
  // --lr-decay-after, and over the last --lr-anneal of the run (run_fraction_) falling linearly
  // to zero.
  double LearningRate() const {
    const int64_t decayed = epoch_ - o_.lr_decay_after;
    double lr = o_.lr * lr_scale_;
    if (decayed > 0) lr *= std::pow(o_.lr_decay, static_cast<double>(decayed));
    if (o_.lr_anneal > 0 && run_fraction_ > 1 - o_.lr_anneal)
      lr *= std::max(0.0, (1 - run_fraction_) / o_.lr_anneal);
    return lr;
  }

  double EpochProgress() const { return static_cast<double>(epoch_) + data_->EpochFraction(); }

  // Fraction of the run done by whichever limit is nearest, for the ETA.
  double RunFraction(double wall) const {
    double f = 0;
    if (o_.max_steps > 0) f = std::max(f, static_cast<double>(step_) / static_cast<double>(o_.max_steps));
    if (o_.max_epochs > 0) f = std::max(f, EpochProgress() / static_cast<double>(o_.max_epochs));
    if (o_.max_sequences > 0)
      f = std::max(f, static_cast<double>(step_) * o_.batch / static_cast<double>(o_.max_sequences));
    if (o_.time_budget > 0) f = std::max(f, wall / o_.time_budget);
    return f;
  }

  TrainResult Loop() {
    const Clock::time_point start = Clock::now();
    Clock::time_point window_start = start;
    Batch<float> batch;
    batch.B = share_.size();  // this rank's streams [first, first + B) of the whole batch
    batch.first = share_.begin;
    batch.whole = o_.batch;
    ModelCache<float> cache;
    Mat<float> doutputs;
    double window_loss = 0, window_norm = 0, window_reduce = 0;
    int64_t window_steps = 0, window_clipped = 0, window_items = 0;
    TrainResult result;
    result.dir = dir_;
    // After a divergence: true when rolled back (go on training), false when the run must end.
    const auto diverged = [&](const std::string& why) {
      if (RollBack(why)) {
        window_loss = window_norm = window_reduce = 0;
        window_steps = window_clipped = window_items = 0;
        return true;
      }
      result.end = TrainEnd::kDiverged;
      result.message = why + "; " + LastGood() + ". Try a lower --lr or --clip-norm";
      return false;
    };
    const int64_t first_step = step_;
    bool limit_reached = false;
    bool any_out_of_time = false;  // distributed: some rank passed --time-budget at the last step

    // The step and epoch counts come from a checkpoint, which may hold any count: the limits are
    // tested without overflowing (step_ * batch >= max_sequences), and no count passes INT64_MAX.
    constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();
    while (true) {
      if (o_.max_steps > 0 && step_ >= o_.max_steps) { limit_reached = true; break; }
      if (o_.max_sequences > 0 && step_ > (o_.max_sequences - 1) / o_.batch) { limit_reached = true; break; }
      if (step_ == kMaxCount) { limit_reached = true; break; }
      // Distributed, the ranks learn at each step's reduction whether any rank's clock has passed
      // the budget, so that they stop at the same step.
      if (o_.time_budget > 0 && (distributed() ? any_out_of_time : Seconds(start) >= o_.time_budget)) {
        limit_reached = true;
        break;
      }
      if (!data_->Next(batch)) {  // end of epoch: the state starts afresh
        if (epoch_ < kMaxCount) ++epoch_;
        data_->Rewind();
        state_.SetZero();
        if (o_.max_epochs > 0 && epoch_ >= o_.max_epochs) { limit_reached = true; break; }
        continue;
      }
      if (!data_->carries_state()) state_.SetZero();

      Forward(o_.model, params_, batch, state_, cache, Compute{threads_, o_.precision}, &rng_);
      // A rank's loss and gradients are its positions' sums divided by the whole batch's
      // positions (loss.h), so the sums over the ranks are the whole batch's.
      double loss = HeadLoss(o_.model, cache.outputs, batch, &doutputs, threads_);
      grads_.SetZero();
      Backward(o_.model, params_, batch, cache, doutputs, nullptr, grads_, nullptr, Compute{threads_, o_.precision},
               &feedback_);
      if (o_.feedback != Feedback::kBptt && (step_ + 1) % o_.eval_every == 0) Align(batch, cache, doutputs);
      bool stop = stop_requested.load();
      double elapsed = Seconds(start);
      if (distributed()) {
        StepSums sums{loss, stop, o_.time_budget > 0 && Seconds(start) >= o_.time_budget, Seconds(start)};
        window_reduce += SumOverRanks(sums);
        loss = sums.loss;
        stop = sums.stop;
        any_out_of_time = sums.out_of_time;
        elapsed = sums.seconds / comm_->size();  // the ranks' mean: the same on every rank
      }
      run_fraction_ = RunFraction(elapsed);
      if (o_.clip_value > 0) ClipGradValue(grads_, o_.clip_value);
      const double norm = o_.clip_norm > 0 ? ClipGradNorm(grads_, o_.clip_norm) : GradNorm(grads_);
      if (!std::isfinite(loss) || !std::isfinite(norm)) {
        const std::string why = "training diverged at step " + std::to_string(step_ + 1) + " (loss " +
                                std::to_string(loss) + ", gradient norm " + std::to_string(norm) + ")";
        if (diverged(why)) continue;
        break;
      }
      FinalState(o_.model, cache, state_);
      if (!OptimizerStep(o_.optimizer, LearningRate(), params_, grads_, optimizer_state_, threads_)) {
        const std::string why = "training diverged: the weights became non-finite at step " + std::to_string(step_ + 1);
        if (diverged(why)) continue;
        break;
      }
      ++step_;
      const bool solved = data_->Observe(batch, cache.outputs);

      window_loss += loss;
      window_norm += norm;
      window_items += data_->ItemsPerStep(batch);
      ++window_steps;
      if (o_.clip_norm > 0 && norm > o_.clip_norm) ++window_clipped;
      const bool eval_now = step_ % o_.eval_every == 0;
      const bool log_now = step_ % o_.log_every == 0 || eval_now;
      if (live_) {
        const double wall = Seconds(start), rate = static_cast<double>(window_items) / Seconds(window_start);
        const double fraction = RunFraction(wall);
        const double eta = fraction > 0 && step_ > first_step ? wall * (1 - fraction) / fraction : 0;
        char line[192];
        std::snprintf(line, sizeof line, "\rstep %lld  %s  loss %.4f  %.0f %s  ETA %.0fs  clip %.0f%%   ",
                      static_cast<long long>(step_), data_->Progress(epoch_).c_str(), window_loss / window_steps, rate,
                      data_->ItemName(), eta, 100.0 * window_clipped / window_steps);
        log_ << line << std::flush;
      }
      if (log_now) {
        if (distributed()) allreduce_ms_ = 1e3 * window_reduce / static_cast<double>(window_steps);
        LogWindow(window_loss / window_steps, window_norm / window_steps,
                  static_cast<double>(window_clipped) / window_steps,
                  static_cast<double>(window_items) / Seconds(window_start), Seconds(start), eval_now);
        result.train_loss = window_loss / window_steps;
        window_loss = window_norm = window_reduce = 0;
        window_steps = window_clipped = window_items = 0;
        window_start = Clock::now();
      }
      if (o_.decay_every > 0 && step_ % o_.decay_every == 0 && root()) {
        DecayOptions decay;
        decay.jacobian_lags = 0;
        RecordDecay(o_.model, params_, decay_probe_, decay, dir_, step_);
      }
      if (step_ % o_.checkpoint_every == 0) SaveLatest();
      if (solved) {
        result.end = TrainEnd::kSolved;
        limit_reached = true;
        break;
      }
      // A caller's stop hook (the Python module's progress callback, Ctrl-C) is asked after the
      // step's metrics went out; it belongs to a single process (TrainHooks).
      if (stop || (hooks_.stop && hooks_.stop())) {
        result.end = TrainEnd::kInterrupted;
        break;
      }
    }
    if (live_) log_ << "\n";
    if (result.end != TrainEnd::kDiverged) {
      if (step_ % o_.eval_every != 0 && step_ > first_step) {
        // Validate at the last step too. When this step's line is already written (the window
        // is empty), it is rewritten with the validation added. Only a run that reached its
        // limit lets this validation choose best.safetensors: an interrupted run that is
        // resumed must end with the best checkpoint of an uninterrupted one.
        nlohmann::json m;
        if (window_steps > 0) {
          if (distributed()) allreduce_ms_ = 1e3 * window_reduce / static_cast<double>(window_steps);
          m = LogWindow(window_loss / window_steps, window_norm / window_steps,
                        static_cast<double>(window_clipped) / window_steps,
                        static_cast<double>(window_items) / Seconds(window_start), Seconds(start), true,
                        limit_reached);
        } else {
          if (root()) std::filesystem::resize_file(dir_ / "metrics.jsonl", last_line_offset_);
          m = LogWindow(last_metrics_["train_loss"], last_metrics_["grad_norm"], last_metrics_["clip_fraction"],
                        last_metrics_["items_per_s"], last_metrics_["wall_s"], true, limit_reached);
        }
        result.train_loss = m["train_loss"];
      }
      SaveLatest();
      // Distributed: each rank's FNV-1a of its final weights, in rank order (all equal).
      std::vector<uint64_t> fingerprints;
      if (result.end != TrainEnd::kInterrupted && distributed()) fingerprints = comm_->AllGather(WeightsFingerprint(false));
      if (result.end != TrainEnd::kInterrupted && root()) {
        result.summary = data_->Summary(o_.model, BestParams(), step_, result.end == TrainEnd::kSolved, threads_);
        result.summary["steps"] = step_;
        result.summary["best_val_loss"] = best_val_loss_ > 0 ? nlohmann::json(best_val_loss_) : nlohmann::json(nullptr);
        result.summary["end"] = result.end == TrainEnd::kSolved ? "solved" : "limit";
        if (distributed()) {
          result.summary["ranks"] = comm_->size();
          nlohmann::json hex = nlohmann::json::array();
          for (uint64_t f : fingerprints) {
            char text[17];
            std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(f));
            hex.push_back(text);
          }
          result.summary["weights_fnv1a_by_rank"] = hex;
        }
        SaveText(result.summary.dump(2) + "\n", dir_ / "summary.json");
      }
    }
    result.steps = step_;
    result.best_val_loss = best_val_loss_;
    result.rank = comm_->rank();
    result.fingerprint = WeightsFingerprint(false);
    return result;
  }

  // FNV-1a of the weights (and the optimizer's buffers), which every rank must agree on.
  uint64_t WeightsFingerprint(bool with_optimizer) const {
    uint64_t hash = Fingerprint({});
    const auto add = [&hash](const Mat<float>& m) { hash = Fingerprint({m.data(), static_cast<size_t>(m.size())}, hash); };
    params_.ForEach([&](const std::string&, const Mat<float>& m) { add(m); });
    if (with_optimizer)
      for (const auto* slots : {&optimizer_state_.slot1, &optimizer_state_.slot2})
        for (const Mat<float>& m : *slots) add(m);
    return hash;
  }

  // The carried state of all B streams, on rank 0 (each rank holds the columns of its share;
  // the shares in rank order are the whole batch). Collective.
  State<float> WholeState() {
    if (!distributed()) return state_;
    State<float> whole = State<float>::Zeros(o_.model, o_.batch);
    std::vector<float> all;
    for (int l = 0; l < o_.model.layers; ++l) {
      for (auto [part, to] : {std::pair{&state_.h, &whole.h}, std::pair{&state_.c, &whole.c}}) {
        if (part->empty()) continue;
        const Mat<float>& m = (*part)[l];
        comm_->Gather({m.data(), static_cast<size_t>(m.size())}, all);
        if (root()) (*to)[l] = Eigen::Map<const Mat<float>>(all.data(), m.rows(), o_.batch);
      }
    }
    return whole;
  }

  // What the ranks sum at each step besides the gradients: the loss, and whether any rank was
  // asked to stop (SIGINT, SIGTERM) or ran out of --time-budget.
  struct StepSums {
    double loss = 0;
    bool stop = false;
    bool out_of_time = false;
    double seconds = 0;  // since the run started (for --lr-anneal by --time-budget)
  };

  // Sums the ranks' gradients in grads_, and `sums`, with one allreduce of one flat float
  // buffer: the gradients in ModelParams::ForEach order, then the loss, the two flags and the
  // seconds.
  // Returns the seconds the allreduce took. Every rank receives the same bits (the reduction is
  // MPI's, the same on every rank; Save checks that the ranks agree).
  double SumOverRanks(StepSums& sums) {
    const auto count = static_cast<size_t>(grads_.Count());
    flat_.resize(count + 4);
    size_t at = 0;
    grads_.ForEach([&](const std::string&, const Mat<float>& m) {
      std::copy(m.data(), m.data() + m.size(), flat_.data() + at);
      at += static_cast<size_t>(m.size());
    });
    flat_[count] = static_cast<float>(sums.loss);
    flat_[count + 1] = sums.stop ? 1.0f : 0.0f;
    flat_[count + 2] = sums.out_of_time ? 1.0f : 0.0f;
    flat_[count + 3] = static_cast<float>(sums.seconds);
    const Clock::time_point start = Clock::now();
    comm_->Sum(std::span<float>(flat_));
    const double seconds = Seconds(start);
    at = 0;
    grads_.ForEach([&](const std::string&, Mat<float>& m) {
      std::copy(flat_.data() + at, flat_.data() + at + m.size(), m.data());
      at += static_cast<size_t>(m.size());
    });
    sums.loss = flat_[count];
    sums.stop = flat_[count + 1] > 0;
    sums.out_of_time = flat_[count + 2] > 0;
    sums.seconds = flat_[count + 3];
    return seconds;
  }

  // The weights of best.safetensors, or the current ones without a validation.
  ModelParams<float> BestParams() const {
    const auto best = dir_ / "best.safetensors";
    if (!std::filesystem::exists(best)) return params_;
    return LoadCheckpoint(best).params;
  }

  // Lillicrap et al.'s measure: per weight tensor, the angle between the rule's update (in grads_)
  // and the true BPTT gradient on the same batch, kept for the next metrics line.
  void Align(const Batch<float>& batch, ModelCache<float>& cache, const Mat<float>& doutputs) {
    ModelParams<float> bptt = ModelParams<float>::Zeros(o_.model);
    Backward(o_.model, params_, batch, cache, doutputs, nullptr, bptt, nullptr, Compute{threads_, o_.precision});
    alignment_ = AlignmentDegrees(grads_, bptt);
  }

  // Appends one metrics line (validating first when asked) and prints it when not live. The
  // validation may choose best.safetensors unless choose_best is false.
  nlohmann::json LogWindow(double train_loss, double grad_norm, double clip_fraction, double items_per_s, double wall,
                           bool validate, bool choose_best = true) {
    nlohmann::json m = {{"step", step_}, {"epoch", EpochProgress()}, {"train_loss", train_loss},
                        {"val_loss", nullptr}, {"lr", LearningRate()}, {"grad_norm", grad_norm},
                        {"clip_fraction", clip_fraction}, {"items_per_s", items_per_s}, {"wall_s", wall}};
    data_->NameRate(m, items_per_s);
    if (validate && !alignment_.empty()) m["alignment_deg"] = alignment_;
    if (allreduce_ms_ >= 0) m["allreduce_ms"] = allreduce_ms_;  // per step, distributed
    if (validate) {
      const nlohmann::json v = data_->Validate(o_.model, params_, threads_);
      for (const auto& [key, value] : v.items()) m[key] = value;
      const double val = m["val_loss"].is_number() ? m["val_loss"].get<double>() : NAN;
      if (choose_best && std::isfinite(val) && (best_val_loss_ == 0 || val < best_val_loss_)) {
        best_val_loss_ = val;
        Save(dir_ / "best.safetensors", m);
      }
    }
    last_metrics_ = m;
    if (!root()) return m;
    const auto metrics_path = dir_ / "metrics.jsonl";
    last_line_offset_ = std::filesystem::exists(metrics_path) ? std::filesystem::file_size(metrics_path) : 0;
    std::ofstream(metrics_path, std::ios::app) << m.dump() << "\n";
    if (hooks_.progress) hooks_.progress(m);
    if (validate) WriteCurves({dir_}, dir_ / "curves.svg");  // watch a run in a browser
    if (!live_ || validate) {
      std::ostringstream line;
      line << "step " << step_ << "  " << data_->Progress(epoch_) << "  loss " << std::fixed << std::setprecision(4)
           << train_loss;
      if (!m["val_loss"].is_null()) line << "  " << data_->DescribeValidation(m);
      line << "  " << std::setprecision(0) << items_per_s << " " << data_->ItemName() << "  clip "
           << 100 * clip_fraction << "%\n";
      log_ << (live_ ? "\n" : "") << line.str() << std::flush;
    }
    return m;
  }

  // Checkpoints hold no wall-clock figures or output path, so that the same seed and thread
  // count give the same bytes (metrics.jsonl keeps the rates and wall_s). Collective in a
  // distributed run: the ranks check that they agree on the weights and gather the carried
  // state, and rank 0 writes.
  void Save(const std::filesystem::path& path, const nlohmann::json& metrics) {
    if (distributed())
      CheckSameOnEveryRank(*comm_, WeightsFingerprint(true), "weights and optimizer state at step " +
                                                                 std::to_string(step_));
    State<float> carried = WholeState();
    if (!root()) return;
    Checkpoint ck;
    ck.config = o_.model;
    ck.params = params_;
    ck.vocab = vocab_;
    ck.step = step_;
    ck.metrics = metrics;
    for (const char* key : {"chars_per_s", "sequences_per_s", "items_per_s", "wall_s", "allreduce_ms"})
      ck.metrics.erase(key);
    TrainingState t;
    t.optimizer = optimizer_state_;
    t.carried = std::move(carried);
    t.rng = rng_.Save();
    t.epoch = epoch_;
    t.chunk = data_->position();
    t.data = data_->SaveState();
    t.best_val_loss = best_val_loss_;
    t.lr_scale = lr_scale_;
    t.rollbacks = rollbacks_;
    t.feedback = feedback_;
    t.options = TrainOptionsToJson(o_);
    ck.training = std::move(t);
    SaveCheckpoint(ck, path);
  }

  // Temporary files of a process killed while saving (".NAME.tmp..." from Safetensors::Save,
  // "corpus.ids.tmp..." from EncodedCorpus::Build); the files they were to replace are intact.
  void RemoveStaleTemporaries() {
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      const bool temporary = (name[0] == '.' && name.find(".tmp") != std::string::npos) ||
                             name.rfind("corpus.ids.tmp", 0) == 0;
      if (temporary && entry.is_regular_file())
        std::filesystem::remove(entry.path());
    }
  }

  // Takes up training where the checkpoint `ck` (with training state) left it.
  void Restore(const Checkpoint& ck) {
    const std::string source = (dir_ / "latest.safetensors").string();
    // The checkpoint's tensors have its configuration's shapes; the data decides the model's
    // input and output sizes and head (Setup), and training needs both to be the same model.
    if (ConfigToJson(ck.config) != ConfigToJson(o_.model))
      throw Error(source + ": the checkpoint's model " + ConfigToJson(ck.config).dump() +
                  " is not the one its data makes: " + ConfigToJson(o_.model).dump());
    params_ = ck.params;
    step_ = ck.step;
    const TrainingState& t = *ck.training;
    optimizer_state_ = t.optimizer;
    try {
      CheckOptimizerState(o_.optimizer, params_, optimizer_state_);
    } catch (const Error& e) {
      throw Error(source + ": " + e.what());
    }
    if (t.carried.h.empty() || t.carried.h[0].cols() != o_.batch)
      throw Error(source + ": carried state does not match --batch " + std::to_string(o_.batch));
    state_ = t.carried;  // this rank's share of the streams
    for (auto* part : {&state_.h, &state_.c})
      for (Mat<float>& m : *part) m = Mat<float>(m.middleCols(share_.begin, share_.size()));
    rng_.Restore(t.rng);
    if (t.feedback.rule != o_.feedback)
      throw Error(source + ": the checkpoint's feedback matrices are not those of --feedback " +
                  std::string(FeedbackName(o_.feedback)));
    feedback_ = t.feedback;
    epoch_ = t.epoch;
    best_val_loss_ = t.best_val_loss;
    lr_scale_ = t.lr_scale;
    rollbacks_ = t.rollbacks;
    data_->Seek(t.chunk, t.data, source);
  }

  // After a divergence: reloads latest.safetensors and halves the learning rate, when allowed.
  bool RollBack(const std::string& why) {
    const auto latest = dir_ / "latest.safetensors";
    if (!o_.rollback_on_divergence || rollbacks_ >= o_.max_rollbacks || !std::filesystem::exists(latest)) return false;
    const int64_t rollbacks = rollbacks_;
    const double lr_scale = lr_scale_;  // the checkpoint predates this divergence and its halving
    Restore(LoadCheckpoint(latest, CheckpointUse::kResume));
    rollbacks_ = rollbacks + 1;
    lr_scale_ = lr_scale * 0.5;
    log_ << (live_ ? "\n" : "") << "bptt train: " << why << "; rolled back to step " << step_
         << " and halved the learning rate to " << LearningRate() << " (rollback " << rollbacks_ << " of "
         << o_.max_rollbacks << ")\n";
    return true;
  }

  // Where the last good weights are, for divergence messages.
  std::string LastGood() const {
    const auto latest = dir_ / "latest.safetensors";
    if (!std::filesystem::exists(latest)) return "no checkpoint was written";
    return latest.string() + " keeps the last good checkpoint (bptt train --resume " + dir_.string() + ")";
  }

  void SaveLatest() { Save(dir_ / "latest.safetensors", last_metrics_); }

  // Keeps the metrics lines up to the resumed step, so a resumed run's log reads as one run.
  void TruncateMetrics() {
    const auto path = dir_ / "metrics.jsonl";
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= step_)
        kept += line + "\n";
    }
    in.close();
    std::ofstream(path, std::ios::trunc) << kept;
  }

  TrainOptions o_;
  std::unique_ptr<Communicator> comm_;  // this process alone, or the ranks of the MPI job
  StreamShare share_;                   // this rank's streams of the o_.batch
  std::ostream quiet_{nullptr};         // the log of the ranks other than 0: discards
  std::ostream& errors_;                // where a rank says why it failed
  std::ostream& log_;
  bool live_;
  const TrainHooks& hooks_;
  std::vector<float> flat_;             // the gradients as one buffer, for the allreduce
  double allreduce_ms_ = -1;            // the last window's allreduce per step; -1 in one process
  std::filesystem::path dir_;
  int threads_ = 1;
  std::unique_ptr<TrainData> data_;
  Vocab vocab_;
  ModelParams<float> params_, grads_;
  OptimizerState<float> optimizer_state_;
  State<float> state_;
  Rng rng_;
  FeedbackMatrices<float> feedback_;  // FA / DFA: drawn once from the seed, kept in checkpoints
  nlohmann::json alignment_;          // FA / DFA: the angles of the last Align
  int64_t step_ = 0, epoch_ = 0;
  double best_val_loss_ = 0;
  nlohmann::json last_metrics_ = nlohmann::json::object();
  uintmax_t last_line_offset_ = 0;  // size of metrics.jsonl before its last line
  double lr_scale_ = 1.0;
  double run_fraction_ = 0;  // of the run done before the next step (RunFraction), for --lr-anneal
  int64_t rollbacks_ = 0;
  Batch<double> decay_probe_;  // decay_every > 0
};

}  // namespace

// What makes the long-lag tasks learnable out of the box (docs/long-lags.md): a forget-gate
// bias of 5 keeps an LSTM's cell state alive for about 150 steps at the start (sigmoid(5)^100 =
// 0.51, against sigmoid(1)^100 = 3e-14), the learning rate is Adam's 1e-3, and the gradient norm
// is clipped at 1.
TrainOptions TaskDefaults() {
  TrainOptions o;
  o.model.hidden_size = 64;
  o.model.layers = 1;
  o.init.forget_bias = 5.0;
  o.lr = 1e-3;
  o.clip_norm = 1.0;
  o.batch = 32;
  o.eval_every = 500;
  o.checkpoint_every = 500;
  o.log_every = 50;
  o.test_size = 2560;
  o.max_sequences = 1'000'000;  // the paper's T = 1000 needed 853,000
  return o;
}

TrainResult Train(TrainOptions options, std::ostream& log, bool live, const TrainHooks& hooks) {
  stop_requested = false;
  Run run(std::move(options), log, live, hooks);
  return run.Start();
}

TrainResult TrainTrials(TrainOptions options, int trials, std::ostream& log, bool live) {
  if (trials < 1) throw Error("--trials must be positive, got " + std::to_string(trials));
  options.Validate();
  const std::filesystem::path root = options.out;
  const uint64_t first_seed = options.seed;
  nlohmann::json runs = nlohmann::json::array();
  TrainResult result;
  for (int k = 0; k < trials; ++k) {
    TrainOptions o = options;
    o.seed = first_seed + static_cast<uint64_t>(k);
    o.out = (root / ("seed-" + std::to_string(o.seed))).string();
    result = Train(o, log, live);
    if (result.end == TrainEnd::kInterrupted || result.end == TrainEnd::kDiverged) return result;
    runs.push_back(result.summary);
  }
  // Mean, spread and range of every number the trials report.
  nlohmann::json stats = nlohmann::json::object();
  for (const auto& [key, value] : runs.front().items()) {
    if (!value.is_number() || key == "seed") continue;
    std::vector<double> v;
    for (const auto& run : runs)
      if (run.contains(key) && run[key].is_number()) v.push_back(run[key].get<double>());
    double mean = 0, var = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) var += (x - mean) * (x - mean) / static_cast<double>(v.size() > 1 ? v.size() - 1 : 1);
    stats[key] = {{"mean", mean}, {"std", std::sqrt(var)}, {"min", *std::min_element(v.begin(), v.end())},
                  {"max", *std::max_element(v.begin(), v.end())}};
  }
  int64_t solved = 0;
  for (const auto& run : runs) solved += run.value("solved", false) ? 1 : 0;
  result.summary = {{"trials", trials}, {"solved_trials", solved}, {"stats", stats}, {"runs", runs}};
  for (const char* key : {"task", "T", "cell", "hidden", "layers", "baseline", "test_size"})
    if (runs.front().contains(key)) result.summary[key] = runs.front()[key];
  SaveText(result.summary.dump(2) + "\n", root / "summary.json");
  return result;
}

TrainResult Resume(const std::filesystem::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                   const TrainHooks& hooks) {
  stop_requested = false;
  const auto path = dir / "latest.safetensors";
  if (!std::filesystem::exists(path)) throw Error(path.string() + ": no checkpoint to resume from");
  const Checkpoint ck = LoadCheckpoint(path, CheckpointUse::kResume);
  TrainOptions o = TrainOptionsFromJson(ck.training->options, path.string());
  for (const auto& spec : TrainOptionSpecs()) {
    if (!given.contains(spec.flag)) continue;
    const nlohmann::json& value = given.at(std::string(spec.flag));
    const std::string flag = "--" + std::string(spec.flag);
    if (spec.on_resume == OnResume::kNone)
      throw Error(flag + " cannot be given with --resume (the run directory is the one resumed)");
    if (spec.on_resume == OnResume::kFixed) {
      TrainOptions changed = o;
      spec.set(changed, value);
      if (spec.get(changed) != spec.get(o))
        throw Error(flag + " cannot be changed on --resume: the run has " + flag + " " + OptionText(spec.get(o)) +
                    " (start a new run to change it)");
      continue;
    }
    spec.set(o, value);
  }
  o.out = dir.string();
  Run run(std::move(o), log, live, hooks);
  return run.Continue(ck);
}

void RequestStop() { stop_requested.store(true); }

}  // namespace bptt
