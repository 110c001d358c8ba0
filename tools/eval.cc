// bptt eval: nats per symbol, bits per symbol and perplexity of a language model on a text file,
// or the scores of a model trained on sequences (bptt train --data) on data read as its training
// data was; its options are EvalOptionSpecs(), the kEvalCommand rows of PredictOptionSpecs() and
// --json.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/sequences.h"
#include "commands.h"
#include "options_cli.h"
#include "sequence_cli.h"

namespace bptt::cli {

namespace {

// The options of `bptt eval`: a language model's evaluation (EvalOptionSpecs), a sequence
// model's (the kEvalCommand rows of PredictOptionSpecs), and how to print. Once the checkpoint
// names its kind, the other kind's options are refused.
struct EvalCommand {
  EvalOptions eval;
  PredictOptions sequences;
  bool json = false;
  std::optional<bool> sequence_model;  // what CHECKPOINT holds, once known
};

std::vector<OptionSpec<EvalCommand>> Specs() {
  using E = EvalCommand;
  std::vector<OptionSpec<E>> specs;
  for (auto& spec : Nest<E>(EvalOptionSpecs(), kAnyCommand, "", [](E& e) -> auto& { return e.eval; })) {
    if (spec.flag == "seq-len" || spec.flag == "precision")
      spec = Restrict(std::move(spec), [](const E& e) -> std::string {
        return e.sequence_model.value_or(false) ? "applies to a language model; CHECKPOINT was trained on sequences"
                                                : "";
      });
    specs.push_back(std::move(spec));
  }
  std::vector<OptionSpec<PredictOptions>> sequence_rows;
  for (const auto& spec : PredictOptionSpecs())
    if ((spec.commands & kEvalCommand) != 0) sequence_rows.push_back(spec);
  for (auto& spec : Nest<E>(std::span<const OptionSpec<PredictOptions>>(sequence_rows), kAnyCommand, "",
                            [](E& e) -> auto& { return e.sequences; }))
    specs.push_back(Restrict(std::move(spec), [](const E& e) -> std::string {
      return e.sequence_model.value_or(true) ? "" : "applies to a model trained on sequences (bptt train --data)";
    }));
  specs.push_back(Field<E>(kAnyCommand, "json", "", "Output",
                           "print one JSON object: nats_per_symbol, bpc, perplexity, symbols, unknown, streams, method "
                           "(with --dynamic also static_nats_per_symbol, static_bpc, statistics_symbols; a sequence "
                           "model: its scores)",
                           OnResume::kNone, [](E& e) -> auto& { return e.json; }));
  return specs;
}

}  // namespace

int Eval(int argc, char** argv) {
  static const std::vector<OptionSpec<EvalCommand>> specs = Specs();
  CommandLine<EvalCommand> cli("bptt eval CHECKPOINT FILE [options]", specs, kAnyCommand, EvalCommand());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  cli.Argument("file", "text file to evaluate (a sequence model: its data)");
  cli.Epilog(
      "Symbols of FILE that the checkpoint's vocabulary lacks are left out and counted.\n"
      "A model trained on sequences (bptt train --data) reads FILE as its training data was read and reports\n"
      "accuracy, per-class recall and the confusion matrix, MSE/MAE/R^2, or a forecast's MSE/MAE/MASE beside the\n"
      "seasonal-naive forecast's; --batch is then the sequences run at a time (256 when not given).");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string checkpoint = cli.Argument("checkpoint"), file = cli.Argument("file");
  if (checkpoint.empty() || file.empty()) throw Error("missing CHECKPOINT or FILE (see bptt eval --help)");
  EvalCommand known;
  known.sequence_model = IsSequenceCheckpoint(checkpoint);
  const EvalCommand command = cli.Apply(known);
  if (*command.sequence_model) {
    PredictOptions o = command.sequences;
    o.threads = command.eval.threads;
    if (cli.Given("batch")) o.batch = command.eval.batch;
    o.Validate();
    return EvalSequences(checkpoint, file, o, command.json);
  }
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
