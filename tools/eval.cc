// bptt eval: nats per symbol, bits per symbol and perplexity of a checkpoint on a text file; its
// options are EvalOptionSpecs() and --json.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

// The options of `bptt eval`: the evaluation's (EvalOptionSpecs) and how to print.
struct EvalCommand {
  EvalOptions eval;
  bool json = false;
};

std::vector<OptionSpec<EvalCommand>> Specs() {
  using E = EvalCommand;
  std::vector<OptionSpec<E>> specs = Nest<E>(EvalOptionSpecs(), kAnyCommand, "", [](E& e) -> auto& { return e.eval; });
  specs.push_back(Field<E>(kAnyCommand, "json", "", "Output",
                           "print one JSON object: nats_per_symbol, bpc, perplexity, symbols, unknown, streams, method "
                           "(with --dynamic also static_nats_per_symbol, static_bpc, statistics_symbols)",
                           OnResume::kNone, [](E& e) -> auto& { return e.json; }));
  return specs;
}

}  // namespace

int Eval(int argc, char** argv) {
  static const std::vector<OptionSpec<EvalCommand>> specs = Specs();
  CommandLine<EvalCommand> cli("bptt eval CHECKPOINT FILE [options]", specs, kAnyCommand, EvalCommand());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  cli.Argument("file", "text file to evaluate");
  cli.Epilog("Symbols of FILE that the checkpoint's vocabulary lacks are left out and counted.");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string checkpoint = cli.Argument("checkpoint"), file = cli.Argument("file");
  if (checkpoint.empty() || file.empty()) throw Error("missing CHECKPOINT or FILE (see bptt eval --help)");
  const EvalCommand command = cli.Apply(EvalCommand());
  const EvalOptions& o = command.eval;
  const bool json = command.json;
  o.Validate();
  CheckTextFile(file);  // before the (slow) load

  Checkpoint c = LoadCheckpoint(checkpoint);
  if (!c.checksum_verified) std::cerr << "bptt eval: " << checkpoint << " has no checksum; loaded unverified\n";
  if (!c.config.language_model())
    throw Error(checkpoint + ": bptt eval scores text with a language model; this model was trained on a task");
  EncodedFile encoded = EncodeFile(file, c.vocab);
  TextEvaluation r;
  try {
    r = Evaluate(c.config, c.params, c.vocab, std::move(encoded), o);
  } catch (const Error& e) {
    throw Error(file + ": " + e.what());
  }

  if (json) {
    std::cout << EvaluationJson(r).dump() << "\n";
    return 0;
  }
  std::cout << std::fixed << std::setprecision(4) << file << ": " << r.symbols << " symbols scored (" << r.method << ")\n";
  if (r.static_nats_per_symbol)
    std::cout << "  static nats per symbol  " << *r.static_nats_per_symbol << "  (the trained weights)\n"
              << "  dynamic:\n";
  std::cout << "  nats per symbol  " << r.nats_per_symbol << "\n"
            << "  bits per symbol  " << r.bits_per_symbol << "  (BPC)\n"
            << "  perplexity       " << r.perplexity << "\n"
            << "  unknown symbols  " << r.unknown;
  if (r.unknown > 0) {
    std::cout << (c.vocab.unknown_id() >= 0 ? " (scored as <unk>):" : " (left out):");
    for (const std::string& s : r.unknown_symbols) std::cout << " \"" << DisplaySymbol(s) << '"';
    if (r.unknown_symbols.size() == EncodedFile::kMaxListed) std::cout << " ...";
  }
  std::cout << "\n";
  return 0;
}

}  // namespace bptt::cli
