// bptt credit: the command-line front end of credit.h CompareCredit, for a fresh model or a
// checkpoint: every online algorithm's gradient against exact BPTT's on one batch.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/corpus.h"
#include "bptt/credit.h"
#include "bptt/decay.h"
#include "bptt/decay_study.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/plot.h"
#include "bptt/trainer.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

// The options of `bptt credit`, declared once: the model's and the initialisation's through their
// own tables (refused beside a checkpoint, which has its own), the input's and the comparison's.
struct CreditCommand {
  std::string checkpoint;  // the positional CHECKPOINT; "" = a fresh model
  ModelConfig model = LanguageModel(DefaultCell(), 0, 0, 16, 1);
  InitOptions init;
  int symbols = 20;  // V of a fresh model's random input
  std::string text;  // a checkpoint's input windows come from this file; "" = unigram draws
  int seq_len = 20;  // T
  int batch = 1;     // B
  CreditOptions compare;
  std::vector<int> hidden_sizes;  // the cost against H; empty = not measured
  std::string svg;                // the figure's file; "" = none
  bool json = false;
};

std::vector<OptionSpec<CreditCommand>> Specs() {
  using C = CreditCommand;
  constexpr OnResume kNone = OnResume::kNone;
  const auto fresh_only = [](const C& c) {
    return c.checkpoint.empty() ? std::string() : "describes a fresh model; " + c.checkpoint + " has its own";
  };
  std::vector<OptionSpec<C>> specs;
  for (auto spec : Nest<C>(ModelOptionSpecs(), kAnyCommand, "", [](C& c) -> auto& { return c.model; }))
    if (spec.flag != "dropout") specs.push_back(Restrict(std::move(spec), fresh_only));
  for (auto spec : Nest<C>(InitOptionSpecs(), kAnyCommand, "", [](C& c) -> auto& { return c.init; }))
    specs.push_back(Restrict(std::move(spec), fresh_only));
  const char* data = "Input";
  const char* compare = "Comparison";
  specs.push_back(Restrict(Field<C>(kAnyCommand, "symbols", "", data, "symbols V of a fresh model's random input", kNone,
                                    [](C& c) -> auto& { return c.symbols; }),
                           fresh_only));
  specs.push_back(Restrict(Field<C>(kAnyCommand, "text", "", data,
                                    "text file to cut a checkpoint's input windows from (empty = symbols drawn with "
                                    "the vocabulary's frequencies)",
                                    kNone, [](C& c) -> auto& { return c.text; }),
                           [](const C& c) {
                             return c.checkpoint.empty() ? std::string("applies to a checkpoint's vocabulary")
                                                         : std::string();
                           }));
  specs.push_back(Field<C>(kAnyCommand, "seq-len", "", data, "timesteps T of the chunk", kNone,
                           [](C& c) -> auto& { return c.seq_len; }));
  specs.push_back(Field<C>(kAnyCommand, "batch", "", data, "sequences B", kNone, [](C& c) -> auto& { return c.batch; }));
  static const std::string algorithms_help =
      "algorithms to compare with bptt, comma-separated: " + CreditNames() + " (empty = every one the model allows)";
  specs.push_back(List<C>(kAnyCommand, "algorithms", "", compare, algorithms_help, kNone,
                          [](C& c) -> auto& { return c.compare.algorithms; }, [](bptt::Credit a) { return CreditName(a); },
                          [](const std::string& v, const std::string& f) { return ParseCredit(v, f); }));
  specs.push_back(Field<C>(kAnyCommand, "uoro-draws", "", compare, "UORO: also the mean of this many draws (0, 1 = one)",
                           kNone, [](C& c) -> auto& { return c.compare.uoro_draws; }));
  specs.push_back(Field<C>(kAnyCommand, "lags", "", compare,
                           "the lag profile: the last step's loss through each lag's step alone, up to this lag (0 = none)",
                           kNone, [](C& c) -> auto& { return c.compare.lags; }));
  specs.push_back(Restrict(
      List<C>(kAnyCommand, "hidden-sizes", "", compare,
              "also measure time and memory per step at these hidden sizes, comma-separated (a fresh model's "
              "other options; empty = not measured)",
              kNone, [](C& c) -> auto& { return c.hidden_sizes; }, [](int h) { return std::to_string(h); },
              [](const std::string& v, const std::string& f) {
                size_t used = 0;
                int h = 0;
                try {
                  h = std::stoi(v, &used);
                } catch (const std::exception&) {
                  used = 0;
                }
                if (used != v.size() || h < 1) throw Error(f + " must list positive sizes, got '" + v + "'");
                return h;
              }),
      fresh_only));
  specs.push_back(Field<C>(kAnyCommand, "svg", "", compare,
                           "write the figure here: the lag profile and, with --hidden-sizes, the cost curves", kNone,
                           [](C& c) -> auto& { return c.svg; }));
  specs.push_back(Field<C>(kAnyCommand, "seed", "", compare, "random seed: weights, input, UORO's signs", kNone,
                           [](C& c) -> auto& { return c.compare.seed; }));
  specs.push_back(Threads<C>(kAnyCommand, "", compare, "threads for the products", kNone,
                             [](C& c) -> auto& { return c.compare.threads; }, 1));
  specs.push_back(Field<C>(kAnyCommand, "json", "", compare, "print one JSON object", kNone,
                           [](C& c) -> auto& { return c.json; }));
  return specs;
}

