// bptt inspect: a checkpoint's configuration, vocabulary, size, step and metrics.
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/prune.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

struct InspectCommand {
  bool json = false;
  size_t symbols = 12;  // most frequent symbols shown
};

std::vector<OptionSpec<InspectCommand>> Specs() {
  using I = InspectCommand;
  return {Field<I>(kAnyCommand, "json", "", "Output", "print one JSON object instead of text", OnResume::kNone,
                   [](I& i) -> auto& { return i.json; }),
          Field<I>(kAnyCommand, "symbols", "", "Output", "most frequent symbols to show", OnResume::kNone,
                   [](I& i) -> auto& { return i.symbols; })};
}

}  // namespace

int Inspect(int argc, char** argv) {
  static const std::vector<OptionSpec<InspectCommand>> specs = Specs();
  CommandLine<InspectCommand> cli("bptt inspect CHECKPOINT [options]", specs, kAnyCommand, InspectCommand());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string path = cli.Argument("checkpoint");
  if (path.empty()) throw Error("missing CHECKPOINT (see bptt inspect --help)");
  const InspectCommand command = cli.Apply(InspectCommand());
  const bool json = command.json;

  const Checkpoint c = LoadCheckpoint(path);
  if (!c.checksum_verified) std::cerr << "bptt inspect: " << path << " has no checksum; loaded unverified\n";
  const Vocab& vocab = c.vocab;
  const ModelConfig& m = c.config;
  const std::vector<int32_t> top = vocab.MostFrequent(command.symbols);

  if (json) {
    nlohmann::json symbols = nlohmann::json::array();
    for (const int32_t id : top) symbols.push_back({{"id", id}, {"symbol", DisplaySymbol(vocab.symbol(id))}, {"count", vocab.count(id)}});
    nlohmann::json out = {
        {"config", ConfigToJson(m)},
        {"parameters", c.params.Count()},
        {"vocabulary", {{"size", vocab.size()}, {"unit", std::string(UnitName(vocab.options().unit))},
                        {"normalize", vocab.options().normalize}, {"unknown_id", vocab.unknown_id()},
                        {"most_frequent", symbols}}},
        {"step", c.step},
        {"block_sparsity", BlockPruner(m, c.params).sparsity()},
        {"checksum_verified", c.checksum_verified},
        {"metrics", c.metrics},
        {"training", nullptr}};
    if (c.training) {
      out["training"] = {{"epoch", c.training->epoch}, {"chunk", c.training->chunk},
                         {"best_val_loss", c.training->best_val_loss}, {"options", c.training->options},
                         {"weights", c.training->weights_averaged ? "average" : "trained"}};
      if (c.training->average_updates >= 0) out["training"]["average_updates"] = c.training->average_updates;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }

  std::cout << path << "\n"
            << "  model       " << m.cell->name << ", " << m.layers << " layer" << (m.layers == 1 ? "" : "s") << " of "
            << m.hidden_size << " hidden units, "
            << (m.dense_input()      ? "dense input of " + std::to_string(m.input_size)
                : m.embed_size > 0 ? "embedding of " + std::to_string(m.embed_size)
                                   : std::string("one-hot input"))
            << ", dropout " << m.dropout << ", " << HeadName(m.head) << " head of " << m.output_size << "\n";
  // The training regularisers that are on (model.h ModelConfig), with their flags' names.
  // --dropout is on the model line; --variational shapes the dropout masks, said after them.
  std::vector<std::string> regularisers;
  std::ptrdiff_t masks = 0;
  for (const auto& [flag, value] : TrainingRegularisers(m)) {
    if (flag == "dropout") continue;
    if (flag == "input-dropout" || flag == "output-dropout") ++masks;
    std::ostringstream s;
    s << flag << " " << value;
    regularisers.push_back(s.str());
  }
  if (m.variational) regularisers.insert(regularisers.begin() + masks, "variational");
  if (!regularisers.empty()) {
    std::cout << "  regularise ";
    for (size_t i = 0; i < regularisers.size(); ++i) std::cout << (i ? ", " : " ") << regularisers[i];
    std::cout << "\n";
  }
  const double sparsity = BlockPruner(m, c.params).sparsity();
  if (sparsity > 0)
    std::cout << "  pruned      " << std::setprecision(3) << 100 * sparsity << std::setprecision(6)
              << "% of the 16x4 blocks of the recurrent layers' matrices are zero (int8 sampling skips them)\n";
  std::cout << "  parameters  " << c.params.Count() << "\n"
            << "  vocabulary  " << vocab.size() << " " << UnitName(vocab.options().unit) << " symbols"
            << (vocab.options().normalize && vocab.options().unit != Unit::kByte ? ", NFC" : "")
            << (vocab.unknown_id() >= 0 ? ", with <unk>" : "") << "\n"
            << "  frequent   ";
  for (const int32_t id : top) std::cout << " \"" << DisplaySymbol(vocab.symbol(id)) << "\" " << vocab.count(id);
  std::cout << "\n  step        " << c.step << "\n"
            << "  metrics     " << c.metrics.dump() << "\n";
  if (c.training) {
    std::cout << "  training    epoch " << c.training->epoch << ", next chunk " << c.training->chunk;
    if (c.training->best_val_loss > 0) std::cout << ", best validation loss " << c.training->best_val_loss << " nats";
    std::cout << "\n";
    const std::string average = c.training->options.value("average", "off");
    if (c.training->weights_averaged)
      std::cout << "  weights     the average of the training weights (--average " << average << ") over "
                << c.training->average_updates << " steps; resume from the run's latest.safetensors\n";
    else if (c.training->average_updates >= 0)
      std::cout << "  average     --average " << average << " over " << c.training->average_updates
                << " steps, kept beside the weights (average.* tensors)\n";
    const std::string credit = c.training->options.value("credit", "bptt");
    if (credit != "bptt")
      std::cout << "  credit      --credit " << credit << ", its carried state kept to resume (credit.* tensors)\n";
  } else {
    std::cout << "  training    none (weights only)\n";
  }
  return 0;
}

}  // namespace bptt::cli
