// The training options: their table, their checks, and how they are stored and resumed.
#include "bptt/train_options.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>

#include "bptt/error.h"
#include "bptt/recompute.h"
#include "utf8.h"

namespace bptt {

namespace {

// A corpus path that is not valid UTF-8 (JSON text must be) as {"bytes": hex, "text": lossy}.
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = CheckUtf8Sequence(s.substr(i));
    if (n <= 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

nlohmann::json PathJson(const std::string& path) {
  if (IsUtf8(path)) return path;
  std::string hex, text;
  for (const char c : path) {
    char digits[3];
    std::snprintf(digits, sizeof digits, "%02x", static_cast<unsigned char>(c));
    hex += digits;
  }
  for (size_t i = 0; i < path.size();) {
    const int n = CheckUtf8Sequence(std::string_view(path).substr(i));
    if (n > 0) {
      text.append(path, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    } else {
      text += "\xEF\xBF\xBD";  // U+FFFD for the ill-formed subpart (or the truncated end)
      i += n < 0 ? static_cast<size_t>(-n) : path.size() - i;
    }
  }
  return {{"bytes", hex}, {"text", text}};
}

std::string PathFromJson(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (!j.is_object() || !j.contains("bytes") || !j.at("bytes").is_string())
    throw Error("--corpus holds a path that is neither text nor {\"bytes\": hex}: " + j.dump());
  const std::string hex = j.at("bytes").get<std::string>();
  const auto digit = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw Error("--corpus holds a path whose bytes are not lowercase hex: " + j.dump());
  };
  if (hex.size() % 2 != 0) throw Error("--corpus holds a path with an odd count of hex digits: " + j.dump());
  std::string path;
  for (size_t i = 0; i < hex.size(); i += 2) path += static_cast<char>(digit(hex[i]) * 16 + digit(hex[i + 1]));
  return path;
}

std::vector<std::string> CorpusPathsFromJson(const nlohmann::json& j) {
  if (!j.is_array()) throw Error("--corpus must be a list of paths, got " + j.dump());
  std::vector<std::string> paths;
  for (const auto& p : j) paths.push_back(PathFromJson(p));
  return paths;
}

template <typename T>
T ParseWith(std::optional<T> (*parse)(std::string_view), const std::string& name, const std::string& flag,
            const char* choices) {
  const std::optional<T> v = parse(name);
  if (!v) throw Error(flag + " '" + name + "' is not one of " + choices);
  return *v;
}

// The commands of the table: which take an option. kEvery: every model's (a corpus's, a task's
// and sequences'); kText: a corpus's alone; kOwn: a corpus's and sequences'.
constexpr unsigned kTrain = kTrainCommand, kTask = kTaskCommand, kSeq = kSequenceCommand;
constexpr unsigned kEvery = kTrain | kTask | kSeq, kOwn = kTrain | kSeq;

std::vector<OptionSpec<TrainOptions>> MakeSpecs() {
  using O = TrainOptions;
  constexpr OnResume kFixed = OnResume::kFixed, kChanges = OnResume::kChanges, kNone = OnResume::kNone;
  const char* data = "Data";
  const char* task = "Task";
  const char* optim = "Optimisation";
  const char* schedule = "Schedule and output";
  std::vector<OptionSpec<O>> specs = {
      {kTrain, "corpus", "corpus", data, "text file or directory of text files (repeatable)", OptionKind::kTexts,
       kFixed, [](const O& o) { return CorpusPathsJson(o.corpus); },
       [](O& o, const nlohmann::json& j) { o.corpus = CorpusPathsFromJson(j); }},
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
      Field<O>(kOwn, "val-frac", "val_frac", data,
               "fraction for validation: of the corpus (at its end), of --data's sequences (drawn by --seed) or of "
               "a series to forecast (at its end)",
               kFixed, [](O& o) -> auto& { return o.val_frac; }),
      Field<O>(kTrain, "test-frac", "test_frac", data, "fraction after the validation part held out for testing",
               kFixed, [](O& o) -> auto& { return o.test_frac; }),
      Field<O>(kTask, "T", "task.T", task, "the task's length: the lag to bridge", kFixed,
               [](O& o) -> auto& { return o.task_length; }),
      Field<O>(kTask, "test-size", "task.test_size", task, "sequences in the test set", kFixed,
               [](O& o) -> auto& { return o.test_size; }),
      Choice<O>(kEvery, "optimizer", "optimizer.type", optim, "sgd, adagrad, rmsprop or adam", kFixed,
                [](O& o) -> auto& { return o.optimizer.type; }, OptimizerName,
                [](const std::string& v, const std::string& f) {
                  return ParseWith<OptimizerType>(ParseOptimizer, v, f, "sgd, adagrad, rmsprop, adam");
                }),
      Field<O>(kEvery, "lr", "lr", optim, "learning rate", kChanges, [](O& o) -> auto& { return o.lr; }),
      Field<O>(kEvery, "lr-decay", "lr_decay", optim, "multiply the learning rate by this after each epoch...",
               kChanges, [](O& o) -> auto& { return o.lr_decay; }),
      Field<O>(kEvery, "lr-decay-after", "lr_decay_after", optim, "...once this many epochs are done", kChanges,
               [](O& o) -> auto& { return o.lr_decay_after; }),
      Field<O>(kEvery, "lr-anneal", "lr_anneal", optim,
               "over this last fraction of the run (by --max-steps, --max-epochs or --time-budget, whichever "
               "ends it first) the learning rate falls linearly to zero (0 = off)",
               kChanges, [](O& o) -> auto& { return o.lr_anneal; }),
      Field<O>(kEvery, "momentum", "optimizer.momentum", optim, "SGD momentum", kFixed,
               [](O& o) -> auto& { return o.optimizer.momentum; }),
      Field<O>(kEvery, "nesterov", "optimizer.nesterov", optim, "SGD: Nesterov momentum", kFixed,
               [](O& o) -> auto& { return o.optimizer.nesterov; }),
      Field<O>(kEvery, "beta1", "optimizer.beta1", optim, "Adam: first-moment decay", kFixed,
               [](O& o) -> auto& { return o.optimizer.beta1; }),
      Field<O>(kEvery, "beta2", "optimizer.beta2", optim, "Adam: second-moment decay", kFixed,
               [](O& o) -> auto& { return o.optimizer.beta2; }),
      Field<O>(kEvery, "rms-decay", "optimizer.rms_decay", optim, "RMSProp decay of the mean square", kFixed,
               [](O& o) -> auto& { return o.optimizer.rms_decay; }),
      Field<O>(kEvery, "eps", "optimizer.eps", optim, "Adam, RMSProp, Adagrad: added to the root of the second moment",
               kFixed, [](O& o) -> auto& { return o.optimizer.eps; }),
      Field<O>(kEvery, "weight-decay", "optimizer.weight_decay", optim,
               "decoupled weight decay of the weight matrices (not the biases)", kChanges,
               [](O& o) -> auto& { return o.optimizer.weight_decay; }),
      Choice<O>(kEvery, "average", "average", optim,
                "keep an average of the weights beside them: off; ema:DECAY (an exponential moving average, its "
                "zero start debiased); or asgd:N (NT-ASGD's uniform average, from the first validation whose loss "
                "is above the lowest of those more than N validations before). Once averaging, validation and "
                "best.safetensors use the averaged weights",
                kFixed, [](O& o) -> auto& { return o.average; }, AverageName,
                [](const std::string& v, const std::string& f) { return ParseAverage(v, f); }),
      Field<O>(kEvery, "prune", "prune.sparsity", optim,
               "block pruning (docs/pruning.md): the fraction of each recurrent-layer matrix's 16x4 blocks held at "
               "zero by the end of the pruning ramp, the blocks of least norm first; sampling in int8 skips them "
               "(0 = off)",
               kChanges, [](O& o) -> auto& { return o.prune.sparsity; }),
      Field<O>(kEvery, "prune-start", "prune.start", optim,
               "fraction of the run (as --lr-anneal counts it) at which pruning begins", kChanges,
               [](O& o) -> auto& { return o.prune.start; }),
      Field<O>(kEvery, "prune-end", "prune.end", optim,
               "fraction of the run at which the pruned fraction reaches --prune (a cubic ramp from --prune-start)",
               kChanges, [](O& o) -> auto& { return o.prune.end; }),
      Field<O>(kEvery, "clip-norm", "clip_norm", optim, "clip the global gradient L2 norm to this (0 = off)", kChanges,
               [](O& o) -> auto& { return o.clip_norm; }),
      Field<O>(kEvery, "clip-value", "clip_value", optim, "clamp each gradient element to +-this (0 = off)", kChanges,
               [](O& o) -> auto& { return o.clip_value; }),
      Field<O>(kOwn, "seq-len", "seq_len", optim,
               "timesteps per chunk of truncated BPTT (T); --head forecast: the steps of each training window", kFixed,
               [](O& o) -> auto& { return o.seq_len; }),
      Field<O>(kEvery, "batch", "batch", optim, "parallel streams or sequences per step (B)", kFixed,
               [](O& o) -> auto& { return o.batch; }),
      Choice<O>(kEvery, "feedback", "feedback", optim,
                "learning rule: bptt (backpropagation), fa (feedback alignment) or dfa (direct feedback alignment)",
                kFixed, [](O& o) -> auto& { return o.feedback; }, FeedbackName,
                [](const std::string& v, const std::string& f) { return ParseFeedback(v, f); }),
      Choice<O>(kEvery, "credit", "credit", optim,
                "gradient algorithm (docs/credit-assignment.md): bptt, or an online one carried from chunk to chunk "
                "and updating every --seq-len steps: rtrl (exact, any stack), or on one recurrent layer uoro, snap1, snap2, "
                "rflo, eprop",
                kFixed, [](O& o) -> auto& { return o.credit; }, CreditName,
                [](const std::string& v, const std::string& f) { return ParseCredit(v, f); }),
      Choice<O>(kEvery, "checkpoint-steps", "checkpoint_steps", optim,
                "memory-bounded BPTT (Chen et al. 2016): keep the state every K steps instead of every step's "
                "cache, and recompute each segment's caches in the backward pass: the same gradient, bit for bit, "
                "in about K/T of the cache memory for one more forward pass; auto = about sqrt(T), 0 = off",
                kChanges, [](O& o) -> auto& { return o.checkpoint_steps; },
                [](int k) { return k == kAutoCheckpointSteps ? std::string("auto") : std::to_string(k); },
                [](const std::string& v, const std::string& f) {
                  if (v == "auto") return kAutoCheckpointSteps;
                  size_t used = 0;
                  int k = -1;
                  try {
                    k = std::stoi(v, &used);
                  } catch (const std::exception&) {
                    used = 0;
                  }
                  if (used != v.size() || v.empty() || k < 0)
                    throw Error(f + " must be auto, 0 (off) or a positive number of steps, got '" + v + "'");
                  return k;
                }),
      Choice<O>(kEvery, "memory-budget", "memory_budget", optim,
                "the most memory a training step may take (e.g. 512M, 2G): the segments and kept states of "
                "memory-bounded BPTT chosen to fit it with the least recomputation (Gruslys et al. 2016; "
                "docs/credit-assignment.md), the same gradient bit for bit; 0 = none",
                kChanges, [](O& o) -> auto& { return o.memory_budget; },
                [](uint64_t b) { return b == 0 ? std::string("0") : BytesText(b); },
                [](const std::string& v, const std::string& f) { return v == "0" ? uint64_t{0} : ParseBytes(v, f); }),
      Field<O>(kEvery, "seed", "seed", optim, "random seed of every stream: initialisation, dropout, task data", kFixed,
               [](O& o) -> auto& { return o.seed; }),
      Field<O>(kEvery, "threads", "threads", optim,
               "threads (0 = every core; distributed: the machine's cores shared between its ranks)", kChanges,
               [](O& o) -> auto& { return o.threads; }),
      Choice<O>(kEvery, "precision", "precision", optim,
                "number format of the matrix products: fp32, or bf16 (bfloat16 operands, float sums, on a CPU with "
                "AMX or AVX-512 BF16; the gate arithmetic, the gradient sums and the optimizer stay fp32)",
                kChanges, [](O& o) -> auto& { return o.precision; }, PrecisionName,
                [](const std::string& v, const std::string& f) {
                  const Precision p = ParsePrecision(v, f);
                  if (p == Precision::kInt8) throw Error(f + " must be fp32 or bf16 for training, got 'int8'");
                  return p;
                }),
      Field<O>(kOwn, "distributed", "", optim,
               "train with the other ranks of the MPI job, each on its share of the --batch streams (automatic "
               "under mpirun; docs/distributed.md)",
               kChanges, [](O& o) -> auto& { return o.distributed; }),
      Field<O>(kOwn, "collective-timeout", "", optim,
               "distributed: seconds a rank waits for the others in a collective before the job ends with an error "
               "naming the ranks that never came (0 = wait forever)",
               kChanges, [](O& o) -> auto& { return o.collective_timeout; }),
      Field<O>(kEvery, "max-steps", "max_steps", schedule, "stop after this many steps (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.max_steps; }),
      Field<O>(kOwn, "max-epochs", "max_epochs", schedule,
               "stop after this many epochs (0 = no limit; 50 when no limit is set)", kChanges,
               [](O& o) -> auto& { return o.max_epochs; }),
      Field<O>(kTask, "max-sequences", "max_sequences", schedule,
               "stop after this many training sequences (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.max_sequences; }),
      Field<O>(kEvery, "time-budget", "time_budget", schedule, "stop after this many seconds (0 = no limit)", kChanges,
               [](O& o) -> auto& { return o.time_budget; }),
      Field<O>(kEvery, "eval-every", "eval_every", schedule, "steps between validations", kChanges,
               [](O& o) -> auto& { return o.eval_every; }),
      Field<O>(kEvery, "checkpoint-every", "checkpoint_every", schedule, "steps between checkpoints", kChanges,
               [](O& o) -> auto& { return o.checkpoint_every; }),
      Field<O>(kEvery, "log-every", "log_every", schedule, "steps between progress lines when not on a terminal",
               kChanges, [](O& o) -> auto& { return o.log_every; }),
      Field<O>(kEvery, "decay-every", "decay_every", schedule,
               "record the gradient-decay profile every N steps into DIR/decay_train.csv and DIR/heatmap.svg (0 = off)",
               kChanges, [](O& o) -> auto& { return o.decay_every; }),
      Field<O>(kEvery, "decay-steps", "decay_steps", schedule, "timesteps of the decay probe", kChanges,
               [](O& o) -> auto& { return o.decay_steps; }),
      Field<O>(kEvery, "decay-batch", "decay_batch", schedule, "sequences of the decay probe", kChanges,
               [](O& o) -> auto& { return o.decay_batch; }),
      Choice<O>(kEvery, "on-divergence", "on_divergence", schedule,
                "on a non-finite loss, gradient or weight: stop, or rollback (reload latest, halve the learning rate)",
                kChanges, [](O& o) -> auto& { return o.rollback_on_divergence; },
                [](bool rollback) { return rollback ? "rollback" : "stop"; },
                [](const std::string& v, const std::string& f) {
                  if (v != "stop" && v != "rollback") throw Error(f + " must be stop or rollback, got '" + v + "'");
                  return v == "rollback";
                }),
      Field<O>(kEvery, "max-rollbacks", "max_rollbacks", schedule, "rollbacks before stopping", kChanges,
               [](O& o) -> auto& { return o.max_rollbacks; }),
      Field<O>(kEvery, "out", "", schedule, "run directory (default: a new directory under models/)", kNone,
               [](O& o) -> auto& { return o.out; }),
      Field<O>(kEvery, "force", "", schedule,
               "replace the run that --out holds (its checkpoints, metrics and summary) instead of refusing the "
               "directory",
               kNone, [](O& o) -> auto& { return o.force; }),
  };
  const auto insert_at = [&specs](std::string_view before) {
    return std::find_if(specs.begin(), specs.end(), [before](const auto& s) { return s.flag == before; });
  };
  const auto model_specs = Nest<O>(ModelOptionSpecs(), kEvery, "model.", [](O& o) -> auto& { return o.model; });
  specs.insert(insert_at("optimizer"), model_specs.begin(), model_specs.end());
  const auto init_specs = Nest<O>(InitOptionSpecs(), kEvery, "init.", [](O& o) -> auto& { return o.init; });
  specs.insert(insert_at("optimizer"), init_specs.begin(), init_specs.end());
  for (auto& spec : specs) {
    if (spec.flag == "no-normalize") spec.kind = OptionKind::kSwitchOff;
    if (spec.flag == "embed") spec.commands = kTrain;  // a task's input is what the task makes it
  }
  const auto sequence_specs =
      Nest<O>(SequenceOptionSpecs(), kSeq, "sequences.", [](O& o) -> auto& { return o.sequences; });
  specs.insert(insert_at("T"), sequence_specs.begin(), sequence_specs.end());
  // bptt train takes the rows of a corpus and of sequences: --data says which data the run has,
  // and the other's rows do not apply.
  for (auto& spec : specs) {
    const bool text = (spec.commands & kTrain) != 0, sequences = (spec.commands & kSeq) != 0;
    const bool corpus = spec.flag == "corpus";
    if (text && !sequences)
      spec = Restrict(std::move(spec), [corpus](const O& o) -> std::string {
        if (!o.sequence_data()) return "";
        return corpus ? "cannot be given with --data: a run trains on a corpus or on sequences, not both"
                      : "applies to a text corpus (--corpus), not to sequences (--data)";
      });
    if (sequences && !text)
      spec = Restrict(std::move(spec), [](const O& o) -> std::string {
        return o.sequence_data() ? "" : "applies to sequences of your own (--data), not to a corpus";
      });
    if (spec.flag == "seq-len")
      spec = Restrict(std::move(spec), [](const O& o) -> std::string {
        return o.sequence_data() && !o.sequences.forecast()
                   ? "applies to --head forecast (the training windows of a series); sequences have their own "
                     "lengths"
                   : "";
      });
  }
  return specs;
}

// Keys the stored options carry for readers that no option sets: they come from the data.
constexpr std::string_view kDerivedKeys[] = {"model.vocab_size", "model.input_size", "model.output_size",
                                             "model.head", "model.pooling", "model.loss", "model.huber_delta",
                                             "task.name"};

}  // namespace

nlohmann::json CorpusPathsJson(const std::vector<std::string>& paths) {
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& p : paths) out.push_back(PathJson(p));
  return out;
}

void TrainOptions::Validate() const {
  // A number option that must lie in [lo, hi] (NaN never does).
  const auto in = [](double v, double lo, double hi, const char* flag, const char* range) {
    if (!(v >= lo && v <= hi)) throw Error(std::string(flag) + " must be " + range + ", got " + std::to_string(v));
  };
  constexpr double kBelowOne = 1.0 - std::numeric_limits<double>::epsilon() / 2;
  constexpr double kMax = std::numeric_limits<double>::max();
  const int sources = (corpus.empty() ? 0 : 1) + (task.empty() ? 0 : 1) + (sequence_data() ? 1 : 0);
  if (sources == 0)
    throw Error("--corpus is required (a text file or a directory of text files), or --data (sequences of your own)");
  if (sources > 1) throw Error("a run trains on a corpus, on sequences (--data) or on a task: one of them");
  if (sequence_data()) {
    sequences.Validate();
    if (sequences.data == kArraysData && !arrays)
      throw Error("this run trained on arrays held in memory (Python's bptt.fit): it resumes only from Python, "
                  "given the same arrays");
  }
  if (seq_len < 1) throw Error("--seq-len must be positive, got " + std::to_string(seq_len));
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  in(val_frac, 0, 1, "--val-frac", "in [0, 1]");
  in(test_frac, 0, 1, "--test-frac", "in [0, 1]");
  if (!(lr > 0 && lr <= kMax)) throw Error("--lr must be positive and finite");
  if (!(lr_decay > 0 && lr_decay <= 1)) throw Error("--lr-decay must be in (0, 1]");
  if (lr_decay_after < 0) throw Error("--lr-decay-after must not be negative");
  in(lr_anneal, 0, 1, "--lr-anneal", "in [0, 1]");
  prune.Validate();
  in(clip_norm, 0, kMax, "--clip-norm", "0 (off) or positive");
  in(clip_value, 0, kMax, "--clip-value", "0 (off) or positive");
  CheckThreads(threads, 0);
  if (precision == Precision::kBfloat16 && !Bf16ProductsAvailable())
    throw Error("--precision bf16 needs a CPU with AMX-BF16 or AVX-512 BF16 (Intel Xeon 3rd generation or later, AMD "
                "Zen 4 or later), which this is not; use --precision fp32");
  in(collective_timeout, 0, kMax, "--collective-timeout", "0 (wait forever) or a positive number of seconds");
  if (max_steps < 0 || max_epochs < 0 || max_sequences < 0 || !(time_budget >= 0 && time_budget <= kMax))
    throw Error("--max-steps, --max-epochs, --max-sequences and --time-budget must not be negative");
  // A task with no limit runs until it is solved: nothing says what fraction of it is done.
  const bool open_ended = !task.empty() && max_steps == 0 && max_epochs == 0 && max_sequences == 0 && time_budget == 0;
  if (open_ended && (prune.on() || lr_anneal > 0))
    throw Error(std::string(prune.on() ? "--prune" : "--lr-anneal") +
                " follows the fraction of the run done, and a task without --max-steps, --max-epochs, "
                "--max-sequences or --time-budget runs until it is solved: give one of them");
  if (eval_every < 1) throw Error("--eval-every must be positive");
  if (checkpoint_every < 1) throw Error("--checkpoint-every must be positive");
  if (log_every < 1) throw Error("--log-every must be positive");
  if (max_rollbacks < 0) throw Error("--max-rollbacks must not be negative");
  if (decay_every < 0) throw Error("--decay-every must be 0 (off) or positive");
  if (decay_every > 0 && (decay_steps < 1 || decay_batch < 1))
    throw Error("--decay-steps and --decay-batch must be positive");
  if (test_size < 1) throw Error("--test-size must be positive, got " + std::to_string(test_size));
  in(init.scale, 0, kMax, "--init-scale", "0 or positive");
  in(init.forget_bias, -kMax, kMax, "--forget-bias", "finite");
  in(optimizer.momentum, 0, kBelowOne, "--momentum", "in [0, 1)");
  in(optimizer.beta1, 0, kBelowOne, "--beta1", "in [0, 1)");
  in(optimizer.beta2, 0, kBelowOne, "--beta2", "in [0, 1)");
  in(optimizer.rms_decay, 0, kBelowOne, "--rms-decay", "in [0, 1)");
  if (!(optimizer.eps > 0 && optimizer.eps <= kMax)) throw Error("--eps must be positive and finite");
  in(optimizer.weight_decay, 0, kMax, "--weight-decay", "0 (off) or positive");
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

TrainOptions ApplyOnResume(TrainOptions o, const nlohmann::json& given) {
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
  return o;
}

}  // namespace bptt
