// What the Python module's functions share: values between Python and JSON, the keywords that
// are the rows of an option table (options.h), and computations that run without the GIL yet
// stop at Ctrl-C. module.cc and sequences.cc build the module's functions from them.
//
//   nlohmann::json given = GivenKeywords(SampleOptionSpecs(), kAnyCommand, kwargs, {}, "Model.sample");
//   SampleOptions o = ApplyGiven(SampleOptionSpecs(), kAnyCommand, given, SampleOptions());
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/options.h"
#include "bptt/trainer.h"

namespace bptt::python {

namespace py = pybind11;

// Text from the library as str; bytes that are not UTF-8 (a byte vocabulary's symbols) are
// replaced with U+FFFD when `replace`, else returned as bytes.
inline py::object Text(const std::string& s, bool replace = false) {
  PyObject* str = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), replace ? "replace" : nullptr);
  if (str != nullptr) return py::reinterpret_steal<py::object>(str);
  PyErr_Clear();
  return py::bytes(s);
}

inline py::object ToPython(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return Text(j.get_ref<const std::string&>(), true);
    case nlohmann::json::value_t::array: {
      py::list out;
      for (const auto& item : j) out.append(ToPython(item));
      return out;
    }
    case nlohmann::json::value_t::object: {
      py::dict out;
      for (const auto& [key, value] : j.items()) out[py::str(key)] = ToPython(value);
      return out;
    }
    default: return py::none();
  }
}

// A Python value as JSON: None, bool, int, float, str, os.PathLike (its path), lists, tuples
// and dicts of them; NumPy scalars by their __index__ or __float__.
inline nlohmann::json ToJson(py::handle h, const std::string& what) {
  if (h.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h)) {
    try {
      return h.cast<int64_t>();
    } catch (const py::cast_error&) {
      return h.cast<uint64_t>();  // above INT64_MAX (a seed); below 0 or too large, cast_error again
    }
  }
  if (py::isinstance<py::float_>(h)) return h.cast<double>();
  if (py::isinstance<py::str>(h)) return h.cast<std::string>();
  if (py::hasattr(h, "__fspath__")) return py::module_::import("os").attr("fspath")(h).cast<std::string>();
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    nlohmann::json out = nlohmann::json::array();
    for (py::handle item : h) out.push_back(ToJson(item, what));
    return out;
  }
  if (py::isinstance<py::dict>(h)) {
    nlohmann::json out = nlohmann::json::object();
    for (auto [key, value] : h.cast<py::dict>()) out[py::str(key).cast<std::string>()] = ToJson(value, what);
    return out;
  }
  if (py::hasattr(h, "__index__")) return py::int_(py::reinterpret_borrow<py::object>(h)).cast<int64_t>();
  if (py::hasattr(h, "__float__")) return py::float_(py::reinterpret_borrow<py::object>(h)).cast<double>();
  throw Error(what + " cannot take a " + py::str(py::type::of(h).attr("__name__")).cast<std::string>());
}

// A list of strings from one string (or path), a comma-separated string when `split`, or an
// iterable of them.
inline std::vector<std::string> Strings(py::handle h, bool split) {
  std::vector<std::string> out;
  if (h.is_none()) return out;
  if (py::isinstance<py::str>(h) || py::hasattr(h, "__fspath__")) {
    const std::string s = py::module_::import("os").attr("fspath")(h).cast<std::string>();
    if (!split) return {s};
    size_t start = 0;
    while (start <= s.size()) {
      const size_t comma = std::min(s.find(',', start), s.size());
      if (comma > start) out.push_back(s.substr(start, comma - start));
      start = comma + 1;
    }
    return out;
  }
  for (py::handle item : h) out.push_back(py::module_::import("os").attr("fspath")(item).cast<std::string>());
  return out;
}

// Discards what is written to it (quiet runs).
inline std::ostream& NullStream() {
  static std::ostream null(nullptr);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C during a computation that runs without the GIL.

// Thrown through the library to abandon its computation once a signal handler has raised.
struct Interrupted {};

// Runs `compute` without the GIL, with Python's signal handlers run from its between_chunks
// hook at most every 50 ms: when one raises (Ctrl-C's KeyboardInterrupt), the computation is
// abandoned and the handler's exception raised here, the GIL held again.
class WithoutGil {
 public:
  template <typename Compute>
  auto Run(Compute&& compute) {
    try {
      py::gil_scoped_release release;
      return compute(Hook());
    } catch (const Interrupted&) {
    }
    throw std::move(*raised_);
  }

 private:
  std::function<void()> Hook() {
    return [this] {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_check_ < std::chrono::milliseconds(50)) return;
      last_check_ = now;
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() == 0) return;
      raised_.emplace();  // takes the handler's exception
      throw Interrupted();
    };
  }

  std::chrono::steady_clock::time_point last_check_ = std::chrono::steady_clock::now();
  std::optional<py::error_already_set> raised_;
};

// ---------------------------------------------------------------------------------------------
// Keywords: the rows of an option table, '-' written '_'.

