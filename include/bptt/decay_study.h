// Decay study: `bptt decay` (and the Python module's bptt.decay). It builds fresh models of some
// cells, loads trained checkpoints, or both; takes each one's input sequences; measures each
// (decay.h MeasureDecay) and writes decay.csv, summary.json and decay.svg (decay_files.h). It is
// a client of the measurement and of the trainer, whose stored options say which task a
// checkpoint was trained on; neither depends on it.
//
// Fresh models share one input: B windows of T + 1 symbols of a corpus file, or symbols drawn
// uniformly from `symbols`. A checkpoint is measured on CheckpointInputs: a task model on its
// task's sequences (so --steps and --corpus are refused for it), a language model on the corpus
// or on symbols drawn with its vocabulary's frequencies.
//
//   DecayStudy study = ApplyGiven(DecayStudyOptionSpecs(), kAnyCommand, given, DecayStudy());
//   study.Validate();
//   std::vector<DecayReport> reports = RunDecayStudy(study, std::cerr);
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/init.h"
#include "bptt/model.h"
#include "bptt/vocab.h"

namespace bptt {

struct DecayStudy {
  // The models: fresh ones of these cells, trained ones from these files, or both.
  std::vector<const Cell*> cells;
  std::vector<std::string> checkpoints;
  // Fresh models.
  ModelConfig model;                                       // layers, hidden_size, embed_size, residual, layer_norm
  std::vector<InitScheme> inits = {InitOptions().scheme};  // one for all, or one per cell
  InitOptions init;                                        // scale and forget_bias (the scheme: inits)
  // Input.
  std::string corpus;                // text file to cut the sequences from; "" = random symbols
  TokenizerOptions tokenizer;        // fresh models with a corpus
  int symbols = 64;                  // fresh models without a corpus: V of the random input
  std::optional<int> steps;          // T: kDefaultSteps when not given (a task checkpoint: its task's)
  int batch = 16;                    // B
  // The measurement; its seed also draws the fresh models' weights and the random input.
  DecayOptions measure;
  // Where to write decay.csv, summary.json and decay.svg; "" = nowhere.
  std::string out;

  static constexpr int kDefaultSteps = 200;

  // Throws bptt::Error naming the flag of the first invalid setting.
  void Validate() const;
};

template <typename Options>
struct OptionSpec;  // options.h

// The options of `bptt decay` and bptt.decay, declared once (options.h). The fresh models'
// options are refused without --cell, the tokenizer's without --corpus, --symbols with it, and
// --jacobian-batch and --power-iterations with --jacobian-lags 0.
std::span<const OptionSpec<DecayStudy>> DecayStudyOptionSpecs();

// The inputs a trained model is measured on (`bptt decay --checkpoint`, `bptt gradcheck
// CHECKPOINT`): for a model trained on a task (task.h), B test sequences of that task scored at
// the end of the shortest (ScoredAt; T is the task's); for a language model, B windows of T + 1
// symbols of `text` when it is not empty (symbols the vocabulary lacks are left out and counted
// in *unknown), else symbols drawn independently with the vocabulary's frequencies. Draws come
// from `seed`.
Batch<double> CheckpointInputs(const Checkpoint& checkpoint, const std::string& text, int T, int B, uint64_t seed,
                               size_t* unknown = nullptr);

// Whether the checkpoint was trained on a task (its stored training options name one).
bool TrainedOnTask(const Checkpoint& checkpoint);

// Builds or loads each model, takes its inputs and measures it, in the order cells, then
// checkpoints; each model is named on `log` as it starts, with the symbols of the corpus that a
// checkpoint's vocabulary lacks. Labels are the cell names (with a scheme other than the
// default: "lstm (identity)") and "dir/name" of the checkpoints, numbered "#2", ... when
// repeated. `between_chunks` is passed to MeasureDecay. Throws bptt::Error naming the flag of an
// invalid setting.
std::vector<DecayReport> MeasureDecayStudy(const DecayStudy& study, std::ostream& log,
                                           const std::function<void()>& between_chunks = {});

// MeasureDecayStudy, then, when study.out is set, its directory (created if missing) with
// decay.csv, summary.json and decay.svg.
std::vector<DecayReport> RunDecayStudy(const DecayStudy& study, std::ostream& log,
                                       const std::function<void()>& between_chunks = {});

}  // namespace bptt
