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

// --threads: 0 is every core.
int Threads(int threads);

// Whether the command line of `bptt eval` names a checkpoint of a sequence model (the first of
// its arguments that is a safetensors file whose metadata has "sequences"): bptt eval then
// scores sequences (EvalSequences) instead of text.
bool NamesSequenceModel(int argc, char** argv);

// bptt eval CHECKPOINT DATA of a sequence model.
int EvalSequences(int argc, char** argv);

}  // namespace bptt::cli
