// bptt forecast: a forecasting model (bptt train --data SERIES --head forecast) continues a series.
#include <iostream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/sequences.h"
#include "commands.h"
#include "options_cli.h"
#include "sequence_cli.h"

namespace bptt::cli {

int Forecast(int argc, char** argv) {
  CommandLine<PredictOptions> cli("bptt forecast CHECKPOINT SERIES --horizon H [--out FILE.csv|FILE.npy] [options]",
                                  PredictOptionSpecs(), kForecastCommand, PredictOptions());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  cli.Argument("series", "the series to continue");
  cli.Epilog(
      "The model reads SERIES to its end, then predicts --horizon steps after it, feeding its own predictions back "
      "in as it goes.");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string checkpoint = cli.Argument("checkpoint"), series_path = cli.Argument("series");
  if (checkpoint.empty() || series_path.empty()) throw Error("missing CHECKPOINT or SERIES (see bptt forecast --help)");
  const PredictOptions o = cli.Apply(PredictOptions());
  o.Validate();
  if (o.horizon < 1) throw Error("--horizon H is required: the steps to forecast");
  const LoadedSequenceModel m = LoadSequenceModel(checkpoint, "forecast");
  if (m.spec.head != SequenceHead::kForecast)
    throw Error(checkpoint + ": the model was trained with --head " + std::string(SequenceHeadName(m.spec.head)) +
                ", not forecast: bptt predict CHECKPOINT DATA");
  const SequenceSet series = ReadForModel(m.spec, series_path, "", false);
  const std::vector<float> f =
      bptt::Forecast(m.checkpoint.config, m.checkpoint.params, m.spec, series, o.horizon, o.threads);
  WriteForecast(f, series.D, series.T, o, std::cout);
  return 0;
}

}  // namespace bptt::cli
