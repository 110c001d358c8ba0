// Options: every option of a bptt command declared once — its flag, help, default, JSON key,
// what `bptt train --resume` does with it and when it applies — in a table of OptionSpec rows.
// That one table drives the command line (tools/options_cli.h builds --help and parses the
// flags from it, and the bash completion and man pages are made from that --help), the Python
// module's keywords (python/module.cc), the JSON a checkpoint stores (ToJson / FromJson) and the
// resume rules, so no option can be declared in one place and forgotten in another.
//
// A value travels as JSON between them: the command line parses text into the option's JSON
// type, a Python keyword becomes its JSON value, and both reach the options struct through the
// row's setter (ApplyGiven), which refuses a value of the wrong type, out of range or not finite
// with a one-line error naming the flag. An option's default is whatever the options struct
// holds before anything is applied, so defaults live in the struct's member initialisers (or a
// command's own defaults function) only. A row may say when it does not apply (the mode another
// option chooses); ApplyGiven then refuses it, so no given flag is silently ignored.
//
//   for (const OptionSpec<TrainOptions>& spec : TrainOptionSpecs()) ...
//   nlohmann::json j = ToJson(TrainOptionSpecs(), options);
//   TrainOptions o = FromJson(TrainOptionSpecs(), j, TrainOptions(), "checkpoint.safetensors");
//   SampleOptions s = ApplyGiven(SampleOptionSpecs(), kAnyCommand, {{"top-k", 5}}, SampleOptions());
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
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
  kNumber,   // floating point (finite)
  kSwitch,   // a flag without a value; true when given
  kSwitchOff,  // a flag without a value that turns a setting off: false when given (--no-normalize)
  kText,     // a string (names, choices, paths, comma-separated lists)
  kTexts,    // a list of strings (repeatable / several tokens)
};

// What `--resume` does with an option given on its command line.
enum class OnResume {
  kFixed,   // part of the run (model, data, batch, seed, ...): a different value is refused
  kChanges, // taken: limits, threads, learning rate, clipping, logging, divergence handling
  kNone,    // not a training option (or not stored): refused with --resume
};

// OptionSpec::commands of a table that serves one command: every row is taken.
inline constexpr unsigned kAnyCommand = ~0u;

template <typename Options>
struct OptionSpec {
  unsigned commands;       // the commands that take it: a bit per command, defined by the table
  std::string_view flag;   // "lr" for --lr
  std::string key;         // its place in the stored JSON: "lr", "model.hidden_size"; "" = not stored
  std::string_view group;  // the --help section
  std::string_view help;
  OptionKind kind;
  OnResume on_resume;
  std::function<nlohmann::json(const Options&)> get;  // null for an optional value not set
  // Throws bptt::Error naming --flag when the value has the wrong type, is out of range, is not
  // finite or is not a valid choice.
  std::function<void(Options&, const nlohmann::json&)> set;
  // Why the option would be ignored with these options (another option's mode makes it
  // meaningless: "describes a fresh model; a.safetensors has its own"), or "" when it applies.
  // Empty: it always applies. ApplyGiven refuses a given option that does not apply.
  std::function<std::string(const Options&)> inapplicable = {};
};

// The option's text on the command line as its JSON value; throws bptt::Error naming --flag
// ("--hidden must be an integer, got 'lots'").
nlohmann::json ParseOptionText(OptionKind kind, std::string_view flag, const std::string& text);
// The JSON value as command-line text (for --help's defaults).
std::string OptionText(const nlohmann::json& value);
// The Python keyword of a flag: '-' written '_' ("top-k" -> "top_k").
std::string OptionKeyword(std::string_view flag);

// The most threads a command takes: a larger --threads is a mistake, not a machine.
inline constexpr int kMaxThreads = 1024;
// Throws bptt::Error "--threads must be in [min, 1024], got N" (min: 0 where 0 chooses for you).
void CheckThreads(int64_t threads, int min);

