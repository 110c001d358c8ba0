#include "train_loop.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>

#include "bptt/clip.h"
#include "bptt/decay.h"
#include "bptt/decay_files.h"
#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/prune.h"
#include "bptt/recompute.h"

namespace bptt {

namespace {

std::atomic<bool> stop_requested{false};

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// The step and epoch counts come from a checkpoint, which may hold any count: no count passes
// this, and the limits are tested without overflowing.
constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();

// What moves from step to step: the weights and what a checkpoint keeps with them to continue
// exactly (besides the options and the data's position, which the data keeps).
struct RunState {
  ModelParams<float> params;
  OptimizerState<float> optimizer;
  State<float> carried;              // this rank's streams: (H, B_rank) per layer
  Rng rng;                           // dropout
  FeedbackMatrices<float> feedback;  // FA / DFA: drawn once from the seed
  WeightAverage average;             // --average: of the weights after each step
  int64_t step = 0;                  // optimizer steps taken
  int64_t epoch = 0;                 // epochs completed
  double best_val_loss = 0;          // 0 before the first validation
  double lr_scale = 1.0;             // halved by each rollback
  int64_t rollbacks = 0;
};

// The steps since the last metrics line.
struct Window {
  double loss = 0, norm = 0;
  double reduce_seconds = 0;  // in the allreduce, distributed
  int64_t steps = 0, clipped = 0, items = 0;
  Clock::time_point start = Clock::now();

  void ClearSums() { *this = Window{.start = start}; }
};

// What one step did: it was taken unless `diverged` says why not.
struct StepResult {
  double loss = 0;
  double norm = 0;    // of the gradient before clipping
  bool stop = false;  // a rank was asked to stop
  std::string diverged;
};

// How a metrics line reaches metrics.jsonl.
enum class LineWrite { kAppend, kReplaceLast };

class TrainLoop {
 public:
  TrainLoop(const RunSetup& setup, std::ostream& log, bool live, const TrainHooks& hooks)
      : o_(setup.options),
        comm_(*setup.comm),
        share_(setup.share),
        data_(*setup.data),
        dir_(setup.dir),
        threads_(setup.threads),
        log_(log),
        live_(live && root()),
        hooks_(hooks),
        latest_(std::filesystem::path(o_.out) / "latest.safetensors"),
        best_(std::filesystem::path(o_.out) / "best.safetensors") {
    grads_ = ModelParams<float>::Zeros(o_.model);
    s_.rng = Rng(StreamSeed(o_.seed, kDropoutStream));
    if (o_.decay_every > 0 && root()) decay_probe_ = data_.DecayProbe(o_.decay_steps, o_.decay_batch);
    if (o_.credit != Credit::kBptt) {  // the model's sizes are the data's now
      CheckCredit(o_.credit, o_.model, share_.size(), sizeof(float), AvailableBytes());
      online_.emplace(o_.credit, o_.model, share_.size(), StreamSeed(o_.seed, kCreditStream));
    }
    // In segments a last segment shorter than the others resizes buffers at every chunk: large
    // blocks are kept out of the heap (recompute.h).
    if (o_.checkpoint_steps != 0 || o_.memory_budget != 0) KeepLargeBlocksOutOfTheHeap();
  }

  // A new run: the weights and feedback matrices from the seed, the state at zero.
  void Begin() {
    Rng init_rng(o_.seed);
    Initialize(o_.model, o_.init, init_rng, s_.params);
    Rng feedback_rng(StreamSeed(o_.seed, kFeedbackStream));
    s_.feedback = FeedbackMatrices<float>::Draw(o_.feedback, o_.model, feedback_rng);
    s_.carried = State<float>::Zeros(o_.model, share_.size());
    if (o_.prune.on()) pruner_ = BlockPruner(o_.model, s_.params);
    if (root()) dir_->StartMetrics();
    if (o_.decay_every > 0 && root()) decay_log_.emplace(dir_->path(), -1);
    log_ << "bptt train: " << o_.model.cell->name << " " << o_.model.layers << "x" << o_.model.hidden_size << ", "
         << s_.params.Count() << " parameters"
         << (o_.precision == Precision::kBfloat16 ? " (products in bf16)"
             : Bf16ProductsAvailable()              ? " (this CPU has bf16 products: --precision bf16 trains faster)"
                                                    : "")
         << "; " << data_.Describe() << "; run directory " << o_.out << "\n";
  }

