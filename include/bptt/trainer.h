// Trainer: trains a model with truncated BPTT on a text corpus (a language model, `bptt train`)
// or on a generated long-lag task (`bptt task`, task.h).
//
// Corpus. The corpus (corpus.h) is encoded once into DIR/corpus.ids and split in order into
// train, validation and test. The train part is read as B contiguous streams, T symbols at a
// time; the hidden state is carried from one chunk to the next and reset at each epoch.
// Task. Each step is a batch of B fresh sequences of the task, from the zero state; sequence k
// of the training stream depends only on the seed and k, so a run can resume anywhere.
//
// Each step: forward, the head's loss, one backward sweep, clipping, an optimizer update, and a
// check that the loss, gradient and weights are finite. The run directory DIR receives:
//   metrics.jsonl        one JSON object per logged step; with FA or DFA, each validation also
//                        records "alignment_deg": per weight tensor, the angle between the rule's
//                        update and the true BPTT gradient on the same batch
//   latest.safetensors   every checkpoint_every steps, at the end and on SIGINT/SIGTERM
//   best.safetensors     the checkpoint with the lowest validation loss so far
//   summary.json         at the end: how the run ended, its best validation figures (one
//                        stream for a corpus; the paper's criterion for a task)
// Checkpoints hold the optimizer state, RNG state, data position and carried state, so
// Resume continues exactly: N steps in one run or N/2 + N/2 across a resume give the same
// weights and the same best.safetensors (with the same thread count). A step with a
// non-finite loss, gradient or weight stops the run before anything is written, or, with
// on_divergence = rollback, reloads latest and halves the learning rate (at most
// max_rollbacks times).
//
// Distributed. With `distributed`, the processes of an MPI job (mpirun -np N) train one model
// together (distributed.h, docs/distributed.md): rank r holds streams [r B / N, (r + 1) B / N)
// of the same B, the ranks sum their gradients once per step and take the same step, so a run
// gives the single process's weights to rounding; each rank validates its share of the
// validation streams; rank 0 alone writes DIR, and a checkpoint holds the carried state of all
// B streams, so a run resumes with any number of ranks (exactly with the same number and
// threads). A corpus only: a task trains in one process.
//
// Every option is declared once in TrainOptionSpecs(), which also says what --resume does with
// it (options.h).
//
//   TrainOptions o;  o.corpus = {"corpora/fortunes.txt"};  o.out = "models/run";
//   TrainResult r = Train(o, std::cerr, /*live=*/false);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "bptt/compute.h"
#include "bptt/init.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/options.h"
#include "bptt/vocab.h"

namespace bptt {

struct TrainOptions {
  // Data: a corpus (a language model) ...
  std::vector<std::string> corpus;  // files and directories of text (corpus.h)
  TokenizerOptions tokenizer;       // grapheme units, NFC
  double val_frac = 0.05;           // last part of the symbol stream used for validation
  double test_frac = 0.0;           // the part after it, held out for `bptt eval`
  // ... or a generated task (task.h).
  std::string task;                 // "adding", "temporal-order", ...; "" = the corpus
  int task_length = 100;            // the task's T
  int test_size = 2560;             // sequences of the task's test set
  // Model. vocab_size / input_size and output_size come from the corpus or the task.
  ModelConfig model{&DefaultCell(), 0, 0, 0, 256, 2, 0.0, Head::kSoftmax, 0};
  InitOptions init;
  // Optimisation.
  OptimizerOptions optimizer;     // Adam
  Feedback feedback = Feedback::kBptt;  // the learning rule: backpropagation, or FA / DFA (model.h)
  double lr = 2e-3;               // learning rate
  double lr_decay = 1.0;          // multiply the learning rate by this after each epoch ...
  int64_t lr_decay_after = 10;    // ... once this many epochs are done (char-rnn: 0.97 after 10)
  double lr_anneal = 0.0;         // over this last fraction of the run the rate falls linearly to 0
  double clip_norm = 5.0;         // global L2 norm clip; 0 = off
  double clip_value = 0.0;        // element clip, applied before the norm clip; 0 = off
  int seq_len = 64;               // T (corpus)
  int batch = 32;                 // B
  uint64_t seed = 1;              // every random stream: initialisation, dropout, task data
  int threads = 0;                // 0 = every core (distributed: the cores / the ranks on the machine)
  Precision precision = Precision::kFloat32;  // of the matrix products: fp32, or bf16 on AMX (compute.h)
  bool distributed = false;       // train with the other ranks of the MPI job (not stored: a run
                                  // resumes with whatever ranks it is given)
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
  std::string out;                // run directory; created if missing

