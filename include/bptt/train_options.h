// Training options: what `bptt train` (a language model on a corpus, or a model of the user's
// own sequences with --data) and `bptt task` (a generated long-lag task) are told, in one struct
// with documented defaults, and the table that declares each of its fields once (options.h): flag, help, JSON key in the checkpoint, and what
// `--resume` does with it. The command line, --help, the completion, the Python keywords and the
// checkpoint's stored options all come from that table.
//
// A run stores its options in every checkpoint; Resume rebuilds them from there and applies the
// options given with --resume by each row's rule (ApplyOnResume): kChanges rows are taken, a
// kFixed row must keep its stored value, a kNone row is refused.
//
//   TrainOptions o;  o.corpus = {"corpora/fortunes.txt"};  o.out = "models/run";  o.Validate();
//   nlohmann::json stored = TrainOptionsToJson(o);
//   TrainOptions resumed = ApplyOnResume(TrainOptionsFromJson(stored, "latest"), {{"lr", 1e-3}});
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bptt/average.h"
#include "bptt/compute.h"
#include "bptt/credit.h"
#include "bptt/init.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/options.h"
#include "bptt/prune.h"
#include "bptt/sequences.h"
#include "bptt/vocab.h"

namespace bptt {

struct TrainOptions {
  // Data: a corpus (a language model) ...
  std::vector<std::string> corpus;  // files and directories of text (corpus.h); any bytes
  TokenizerOptions tokenizer;       // grapheme units, NFC
  double val_frac = 0.05;           // last part of the symbol stream used for validation
  double test_frac = 0.0;           // the part after it, held out for `bptt eval`
  // ... or a generated task (task.h) ...
  std::string task;                 // "adding", "temporal-order", ...; "" = the corpus
  int task_length = 100;            // the task's T
  int test_size = 2560;             // sequences of the task's test set
  // ... or sequences of the user's own (sequences.h): --data and its options, or (from the
  // library) `arrays` in memory, with sequences.data = kArraysData. The arrays are not stored:
  // a run on them resumes only from the library, given them again.
  SequenceOptions sequences;
  std::shared_ptr<const SequenceArrays> arrays;
  // Model. vocab_size / input_size and output_size come from the corpus or the task.
  ModelConfig model{.cell = &DefaultCell(), .hidden_size = 256};
  InitOptions init;
  // Optimisation.
  OptimizerOptions optimizer;     // Adam
  Feedback feedback = Feedback::kBptt;  // the learning rule: backpropagation, or FA / DFA (model.h)
  Credit credit = Credit::kBptt;  // how the gradient is computed: BPTT over each chunk, or an online
                                  // algorithm (credit.h) carrying its state from chunk to chunk and
                                  // updating the weights every chunk of seq_len steps
  int checkpoint_steps = 0;       // memory-bounded BPTT: keep the state every K steps and recompute
                                  // the caches in the backward pass (model.h); 0 = off,
                                  // kAutoCheckpointSteps = about sqrt(T). The same gradient at any K.
  uint64_t memory_budget = 0;     // bytes of a training step: memory-bounded BPTT's segments and kept
                                  // starts chosen to fit (recompute.h PlanMemory); 0 = no budget
  double lr = 2e-3;               // learning rate
  double lr_decay = 1.0;          // multiply the learning rate by this after each epoch ...
  int64_t lr_decay_after = 10;    // ... once this many epochs are done (char-rnn: 0.97 after 10)
  double lr_anneal = 0.0;         // over this last fraction of the run the rate falls linearly to 0
  AverageOptions average;         // a running average of the weights (average.h); off by default
  PruneOptions prune;             // block pruning of the recurrent layers' matrices (prune.h); off by default
  double clip_norm = 5.0;         // global L2 norm clip; 0 = off
  double clip_value = 0.0;        // element clip, applied before the norm clip; 0 = off
  int seq_len = 64;               // T (corpus)
  int batch = 32;                 // B
  uint64_t seed = 1;              // every random stream: initialisation, dropout, task data
  int threads = 0;                // 0 = every core (distributed: the cores / the ranks on the machine);
                                  // at most kMaxThreads (options.h)
  Precision precision = Precision::kFloat32;  // of the matrix products: fp32, or bf16 (compute.h)
  bool distributed = false;       // train with the other ranks of the MPI job (not stored: a run
                                  // resumes with whatever ranks it is given)
  double collective_timeout = 300;  // distributed: seconds a rank waits in a collective before the
                                    // job ends naming the ranks that never came; 0 = forever (not stored)
  // Schedule (a run ends at the first limit reached; with none set, after 50 epochs, or for a
  // task when its stop criterion is met).
  int64_t max_steps = 0;
  int64_t max_epochs = 0;
  int64_t max_sequences = 0;      // a task: training sequences
  double time_budget = 0;         // seconds
  int64_t eval_every = 500;       // steps between validations (and at the end)
  int64_t checkpoint_every = 500; // steps between writes of latest.safetensors (and at the end)
  int64_t log_every = 50;         // steps between metrics lines when not on a terminal
  // Gradient decay during training (decay.h): every decay_every steps (0 = never) the profile of
  // ‖∂L/∂h_{s-k}‖ over lags k on decay_batch validation sequences of decay_steps steps is appended
  // to DIR/decay_train.csv and drawn in DIR/heatmap.svg.
  int64_t decay_every = 0;
  int decay_steps = 100;
  int decay_batch = 8;
  // Divergence (a non-finite loss, gradient or weight).
  bool rollback_on_divergence = false;  // false: stop; true: reload latest, halve the learning rate
  int max_rollbacks = 3;                // then stop
  // Output.
  std::string out;                // run directory; created if missing; "" = a new one under models/
  bool force = false;             // replace the run `out` holds instead of refusing it (not stored)

