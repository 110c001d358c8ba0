// The command line of a bptt command, made from its option table (bptt/options.h): --help lists
// every option of the command by group with its default, and the flags given are parsed into
// their JSON values, which the command applies to its options struct through ApplyGiven (or,
// for --resume, hands to the library to apply by each option's resume rule). Arguments without
// a flag (a checkpoint, a file) are declared by name.
//
//   CommandLine<SampleOptions> cli("bptt sample CHECKPOINT [options]", SampleOptionSpecs(), kAnyCommand,
//                                  SampleOptions());
//   cli.Argument("checkpoint", "checkpoint file (.safetensors)");
//   if (!cli.ParseOrShowHelp(argc, argv)) return 0;   // --help printed
//   SampleOptions o = cli.Apply(SampleOptions());
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bptt/options.h"

namespace bptt::cli {

namespace po = boost::program_options;

template <typename Options>
class CommandLine {
 public:
  // `specs` must outlive the command line (the tables are static).
  CommandLine(const std::string& usage, std::span<const OptionSpec<Options>> specs, unsigned command,
              const Options& defaults)
      : all_(usage), specs_(specs), command_(command) {
    std::vector<std::string> order;
    for (const auto& spec : specs) {
      if ((spec.commands & command) == 0) continue;
      const std::string group(spec.group);
      if (!groups_.count(group)) {
        order.push_back(group);
        groups_.emplace(group, po::options_description(group));
      }
      po::options_description& g = groups_.at(group);
      const std::string flag(spec.flag);
      const std::string help =
          std::string(spec.help) + (spec.on_resume == OnResume::kChanges ? " [may change on --resume]" : "");
      switch (spec.kind) {
        case OptionKind::kSwitch:
        case OptionKind::kSwitchOff:
          g.add_options()(flag.c_str(), po::bool_switch(), help.c_str());
          break;
        case OptionKind::kTexts:
          g.add_options()(flag.c_str(), po::value<std::vector<std::string>>()->multitoken(), help.c_str());
          break;
        default: {
          const nlohmann::json value = spec.get(defaults);
          if (value.is_null() || value == "")  // unset by default: no default to show
            g.add_options()(flag.c_str(), po::value<std::string>(), help.c_str());
          else
            g.add_options()(flag.c_str(), po::value<std::string>()->default_value(OptionText(value)), help.c_str());
        }
      }
    }
    for (const std::string& group : order) all_.add(groups_.at(group));
  }

  // Flags that are not options of the table (--help, --resume, positional arguments).
  void Add(const po::options_description& extra) { all_.add(extra); }
  void AddHidden(const po::options_description& hidden) { hidden_.add(hidden); }
  void Positional(const po::positional_options_description& positional) { positional_ = positional; }

  // An argument without a flag, NAME on the usage line: up to `count` of them (-1 = any number),
  // in the order the Argument calls declare them.
  void Argument(const std::string& name, const std::string& help, int count = 1) {
    hidden_.add_options()(name.c_str(), po::value<std::vector<std::string>>(), help.c_str());
    positional_.add(name.c_str(), count);
  }
  // The values of an argument (empty when none was given), or its first value ("" when none).
  std::vector<std::string> Arguments(const std::string& name) const {
    return vm_.count(name) ? vm_[name].as<std::vector<std::string>>() : std::vector<std::string>();
  }
  std::string Argument(const std::string& name) const {
    const std::vector<std::string> values = Arguments(name);
    return values.empty() ? std::string() : values.front();
  }

  // Text printed after the options by --help.
  void Epilog(std::string text) { epilog_ = std::move(text); }

  void Parse(int argc, char** argv) {
    po::options_description everything;
    everything.add(all_).add(hidden_);
    po::store(po::command_line_parser(argc, argv).options(everything).positional(positional_).run(), vm_);
    po::notify(vm_);
    for (const auto& spec : specs_) {
      if ((spec.commands & command_) == 0) continue;
      const std::string flag(spec.flag);
      if (!vm_.count(flag) || vm_[flag].defaulted()) continue;
      switch (spec.kind) {
        case OptionKind::kSwitch:
        case OptionKind::kSwitchOff:
          if (vm_[flag].as<bool>()) given_[flag] = ParseOptionText(spec.kind, spec.flag, "");
          break;
        case OptionKind::kTexts:
          given_[flag] = vm_[flag].as<std::vector<std::string>>();
          break;
        default:
          given_[flag] = ParseOptionText(spec.kind, spec.flag, vm_[flag].as<std::string>());
      }
    }
  }

  // Parse with a --help of its own (unless an added description has one): with --help, the
  // help is printed on stdout and false returned.
  bool ParseOrShowHelp(int argc, char** argv) {
    if (all_.find_nothrow("help", false) == nullptr) {
      po::options_description help("Help");
      help.add_options()("help", "show this help");
      all_.add(help);
    }
    Parse(argc, argv);
    if (!vm_.count("help")) return true;
    std::cout << all_ << "\n";
    if (!epilog_.empty()) std::cout << epilog_ << "\n";
    return false;
  }

  // The options given on the command line, as JSON by flag.
  const nlohmann::json& given() const { return given_; }
  bool Given(const std::string& flag) const { return given_.contains(flag); }
  const po::variables_map& vm() const { return vm_; }
  const po::options_description& help() const { return all_; }

  // `options` with every given option applied (ApplyGiven: a given option that does not apply is
  // refused).
  Options Apply(Options options) const { return ApplyGiven(specs_, command_, given_, std::move(options)); }

 private:
  po::options_description all_;
  po::options_description hidden_;
  po::positional_options_description positional_;
  std::map<std::string, po::options_description> groups_;
  std::span<const OptionSpec<Options>> specs_;
  unsigned command_;
  std::string epilog_;
  po::variables_map vm_;
  nlohmann::json given_ = nlohmann::json::object();
};

}  // namespace bptt::cli