std::string Bytes(double bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes < 1 << 20) out << bytes / 1024 << " KiB";
  else out << bytes / (1 << 20) << " MiB";
  return out.str();
}

void PrintTable(const CreditReport& r) {
  std::cout << r.model << ": T = " << r.T << ", B = " << r.B << ", " << r.parameters
            << " parameters in the recurrent layer, loss " << std::setprecision(5) << r.loss << "\n\n";
  std::cout << std::left << std::setw(10) << "algorithm" << std::setw(20) << "tensor" << std::right << std::setw(10)
            << "cosine" << std::setw(12) << "rel. error" << std::setw(12) << "ms/step" << std::setw(12) << "memory"
            << "\n";
  for (const CreditRow& row : r.rows) {
    for (size_t i = 0; i < row.tensors.size(); ++i) {  // the layer first, then its tensors
      const size_t k = (i + row.tensors.size() - 1) % row.tensors.size();
      const Alignment& a = row.tensors[k];
      const bool layer = i == 0;
      std::cout << std::left << std::setw(10) << (layer ? row.algorithm : "") << std::setw(20) << a.name << std::right
                << std::fixed << std::setprecision(6) << std::setw(10) << a.cosine << std::scientific
                << std::setprecision(2) << std::setw(12) << a.rel_error;
      if (layer)
        std::cout << std::fixed << std::setprecision(3) << std::setw(12) << row.seconds_per_step * 1e3 << std::setw(12)
                  << Bytes(row.bytes);
      std::cout << std::defaultfloat << "\n";
    }
  }
  for (const std::string& why : r.refused) std::cout << "not defined: " << why << "\n";
  bool lags = false;
  for (const CreditRow& row : r.rows) {
    if (row.lag_cosine.empty()) continue;
    if (!lags) {
      std::cout << "\nlag profile: cosine with BPTT of the last step's loss through the step tau back\n"
                << std::left << std::setw(10) << "algorithm" << std::right;
      for (size_t tau = 0; tau < row.lag_cosine.size(); ++tau) std::cout << std::setw(7) << tau;
      std::cout << "\n";
      lags = true;
    }
    std::cout << std::left << std::setw(10) << row.algorithm << std::right << std::fixed << std::setprecision(3);
    for (const double c : row.lag_cosine) std::cout << std::setw(7) << c;
    std::cout << std::defaultfloat << "\n";
  }
}

void PrintCost(std::span<const CreditCost> cost) {
  std::cout << "\ncost against the hidden size\n"
            << std::left << std::setw(10) << "algorithm" << std::right << std::setw(8) << "H" << std::setw(14)
            << "ms/step" << std::setw(14) << "memory" << "\n";
  for (const CreditCost& c : cost)
    std::cout << std::left << std::setw(10) << c.algorithm << std::right << std::setw(8) << c.hidden_size
              << std::fixed << std::setprecision(4) << std::setw(14) << c.seconds_per_step * 1e3
              << std::defaultfloat << std::setw(14) << Bytes(c.bytes) << "\n";
}

}  // namespace

int Credit(int argc, char** argv) {
  static const std::vector<OptionSpec<CreditCommand>> specs = Specs();
  CommandLine<CreditCommand> cli("bptt credit [CHECKPOINT] [--cell C --hidden H ...] [options]", specs, kAnyCommand,
                                 CreditCommand());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  CreditCommand start;
  start.checkpoint = cli.Argument("checkpoint");
  const CreditCommand c = cli.Apply(start);
  if (c.symbols < 1 || c.seq_len < 1 || c.batch < 1) throw Error("--symbols, --seq-len and --batch must be positive");

  ModelConfig config;
  ModelParams<double> params;
  Batch<double> data;
  if (!c.checkpoint.empty()) {
    const Checkpoint checkpoint = LoadCheckpoint(c.checkpoint);
    std::string text;
    if (!c.text.empty()) {
      CheckTextFile(c.text);
      ReadInPieces(c.text, [&text](std::string_view piece) { text.append(piece); });
    }
    config = checkpoint.config;
    params = checkpoint.params.Cast<double>();
    data = CheckpointInputs(checkpoint, text, c.seq_len, c.batch, c.compare.seed);
  } else {
    config = c.model;
    config.vocab_size = config.output_size = c.symbols;
    config.Validate();
    Rng rng(c.compare.seed);
    Initialize(config, c.init, rng, params);
    data = UniformInputs(c.symbols, c.seq_len, c.batch, rng);
  }
  for (const bptt::Credit a : c.compare.algorithms) CheckCredit(a, config, c.batch, sizeof(double), AvailableBytes());
  const CreditReport r = CompareCredit(config, params, data, c.compare);
  const std::vector<CreditCost> cost =
      c.hidden_sizes.empty() ? std::vector<CreditCost>()
                             : MeasureCreditCost(config, c.init, c.hidden_sizes, c.seq_len, c.batch, c.compare);
  if (c.json) {
    nlohmann::json j = r.ToJson();
    for (const CreditCost& k : cost)
      j["cost"].push_back({{"hidden_size", k.hidden_size}, {"algorithm", k.algorithm},
                           {"seconds_per_step", k.seconds_per_step}, {"bytes", k.bytes}});
    std::cout << j.dump(2) << "\n";
  } else {
    PrintTable(r);
    if (!cost.empty()) PrintCost(cost);
  }
  if (!c.svg.empty()) SaveText(RenderCreditFigure(r, cost), c.svg);
  return 0;
}

}  // namespace bptt::cli
