// What bptt predict, forecast and eval share for a model of the user's own sequences.
#pragma once

#include <string>

#include "bptt/checkpoint.h"
#include "bptt/sequences.h"

namespace bptt::cli {

struct LoadedSequenceModel {
  Checkpoint checkpoint;
  SequenceSpec spec;
};

// Loads a checkpoint of a sequence model; throws naming the path when it is another model.
LoadedSequenceModel LoadSequenceModel(const std::string& path, const char* command);

// bptt eval CHECKPOINT DATA of a sequence model (tools/eval.cc parses its command line): prints
// the scores, or one JSON object with `json`; the exit status.
int EvalSequences(const std::string& checkpoint, const std::string& data, const PredictOptions& options, bool json);

}  // namespace bptt::cli