namespace options_detail {

template <typename T>
struct Optional : std::false_type {
  using type = T;
};
template <typename T>
struct Optional<std::optional<T>> : std::true_type {
  using type = T;
};

template <typename T>
constexpr OptionKind KindOf() {
  if constexpr (std::is_same_v<T, bool>) return OptionKind::kSwitch;
  else if constexpr (std::is_integral_v<T>) return OptionKind::kInt;
  else if constexpr (std::is_floating_point_v<T>) return OptionKind::kNumber;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return OptionKind::kTexts;
  else return OptionKind::kText;
}

inline std::string Flag(std::string_view flag) { return "--" + std::string(flag); }

// `j` as a T, or bptt::Error naming --flag.
template <typename T>
T Value(const nlohmann::json& j, std::string_view flag) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) throw Error(Flag(flag) + " must be true or false, got " + j.dump());
    return j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    const auto out_of_range = [&] {
      return Error(Flag(flag) + " must be an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                   std::to_string(std::numeric_limits<T>::max()) + "], got " + j.dump());
    };
    if (!j.is_number_integer()) throw Error(Flag(flag) + " must be an integer, got " + j.dump());
    if (j.is_number_unsigned()) {
      const uint64_t v = j.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) throw out_of_range();
      return static_cast<T>(v);
    }
    const int64_t v = j.get<int64_t>();
    if (v < 0 && std::is_unsigned_v<T>) throw out_of_range();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
      throw out_of_range();
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) throw Error(Flag(flag) + " must be a number, got " + j.dump());
    const double v = j.get<double>();
    if (!std::isfinite(v)) throw Error(Flag(flag) + " must be a finite number, got " + std::to_string(v));
    return static_cast<T>(v);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (j.is_string()) return {j.get<std::string>()};
    if (j.is_array() && std::all_of(j.begin(), j.end(), [](const nlohmann::json& v) { return v.is_string(); }))
      return j.get<std::vector<std::string>>();
    throw Error(Flag(flag) + " must be a list of strings, got " + j.dump());
  } else {
    if (!j.is_string()) throw Error(Flag(flag) + " must be a string, got " + j.dump());
    return j.get<std::string>();
  }
}

}  // namespace options_detail

// A row for a plain member, reached through `access` (a function returning a reference to it).
// A std::optional member is unset by JSON null (and shows no default).
template <typename Options, typename Access>
OptionSpec<Options> Field(unsigned commands, std::string_view flag, std::string key, std::string_view group,
                          std::string_view help, OnResume on_resume, Access access) {
  using Member = std::remove_reference_t<decltype(access(std::declval<Options&>()))>;
  using Is = options_detail::Optional<Member>;
  using T = typename Is::type;
  return {commands, flag, key, group, help, options_detail::KindOf<T>(), on_resume,
          [access](const Options& o) -> nlohmann::json {
            const Member& m = access(const_cast<Options&>(o));
            if constexpr (Is::value) {
              if (!m) return nullptr;
              return nlohmann::json(*m);
            } else {
              return nlohmann::json(m);
            }
          },
          [access, flag](Options& o, const nlohmann::json& j) {
            if constexpr (Is::value) {
              if (j.is_null()) {
                access(o).reset();
                return;
              }
            }
            access(o) = options_detail::Value<T>(j, flag);
          }};
}

// A row for a member stored as a name: `name` turns the value into its text, `parse` back
// (throwing bptt::Error naming the flag for an unknown name); a JSON number is parsed as its
// text. A std::optional member is unset by JSON null.
template <typename Options, typename Access, typename Name, typename Parse>
OptionSpec<Options> Choice(unsigned commands, std::string_view flag, std::string key, std::string_view group,
                           std::string_view help, OnResume on_resume, Access access, Name name, Parse parse) {
  using Member = std::remove_reference_t<decltype(access(std::declval<Options&>()))>;
  using Is = options_detail::Optional<Member>;
  return {commands, flag, key, group, help, OptionKind::kText, on_resume,
          [access, name](const Options& o) -> nlohmann::json {
            const Member& m = access(const_cast<Options&>(o));
            if constexpr (Is::value) {
              if (!m) return nullptr;
              return std::string(name(*m));
            } else {
              return std::string(name(m));
            }
          },
          [access, parse, flag](Options& o, const nlohmann::json& j) {
            if constexpr (Is::value) {
              if (j.is_null()) {
                access(o).reset();
                return;
              }
            }
            // A number is read as its text (Python's memory_budget=2**30, checkpoint_steps=8).
            if (!j.is_string() && !j.is_number())
              throw Error(options_detail::Flag(flag) + " must be a name, got " + j.dump());
            access(o) = parse(j.is_string() ? j.get<std::string>() : j.dump(), options_detail::Flag(flag));
          }};
}