  // A resumed run: where the checkpoint left it, its metrics cut back to that step.
  void Continue(const Checkpoint& ck) {
    Restore(ck);
    last_metrics_ = ck.metrics;
    if (root()) dir_->KeepMetricsThrough(s_.step);
    // What the run recorded before: a malformed file ends the run here, before its first step.
    if (o_.decay_every > 0 && root()) decay_log_.emplace(dir_->path(), s_.step);
    log_ << "bptt train: resuming " << o_.out << " at step " << s_.step << "\n";
  }

  TrainResult Run() {
    const Clock::time_point start = Clock::now();
    window_ = Window{};
    Batch<float> batch;
    batch.B = share_.size();  // this rank's streams [first, first + B) of the whole batch
    batch.first = share_.begin;
    batch.whole = o_.batch;
    TrainResult result;
    result.dir = o_.out;
    const int64_t first_step = s_.step;
    bool limit_reached = false;
    while (!(limit_reached = LimitReached(start))) {
      if (!data_.Next(batch)) {  // end of epoch: the state starts afresh
        if (s_.epoch < kMaxCount) ++s_.epoch;
        data_.Rewind();
        s_.carried.SetZero();
        if (online_) online_->Reset();
        if (o_.max_epochs > 0 && s_.epoch >= o_.max_epochs) {
          limit_reached = true;
          break;
        }
        continue;
      }
      const StepResult step = Step(batch, start);
      if (!step.diverged.empty()) {
        if (RollBack(step.diverged)) continue;
        result.end = TrainEnd::kDiverged;
        result.message = step.diverged + "; " + LastGood() + ". Try a lower --lr or --clip-norm";
        break;
      }
      const bool solved = data_.Observe(batch, cache_.outputs);
      Record(step, batch, start, first_step, result);
      if (solved) {
        result.end = TrainEnd::kSolved;
        limit_reached = true;
        break;
      }
      if (StopAgreed(step.stop)) {
        result.end = TrainEnd::kInterrupted;
        break;
      }
    }
    if (live_) log_ << "\n";
    if (result.end != TrainEnd::kDiverged) Finish(result, start, first_step, limit_reached);
    result.steps = s_.step;
    result.best_val_loss = s_.best_val_loss;
    result.rank = comm_.rank();
    result.fingerprint = WeightsFingerprint(s_.params);
    return result;
  }

 private:
  bool root() const { return comm_.rank() == 0; }
  bool distributed() const { return comm_.size() > 1; }

  // Memory-bounded BPTT for the batch's chunk: --checkpoint-steps, or what --memory-budget plans
  // for its (T, B), said for the first shape (a task's chunks may vary in length).
  void Checkpointing(const Batch<float>& batch) {
    cache_.checkpoint_steps = o_.checkpoint_steps;
    cache_.checkpoint_slots = 0;
    if (o_.memory_budget == 0) return;
    if (planned_for_ != std::pair{batch.T, batch.B}) {
      plan_ = PlanMemory(o_.model, static_cast<int>(batch.T), static_cast<int>(batch.B), OptimizerSlots(o_.optimizer),
                         o_.precision, o_.memory_budget);
      const bool first = planned_for_.first == 0;
      planned_for_ = {batch.T, batch.B};
      if (first)
        log_ << (live_ ? "\n" : "") << "bptt train: --memory-budget " << BytesText(o_.memory_budget) << ", chunks of "
             << batch.T << " steps: " << MemoryPlanText(plan_, static_cast<int>(batch.T)) << "\n";
    }
    cache_.checkpoint_steps = plan_.checkpoint_steps;
    cache_.checkpoint_slots = plan_.slots;
  }

