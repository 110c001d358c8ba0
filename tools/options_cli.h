// The command line of a bptt command, made from its option table (bptt/options.h): --help lists
// every option of the command by group with its default, and the flags given are parsed into
// their JSON values, which the command applies to its options struct (or, for --resume, hands
// to the library to apply by each option's resume rule).
//
//   CommandLine<TrainOptions> cli("bptt train ...", TrainOptionSpecs(), kTrain, TrainOptions());
//   cli.Add(extra_options);            // flags that are not options (--resume, --help)
//   cli.Parse(argc, argv);
//   TrainOptions o = cli.Apply(TrainOptions());
#pragma once

#include <boost/program_options.hpp>
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
  CommandLine(const std::string& usage, std::span<const OptionSpec<Options>> specs, unsigned command,
              const Options& defaults)
      : all_(usage) {
    std::vector<std::string> order;
    for (const auto& spec : specs) {
      if ((spec.commands & command) == 0) continue;
      specs_.push_back(&spec);
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

  void Parse(int argc, char** argv) {
    po::options_description everything;
    everything.add(all_).add(hidden_);
    po::store(po::command_line_parser(argc, argv).options(everything).positional(positional_).run(), vm_);
    po::notify(vm_);
    for (const OptionSpec<Options>* spec : specs_) {
      const std::string flag(spec->flag);
      if (!vm_.count(flag) || vm_[flag].defaulted()) continue;
      switch (spec->kind) {
        case OptionKind::kSwitch:
        case OptionKind::kSwitchOff:
          if (vm_[flag].as<bool>()) given_[flag] = ParseOptionText(spec->kind, spec->flag, "");
          break;
        case OptionKind::kTexts:
          given_[flag] = vm_[flag].as<std::vector<std::string>>();
          break;
        default:
          given_[flag] = ParseOptionText(spec->kind, spec->flag, vm_[flag].as<std::string>());
      }
    }
  }

  // The options given on the command line, as JSON by flag.
  const nlohmann::json& given() const { return given_; }
  bool Given(const std::string& flag) const { return given_.contains(flag); }
  const po::variables_map& vm() const { return vm_; }
  const po::options_description& help() const { return all_; }

  // `options` with every given option applied.
  Options Apply(Options options) const {
    for (const OptionSpec<Options>* spec : specs_)
      if (given_.contains(std::string(spec->flag))) spec->set(options, given_.at(std::string(spec->flag)));
    return options;
  }

 private:
  po::options_description all_;
  po::options_description hidden_;
  po::positional_options_description positional_;
  std::map<std::string, po::options_description> groups_;
  std::vector<const OptionSpec<Options>*> specs_;
  po::variables_map vm_;
  nlohmann::json given_ = nlohmann::json::object();
};

}  // namespace bptt::cli
