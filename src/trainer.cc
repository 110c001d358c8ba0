#include "bptt/trainer.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/clip.h"
#include "bptt/corpus.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/loss.h"

namespace bptt {

namespace {

std::atomic<bool> stop_requested{false};

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string FormatDuration(double seconds) {
  const long s = std::lround(seconds);
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else out << s << "s";
  return out.str();
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

void CheckOptions(const TrainOptions& o) {
  if (o.corpus.empty()) throw Error("--corpus is required (a text file or a directory of text files)");
  if (o.seq_len < 1) throw Error("--seq-len must be positive, got " + std::to_string(o.seq_len));
  if (o.batch < 1) throw Error("--batch must be positive, got " + std::to_string(o.batch));
  if (!(o.lr > 0)) throw Error("--lr must be positive");
  if (!(o.lr_decay > 0 && o.lr_decay <= 1)) throw Error("--lr-decay must be in (0, 1]");
  if (o.clip_norm < 0) throw Error("--clip-norm must be 0 (off) or positive");
  if (o.clip_value < 0) throw Error("--clip-value must be 0 (off) or positive");
  if (o.threads < 0) throw Error("--threads must be 0 (every core) or positive");
  if (o.max_steps < 0 || o.max_epochs < 0 || o.time_budget < 0)
    throw Error("--max-steps, --max-epochs and --time-budget must not be negative");
  if (o.eval_every < 1) throw Error("--eval-every must be positive");
  if (o.checkpoint_every < 1) throw Error("--checkpoint-every must be positive");
  if (o.log_every < 1) throw Error("--log-every must be positive");
  if (o.max_rollbacks < 0) throw Error("--max-rollbacks must not be negative");
  if (o.decay_every < 0) throw Error("--decay-every must be 0 (off) or positive");
  if (o.decay_every > 0 && (o.decay_steps < 1 || o.decay_batch < 1))
    throw Error("--decay-steps and --decay-batch must be positive");
  if (o.out.empty()) throw Error("--out is required");
}

// The state of one run, from setup to the last checkpoint.
class Run {
 public:
  Run(TrainOptions options, std::ostream& log, bool live) : o_(std::move(options)), log_(log), live_(live) {}

  TrainResult Start() {
    Setup(nullptr);
    Rng init_rng(o_.seed);
    Initialize(o_.model, o_.init, init_rng, params_);
    state_ = State<float>::Zeros(o_.model, o_.batch);
    std::ofstream(dir_ / "metrics.jsonl", std::ios::trunc);
    log_ << "bptt train: " << CellName(o_.model.cell) << " " << o_.model.layers << "x" << o_.model.hidden_size
         << ", V=" << o_.model.vocab_size << ", " << params_.Count() << " parameters; " << corpus_->size()
         << " symbols (train " << splits_.train.size() << ", validation " << splits_.validation.size() << "); "
         << train_->chunks_per_epoch() << " steps per epoch; run directory " << dir_.string() << "\n";
    return Loop();
  }

  TrainResult Continue(const Checkpoint& ck) {
    Setup(&ck);
    Restore(ck);
    TruncateMetrics();
    log_ << "bptt train: resuming " << dir_.string() << " at step " << step_ << ", epoch " << epoch_ << "\n";
    return Loop();
  }

 private:
  void Setup(const Checkpoint* resume) {
    CheckOptions(o_);
    dir_ = o_.out;
    std::filesystem::create_directories(dir_);
    RemoveStaleTemporaries();
    const int threads = o_.threads > 0 ? o_.threads : omp_get_num_procs();
    omp_set_num_threads(threads);
    Eigen::setNbThreads(threads);

    const CorpusFiles listed = ListCorpusFiles(o_.corpus);
    if (!listed.skipped.empty()) {
      WriteSkippedList(listed.skipped, dir_ / "skipped-files.txt");
      log_ << "bptt train: " << SkippedSummary(listed.skipped) << "; list in " << (dir_ / "skipped-files.txt").string() << "\n";
    }
    corpus_ = std::make_unique<EncodedCorpus>(
        EncodedCorpus::Build(listed.files, o_.tokenizer, dir_ / "corpus.ids", resume ? &resume->vocab : nullptr));
    if (corpus_->replacements() > 0)
      log_ << "bptt train: replaced " << corpus_->replacements() << " invalid UTF-8 sequences with U+FFFD\n";
    vocab_ = corpus_->vocab();
    o_.model.vocab_size = vocab_.size();
    o_.model.Validate();
    splits_ = SplitCorpus(corpus_->size(), o_.val_frac, o_.test_frac);
    if (splits_.train.size() < static_cast<size_t>(o_.batch) * o_.seq_len + 1)
      throw Error("corpus has " + std::to_string(splits_.train.size()) + " training symbols, fewer than --batch x --seq-len + 1 = " +
                  std::to_string(static_cast<size_t>(o_.batch) * o_.seq_len + 1) + "; use a smaller --batch or --seq-len");
    train_ = std::make_unique<BatchStream>(*corpus_, splits_.train, o_.batch, o_.seq_len);
    if (splits_.validation.size() >= 2)
      val_batch_ = static_cast<int>(std::min<size_t>(o_.batch, splits_.validation.size() - 1));

    const uint64_t need = EstimateTrainingBytes(o_.model, o_.seq_len, o_.batch, OptimizerSlots(o_.optimizer));
    const uint64_t have = AvailableBytes();
    if (have > 0 && need > have)
      throw Error("the model needs about " + std::to_string(need >> 20) + " MiB to train but only " +
                  std::to_string(have >> 20) + " MiB are available; reduce --hidden, --layers, --batch or --seq-len");
    if (o_.max_steps == 0 && o_.max_epochs == 0 && o_.time_budget == 0) o_.max_epochs = 50;
    if (o_.decay_every > 0) {
      // The decay probe: the first decay_batch x decay_steps chunk of the validation split (or of
      // the training split when validation is too short), fixed for the whole run.
      const SymbolRange probe_range =
          splits_.validation.size() >= static_cast<size_t>(o_.decay_batch) * o_.decay_steps + 1 ? splits_.validation
                                                                                               : splits_.train;
      BatchStream probe(*corpus_, probe_range, o_.decay_batch, o_.decay_steps);
      probe.Next(decay_inputs_, decay_targets_);
    }
    grads_ = ModelParams<float>::Zeros(o_.model);
  }

  double LearningRate() const {
    const int64_t decayed = epoch_ - o_.lr_decay_after;
    const double lr = o_.lr * lr_scale_;
    return decayed > 0 ? lr * std::pow(o_.lr_decay, static_cast<double>(decayed)) : lr;
  }

  double EpochProgress() const {
    return static_cast<double>(epoch_) +
           static_cast<double>(train_->chunk()) / static_cast<double>(train_->chunks_per_epoch());
  }

  // Fraction of the run done by whichever limit is nearest, for the ETA.
  double RunFraction(double wall) const {
    double f = 0;
    if (o_.max_steps > 0) f = std::max(f, static_cast<double>(step_) / static_cast<double>(o_.max_steps));
    if (o_.max_epochs > 0) f = std::max(f, EpochProgress() / static_cast<double>(o_.max_epochs));
    if (o_.time_budget > 0) f = std::max(f, wall / o_.time_budget);
    return f;
  }

  TrainResult Loop() {
    const Clock::time_point start = Clock::now();
    Clock::time_point window_start = start;
    Ids inputs, targets;
    ModelCache<float> cache;
    Mat<float> dlogits;
    double window_loss = 0, window_norm = 0;
    int64_t window_steps = 0, window_clipped = 0;
    TrainResult result;
    result.dir = dir_;
    // After a divergence: true when rolled back (go on training), false when the run must end.
    const auto Diverged = [&](const std::string& why) {
      if (RollBack(why)) {
        window_loss = window_norm = 0;
        window_steps = window_clipped = 0;
        return true;
      }
      result.end = TrainEnd::kDiverged;
      result.message = why + "; " + LastGood() + ". Try a lower --lr or --clip-norm";
      return false;
    };
    const int64_t first_step = step_;

    while (true) {
      if (o_.max_steps > 0 && step_ >= o_.max_steps) break;
      if (o_.time_budget > 0 && Seconds(start) >= o_.time_budget) break;
      const int steps = train_->Next(inputs, targets);
      if (steps == 0) {  // end of epoch: the state starts afresh
        ++epoch_;
        train_->Rewind();
        state_.SetZero();
        if (o_.max_epochs > 0 && epoch_ >= o_.max_epochs) break;
        continue;
      }

      Forward(o_.model, params_, inputs, steps, o_.batch, state_, cache, &rng_);
      const double loss = SoftmaxCrossEntropy(cache.logits, targets, &dlogits);
      grads_.SetZero();
      Backward(o_.model, params_, inputs, cache, dlogits, nullptr, grads_, nullptr);
      if (o_.clip_value > 0) ClipGradValue(grads_, o_.clip_value);
      const double norm = o_.clip_norm > 0 ? ClipGradNorm(grads_, o_.clip_norm) : GradNorm(grads_);
      if (!std::isfinite(loss) || !std::isfinite(norm)) {
        const std::string why = "training diverged at step " + std::to_string(step_ + 1) + " (loss " +
                                std::to_string(loss) + ", gradient norm " + std::to_string(norm) + ")";
        if (Diverged(why)) continue;
        break;
      }
      FinalState(o_.model, cache, state_);
      OptimizerStep(o_.optimizer, LearningRate(), params_, grads_, optimizer_state_);
      ++step_;

      window_loss += loss;
      window_norm += norm;
      ++window_steps;
      if (o_.clip_norm > 0 && norm > o_.clip_norm) ++window_clipped;
      const bool eval_now = step_ % o_.eval_every == 0;
      const bool log_now = step_ % o_.log_every == 0 || eval_now;

      if (live_) {
        const double wall = Seconds(start);
        const double chars = static_cast<double>(step_ - first_step) * o_.batch * o_.seq_len / std::max(wall, 1e-9);
        const double frac = RunFraction(wall);
        std::ostringstream line;
        line << "\rstep " << step_ << " | epoch " << std::fixed << std::setprecision(2) << EpochProgress()
             << " | loss " << std::setprecision(3) << window_loss / window_steps << " | " << std::setprecision(0)
             << chars << " chars/s | clip " << 100 * window_clipped / window_steps << "%";
        if (frac > 0) line << " | ETA " << FormatDuration(wall * (1 - frac) / frac);
        log_ << line.str() << "   " << std::flush;
      }
      if (log_now) {
        nlohmann::json m = LogWindow(window_loss / window_steps, window_norm / window_steps,
                                     static_cast<double>(window_clipped) / window_steps,
                                     static_cast<double>(window_steps) * o_.batch * o_.seq_len / Seconds(window_start),
                                     Seconds(start), eval_now);
        result.train_loss = m["train_loss"];
        window_loss = window_norm = 0;
        window_steps = window_clipped = 0;
        window_start = Clock::now();
      }
      if (o_.decay_every > 0 && step_ % o_.decay_every == 0) {
        DecayOptions decay;
        decay.jacobian_lags = 0;
        decay.clip_norm = o_.clip_norm > 0 ? o_.clip_norm : 5.0;
        RecordDecay(o_.model, params_, decay_inputs_, decay_targets_, o_.decay_steps, o_.decay_batch, decay, dir_, step_);
      }
      if (step_ % o_.checkpoint_every == 0) {
        if (!ParamsFinite()) {
          const std::string why = "training diverged: the weights became non-finite at step " + std::to_string(step_);
          if (Diverged(why)) continue;
          break;
        }
        SaveLatest();
      }
      if (stop_requested.load()) {
        result.end = TrainEnd::kInterrupted;
        break;
      }
    }
    if (live_) log_ << "\n";
    if (result.end != TrainEnd::kDiverged) {
      if (step_ % o_.eval_every != 0 && step_ > first_step) {
        // Validate at the last step too. When this step's line is already written (the window
        // is empty), it is rewritten with the validation added.
        nlohmann::json m;
        if (window_steps > 0) {
          m = LogWindow(window_loss / window_steps, window_norm / window_steps,
                        static_cast<double>(window_clipped) / window_steps,
                        static_cast<double>(window_steps) * o_.batch * o_.seq_len / Seconds(window_start),
                        Seconds(start), true);
        } else {
          std::filesystem::resize_file(dir_ / "metrics.jsonl", last_line_offset_);
          m = LogWindow(last_metrics_["train_loss"], last_metrics_["grad_norm"], last_metrics_["clip_fraction"],
                        last_metrics_["chars_per_s"], last_metrics_["wall_s"], true);
        }
        result.train_loss = m["train_loss"];
      }
      if (ParamsFinite()) {
        SaveLatest();
      } else {
        result.end = TrainEnd::kDiverged;
        result.message = "training diverged: the weights became non-finite by step " + std::to_string(step_) +
                         "; " + LastGood() + ". Try a lower --lr or --clip-norm";
      }
    }
    result.steps = step_;
    result.best_val_loss = best_val_loss_;
    return result;
  }

  // Appends one metrics line (validating first when asked) and prints it when not live.
  nlohmann::json LogWindow(double train_loss, double grad_norm, double clip_fraction, double chars_per_s,
                           double wall, bool validate) {
    nlohmann::json m = {{"step", step_}, {"epoch", EpochProgress()}, {"train_loss", train_loss},
                        {"val_loss", nullptr}, {"val_bpc", nullptr}, {"lr", LearningRate()},
                        {"grad_norm", grad_norm}, {"clip_fraction", clip_fraction},
                        {"chars_per_s", chars_per_s}, {"wall_s", wall}};
    if (validate && val_batch_ > 0) {
      const double val = EvaluateLoss(o_.model, params_, *corpus_, splits_.validation, val_batch_, o_.seq_len);
      m["val_loss"] = val;
      m["val_bpc"] = val / std::log(2.0);
      if (std::isfinite(val) && (best_val_loss_ == 0 || val < best_val_loss_)) {
        best_val_loss_ = val;
        Save(dir_ / "best.safetensors", m);
      }
    }
    last_metrics_ = m;
    const auto metrics_path = dir_ / "metrics.jsonl";
    last_line_offset_ = std::filesystem::exists(metrics_path) ? std::filesystem::file_size(metrics_path) : 0;
    std::ofstream(metrics_path, std::ios::app) << m.dump() << "\n";
    if (!live_ || validate) {
      std::ostringstream line;
      line << "step " << step_ << "  epoch " << std::fixed << std::setprecision(2) << EpochProgress() << "  loss "
           << std::setprecision(4) << train_loss;
      if (!m["val_loss"].is_null()) line << "  val " << m["val_loss"].get<double>() << " (" << m["val_bpc"].get<double>() << " bpc)";
      line << "  " << std::setprecision(0) << chars_per_s << " chars/s  clip " << 100 * clip_fraction << "%\n";
      log_ << (live_ ? "\n" : "") << line.str() << std::flush;
    }
    return m;
  }

  // Checkpoints hold no wall-clock figures or output path, so that the same seed and thread
  // count give the same bytes (metrics.jsonl keeps chars_per_s and wall_s).
  void Save(const std::filesystem::path& path, const nlohmann::json& metrics) {
    Checkpoint ck;
    ck.config = o_.model;
    ck.params = params_;
    ck.vocab = vocab_;
    ck.step = step_;
    ck.metrics = metrics;
    ck.metrics.erase("chars_per_s");
    ck.metrics.erase("wall_s");
    TrainingState t;
    t.optimizer = optimizer_state_;
    t.carried = state_;
    t.rng = rng_.Save();
    t.epoch = epoch_;
    t.chunk = train_->chunk();
    t.best_val_loss = best_val_loss_;
    t.lr_scale = lr_scale_;
    t.rollbacks = rollbacks_;
    t.options = TrainOptionsToJson(o_);
    t.options.erase("out");  // Resume sets it to the directory it resumes
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
    params_ = ck.params;
    step_ = ck.step;
    const TrainingState& t = *ck.training;
    optimizer_state_ = t.optimizer;
    state_ = t.carried;
    if (state_.h.empty() || state_.h[0].cols() != o_.batch)
      throw Error((dir_ / "latest.safetensors").string() + ": carried state does not match --batch " + std::to_string(o_.batch));
    rng_.Restore(t.rng);
    epoch_ = t.epoch;
    best_val_loss_ = t.best_val_loss;
    lr_scale_ = t.lr_scale;
    rollbacks_ = t.rollbacks;
    if (t.chunk > train_->chunks_per_epoch())
      throw Error((dir_ / "latest.safetensors").string() + ": data position is past the end of the corpus");
    train_->Seek(t.chunk);
  }

  // After a divergence: reloads latest.safetensors and halves the learning rate, when allowed.
  bool RollBack(const std::string& why) {
    const auto latest = dir_ / "latest.safetensors";
    if (!o_.rollback_on_divergence || rollbacks_ >= o_.max_rollbacks || !std::filesystem::exists(latest)) return false;
    const int64_t rollbacks = rollbacks_;
    const double lr_scale = lr_scale_;  // the checkpoint predates this divergence and its halving
    Restore(LoadCheckpoint(latest));
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

  bool ParamsFinite() const {
    bool finite = true;
    params_.ForEach([&finite](const std::string&, const Mat<float>& m) { finite = finite && m.allFinite(); });
    return finite;
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
  std::ostream& log_;
  bool live_;
  std::filesystem::path dir_;
  std::unique_ptr<EncodedCorpus> corpus_;
  Vocab vocab_;
  CorpusSplits splits_;
  std::unique_ptr<BatchStream> train_;
  int val_batch_ = 0;
  ModelParams<float> params_, grads_;
  OptimizerState<float> optimizer_state_;
  State<float> state_;
  Rng rng_{0};
  int64_t step_ = 0, epoch_ = 0;
  double best_val_loss_ = 0;
  nlohmann::json last_metrics_ = nlohmann::json::object();
  uintmax_t last_line_offset_ = 0;  // size of metrics.jsonl before its last line
  double lr_scale_ = 1.0;
  int64_t rollbacks_ = 0;
  Ids decay_inputs_, decay_targets_;  // the decay probe (decay_every > 0)
};

}  // namespace

nlohmann::json TrainOptionsToJson(const TrainOptions& o) {
  return {
      {"corpus", o.corpus},
      {"unit", std::string(UnitName(o.tokenizer.unit))},
      {"normalize", o.tokenizer.normalize},
      {"max_vocab", o.tokenizer.max_vocab},
      {"on_invalid", o.tokenizer.on_invalid == OnInvalid::kReplace ? "replace" : "error"},
      {"val_frac", o.val_frac},
      {"test_frac", o.test_frac},
      {"model", ConfigToJson(o.model)},
      {"init", {{"scheme", std::string(InitName(o.init.scheme))}, {"scale", o.init.scale}, {"forget_bias", o.init.forget_bias}}},
      {"optimizer",
       {{"type", std::string(OptimizerName(o.optimizer.type))}, {"momentum", o.optimizer.momentum},
        {"nesterov", o.optimizer.nesterov}, {"beta1", o.optimizer.beta1}, {"beta2", o.optimizer.beta2},
        {"rms_decay", o.optimizer.rms_decay}, {"eps", o.optimizer.eps}, {"weight_decay", o.optimizer.weight_decay}}},
      {"lr", o.lr},
      {"lr_decay", o.lr_decay},
      {"lr_decay_after", o.lr_decay_after},
      {"clip_norm", o.clip_norm},
      {"clip_value", o.clip_value},
      {"seq_len", o.seq_len},
      {"batch", o.batch},
      {"seed", o.seed},
      {"threads", o.threads},
      {"max_steps", o.max_steps},
      {"max_epochs", o.max_epochs},
      {"time_budget", o.time_budget},
      {"eval_every", o.eval_every},
      {"checkpoint_every", o.checkpoint_every},
      {"log_every", o.log_every},
      {"decay_every", o.decay_every},
      {"decay_steps", o.decay_steps},
      {"decay_batch", o.decay_batch},
      {"on_divergence", o.rollback_on_divergence ? "rollback" : "stop"},
      {"max_rollbacks", o.max_rollbacks},
      {"out", o.out},
  };
}

TrainOptions TrainOptionsFromJson(const nlohmann::json& j) {
  TrainOptions o;
  try {
    o.corpus = j.at("corpus").get<std::vector<std::string>>();
    const auto unit = ParseUnit(j.at("unit").get<std::string>());
    if (!unit) throw Error("training options name an unknown unit");
    o.tokenizer.unit = *unit;
    o.tokenizer.normalize = j.at("normalize");
    o.tokenizer.max_vocab = j.at("max_vocab");
    o.tokenizer.on_invalid = j.at("on_invalid") == "replace" ? OnInvalid::kReplace : OnInvalid::kError;
    o.val_frac = j.at("val_frac");
    o.test_frac = j.at("test_frac");
    const int V = j.at("model").at("vocab_size");
    nlohmann::json model = j.at("model");
    if (V == 0) model["vocab_size"] = 1;  // validated below once the corpus is read
    o.model = ConfigFromJson(model);
    o.model.vocab_size = V;
    const auto scheme = ParseInit(j.at("init").at("scheme").get<std::string>());
    if (!scheme) throw Error("training options name an unknown initialiser");
    o.init = {*scheme, j.at("init").at("scale"), j.at("init").at("forget_bias")};
    const auto& op = j.at("optimizer");
    const auto type = ParseOptimizer(op.at("type").get<std::string>());
    if (!type) throw Error("training options name an unknown optimizer");
    o.optimizer = {*type, op.at("momentum"), op.at("nesterov"), op.at("beta1"), op.at("beta2"),
                   op.at("rms_decay"), op.at("eps"), op.at("weight_decay")};
    o.lr = j.at("lr");
    o.lr_decay = j.at("lr_decay");
    o.lr_decay_after = j.at("lr_decay_after");
    o.clip_norm = j.at("clip_norm");
    o.clip_value = j.at("clip_value");
    o.seq_len = j.at("seq_len");
    o.batch = j.at("batch");
    o.seed = j.at("seed");
    o.threads = j.at("threads");
    o.max_steps = j.at("max_steps");
    o.max_epochs = j.at("max_epochs");
    o.time_budget = j.at("time_budget");
    o.eval_every = j.at("eval_every");
    o.checkpoint_every = j.at("checkpoint_every");
    o.log_every = j.at("log_every");
    o.decay_every = j.at("decay_every");
    o.decay_steps = j.at("decay_steps");
    o.decay_batch = j.at("decay_batch");
    o.rollback_on_divergence = j.at("on_divergence") == "rollback";
    o.max_rollbacks = j.at("max_rollbacks");
    o.out = j.value("out", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("training options are malformed: ") + e.what());
  }
  return o;
}

TrainResult Train(TrainOptions options, std::ostream& log, bool live) {
  stop_requested = false;
  Run run(std::move(options), log, live);
  return run.Start();
}

TrainResult Resume(const std::filesystem::path& dir, const TrainOptions& limits, std::ostream& log, bool live) {
  stop_requested = false;
  const auto path = dir / "latest.safetensors";
  if (!std::filesystem::exists(path)) throw Error(path.string() + ": no checkpoint to resume from");
  const Checkpoint ck = LoadCheckpoint(path);
  if (!ck.training) throw Error(path.string() + ": checkpoint has no training state to resume from");
  TrainOptions o = TrainOptionsFromJson(ck.training->options);
  o.out = dir.string();
  if (limits.max_steps > 0) o.max_steps = limits.max_steps;
  if (limits.max_epochs > 0) o.max_epochs = limits.max_epochs;
  if (limits.time_budget > 0) o.time_budget = limits.time_budget;
  if (limits.threads > 0) o.threads = limits.threads;
  Run run(std::move(o), log, live);
  return run.Continue(ck);
}

void RequestStop() { stop_requested.store(true); }

uint64_t EstimateTrainingBytes(const ModelConfig& c, int T, int B, int optimizer_slots) {
  const uint64_t H = c.hidden_size, V = c.vocab_size, G = GateCount(c.cell), L = c.layers;
  const uint64_t E0 = c.input_size(), TB = static_cast<uint64_t>(T) * B;
  uint64_t params = (c.embed_size > 0 ? V * c.embed_size : 0) + V * H + V;
  for (uint64_t l = 0; l < L; ++l) params += G * H * ((l == 0 ? E0 : H) + H + 2);
  // Per layer: gates and their gradient, h, and the cell's extras (LSTM c, tanh c; GRU hidden gates).
  // Plus W_hh and W_hh^T packed into 32-row panels for the sweeps (cell.h: packed_hh, packed_hh_t).
  const uint64_t panels = 32 * (H * ((G * H + 31) / 32) + G * H * ((H + 31) / 32));
  uint64_t per_layer = 2 * G * H * TB + H * (TB + B) + panels;
  if (c.cell == CellType::kLstm) per_layer += H * (TB + B) + H * TB;
  if (c.cell == CellType::kGru) per_layer += 2 * 3 * H * TB;
  if (c.dropout > 0) per_layer += 2 * H * TB;
  const uint64_t floats = params * (2 + optimizer_slots) + L * per_layer + 2 * V * TB + 2 * H * TB +
                          (c.embed_size > 0 ? 2 * static_cast<uint64_t>(c.embed_size) * TB : 0);
  return floats * sizeof(float);
}

}  // namespace bptt
