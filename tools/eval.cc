// bptt eval: nats per symbol, bits per symbol and perplexity of a checkpoint on a text file.
#include <boost/program_options.hpp>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "commands.h"
#include "sequence_cli.h"

namespace po = boost::program_options;

namespace bptt::cli {

int Eval(int argc, char** argv) {
  if (NamesSequenceModel(argc, argv)) return EvalSequences(argc, argv);
  std::string checkpoint, file;
  EvalOptions o;
  bool json = false;
  std::string precision;
  po::options_description options("bptt eval CHECKPOINT FILE [options]");
  options.add_options()
      ("json", po::bool_switch(&json), "print one JSON object: nats_per_symbol, bpc, perplexity, symbols, unknown")
      ("batch", po::value(&o.batch)->default_value(o.batch),
       "streams evaluated side by side (B). 1: the whole file as one stream, the loss papers and PyTorch report; "
       "N > 1: N streams each from the zero state, faster and a little above it (the output says so)")
      ("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "timesteps per chunk (T); the state is carried across chunks")
      ("threads", po::value(&o.threads)->default_value(o.threads), "threads for the products (0 = every core; with --precision, chosen as it runs as in bptt sample)")
      ("precision", po::value(&precision),
       "score as `bptt sample --precision` runs: one stream, one symbol at a time, with fp32, bf16 or int8 "
       "products (ignores --seq-len); compare the three to see what a reduced precision costs")
      ("help", "show this help");
  po::options_description hidden;
  hidden.add_options()
      ("checkpoint", po::value(&checkpoint), "checkpoint file (.safetensors)")
      ("file", po::value(&file), "text file to evaluate");
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("checkpoint", 1).add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << options << "\nSymbols of FILE that the checkpoint's vocabulary lacks are left out and counted.\n";
    return 0;
  }
  if (checkpoint.empty() || file.empty()) throw Error("missing CHECKPOINT or FILE (see bptt eval --help)");
  if (!precision.empty()) o.precision = ParsePrecision(precision, "--precision");
  o.Validate();

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
  std::cout << std::fixed << std::setprecision(4) << file << ": " << r.symbols << " symbols scored (" << r.method << ")\n"
            << "  nats per symbol  " << r.nats_per_symbol << "\n"
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
