// What a training run reads: the batches of a corpus (a language model), of a generated task or
// of the user's own sequences, and how each is validated, resumed and summarised. The training loop (train_loop.h) runs either
// the same way through this interface. In a distributed run (distributed.h; a corpus only) each
// rank's data reads its share of the streams, and Validate is collective: each rank scores its
// share of the validation streams and the sums over the ranks give every rank the figures.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "bptt/batch.h"
#include "bptt/model.h"
#include "bptt/train_options.h"
#include "bptt/vocab.h"
#include "distributed.h"

namespace bptt {

struct Checkpoint;

class TrainData {
 public:
  virtual ~TrainData() = default;

  // The model's input and head sizes that the data dictates (V, D, O, head).
  virtual void Shape(ModelConfig& config) const = 0;
  virtual const Vocab& vocab() const = 0;  // empty for a dense task
  virtual int timesteps() const = 0;       // T of a training batch
  virtual std::string Describe() const = 0;

  // Fills the next training batch (batch.B sequences: this rank's share); false at the end of
  // an epoch, after which the trainer calls Rewind.
  virtual bool Next(Batch<float>& batch) = 0;
  virtual void Rewind() = 0;
  // Whether the state is carried from one batch to the next (a corpus's streams) or starts at
  // zero for each (a task's independent sequences).
  virtual bool carries_state() const = 0;
  virtual double EpochFraction() const = 0;
  // After each training step: the batch and the model's outputs on it. True when the task's
  // stop criterion is met.
  virtual bool Observe(const Batch<float>& batch, const Mat<float>& outputs) = 0;

  // Progress for the log: the unit a step processes ("chars/s"), how many per step, where the
  // run is ("epoch 1.25"), and the metrics key of the rate.
  virtual const char* ItemName() const = 0;
  virtual int64_t ItemsPerStep(const Batch<float>& batch) const = 0;
  virtual std::string Progress(int64_t epoch) const = 0;
  virtual void NameRate(nlohmann::json& metrics, double rate) const = 0;

  // The validation metrics: at least "val_loss" (the head's loss); null without validation data.
  virtual nlohmann::json Validate(const ModelConfig& config, const ModelParams<float>& params, int threads) = 0;
  virtual std::string DescribeValidation(const nlohmann::json& metrics) const = 0;
  // The most memory Validate and Summary hold while they run, beside training's own (model.h
  // EstimateEvaluationBytes of the largest chunk they run the model on).
  virtual uint64_t EvaluationBytes(const ModelConfig& config) const = 0;

  // The position in the data and any state beyond it, for exact resume; Seek throws bptt::Error
  // naming `source` when they do not fit this data.
  virtual uint64_t position() const = 0;
  virtual nlohmann::json SaveState() const = 0;
  virtual void Seek(uint64_t position, const nlohmann::json& state, const std::string& source) = 0;

  // The fixed probe of `bptt train --decay-every`: B sequences of T steps.
  virtual Batch<double> DecayProbe(int T, int B) const = 0;

  // summary.json at the end of a run, from the best checkpoint's weights.
  virtual nlohmann::json Summary(const ModelConfig& config, const ModelParams<float>& best, int64_t steps,
                                 bool solved, int threads) = 0;

  // What a checkpoint keeps for reading new data with the model (Checkpoint::sequences): null
  // for a corpus or a task, whose vocabulary or generator says it all.
  virtual nlohmann::json ModelData() const { return nullptr; }
};

// A corpus: B contiguous streams of the train split, of which it reads `share`, T symbols at a
// time; validation on the validation split in B streams; the summary's one-stream figure of the
// best checkpoint. With `resume`, the corpus must be the one the checkpoint was trained on.
// Rank 0 encodes the corpus into dir/corpus.ids and the other ranks map that file, so dir must
// be on a file system that every rank sees; an error of rank 0's (a corpus it cannot read) is
// thrown on every rank (AgreedError).
std::unique_ptr<TrainData> MakeCorpusData(const TrainOptions& options, const std::filesystem::path& dir,
                                          const Checkpoint* resume, std::ostream& log, Communicator& comm,
                                          StreamShare share);

// A generated task (task.h): B fresh sequences a step from the training stream of the seed;
// validation on the test set, scored by the paper's criterion.
std::unique_ptr<TrainData> MakeTaskData(const TrainOptions& options);
// What a task's validation holds (TrainData::EvaluationBytes), known before its data is drawn:
// a test batch of sequences of the task's longest length.
uint64_t TaskEvaluationBytes(const ModelConfig& config, int max_length, int test_size);

// Sequences of the user's own (sequences.h; options.sequences or options.arrays): B of the
// training sequences (or windows of a series) a step, in an order shuffled each epoch by the
// seed, of which this rank reads `share`; validation on --val-data or the held-out --val-frac,
// shared between the ranks; the best checkpoint's scores (and --test-data's) in the summary.
// A resumed run's data must be the checkpoint's: Seek checks its fingerprint.
std::unique_ptr<TrainData> MakeSequenceData(const TrainOptions& options, Communicator& comm, StreamShare share);

}  // namespace bptt