  // Throws bptt::Error naming the flag of the first invalid value.
  void Validate() const;
};

// The commands that train, as the option table names them (OptionSpec::commands).
inline constexpr unsigned kTrainCommand = 1;  // bptt train: a corpus
inline constexpr unsigned kTaskCommand = 2;   // bptt task: a generated task

// The declarations of every TrainOptions field (options.h): flag, JSON key, help, resume policy.
std::span<const OptionSpec<TrainOptions>> TrainOptionSpecs();
// The defaults of `bptt task`, where they differ from a language model's.
TrainOptions TaskDefaults();

// The options as stored in a checkpoint, and back (missing keys keep the defaults of `defaults`).
nlohmann::json TrainOptionsToJson(const TrainOptions& options);
TrainOptions TrainOptionsFromJson(const nlohmann::json& json, const std::string& source);

// The task a run with these stored options trained on; "" for a corpus (a language model).
std::string TaskOf(const nlohmann::json& stored_options);

enum class TrainEnd { kFinished, kSolved, kInterrupted, kDiverged };

struct TrainResult {
  TrainEnd end = TrainEnd::kFinished;
  int64_t steps = 0;            // optimizer steps taken in total (including before a resume)
  double train_loss = 0;        // mean over the last logged window
  double best_val_loss = 0;     // the head's loss; 0 without validation
  nlohmann::json summary;       // what DIR/summary.json holds
  std::filesystem::path dir;    // the run directory
  std::string message;          // for kDiverged: what went wrong and where
  int rank = 0;                 // this process's rank in a distributed run: rank 0 reports
  uint64_t fingerprint = 0;     // FNV-1a of the final weights: the same on every rank
};

// What a caller may watch and steer besides the log (the Python module's progress callback and
// its Ctrl-C). Both are called on the training thread, between steps.
struct TrainHooks {
  // Receives each metrics line as it is appended to DIR/metrics.jsonl (a line that the end of
  // the run rewrites with its last validation comes again).
  std::function<void(const nlohmann::json& metrics)> progress;
  // Asked after every step; true stops the run as RequestStop does: latest.safetensors is
  // written and the run ends as kInterrupted.
  std::function<bool()> stop;
};

// Trains from scratch. Throws bptt::Error for bad options or data.
TrainResult Train(TrainOptions options, std::ostream& log, bool live, const TrainHooks& hooks = {});

// Trains `trials` models that differ only in their seed (options.seed, +1, ...) into
// options.out/seed-S, one after another, and writes options.out/summary.json: every trial's
// summary and, over the trials, the mean, standard deviation, minimum and maximum of each of
// their numbers, and how many were solved. Returns the last trial's result with that summary.
TrainResult TrainTrials(TrainOptions options, int trials, std::ostream& log, bool live);

// Continues the run in `dir` from dir/latest.safetensors with the options saved there, after
// applying `given`: the options given on the command line (JSON by flag, as ParseOptionText
// makes them). Those whose OnResume is kChanges are taken; a kFixed one with a value other than
// the stored one, and any kNone one, is refused with a one-line bptt::Error naming its flag.
TrainResult Resume(const std::filesystem::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                   const TrainHooks& hooks = {});

// Whether an MPI launcher started this process, so that bptt train trains distributed without
// being told: Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), or a PMIx or PMI launcher (PMIX_RANK,
// PMI_SIZE: MPICH's mpiexec, Slurm's srun --mpi=...).
bool LaunchedByMpi();

// Asks a running Train/Resume to stop after the current step and write latest.safetensors.
// Async-signal-safe: meant to be called from a SIGINT/SIGTERM handler.
void RequestStop();

}  // namespace bptt
