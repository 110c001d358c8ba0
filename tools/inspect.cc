// bptt inspect: a checkpoint's configuration, vocabulary, size, step and metrics.
#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "commands.h"

namespace po = boost::program_options;

namespace bptt::cli {

namespace {

// Ids of the `n` most frequent symbols, most frequent first (ties: lower id).
std::vector<int32_t> MostFrequent(const Vocab& vocab, size_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(vocab.size()));
  std::iota(ids.begin(), ids.end(), 0);
  n = std::min(n, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(), [&vocab](int32_t a, int32_t b) {
    return vocab.count(a) > vocab.count(b) || (vocab.count(a) == vocab.count(b) && a < b);
  });
  ids.resize(n);
  return ids;
}

}  // namespace

int Inspect(int argc, char** argv) {
  std::string path;
  bool json = false;
  size_t shown = 12;
  po::options_description options("bptt inspect CHECKPOINT [options]");
  options.add_options()
      ("json", po::bool_switch(&json), "print one JSON object instead of text")
      ("symbols", po::value(&shown)->default_value(shown), "most frequent symbols to show")
      ("help", "show this help");
  po::options_description hidden;
  hidden.add_options()("checkpoint", po::value(&path), "checkpoint file (.safetensors)");
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  if (path.empty()) throw Error("missing CHECKPOINT (see bptt inspect --help)");

  const Checkpoint c = LoadCheckpoint(path);
  if (!c.checksum_verified) std::cerr << "bptt inspect: " << path << " has no checksum; loaded unverified\n";
  const Vocab& vocab = c.vocab;
  const ModelConfig& m = c.config;
  const std::vector<int32_t> top = MostFrequent(vocab, shown);

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
        {"checksum_verified", c.checksum_verified},
        {"metrics", c.metrics},
        {"training", nullptr}};
    if (c.training)
      out["training"] = {{"epoch", c.training->epoch}, {"chunk", c.training->chunk},
                         {"best_val_loss", c.training->best_val_loss}, {"options", c.training->options}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }

  std::cout << path << "\n"
            << "  model       " << m.cell->name << ", " << m.layers << " layer" << (m.layers == 1 ? "" : "s") << " of "
            << m.hidden_size << " hidden units, "
            << (m.dense_input()      ? "dense input of " + std::to_string(m.input_size)
                : m.embed_size > 0 ? "embedding of " + std::to_string(m.embed_size)
                                   : std::string("one-hot input"))
            << ", dropout " << m.dropout << ", " << HeadName(m.head) << " head of " << m.output_size << "\n"
            << "  parameters  " << c.params.Count() << "\n"
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
  } else {
    std::cout << "  training    none (weights only)\n";
  }
  return 0;
}

}  // namespace bptt::cli