  // One step on `batch`: forward, the head's loss, backward, the ranks' sums, clipping, the
  // checks that loss and gradient are finite, the update and the check of the new weights.
  StepResult Step(const Batch<float>& batch, Clock::time_point start) {
    StepResult r;
    const Compute compute{threads_, o_.precision};
    if (!data_.carries_state()) {
      s_.carried.SetZero();
      if (online_) online_->Reset();
    }
    Checkpointing(batch);
    grads_.SetZero();
    if (online_) {
      r.loss = OnlineGradient(o_.model, s_.params, batch, s_.carried, cache_, *online_, grads_, compute);
    } else {
      Forward(o_.model, s_.params, batch, s_.carried, cache_, compute, &s_.rng);
      // A rank's loss and gradients are its positions' sums divided by the whole batch's
      // positions (loss.h), so the sums over the ranks are the whole batch's.
      r.loss = HeadLoss(o_.model, cache_.outputs, batch, &doutputs_, threads_);
      Backward(o_.model, s_.params, batch, cache_, doutputs_, nullptr, grads_, nullptr, compute, &s_.feedback);
    }
    if (o_.feedback != Feedback::kBptt && (s_.step + 1) % o_.eval_every == 0) Align(batch);
    r.stop = stop_requested.load() || stop_asked_;
    double elapsed = Seconds(start);
    if (distributed()) {
      StepSums sums{r.loss, r.stop, o_.time_budget > 0 && Seconds(start) >= o_.time_budget, Seconds(start)};
      window_.reduce_seconds += SumOverRanks(comm_, grads_, sums, flat_);
      r.loss = sums.loss;
      r.stop = sums.stop;
      out_of_time_ = sums.out_of_time;
      elapsed = sums.seconds / comm_.size();  // the ranks' mean: the same on every rank
    }
    run_fraction_ = RunFraction(elapsed);
    if (o_.clip_value > 0) ClipGradValue(grads_, o_.clip_value);
    r.norm = o_.clip_norm > 0 ? ClipGradNorm(grads_, o_.clip_norm) : GradNorm(grads_);
    if (!std::isfinite(r.loss) || !std::isfinite(r.norm)) {
      r.diverged = "training diverged at step " + std::to_string(s_.step + 1) + " (loss " + std::to_string(r.loss) +
                   ", gradient norm " + std::to_string(r.norm) + ")";
      return r;
    }
    FinalState(o_.model, cache_, s_.carried);
    if (!OptimizerStep(o_.optimizer, LearningRate(), s_.params, grads_, s_.optimizer, threads_)) {
      r.diverged = "training diverged: the weights became non-finite at step " + std::to_string(s_.step + 1);
      return r;
    }
    if (o_.prune.on()) pruner_.Step(s_.params, PruneTarget(o_.prune, run_fraction_));
    ++s_.step;
    if (o_.average.enabled()) {
      s_.average.Update(o_.average, s_.params);
      if (o_.prune.on() && s_.average.updates > 0) pruner_.Apply(s_.average.params);
    }
    return r;
  }

  // The limits tested before each step (the epoch limit is tested at the end of each epoch).
  bool LimitReached(Clock::time_point start) const {
    if (o_.max_steps > 0 && s_.step >= o_.max_steps) return true;
    if (o_.max_sequences > 0 && s_.step > (o_.max_sequences - 1) / o_.batch) return true;
    if (s_.step == kMaxCount) return true;
    // Distributed, the ranks learn at each step's reduction whether any rank's clock has passed
    // the budget, so that they stop at the same step.
    return o_.time_budget > 0 && (distributed() ? out_of_time_ : Seconds(start) >= o_.time_budget);
  }