// A row for a list of names written as one comma-separated value ("rnn-tanh,lstm"; in JSON also
// an array of names): `name` and `parse` as for Choice, applied to each item. Empty items are
// skipped.
template <typename Options, typename Access, typename Name, typename Parse>
OptionSpec<Options> List(unsigned commands, std::string_view flag, std::string key, std::string_view group,
                         std::string_view help, OnResume on_resume, Access access, Name name, Parse parse) {
  return {commands, flag, key, group, help, OptionKind::kText, on_resume,
          [access, name](const Options& o) -> nlohmann::json {
            std::string text;
            for (const auto& item : access(const_cast<Options&>(o))) {
              if (!text.empty()) text += ',';
              text += std::string_view(name(item));
            }
            return text;
          },
          [access, parse, flag](Options& o, const nlohmann::json& j) {
            std::vector<std::string> names;
            if (j.is_string()) {
              const std::string text = j.get<std::string>();
              for (size_t start = 0; start <= text.size();) {
                const size_t comma = std::min(text.find(',', start), text.size());
                if (comma > start) names.push_back(text.substr(start, comma - start));
                start = comma + 1;
              }
            } else {
              names = options_detail::Value<std::vector<std::string>>(j, flag);
            }
            auto& out = access(o);
            out.clear();
            for (const std::string& item : names) out.push_back(parse(item, options_detail::Flag(flag)));
          }};
}

// A --threads row: an integer in [min, kMaxThreads] (min 0 where 0 lets the command choose).
template <typename Options, typename Access>
OptionSpec<Options> Threads(unsigned commands, std::string key, std::string_view group, std::string_view help,
                            OnResume on_resume, Access access, int min) {
  OptionSpec<Options> spec = Field<Options>(commands, "threads", std::move(key), group, help, on_resume, access);
  spec.set = [set = spec.set, access, min](Options& o, const nlohmann::json& j) {
    set(o, j);
    CheckThreads(access(o), min);
  };
  return spec;
}

// `spec`, refused (besides any condition of its own) when `why_not(options)` says why it does
// not apply: a string, "" when it does.
template <typename Options, typename WhyNot>
OptionSpec<Options> Restrict(OptionSpec<Options> spec, WhyNot why_not) {
  spec.inapplicable = [own = spec.inapplicable, why_not](const Options& o) -> std::string {
    if (own) {
      std::string why = own(o);
      if (!why.empty()) return why;
    }
    return std::string(why_not(o));
  };
  return spec;
}

// The rows of an inner options struct as rows of the outer one that holds it: `access` reaches
// the inner struct, `prefix` goes before each key ("model." + "hidden_size"), and every row is
// taken by `commands`.
template <typename Outer, typename Inner, typename Access>
std::vector<OptionSpec<Outer>> Nest(std::span<const OptionSpec<Inner>> inner, unsigned commands,
                                    const std::string& prefix, Access access) {
  std::vector<OptionSpec<Outer>> out;
  for (const OptionSpec<Inner>& spec : inner) {
    std::function<std::string(const Outer&)> inapplicable;
    if (spec.inapplicable)
      inapplicable = [why = spec.inapplicable, access](const Outer& o) { return why(access(const_cast<Outer&>(o))); };
    out.push_back({commands, spec.flag, spec.key.empty() ? "" : prefix + spec.key, spec.group, spec.help, spec.kind,
                   spec.on_resume,
                   [get = spec.get, access](const Outer& o) { return get(access(const_cast<Outer&>(o))); },
                   [set = spec.set, access](Outer& o, const nlohmann::json& j) { set(access(o), j); },
                   std::move(inapplicable)});
  }
  return out;
}

// The row of `flag` that `command` takes, or nullptr.
template <typename Options>
const OptionSpec<Options>* FindOption(std::span<const OptionSpec<Options>> specs, unsigned command,
                                      std::string_view flag) {
  for (const auto& spec : specs)
    if ((spec.commands & command) != 0 && spec.flag == flag) return &spec;
  return nullptr;
}

// `options` with the given values (JSON by flag, as the command line parses them or the Python
// module converts its keywords) set through their rows, in the table's order; then a given option
// whose row says it does not apply to the result is refused ("--hidden describes a fresh model;
// ..."). A flag that `command` does not take is an error. The command line and the Python
// module both apply options through here, so a value is checked the same way by both.
template <typename Options>
Options ApplyGiven(std::span<const OptionSpec<Options>> specs, unsigned command, const nlohmann::json& given,
                   Options options) {
  if (!given.is_object()) throw Error("the given options are not a JSON object");
  for (const auto& [flag, value] : given.items())
    if (FindOption(specs, command, flag) == nullptr) throw Error("--" + flag + " is not an option of this command");
  for (const auto& spec : specs) {
    const std::string flag(spec.flag);
    if ((spec.commands & command) != 0 && given.contains(flag)) spec.set(options, given.at(flag));
  }
  for (const auto& spec : specs) {
    if ((spec.commands & command) == 0 || !spec.inapplicable || !given.contains(std::string(spec.flag))) continue;
    const std::string why = spec.inapplicable(options);
    if (!why.empty()) throw Error("--" + std::string(spec.flag) + " " + why);
  }
  return options;
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
