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
  std::string checkpoint, data;
  po::options_description other("Help");
  other.add_options()("help", "show this help");
  cli.Add(other);
  po::options_description hidden;
  hidden.add_options()("checkpoint", po::value(&checkpoint))("data", po::value(&data));
  cli.AddHidden(hidden);
  po::positional_options_description positional;
  positional.add("checkpoint", 1).add("data", 1);
  cli.Positional(positional);
  cli.Parse(argc, argv);
  if (cli.vm().count("help")) {
    std::cout << cli.help() << "\nDATA is read as the model's training data was (its format, keys, columns and "
                               "steps), its inputs standardised by the training data's statistics.\n";
    return 0;
  }
  if (checkpoint.empty() || data.empty()) throw Error("missing CHECKPOINT or DATA (see bptt predict --help)");
  const PredictOptions o = cli.Apply(PredictOptions());
  o.Validate();
  const LoadedSequenceModel m = LoadSequenceModel(checkpoint, "predict");
  if (m.spec.head == SequenceHead::kForecast)
    throw Error(checkpoint + ": a forecasting model: bptt forecast CHECKPOINT SERIES --horizon H");
  const SequenceSet set = ReadForModel(m.spec, data, "", false, o.no_labels);
  const PredictionArray p = Predict(m.checkpoint.config, m.checkpoint.params, m.spec, set, Threads(o.threads), o.batch);
  WritePredictions(m.spec, set, p, o, std::cout);
  return 0;
}

}  // namespace bptt::cli