  // Whether the run stops after this step: SIGINT / SIGTERM (RequestStop) or the caller's stop
  // hook. In one process the hook stops the run at once; distributed, its answer joins the next
  // step's sums (stop_asked_), so that every rank stops after the same step.
  bool StopAgreed(bool stop) {
    if (stop) return true;
    const bool asked = hooks_.stop && hooks_.stop();
    if (!distributed()) return asked;
    stop_asked_ = stop_asked_ || asked;
    return false;
  }

  // After a step: its figures into the window; the progress line; at their intervals the
  // metrics line (with validation), the decay profile and latest.safetensors.
  void Record(const StepResult& step, const Batch<float>& batch, Clock::time_point start, int64_t first_step,
              TrainResult& result) {
    window_.loss += step.loss;
    window_.norm += step.norm;
    window_.items += data_.ItemsPerStep(batch);
    ++window_.steps;
    if (o_.clip_norm > 0 && step.norm > o_.clip_norm) ++window_.clipped;
    const bool eval_now = s_.step % o_.eval_every == 0;
    if (live_) LiveLine(start, first_step);
    if (s_.step % o_.log_every == 0 || eval_now) result.train_loss = CloseWindow(start, eval_now)["train_loss"];
    if (o_.decay_every > 0 && s_.step % o_.decay_every == 0 && root()) RecordDecayProfile();
    if (s_.step % o_.checkpoint_every == 0) SaveLatest();
  }

  // After the last step: a validation at that step too, latest.safetensors, and the summary.
  void Finish(TrainResult& result, Clock::time_point start, int64_t first_step, bool limit_reached) {
    if (s_.step % o_.eval_every != 0 && s_.step > first_step) {
      // When this step's line is already written (the window is empty), it is rewritten with
      // the validation added. Only a run that reached its limit lets this validation choose
      // best.safetensors: an interrupted run that is resumed must end with the best checkpoint
      // of an uninterrupted one.
      const nlohmann::json m =
          window_.steps > 0
              ? CloseWindow(start, true, limit_reached)
              : Metrics(last_metrics_["train_loss"], last_metrics_["grad_norm"], last_metrics_["clip_fraction"],
                        last_metrics_["items_per_s"], last_metrics_["wall_s"], true, limit_reached,
                        LineWrite::kReplaceLast);
      result.train_loss = m["train_loss"];
    }
    SaveLatest();
    if (result.end == TrainEnd::kInterrupted) return;
    // Distributed: each rank's FNV-1a of its final weights, in rank order (all equal).
    std::vector<uint64_t> fingerprints;
    if (distributed()) fingerprints = comm_.AllGather(WeightsFingerprint(s_.params));
    if (!root()) return;
    result.summary = data_.Summary(o_.model, BestParams(), s_.step, result.end == TrainEnd::kSolved, threads_);
    result.summary["steps"] = s_.step;
    result.summary["best_val_loss"] = s_.best_val_loss > 0 ? nlohmann::json(s_.best_val_loss) : nlohmann::json(nullptr);
    result.summary["end"] = result.end == TrainEnd::kSolved ? "solved" : "limit";
    if (distributed()) {
      result.summary["ranks"] = comm_.size();
      nlohmann::json hex = nlohmann::json::array();
      for (uint64_t f : fingerprints) {
        char text[17];
        std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(f));
        hex.push_back(text);
      }
      result.summary["weights_fnv1a_by_rank"] = hex;
    }
    dir_->SaveJson("summary.json", result.summary);
  }

  // The next step's rate: --lr, halved by each rollback, decayed per epoch after
  // --lr-decay-after, and over the last --lr-anneal of the run (run_fraction_) falling linearly
  // to zero.
  double LearningRate() const {
    const int64_t decayed = s_.epoch - o_.lr_decay_after;
    double lr = o_.lr * s_.lr_scale;
    if (decayed > 0) lr *= std::pow(o_.lr_decay, static_cast<double>(decayed));
    if (o_.lr_anneal > 0 && run_fraction_ > 1 - o_.lr_anneal) lr *= std::max(0.0, (1 - run_fraction_) / o_.lr_anneal);
    return lr;
  }

