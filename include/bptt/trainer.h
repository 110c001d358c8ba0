// Trainer: trains a model with truncated BPTT on a text corpus (a language model, `bptt train`)
// or on a generated long-lag task (`bptt task`, task.h), with the options of train_options.h.
//
// Corpus. The corpus (corpus.h) is encoded once into DIR/corpus.ids and split in order into
// train, validation and test. The train part is read as B contiguous streams, T symbols at a
// time; the hidden state is carried from one chunk to the next and reset at each epoch.
// Task. Each step is a batch of B fresh sequences of the task, from the zero state; sequence k
// of the training stream depends only on the seed and k, so a run can resume anywhere.
//
// Each step: forward, the head's loss, one backward sweep, clipping, an optimizer update, and a
// check that the loss, gradient and weights are finite. The run directory DIR (a new one under
// models/ when options.out is empty) is locked while a run owns it, and receives:
//   metrics.jsonl        one JSON object per logged step; with FA or DFA, each validation also
//                        records "alignment_deg": per weight tensor, the angle between the rule's
//                        update and the true BPTT gradient on the same batch
//   latest.safetensors   every checkpoint_every steps, at the end and on SIGINT/SIGTERM
//   best.safetensors     the checkpoint with the lowest validation loss so far
//   summary.json         at the end: how the run ended, its best validation figures (one
//                        stream for a corpus; the paper's criterion for a task)
//   curves.svg           the training curves, redrawn at each validation
// Every file is replaced whole (a new file renamed over it) or appended a line at a time, so a
// crash or a full disk loses no history. A directory that holds a run is refused unless the run
// is resumed (Resume) or replaced (options.force).
//
// Checkpoints hold the optimizer state, RNG state, data position and carried state, so
// Resume continues exactly: N steps in one run or N/2 + N/2 across a resume give the same
// weights and the same best.safetensors (with the same thread count). A step with a
// non-finite loss, gradient or weight stops the run before anything is written, or, with
// on_divergence = rollback, reloads latest and halves the learning rate (at most
// max_rollbacks times).
//
// Distributed. With `distributed`, the processes of an MPI job (mpirun -np N) train one model
// together (docs/distributed.md): rank r holds streams [r B / N, (r + 1) B / N) of the same B,
// the ranks sum their gradients once per step and take the same step, so a run gives the single
// process's weights to rounding; each rank validates its share of the validation streams; rank 0
// alone writes DIR, and a checkpoint holds the carried state of all B streams, so a run resumes
// with any number of ranks (exactly with the same number and threads). The ranks check at the
// start that they were given the same options, stop at the same step whatever asked for the stop,
// and end with an error naming a rank that stops answering for options.collective_timeout
// seconds. A corpus only: a task trains in one process.
//
//   TrainOptions o;  o.corpus = {"corpora/fortunes.txt"};  o.out = "models/run";
//   TrainResult r = Train(o, std::cerr, /*live=*/false);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "bptt/compute.h"
#include "bptt/model.h"
#include "bptt/train_options.h"

namespace bptt {

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
// its Ctrl-C). Both are called on the training thread, between steps, in every trial of
// TrainTrials.
struct TrainHooks {
  // Receives each metrics line as it is appended to DIR/metrics.jsonl (a line that the end of
  // the run rewrites with its last validation comes again); rank 0 alone in a distributed run.
  std::function<void(const nlohmann::json& metrics)> progress;
  // Asked after every step; true stops the run as RequestStop does: latest.safetensors is
  // written and the run ends as kInterrupted. In a distributed run the answer of any rank stops
  // every rank after the next step (the ranks agree on it in that step's sums).
  std::function<bool()> stop;
};

// Trains from scratch into options.out (a new directory under models/ when it is empty).
// Throws bptt::Error for bad options or data, before the data is read when the options alone
// are wrong, and for a directory that holds a run (unless options.force) or that another process
// owns.
TrainResult Train(TrainOptions options, std::ostream& log, bool live, const TrainHooks& hooks = {});

// Trains `trials` models that differ only in their seed (options.seed, +1, ...) into
// options.out/seed-S, one after another, and writes options.out/summary.json: every trial's
// summary and, over the trials, the mean, standard deviation, minimum and maximum of each of
// their numbers, and how many were solved. options.out/trials.json keeps the trial count and
// options, so that Resume continues the trials that did not finish. Returns the last trial's
// result with that summary (or the result of the trial that was interrupted or diverged).
TrainResult TrainTrials(TrainOptions options, int trials, std::ostream& log, bool live, const TrainHooks& hooks = {});

// Continues the run in `dir` from dir/latest.safetensors with the options saved there, after
// applying `given`: the options given on the command line (JSON by flag, as ParseOptionText
// makes them), by ApplyOnResume's rules (train_options.h). A trials directory (TrainTrials)
// resumes its trials: a solved one is kept, the others resume from their checkpoints (to the
// limits `given` sets) or start. A run on sequences held in memory (TrainOptions::arrays) is
// given them again in `arrays`, and checked to be the same data.
TrainResult Resume(const std::filesystem::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                   const TrainHooks& hooks = {}, std::shared_ptr<const SequenceArrays> arrays = nullptr);

// Whether an MPI launcher started this process, so that bptt train trains distributed without
// being told: Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), or a PMIx or PMI launcher (PMIX_RANK,
// PMI_SIZE: MPICH's mpiexec, Slurm's srun --mpi=...).
bool LaunchedByMpi();

// The memory the machine has available (/proc/meminfo MemAvailable), or 0 when unknown: what
// Train checks a model's estimate against before it starts.
uint64_t AvailableBytes();

// Asks a running Train/Resume to stop after the current step and write latest.safetensors.
// Async-signal-safe: meant to be called from a SIGINT/SIGTERM handler.
void RequestStop();

}  // namespace bptt
