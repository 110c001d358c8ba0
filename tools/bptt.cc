// bptt: train, sample, evaluate and inspect recurrent models (character-level language models
// and the long-lag tasks), and measure how their gradients decay over timesteps.
#include <boost/program_options/errors.hpp>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>

#include "bptt/error.h"
#include "bptt/version.h"
#include "commands.h"

namespace {

using bptt::cli::Command;

constexpr Command kCommands[] = {
    {"train", bptt::cli::Train, "train a model on a text corpus"},
    {"sample", bptt::cli::Sample, "generate text from a checkpoint"},
    {"eval", bptt::cli::Eval, "nats, bits per character and perplexity of a checkpoint on a text file"},
    {"inspect", bptt::cli::Inspect, "show a checkpoint's configuration, vocabulary and metrics"},
    {"tokenize", bptt::cli::Tokenize, "build and show the vocabulary of a corpus"},
    {"decay", bptt::cli::Decay, "measure how gradients decay or explode over timesteps"},
    {"plot", bptt::cli::Plot, "draw the training curves of one or more runs (SVG, and PNG)"},
    {"gradcheck", bptt::cli::Gradcheck, "backpropagated gradients against central differences, and what each costs"},
    {"credit", bptt::cli::Credit, "online gradient algorithms (RTRL, UORO, SnAp-1, RFLO, e-prop) against exact BPTT"},
    {"task", bptt::cli::Task, "train and score a model on a long-lag experiment (adding, temporal order, copy)"},
    {"predict", bptt::cli::Predict, "what a model trained on sequences (train --data) predicts for new ones"},
    {"forecast", bptt::cli::Forecast, "continue a series with a forecasting model (train --head forecast)"},
};

// An exception's message on one line.
std::string OneLine(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

void Usage(std::ostream& out) {
  out << "usage: bptt COMMAND [options]   (bptt COMMAND --help for its options; bptt --version)\n\ncommands:\n";
  for (const auto& c : kCommands) out << "  " << c.name << std::string(10 - c.name.size(), ' ') << c.help << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "version") == 0)) {
    std::cout << bptt::VersionText();
    return 0;
  }
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    Usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 1 : 0;
  }
  const std::string_view name = argv[1];
  if (name == "completion") {
    try {
      return bptt::cli::Completion(argc - 1, argv + 1, kCommands);
    } catch (const std::exception& e) {
      std::cerr << "bptt completion: " << OneLine(e.what()) << "\n";
      return 1;
    }
  }
  for (const auto& c : kCommands) {
    if (c.name != name) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const bptt::Error& e) {
      std::cerr << "bptt " << name << ": " << OneLine(e.what()) << "\n";
    } catch (const boost::program_options::error& e) {
      std::cerr << "bptt " << name << ": " << OneLine(e.what()) << " (see bptt " << name << " --help)\n";
    } catch (const std::bad_alloc&) {
      std::cerr << "bptt " << name << ": out of memory\n";
    } catch (const std::filesystem::filesystem_error& e) {
      // "filesystem error: cannot create directories: Not a directory [/dev/null/x]"
      std::cerr << "bptt " << name << ": " << OneLine(e.what()) << "\n";
    } catch (const std::exception& e) {
      // Anything else is a bptt bug: still one line and a non-zero exit, never an abort.
      std::cerr << "bptt " << name << ": internal error: " << OneLine(e.what()) << "\n";
    } catch (...) {
      std::cerr << "bptt " << name << ": internal error: an unknown exception\n";
    }
    return 1;
  }
  std::cerr << "bptt: unknown command '" << name << "' (commands:";
  for (const auto& c : kCommands) std::cerr << " " << c.name;
  std::cerr << ")\n";
  return 1;
}