  double EpochProgress() const { return static_cast<double>(s_.epoch) + data_.EpochFraction(); }

  // Fraction of the run done by whichever limit is nearest, for the ETA and --lr-anneal.
  double RunFraction(double wall) const {
    double f = 0;
    if (o_.max_steps > 0) f = std::max(f, static_cast<double>(s_.step) / static_cast<double>(o_.max_steps));
    if (o_.max_epochs > 0) f = std::max(f, EpochProgress() / static_cast<double>(o_.max_epochs));
    if (o_.max_sequences > 0)
      f = std::max(f, static_cast<double>(s_.step) * o_.batch / static_cast<double>(o_.max_sequences));
    if (o_.time_budget > 0) f = std::max(f, wall / o_.time_budget);
    return f;
  }

  void LiveLine(Clock::time_point start, int64_t first_step) {
    const double wall = Seconds(start), rate = static_cast<double>(window_.items) / Seconds(window_.start);
    const double fraction = RunFraction(wall);
    const double eta = fraction > 0 && s_.step > first_step ? wall * (1 - fraction) / fraction : 0;
    char line[192];
    std::snprintf(line, sizeof line, "\rstep %lld  %s  loss %.4f  %.0f %s  ETA %.0fs  clip %.0f%%   ",
                  static_cast<long long>(s_.step), data_.Progress(s_.epoch).c_str(), window_.loss / window_.steps,
                  rate, data_.ItemName(), eta, 100.0 * window_.clipped / window_.steps);
    log_ << line << std::flush;
  }

  // The window's means as a metrics line (validating first when asked); the window starts anew.
  nlohmann::json CloseWindow(Clock::time_point start, bool validate, bool choose_best = true) {
    const auto steps = static_cast<double>(window_.steps);
    if (distributed()) allreduce_ms_ = 1e3 * window_.reduce_seconds / steps;
    const nlohmann::json m = Metrics(window_.loss / steps, window_.norm / steps, window_.clipped / steps,
                                     static_cast<double>(window_.items) / Seconds(window_.start), Seconds(start),
                                     validate, choose_best, LineWrite::kAppend);
    window_ = Window{};
    return m;
  }

