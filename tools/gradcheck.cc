// bptt gradcheck: the command-line front end of gradcheck.h, for a fresh model or a checkpoint.
#include <iomanip>
#include <iostream>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/gradcheck.h"
#include "bptt/init.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

// The options of `bptt gradcheck`, declared once: the model's and the initialisation's through
// their own tables, and the check's.
struct GradcheckCommand {
  ModelConfig model = LanguageModel(DefaultCell(), 0, 0, 32, 2);
  InitOptions init;
  int symbols = 20;  // V of a fresh model's random input
  int seq_len = 10;  // T
  int batch = 4;     // B
  GradCheckOptions check;
  double threshold = 1e-6;
  bool json = false;
};

std::vector<OptionSpec<GradcheckCommand>> Specs() {
  using G = GradcheckCommand;
  constexpr OnResume kNone = OnResume::kNone;
  std::vector<OptionSpec<G>> specs = Nest<G>(ModelOptionSpecs(), 1, "", [](G& g) -> auto& { return g.model; });
  std::erase_if(specs, [](const auto& s) { return s.flag == "dropout"; });  // no dropout in a check
  const auto init = Nest<G>(InitOptionSpecs(), 1, "", [](G& g) -> auto& { return g.init; });
  specs.insert(specs.end(), init.begin(), init.end());
  const char* data = "Input (a fresh model; a checkpoint brings its own)";
  const char* check = "Check";
  for (auto spec : std::vector<OptionSpec<G>>{
           Field<G>(1, "symbols", "", data, "symbols V of the random input", kNone, [](G& g) -> auto& { return g.symbols; }),
           Field<G>(1, "seq-len", "", data, "timesteps T (a language model's)", kNone, [](G& g) -> auto& { return g.seq_len; }),
           Field<G>(1, "batch", "", data, "sequences B", kNone, [](G& g) -> auto& { return g.batch; }),
           Field<G>(1, "sample", "", check, "elements checked per tensor (0 = all)", kNone,
                    [](G& g) -> auto& { return g.check.sample; }),
           Field<G>(1, "step", "", check, "h of the central differences", kNone, [](G& g) -> auto& { return g.check.step; }),
           Field<G>(1, "floor", "", check, "floor of the relative error's denominator", kNone,
                    [](G& g) -> auto& { return g.check.floor; }),
           Field<G>(1, "threshold", "", check, "exit with status 2 when the largest relative error is above this",
                    kNone, [](G& g) -> auto& { return g.threshold; }),
           Field<G>(1, "seed", "", check, "random seed: weights, input, sampled elements", kNone,
                    [](G& g) -> auto& { return g.check.seed; }),
           Field<G>(1, "threads", "", check, "threads for the products", kNone, [](G& g) -> auto& { return g.check.threads; }),
           Field<G>(1, "json", "", check, "print one JSON object", kNone, [](G& g) -> auto& { return g.json; })})
    specs.push_back(spec);
  return specs;
}

}  // namespace

int Gradcheck(int argc, char** argv) {
  static const std::vector<OptionSpec<GradcheckCommand>> specs = Specs();
  CommandLine<GradcheckCommand> cli("bptt gradcheck [CHECKPOINT] [--cell C --layers L --hidden H ...] [options]", specs, 1,
                                    GradcheckCommand());
  std::string path;
  po::options_description help("Help");
  help.add_options()("help", "show this help");
  cli.Add(help);
  po::options_description hidden;
  hidden.add_options()("checkpoint", po::value(&path), "checkpoint");
  cli.AddHidden(hidden);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  cli.Positional(positional);
  cli.Parse(argc, argv);
  if (cli.vm().count("help")) {
    std::cout << cli.help() << "\n";
    return 0;
  }
  GradcheckCommand c = cli.Apply(GradcheckCommand());
  if (c.symbols < 1 || c.seq_len < 1 || c.batch < 1) throw Error("--symbols, --seq-len and --batch must be positive");

  ModelConfig config;
  ModelParams<double> params;
  Batch<double> data;
  std::string label;
  if (!path.empty()) {
    for (const char* flag : {"cell", "layers", "hidden", "embed", "init", "init-scale", "forget-bias", "symbols"})
      if (cli.Given(flag)) throw Error(std::string("--") + flag + " describes a fresh model; " + path + " has its own");
    const Checkpoint checkpoint = LoadCheckpoint(path);
    config = checkpoint.config;
    params = checkpoint.params.Cast<double>();
    data = CheckpointInputs(checkpoint, "", c.seq_len, c.batch, c.check.seed);
    label = path;
  } else {
    config = c.model;
    config.vocab_size = config.output_size = c.symbols;
    config.Validate();
    Rng rng(c.check.seed);
    Initialize(config, c.init, rng, params);
    data = UniformInputs(c.symbols, c.seq_len, c.batch, rng);
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