  // Throws bptt::Error naming the flag of the first invalid value. Checks every option that
  // does not need the data (the model's sizes that the data sets are checked once it is read).
  void Validate() const;
  // The data is sequences of the user's own (--data, or arrays).
  bool sequence_data() const { return !sequences.data.empty(); }
};

// TrainOptions::sequences.data of a run on arrays in memory.
inline constexpr std::string_view kArraysData = "<arrays>";

// The commands that train, as the option table names them (OptionSpec::commands). `bptt train`
// takes the rows of kTrainCommand | kSequenceCommand; a row of one of the two says it does not
// apply to the other's data (--corpus's rows with --data, --data's without it), so ApplyGiven
// refuses it there. bptt.fit takes the kSequenceCommand rows.
inline constexpr unsigned kTrainCommand = 1;     // bptt train: a corpus
inline constexpr unsigned kTaskCommand = 2;      // bptt task: a generated task
inline constexpr unsigned kSequenceCommand = 4;  // bptt train --data: sequences of the user's own

// The declarations of every TrainOptions field (options.h): flag, JSON key, help, resume policy.
std::span<const OptionSpec<TrainOptions>> TrainOptionSpecs();
// The defaults of `bptt task`, where they differ from a language model's.
TrainOptions TaskDefaults();

// The options as stored in a checkpoint, and back (missing keys keep TrainOptions' defaults).
// A corpus path that is not valid UTF-8 is stored as {"bytes": hex, "text": the path with
// U+FFFD for each invalid sequence}, so that any path a file system allows is stored and read
// back exactly.
nlohmann::json TrainOptionsToJson(const TrainOptions& options);
TrainOptions TrainOptionsFromJson(const nlohmann::json& json, const std::string& source);

// The corpus paths as stored (above): for checkpoints and summary.json.
nlohmann::json CorpusPathsJson(const std::vector<std::string>& paths);

// The resume rules: `stored` (a run's options) with `given` applied (JSON by flag, as
// ParseOptionText makes them). kChanges rows are taken; a kFixed row with a value other than the
// stored one, and any kNone row, is refused with a one-line bptt::Error naming its flag.
TrainOptions ApplyOnResume(TrainOptions stored, const nlohmann::json& given);

// The task a run with these stored options trained on; "" for a corpus (a language model).
std::string TaskOf(const nlohmann::json& stored_options);

}  // namespace bptt
