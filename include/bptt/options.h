// Options: every option of a bptt command declared once — its flag, help, default, JSON key and
// what `bptt train --resume` does with it — in a table of OptionSpec rows. That one table drives
// the command line (tools/options_cli.h builds --help and parses the flags from it), the JSON a
// checkpoint stores (ToJson / FromJson), and the resume rules (ApplyOnResume), so no option can
// be declared in one place and forgotten in another.
//
// A value travels as JSON between the three: the command line parses text into the option's
// JSON type, the checkpoint stores it, and resume compares stored and given values as JSON. An
// option's default is whatever the options struct holds before anything is applied, so defaults
// live in the struct's member initialisers (or a command's own defaults function) only.
//
//   for (const OptionSpec<TrainOptions>& spec : TrainOptionSpecs()) ...
//   nlohmann::json j = ToJson(TrainOptionSpecs(), options);
//   TrainOptions o = FromJson(TrainOptionSpecs(), j, TrainOptions(), "checkpoint.safetensors");
#pragma once

#include <algorithm>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "bptt/error.h"

namespace bptt {

// The value's type on the command line and in JSON.
enum class OptionKind {
  kInt,      // integer
  kNumber,   // floating point
  kSwitch,   // a flag without a value; true when given
  kSwitchOff,  // a flag without a value that turns a setting off: false when given (--no-normalize)
  kText,     // a string (names, choices, paths)
  kTexts,    // a list of strings (repeatable / several tokens)
};

// What `--resume` does with an option given on its command line.
enum class OnResume {
  kFixed,   // part of the run (model, data, batch, seed, ...): a different value is refused
  kChanges, // taken: limits, threads, learning rate, clipping, logging, divergence handling
  kNone,    // not a training option (or not stored): refused with --resume
};

template <typename Options>
struct OptionSpec {
  unsigned commands;       // the commands that take it: a bit per command, defined by the table
  std::string_view flag;   // "lr" for --lr
  std::string key;         // its place in the stored JSON: "lr", "model.hidden_size"; "" = not stored
  std::string_view group;  // the --help section
  std::string_view help;
  OptionKind kind;
  OnResume on_resume;
  std::function<nlohmann::json(const Options&)> get;
  // Throws bptt::Error naming --flag when the value has the wrong type or is not a valid choice.
  std::function<void(Options&, const nlohmann::json&)> set;
};

// The option's text on the command line as its JSON value; throws bptt::Error naming --flag
// ("--hidden must be an integer, got 'lots'").
nlohmann::json ParseOptionText(OptionKind kind, std::string_view flag, const std::string& text);
// The JSON value as command-line text (for --help's defaults).
std::string OptionText(const nlohmann::json& value);

// A row for a plain member, reached through `access` (a function returning a reference to it).
template <typename Options, typename Access>
OptionSpec<Options> Field(unsigned commands, std::string_view flag, std::string key, std::string_view group,
                          std::string_view help, OnResume on_resume, Access access) {
  using T = std::remove_reference_t<decltype(access(std::declval<Options&>()))>;
  OptionKind kind = OptionKind::kText;
  if constexpr (std::is_same_v<T, bool>) kind = OptionKind::kSwitch;
  else if constexpr (std::is_integral_v<T>) kind = OptionKind::kInt;
  else if constexpr (std::is_floating_point_v<T>) kind = OptionKind::kNumber;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) kind = OptionKind::kTexts;
  return {commands, flag, key, group, help, kind, on_resume,
          [access](const Options& o) { return nlohmann::json(access(const_cast<Options&>(o))); },
          [access, flag](Options& o, const nlohmann::json& j) {
            try {
              if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                if (!j.is_number_integer()) throw Error("");
                if constexpr (std::is_unsigned_v<T>) {
                  if (j.is_number_unsigned()) { access(o) = j.get<T>(); return; }
                  if (j.get<int64_t>() < 0) throw Error("");
                }
                const auto v = j.get<int64_t>();
                if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
                    (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
                  throw Error("");
                access(o) = static_cast<T>(v);
              } else if constexpr (std::is_floating_point_v<T>) {
                if (!j.is_number()) throw Error("");
                access(o) = j.get<T>();
              } else {
                access(o) = j.get<T>();
              }
            } catch (const nlohmann::json::exception&) {
              throw Error("--" + std::string(flag) + " has a value of the wrong type: " + j.dump());
            } catch (const Error&) {
              throw Error("--" + std::string(flag) + " is out of range or of the wrong type: " + j.dump());
            }
          }};
}