  // One metrics line (validating first when asked; the validation may choose best.safetensors
  // unless choose_best is false), written to metrics.jsonl, given to the progress hook and
  // printed when not live.
  nlohmann::json Metrics(double train_loss, double grad_norm, double clip_fraction, double items_per_s, double wall,
                         bool validate, bool choose_best, LineWrite write) {
    nlohmann::json m = {{"step", s_.step}, {"epoch", EpochProgress()}, {"train_loss", train_loss},
                        {"val_loss", nullptr}, {"lr", LearningRate()}, {"grad_norm", grad_norm},
                        {"clip_fraction", clip_fraction}, {"items_per_s", items_per_s}, {"wall_s", wall}};
    data_.NameRate(m, items_per_s);
    if (validate && !alignment_.empty()) m["alignment_deg"] = alignment_;
    if (allreduce_ms_ >= 0) m["allreduce_ms"] = allreduce_ms_;  // per step, distributed
    if (o_.prune.on()) m["sparsity"] = pruner_.sparsity();
    if (validate) {
      // With --average the averaged weights are the model: validated, and kept as best; the
      // weights' own loss is logged beside.
      const bool averaged = s_.average.updates > 0;
      const nlohmann::json v = data_.Validate(o_.model, averaged ? s_.average.params : s_.params, threads_);
      for (const auto& [key, value] : v.items()) m[key] = value;
      if (averaged) m["val_loss_unaveraged"] = data_.Validate(o_.model, s_.params, threads_)["val_loss"];
      const double val = m["val_loss"].is_number() ? m["val_loss"].get<double>() : NAN;
      // asgd: the weights' loss before the trigger may start the average (not a validation at
      // an interruption, so that a resumed run triggers where an uninterrupted one does).
      if (choose_best && !averaged && std::isfinite(val)) s_.average.Observe(o_.average, val);
      // Pruning: best.safetensors is chosen among models pruned to --prune, not denser ones.
      const bool pruned = !o_.prune.on() || PruneTarget(o_.prune, run_fraction_) >= o_.prune.sparsity;
      if (choose_best && pruned && std::isfinite(val) && (s_.best_val_loss == 0 || val < s_.best_val_loss)) {
        s_.best_val_loss = val;
        Save(best_, m, averaged);
      }
    }
    last_metrics_ = m;
    if (!root()) return m;
    if (write == LineWrite::kAppend) dir_->AppendMetrics(m);
    else dir_->ReplaceLastMetrics(m);
    if (hooks_.progress) hooks_.progress(m);
    if (validate) {  // watch a run in a browser
      const std::optional<std::string> failed = dir_->DrawCurves();
      if (failed && !curves_failed_) log_ << (live_ ? "\n" : "") << "bptt train: warning: " << *failed << "\n";
      curves_failed_ = curves_failed_ || failed;
    }
    if (!live_ || validate) {
      std::ostringstream line;
      line << "step " << s_.step << "  " << data_.Progress(s_.epoch) << "  loss " << std::fixed << std::setprecision(4)
           << train_loss;
      if (!m["val_loss"].is_null()) line << "  " << data_.DescribeValidation(m);
      line << "  " << std::setprecision(0) << items_per_s << " " << data_.ItemName() << "  clip "
           << 100 * clip_fraction << "%\n";
      log_ << (live_ ? "\n" : "") << line.str() << std::flush;
    }
    return m;
  }

  // Lillicrap et al.'s measure: per weight tensor, the angle between the rule's update (in grads_)
  // and the true BPTT gradient on the same batch, kept for the next metrics line.
  void Align(const Batch<float>& batch) {
    ModelParams<float> bptt = ModelParams<float>::Zeros(o_.model);
    Backward(o_.model, s_.params, batch, cache_, doutputs_, nullptr, bptt, nullptr, Compute{threads_, o_.precision});
    alignment_ = AlignmentDegrees(grads_, bptt);
  }

  // --decay-every: the profile into decay_train.csv and heatmap.svg. A measurement that cannot be
  // recorded is said once as a warning; it does not end the run.
  void RecordDecayProfile() {
    DecayOptions decay;
    decay.jacobian_lags = 0;
    try {
      decay_log_->Record(s_.step, MeasureDecay(std::string(o_.model.cell->name), o_.model, s_.params.Cast<double>(),
                                               decay_probe_, decay));
    } catch (const std::exception& e) {
      if (!decay_failed_)
        log_ << (live_ ? "\n" : "") << "bptt train: warning: the gradient-decay profile of step " << s_.step
             << " was not recorded in " << dir_->path().string() << " (" << e.what() << "); training goes on\n";
      decay_failed_ = true;
    }
  }

