// bptt predict: what a model trained on sequences (bptt train --data) predicts for new ones.
#include <iostream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/sequences.h"
#include "commands.h"
#include "options_cli.h"
#include "sequence_cli.h"

namespace bptt::cli {

int Predict(int argc, char** argv) {
  CommandLine<PredictOptions> cli("bptt predict CHECKPOINT DATA [--out FILE.csv|FILE.npy] [options]",
                                  PredictOptionSpecs(), kPredictCommand, PredictOptions());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  cli.Argument("data", "the sequences to predict (read as the model's training data was)");
  cli.Epilog(
      "DATA is read as the model's training data was (its format, keys, columns and steps), its inputs "
      "standardised by the training data's statistics.");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string checkpoint = cli.Argument("checkpoint"), data = cli.Argument("data");
  if (checkpoint.empty() || data.empty()) throw Error("missing CHECKPOINT or DATA (see bptt predict --help)");
  const PredictOptions o = cli.Apply(PredictOptions());
  o.Validate();
  const LoadedSequenceModel m = LoadSequenceModel(checkpoint, "predict");
  if (m.spec.head == SequenceHead::kForecast)
    throw Error(checkpoint + ": a forecasting model: bptt forecast CHECKPOINT SERIES --horizon H");
  const SequenceSet set = ReadForModel(m.spec, data, "", false, o.no_labels);
  const PredictionArray p = Predict(m.checkpoint.config, m.checkpoint.params, m.spec, set, o.threads, o.batch);
  WritePredictions(m.spec, set, p, o, std::cout);
  return 0;
}

}  // namespace bptt::cli