// A row for a member stored as a name: `name` turns the value into its text, `parse` back
// (throwing bptt::Error naming the flag for an unknown name).
template <typename Options, typename Access, typename Name, typename Parse>
OptionSpec<Options> Choice(unsigned commands, std::string_view flag, std::string key, std::string_view group,
                           std::string_view help, OnResume on_resume, Access access, Name name, Parse parse) {
  return {commands, flag, key, group, help, OptionKind::kText, on_resume,
          [access, name](const Options& o) { return nlohmann::json(std::string(name(access(const_cast<Options&>(o))))); },
          [access, parse, flag](Options& o, const nlohmann::json& j) {
            if (!j.is_string()) throw Error("--" + std::string(flag) + " must be a name, got " + j.dump());
            access(o) = parse(j.get<std::string>(), "--" + std::string(flag));
          }};
}

// The rows of an inner options struct as rows of the outer one that holds it: `access` reaches
// the inner struct, `prefix` goes before each key ("model." + "hidden_size"), and every row is
// taken by `commands`.
template <typename Outer, typename Inner, typename Access>
std::vector<OptionSpec<Outer>> Nest(std::span<const OptionSpec<Inner>> inner, unsigned commands,
                                    const std::string& prefix, Access access) {
  std::vector<OptionSpec<Outer>> out;
  for (const OptionSpec<Inner>& spec : inner) {
    out.push_back({commands, spec.flag, spec.key.empty() ? "" : prefix + spec.key, spec.group, spec.help, spec.kind,
                   spec.on_resume,
                   [get = spec.get, access](const Outer& o) { return get(access(const_cast<Outer&>(o))); },
                   [set = spec.set, access](Outer& o, const nlohmann::json& j) { set(access(o), j); }});
  }
  return out;
}

// "model.hidden_size" -> the JSON pointer "/model/hidden_size".
nlohmann::json::json_pointer OptionPointer(std::string_view key);
// Every leaf of a JSON object as a dotted key ("model.hidden_size"); arrays are leaves.
std::vector<std::string> LeafKeys(const nlohmann::json& json);

// The stored options: every row with a key, nested by the dots of its key.
template <typename Options>
nlohmann::json ToJson(std::span<const OptionSpec<Options>> specs, const Options& options) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& spec : specs)
    if (!spec.key.empty()) out[OptionPointer(spec.key)] = spec.get(options);
  return out;
}

// Options from stored JSON: each row's key read when present; a key that a newer option added
// and this JSON lacks keeps the row's value in `defaults`. A key no row knows (other than those
// in `derived`: stored for readers, set from the data) is an error, since it would be ignored.
// Errors are one line naming `source`.
template <typename Options>
Options FromJson(std::span<const OptionSpec<Options>> specs, const nlohmann::json& json, Options defaults,
                 const std::string& source, std::span<const std::string_view> derived = {}) {
  if (!json.is_object()) throw Error(source + ": stored options are not a JSON object");
  for (const std::string& key : LeafKeys(json)) {
    bool known = std::find(derived.begin(), derived.end(), key) != derived.end();
    for (const auto& spec : specs) known = known || spec.key == key;
    if (!known) throw Error(source + ": stored options have '" + key + "', which this bptt does not know");
  }
  for (const auto& spec : specs) {
    if (spec.key.empty()) continue;
    const nlohmann::json::json_pointer at = OptionPointer(spec.key);
    if (!json.contains(at)) continue;
    try {
      spec.set(defaults, json.at(at));
    } catch (const Error& e) {
      throw Error(source + ": stored option " + e.what());
    }
  }
  return defaults;
}

}  // namespace bptt