  // Checkpoints hold no wall-clock figures or output path, so that the same seed and thread
  // count give the same bytes (metrics.jsonl keeps the rates and wall_s). Collective in a
  // distributed run: the ranks check that they agree on the weights and gather the carried
  // state, and rank 0 writes. With `averaged_weights` the checkpoint's weights are the average
  // (best.safetensors of an --average run); otherwise the average, when kept, goes beside them.
  void Save(const std::filesystem::path& path, const nlohmann::json& metrics, bool averaged_weights = false) {
    if (distributed())
      CheckSameOnEveryRank(comm_, WeightsFingerprint(s_.params, &s_.optimizer),
                           "weights and optimizer state at step " + std::to_string(s_.step));
    State<float> carried = GatherState(comm_, o_.model, s_.carried, o_.batch);
    if (!root()) return;
    Checkpoint ck;
    ck.config = o_.model;
    ck.params = averaged_weights ? s_.average.params : s_.params;
    ck.vocab = data_.vocab();
    ck.sequences = data_.ModelData();
    ck.step = s_.step;
    ck.metrics = metrics;
    for (const char* key : {"chars_per_s", "sequences_per_s", "items_per_s", "wall_s", "allreduce_ms"})
      ck.metrics.erase(key);
    TrainingState t;
    t.optimizer = s_.optimizer;
    t.carried = std::move(carried);
    t.rng = s_.rng.Save();
    t.epoch = s_.epoch;
    t.chunk = data_.position();
    t.data = data_.SaveState();
    t.best_val_loss = s_.best_val_loss;
    t.lr_scale = s_.lr_scale;
    t.rollbacks = s_.rollbacks;
    t.feedback = s_.feedback;
    if (averaged_weights) {
      t.weights_averaged = true;
      t.average_updates = s_.average.updates;
    }
    else if (o_.average.enabled()) t.average = s_.average;
    if (online_) t.credit = *online_;
    t.options = TrainOptionsToJson(o_);
    ck.training = std::move(t);
    SaveCheckpoint(ck, path);
  }

  void SaveLatest() { Save(latest_, last_metrics_); }

  // Takes up training where the checkpoint `ck` (with training state) left it.
  void Restore(const Checkpoint& ck) {
    const std::string source = latest_.string();
    // The checkpoint's tensors have its configuration's shapes; the data decides the model's
    // input and output sizes and head, and training needs both to be the same model.
    if (ConfigToJson(ck.config) != ConfigToJson(o_.model))
      throw Error(source + ": the checkpoint's model " + ConfigToJson(ck.config).dump() +
                  " is not the one its data makes: " + ConfigToJson(o_.model).dump());
    const TrainingState& t = *ck.training;
    try {
      CheckOptimizerState(o_.optimizer, ck.params, t.optimizer);
    } catch (const Error& e) {
      throw Error(source + ": " + e.what());
    }
    if (t.carried.h.empty() || t.carried.h[0].cols() != o_.batch)
      throw Error(source + ": carried state does not match --batch " + std::to_string(o_.batch));
    if (t.feedback.rule != o_.feedback)
      throw Error(source + ": the checkpoint's feedback matrices are not those of --feedback " +
                  std::string(FeedbackName(o_.feedback)));
    if (t.average.has_value() != o_.average.enabled())
      throw Error(source + (o_.average.enabled() ? ": the checkpoint keeps no weight average for --average "
                                                 : ": the checkpoint keeps a weight average, but --average is ") +
                  AverageName(o_.average));
    if (t.credit.has_value() != online_.has_value() || (online_ && t.credit->credit != online_->credit))
      throw Error(source + ": the checkpoint carries " +
                  (t.credit ? "the state of --credit " + std::string(CreditName(t.credit->credit)) : "no online state") +
                  ", not that of --credit " + std::string(CreditName(o_.credit)));
    s_.params = ck.params;
    if (o_.prune.on()) pruner_ = BlockPruner(o_.model, s_.params);  // the pruned blocks are the zero ones (prune.h)
    s_.average = t.average.value_or(WeightAverage{});
    s_.step = ck.step;
    s_.optimizer = t.optimizer;
    s_.carried = t.carried;  // this rank's share of the streams
    for (auto* part : {&s_.carried.h, &s_.carried.c})
      for (Mat<float>& m : *part) m = Mat<float>(m.middleCols(share_.begin, share_.size()));
    s_.rng.Restore(t.rng);
    s_.feedback = t.feedback;
    if (online_) *online_ = *t.credit;
    s_.epoch = t.epoch;
    s_.best_val_loss = t.best_val_loss;
    s_.lr_scale = t.lr_scale;
    s_.rollbacks = t.rollbacks;
    data_.Seek(t.chunk, t.data, source);
  }