// The JSON value a row takes from a Python value, as the command line's parser makes it from
// text: a switch from a bool (a switch that turns a setting off, such as no_normalize, stores
// its negation), a list of strings from a string, a path or an iterable of them, anything else
// by ToJson. The row's setter then checks the value as it checks the flag's.
template <typename Options>
nlohmann::json KeywordValue(const OptionSpec<Options>& spec, py::handle value) {
  const std::string what = "--" + std::string(spec.flag);
  switch (spec.kind) {
    case OptionKind::kSwitchOff: {
      const nlohmann::json j = ToJson(value, what);
      return j.is_boolean() ? nlohmann::json(!j.get<bool>()) : j;
    }
    case OptionKind::kTexts: return Strings(value, false);
    default: return ToJson(value, what);
  }
}

// The options given as keywords, as JSON by flag (what ApplyGiven takes): each keyword must be
// a row of `command` in `specs`, except the function's own keywords in `own`; None is "not
// given".
template <typename Options>
nlohmann::json GivenKeywords(std::span<const OptionSpec<Options>> specs, unsigned command, const py::kwargs& kwargs,
                             const std::set<std::string>& own, const std::string& function) {
  nlohmann::json given = nlohmann::json::object();
  for (auto [key, value] : kwargs) {
    const std::string name = key.template cast<std::string>();
    if (value.is_none() || own.count(name)) continue;
    const OptionSpec<Options>* found = nullptr;
    for (const auto& spec : specs)
      if ((spec.commands & command) != 0 && OptionKeyword(spec.flag) == name) found = &spec;
    if (found == nullptr)
      throw Error("unrecognised option '" + name + "' of " + function + " (" + function + ".__doc__ lists them)");
    given[std::string(found->flag)] = KeywordValue(*found, value);
  }
  return given;
}

// A keyword's default as Python writes it: a switch False, an unset value None.
template <typename Options>
std::string KeywordDefault(const OptionSpec<Options>& spec, const Options& defaults) {
  if (spec.kind == OptionKind::kSwitch || spec.kind == OptionKind::kSwitchOff) return "False";
  if (spec.kind == OptionKind::kTexts) return "[]";
  return py::repr(ToPython(spec.get(defaults))).template cast<std::string>();
}

// "name(*, length=500, ...)": the signature line of a function of the table's keywords, with
// the function's own keywords first.
template <typename Options>
std::string KeywordSignature(const std::string& name, const std::string& own, std::span<const OptionSpec<Options>> specs,
                             unsigned command, const Options& defaults) {
  std::string line = name + "(" + own;
  for (const auto& spec : specs) {
    if ((spec.commands & command) == 0) continue;
    line += ", " + OptionKeyword(spec.flag) + "=" + KeywordDefault(spec, defaults);
  }
  return line + ")";
}

// The table's keywords, a line each: name = default: help.
template <typename Options>
std::string KeywordList(std::span<const OptionSpec<Options>> specs, unsigned command, const Options& defaults) {
  std::string doc;
  for (const auto& spec : specs) {
    if ((spec.commands & command) == 0) continue;
    doc += "  " + OptionKeyword(spec.flag) + " = " + KeywordDefault(spec, defaults) + ": " + std::string(spec.help) +
           "\n";
  }
  return doc;
}

// A keyword that is not an option, or None when it was not given (or given as None).
inline py::object Own(const py::kwargs& kwargs, const char* name) {
  if (!kwargs.contains(name)) return py::none();
  return py::reinterpret_borrow<py::object>(kwargs[name]);
}

// What a Python training call checks between steps: the progress callback (progress(metrics)
// returning False stops the run), and Python's signal handlers (Ctrl-C raises KeyboardInterrupt
// there), at most every 50 ms. Either one raising stops the run, which saves
// latest.safetensors; RethrowIfRaised raises the exception again once the run has ended.
// Made with the GIL held; hooks() refers to this object, which therefore stays where it is made.
class PythonTrainHooks {
 public:
  explicit PythonTrainHooks(py::object progress) : progress_(std::move(progress)) {
    if (!progress_.is_none())
      hooks_.progress = [this](const nlohmann::json& metrics) {
        py::gil_scoped_acquire gil;
        if (raised_) return;
        try {
          if (progress_(ToPython(metrics)).is(py::bool_(false))) stop_ = true;
        } catch (py::error_already_set& e) {
          raised_ = std::move(e);
          stop_ = true;
        }
      };
    hooks_.stop = [this] {
      if (stop_) return true;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_check_ < std::chrono::milliseconds(50)) return false;
      last_check_ = now;
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) {
        raised_.emplace();
        stop_ = true;
      }
      return stop_;
    };
  }
  PythonTrainHooks(const PythonTrainHooks&) = delete;
  PythonTrainHooks& operator=(const PythonTrainHooks&) = delete;

  const TrainHooks& hooks() const { return hooks_; }
  void RethrowIfRaised() {
    if (raised_) throw std::move(*raised_);
  }

 private:
  py::object progress_;
  std::optional<py::error_already_set> raised_;
  bool stop_ = false;
  std::chrono::steady_clock::time_point last_check_ = std::chrono::steady_clock::now();
  TrainHooks hooks_;
};

}  // namespace bptt::python
