// Checkpoint: a trained model and everything needed to continue training it exactly, in one
// safetensors file (safetensors.h) that Python, NumPy and PyTorch read with no bptt code.
//
// Tensors (float32, row-major, PyTorch's names and layouts; ModelParams::ForEachTensor):
//   encoder.weight (V, E)                 when the model has an embedding
//   rnn.<name>_l{k}                       for each layer k, each tensor its cell declares (cell.h),
//                                         e.g. rnn.weight_ih_l{k} (G*H, E_k), rnn.weight_hh_l{k}
//                                         (G*H, H), rnn.bias_ih_l{k} (G*H), rnn.bias_hh_l{k} (G*H)
//                                         as in torch.nn.RNN / LSTM / GRU, and with --layer-norm
//                                         rnn.ln_ih_weight_l{k}, ...; biases and norms 1-D
//   decoder.weight (O, H), decoder.bias (O)   as in torch.nn.Linear
// and, when the checkpoint carries training state (TrainingState):
//   optimizer.slot1.<name>, optimizer.slot2.<name>   optimizer buffers of each parameter
//   state.h (L, B, H), state.c (L, B, H)             the hidden state carried between chunks
//   feedback.*                                       FA / DFA: the fixed random matrices (model.h)
//   average.<name>                                   --average: the running average of each
//                                                    parameter (average.h), beside the weights
//   credit.sensitivity (B, R, P)                     an online --credit (credit.h): what the
//   credit.state_factor (N, B), credit.param_factor (P, B)   algorithm carries from step to step
// __metadata__ (all strings): "format" = "bptt", "format_version", "config" (JSON),
// "vocab" (JSON, vocab.h), "step", "metrics" (JSON), "training" (JSON, when present),
// "sequences" (JSON, a model of the user's own sequences: sequences.h) and the file checksum
// that Safetensors verifies on load.
//
// Loading checks the whole file: the checksum, every tensor's shape against the configuration,
// and every field of the training state (counts non-negative, optimizer slots and carried state
// consistent with each other, the stored training options' model equal to the configuration).
// Training state is trusted only when verified, so resuming needs a checksum; a file without
// one (a safetensors file written by another tool) still loads for sampling and evaluation,
// and says so in checksum_verified.
//
//   SaveCheckpoint(checkpoint, dir / "latest.safetensors");   // atomic
//   Checkpoint c = LoadCheckpoint(path);                      // verified, or bptt::Error
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bptt/average.h"
#include "bptt/credit.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/vocab.h"

namespace bptt {

inline constexpr int kCheckpointFormatVersion = 1;

// A parameter's shape as the checkpoint stores it and PyTorch's modules take it: biases and
// layer norms (as nn.LayerNorm's) 1-D, everything else (rows, cols).
std::vector<int64_t> TorchShape(TensorRole role, const Mat<float>& m);

// What training needs beyond the weights to continue exactly where it stopped.
struct TrainingState {
  OptimizerState<float> optimizer;
  State<float> carried;    // hidden state carried into the next chunk, (H, B) per layer
  std::string rng;         // Rng::Save() of the training generator (dropout)
  int64_t epoch = 0;       // epochs completed
  uint64_t chunk = 0;      // position in the data: the next chunk of the epoch (a corpus) or
                           //   the next batch of the training stream (a task)
  nlohmann::json data = nlohmann::json::object();  // the data's state beyond its position: the
                                                   //   corpus's fingerprint, a task's stop criterion
  double best_val_loss = 0;  // best validation loss so far (nats); 0 before the first evaluation
  double lr_scale = 1.0;     // learning-rate factor left by divergence rollbacks (halved by each)
  int64_t rollbacks = 0;     // divergence rollbacks so far
  FeedbackMatrices<float> feedback;  // FA / DFA: the fixed random matrices (empty for BPTT)
  // --average: the running average kept beside the weights (latest.safetensors; read only to
  // resume, like the optimizer's buffers: a model load keeps `average_updates` alone).
  std::optional<WeightAverage> average;
  int64_t average_updates = -1;  // the average's steps (of `average`, or of the weights when
                                 //   weights_averaged); -1 without one
  // The checkpoint's weights are the average, not the weights training continues from
  // (best.safetensors of an --average run): it loads as a model but does not resume.
  bool weights_averaged = false;
  // An online --credit (credit.h): the algorithm's carried state (sensitivities or UORO's factors
  // and signs), read only to resume from.
  std::optional<OnlineCredit<float>> credit;
  nlohmann::json options;  // the training options (TrainOptions as JSON), for --resume
};

struct Checkpoint {
  ModelConfig config;
  ModelParams<float> params;
  Vocab vocab;
  int64_t step = 0;                                    // optimizer steps taken
  nlohmann::json metrics = nlohmann::json::object();   // the last logged metrics
  std::optional<TrainingState> training;
  bool checksum_verified = false;                      // the file carried a checksum, and it matched
  // A model of the user's own sequences: what it reads and predicts, its inputs' standardisation
  // (sequences.h SequenceSpec::ToJson); null for a language model or a task's.
  nlohmann::json sequences;
};

// What a checkpoint is loaded for: a model only (sampling, evaluation, inspection: the optimizer
// state is checked by the file's checksum but not read, and `training` comes without it), or
// training state to resume from, which must be present and verified by its checksum.
enum class CheckpointUse { kModel, kResume };

// Writes atomically (temporary file, fsync, rename). Throws bptt::Error naming the path if the
// model has a non-finite value, so a good checkpoint is never replaced by a diverged one.
void SaveCheckpoint(const Checkpoint& checkpoint, const std::filesystem::path& path);

// Reads and verifies: checksum, format and version, configuration, vocabulary, every tensor's
// shape against the configuration and every field of the training state. Throws bptt::Error
// "<path>: ..." on any fault; for kResume also when the file has no training state or no
// checksum.
Checkpoint LoadCheckpoint(const std::filesystem::path& path, CheckpointUse use = CheckpointUse::kModel);

// Whether the file at `path` holds a model of the user's own sequences (its metadata has
// "sequences"), by its header alone: nothing is verified (LoadCheckpoint does that), and a file
// that cannot be read as safetensors is not one.
bool IsSequenceCheckpoint(const std::filesystem::path& path);

}  // namespace bptt