  // After a divergence: reloads latest.safetensors and halves the learning rate, when allowed.
  bool RollBack(const std::string& why) {
    if (!o_.rollback_on_divergence || s_.rollbacks >= o_.max_rollbacks || !std::filesystem::exists(latest_))
      return false;
    const int64_t rollbacks = s_.rollbacks;
    const double lr_scale = s_.lr_scale;  // the checkpoint predates this divergence and its halving
    Restore(LoadCheckpoint(latest_, CheckpointUse::kResume));
    s_.rollbacks = rollbacks + 1;
    s_.lr_scale = lr_scale * 0.5;
    window_.ClearSums();
    log_ << (live_ ? "\n" : "") << "bptt train: " << why << "; rolled back to step " << s_.step
         << " and halved the learning rate to " << LearningRate() << " (rollback " << s_.rollbacks << " of "
         << o_.max_rollbacks << ")\n";
    return true;
  }

  // Where the last good weights are, for divergence messages.
  std::string LastGood() const {
    if (!std::filesystem::exists(latest_)) return "no checkpoint was written";
    return latest_.string() + " keeps the last good checkpoint (bptt " + (o_.task.empty() ? "train" : "task") +
           " --resume " + o_.out + ")";
  }

  // The weights of best.safetensors, or without a validation the current ones (their average
  // with --average).
  ModelParams<float> BestParams() const {
    if (!std::filesystem::exists(best_)) return s_.average.updates > 0 ? s_.average.params : s_.params;
    return LoadCheckpoint(best_).params;
  }

  // The run.
  const TrainOptions o_;
  Communicator& comm_;
  const StreamShare share_;  // this rank's streams of o_.batch
  TrainData& data_;
  RunDirectory* const dir_;  // rank 0's; nullptr on the others
  const int threads_;
  std::ostream& log_;
  const bool live_;
  const TrainHooks& hooks_;
  const std::filesystem::path latest_, best_;
  // What a checkpoint keeps.
  RunState s_;
  // The step's buffers.
  ModelParams<float> grads_;
  ModelCache<float> cache_;
  std::optional<OnlineCredit<float>> online_;  // --credit other than bptt: the algorithm's carried state
  BlockPruner pruner_;        // --prune: the pruned blocks, rebuilt from the weights on resume
  Mat<float> doutputs_;       // (O, T*B)
  std::vector<float> flat_;   // the gradients as one buffer, for the allreduce
  // Between steps.
  Window window_;
  nlohmann::json last_metrics_ = nlohmann::json::object();
  nlohmann::json alignment_;  // FA / DFA: the angles of the last Align
  double run_fraction_ = 0;   // of the run done at the last step (RunFraction), for --lr-anneal and --prune
  double allreduce_ms_ = -1;  // the last window's allreduce per step; -1 in one process
  bool out_of_time_ = false;  // distributed: some rank passed --time-budget at the last step
  bool stop_asked_ = false;   // distributed: the stop hook asked, for the next step's sums
  Batch<double> decay_probe_;  // decay_every > 0
  std::optional<DecayTrainLog> decay_log_;  // decay_every > 0
  MemoryPlan plan_;                           // memory_budget > 0: for the chunks of planned_for_ (T, B)
  std::pair<Eigen::Index, Eigen::Index> planned_for_{0, 0};
  bool decay_failed_ = false;   // said once
  bool curves_failed_ = false;  // said once
};

}  // namespace

void RequestStop() { stop_requested.store(true); }

bool StopRequested() { return stop_requested.load(); }

void ClearStopRequest() { stop_requested.store(false); }

TrainResult RunTrainingLoop(const RunSetup& setup, const Checkpoint* resume, std::ostream& log, bool live,
                            const TrainHooks& hooks) {
  TrainLoop loop(setup, log, live, hooks);
  if (resume != nullptr) loop.Continue(*resume);
  else loop.Begin();
  return loop.Run();
}

}  // namespace bptt
