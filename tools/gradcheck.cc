// bptt gradcheck: the command-line front end of gradcheck.h, for a fresh model or a checkpoint.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <optional>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/decay_study.h"
#include "bptt/error.h"
#include "bptt/gradcheck.h"
#include "bptt/init.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

// The options of `bptt gradcheck`, declared once: the model's and the initialisation's through
// their own tables (refused beside a checkpoint, which has its own), and the check's.
struct GradcheckCommand {
  std::string checkpoint;  // the positional CHECKPOINT; "" = a fresh model
  ModelConfig model = LanguageModel(DefaultCell(), 0, 0, 32, 2);
  InitOptions init;
  int symbols = 20;            // V of a fresh model's random input
  std::optional<int> seq_len;  // T: kDefaultSeqLen when not given (a task checkpoint: the task's)
  int batch = 4;               // B
  GradCheckOptions check;
  double threshold = 1e-6;
  bool json = false;

  static constexpr int kDefaultSeqLen = 10;
};

std::vector<OptionSpec<GradcheckCommand>> Specs() {
  using G = GradcheckCommand;
  constexpr OnResume kNone = OnResume::kNone;
  const auto fresh_only = [](const G& g) {
    return g.checkpoint.empty() ? std::string() : "describes a fresh model; " + g.checkpoint + " has its own";
  };
  std::vector<OptionSpec<G>> specs;
  // A check runs the model as evaluation does: none of training's regularisers (zoneout stays:
  // a check takes its expectation, as evaluation does).
  constexpr std::string_view kTrainingOnly[] = {"dropout",     "input-dropout", "output-dropout",   "variational",
                                                "weight-drop", "ar",            "tar",              "recurrent-dropout"};
  for (auto spec : Nest<G>(ModelOptionSpecs(), kAnyCommand, "", [](G& g) -> auto& { return g.model; }))
    if (std::find(std::begin(kTrainingOnly), std::end(kTrainingOnly), spec.flag) == std::end(kTrainingOnly))
      specs.push_back(Restrict(std::move(spec), fresh_only));
  for (auto spec : Nest<G>(InitOptionSpecs(), kAnyCommand, "", [](G& g) -> auto& { return g.init; }))
    specs.push_back(Restrict(std::move(spec), fresh_only));
  const char* data = "Input (a fresh model; a checkpoint brings its own)";
  const char* check = "Check";
  specs.push_back(Restrict(Field<G>(kAnyCommand, "symbols", "", data, "symbols V of the random input", kNone,
                                    [](G& g) -> auto& { return g.symbols; }),
                           fresh_only));
  static const std::string seq_len_help = "timesteps T (" + std::to_string(G::kDefaultSeqLen) +
                                          " when not given; a task checkpoint's sequences are the task's)";
  specs.push_back(Field<G>(kAnyCommand, "seq-len", "", data, seq_len_help, kNone, [](G& g) -> auto& { return g.seq_len; }));
  specs.push_back(Field<G>(kAnyCommand, "batch", "", data, "sequences B", kNone, [](G& g) -> auto& { return g.batch; }));
  specs.push_back(Field<G>(kAnyCommand, "sample", "", check, "elements checked per tensor (0 = all)", kNone,
                           [](G& g) -> auto& { return g.check.sample; }));
  specs.push_back(Field<G>(kAnyCommand, "step", "", check, "h of the central differences", kNone,
                           [](G& g) -> auto& { return g.check.step; }));
  specs.push_back(Field<G>(kAnyCommand, "floor", "", check, "floor of the relative error's denominator", kNone,
                           [](G& g) -> auto& { return g.check.floor; }));
  specs.push_back(Field<G>(kAnyCommand, "threshold", "", check,
                           "exit with status 2 when the largest relative error is above this", kNone,
                           [](G& g) -> auto& { return g.threshold; }));
  specs.push_back(Field<G>(kAnyCommand, "seed", "", check, "random seed: weights, input, sampled elements", kNone,
                           [](G& g) -> auto& { return g.check.seed; }));
  specs.push_back(Threads<G>(kAnyCommand, "", check, "threads for the products", kNone,
                             [](G& g) -> auto& { return g.check.threads; }, 1));
  specs.push_back(Field<G>(kAnyCommand, "json", "", check, "print one JSON object", kNone,
                           [](G& g) -> auto& { return g.json; }));
  return specs;
}

}  // namespace

int Gradcheck(int argc, char** argv) {
  static const std::vector<OptionSpec<GradcheckCommand>> specs = Specs();
  CommandLine<GradcheckCommand> cli("bptt gradcheck [CHECKPOINT] [--cell C --layers L --hidden H ...] [options]", specs,
                                    kAnyCommand, GradcheckCommand());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  GradcheckCommand start;
  start.checkpoint = cli.Argument("checkpoint");
  const GradcheckCommand c = cli.Apply(start);
  const int seq_len = c.seq_len.value_or(GradcheckCommand::kDefaultSeqLen);
  if (c.symbols < 1 || seq_len < 1 || c.batch < 1) throw Error("--symbols, --seq-len and --batch must be positive");

  ModelConfig config;
  ModelParams<double> params;
  Batch<double> data;
  std::string label;
  if (!c.checkpoint.empty()) {
    const Checkpoint checkpoint = LoadCheckpoint(c.checkpoint);
    if (TrainedOnTask(checkpoint) && c.seq_len)
      throw Error("--seq-len does not apply to " + c.checkpoint + ", which was trained on a task: its sequences are the task's");
    config = checkpoint.config;
    params = checkpoint.params.Cast<double>();
    data = CheckpointInputs(checkpoint, "", seq_len, c.batch, c.check.seed);
    label = c.checkpoint;
  } else {
    config = c.model;
    config.vocab_size = config.output_size = c.symbols;
    config.Validate();
    Rng rng(c.check.seed);
    Initialize(config, c.init, rng, params);
    data = UniformInputs(c.symbols, seq_len, c.batch, rng);
    label = std::string(config.cell->name) + " " + std::to_string(config.layers) + "x" + std::to_string(config.hidden_size);
  }
  const GradCheckReport r = GradCheck(config, std::move(params), data, c.check);
  if (c.json) {
    std::cout << r.ToJson().dump(2) << "\n";
  } else {
    std::cout << label << ": " << r.parameters << " parameters, " << r.checked << " checked against central differences\n";
    for (const TensorCheck& t : r.tensors)
      std::cout << "  " << std::left << std::setw(22) << t.name << std::right << std::setw(9) << t.checked << " of "
                << std::setw(9) << t.elements << "  max relative error " << std::scientific << std::setprecision(2)
                << t.max_rel_error << std::defaultfloat << "\n";
    std::cout << "  overall max relative error " << std::scientific << r.max_rel_error << std::defaultfloat << "\n"
              << std::setprecision(4) << "  one forward + backward pass " << r.backward_s << " s (forward alone "
              << r.forward_s << " s); two forward passes per parameter " << r.fd_s_per_parameter << " s\n"
              << "  finite differences for all " << r.parameters << " parameters would take " << std::setprecision(3)
              << r.ratio << " times one backward pass\n";
  }
  if (!(r.max_rel_error <= c.threshold)) {
    std::cerr << "bptt gradcheck: max relative error " << r.max_rel_error << " is above --threshold " << c.threshold << "\n";
    return 2;
  }
  return 0;
}

}  // namespace bptt::cli
