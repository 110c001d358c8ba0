// The bptt Python module: the library's checkpoints, sampling, evaluation, training and
// gradient-decay analysis, with NumPy arrays in and out.
//
//   import bptt
//   m = bptt.load("models/run/best.safetensors")   # Model: m.config, m.vocab, m.tensors()
//   print(m.sample(length=200, temperature=0.8, seed=7))
//   for piece in m.stream(prime="Once", length=50): print(piece, end="")
//   m.eval("held-out text")                         # the keys of `bptt eval --json`
//   bptt.train(corpus="corpus.txt", out="runs/a", hidden=128, max_steps=500, progress=print)
//   bptt.decay(cells=["rnn-tanh", "lstm"], steps=100)
//
// Model.tensors() are views of the model's own parameters (no copies): writing to them changes
// what the next sample or eval computes. Training options are the rows of TrainOptionSpecs(),
// the table the command line is made from: each flag as a keyword with '-' written '_', its
// value set through the row's JSON setter. bptt::Error arrives as bptt.Error with the message
// the command line prints. The GIL is released while the library computes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <unistd.h>
#include <vector>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/options.h"
#include "bptt/sampler.h"
#include "bptt/task.h"
#include "bptt/trainer.h"
#include "bptt/version.h"
#include "sequences.h"

namespace py = pybind11;

namespace bptt::python {

namespace {

// Text from the library as str; bytes that are not UTF-8 (a byte vocabulary's symbols) are
// replaced with U+FFFD when `replace`, else returned as bytes.
py::object Text(const std::string& s, bool replace = false) {
  PyObject* str = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), replace ? "replace" : nullptr);
  if (str != nullptr) return py::reinterpret_steal<py::object>(str);
  PyErr_Clear();
  return py::bytes(s);
}

py::object ToPython(const nlohmann::json& j) {
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
nlohmann::json ToJson(py::handle h, const std::string& what) {
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
std::vector<std::string> Strings(py::handle h, bool split) {
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
std::ostream& NullStream() {
  static std::ostream null(nullptr);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Model: a loaded checkpoint.

class Model {
 public:
  // Loads and verifies the checkpoint; a file without a checksum loads with a UserWarning.
  static std::unique_ptr<Model> Load(const py::object& path) {
    auto model = std::make_unique<Model>(Strings(path, false).at(0));
    if (!model->checkpoint().checksum_verified)
      PyErr_WarnEx(PyExc_UserWarning, (model->path() + " has no checksum; loaded unverified").c_str(), 1);
    return model;
  }

  explicit Model(const std::string& path) : path_(path), checkpoint_(LoadCheckpoint(path)) {}

  const std::string& path() const { return path_; }
  Checkpoint& checkpoint() { return checkpoint_; }

  std::unique_ptr<Sampler> MakeSampler() const {
    return std::make_unique<Sampler>(checkpoint_.config, checkpoint_.params, checkpoint_.vocab);
  }

 private:
  std::string path_;
  Checkpoint checkpoint_;
};

// Defines `name` on Model, taking `bptt sample`'s flags as keywords (SampleOptions' defaults) and
// calling f(model, options) with them validated.
template <typename F>
void DefSampling(py::class_<Model>& model, const char* name, F f, const char* doc) {
  const SampleOptions d;
  model.def(
      name,
      [f](Model& self, int64_t length, double temperature, int top_k, double top_p, std::string prime, uint64_t seed,
          bool argmax, std::string stop, int num, const std::string& precision, int threads) {
        SampleOptions o;
        o.length = length;
        o.temperature = temperature;
        o.top_k = top_k;
        o.top_p = top_p;
        o.prime = std::move(prime);
        o.seed = seed;
        o.argmax = argmax;
        o.stop = std::move(stop);
        o.num = num;
        o.precision = ParsePrecision(precision, "--precision");
        o.threads = threads;
        o.Validate();
        return f(self, o);
      },
      py::kw_only(), py::arg("length") = d.length, py::arg("temperature") = d.temperature, py::arg("top_k") = d.top_k,
      py::arg("top_p") = d.top_p, py::arg("prime") = d.prime, py::arg("seed") = d.seed, py::arg("argmax") = d.argmax,
      py::arg("stop") = d.stop, py::arg("num") = d.num, py::arg("precision") = PrecisionName(d.precision),
      py::arg("threads") = d.threads, doc);
}

// The pieces of Sampler::Next as str. A piece that ends inside a UTF-8 sequence (a byte
// vocabulary's) waits for the bytes that complete it.
class Stream {
 public:
  Stream(std::unique_ptr<Sampler> sampler, const SampleOptions& options) : sampler_(std::move(sampler)) {
    sampler_->Start(options);
  }

  py::object Next() {
    while (true) {
      std::string_view piece;
      bool more;
      {
        py::gil_scoped_release release;
        more = sampler_->Next(&piece);
      }
      if (!more) {
        if (pending_.empty()) throw py::stop_iteration();
        std::string rest;
        rest.swap(pending_);
        return Text(rest, true);
      }
      pending_.append(piece);
      const size_t complete = CompletePrefix(pending_);
      if (complete == 0) continue;
      py::object out = Text(pending_.substr(0, complete), true);
      pending_.erase(0, complete);
      return out;
    }
  }

 private:
  // The length of the longest prefix of `s` that does not end inside a UTF-8 sequence.
  static size_t CompletePrefix(const std::string& s) {
    size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
      const auto c = static_cast<unsigned char>(s[n - back]);
      if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      return need > back ? n - back : n;
    }
    return n;
  }

  std::unique_ptr<Sampler> sampler_;
  std::string pending_;
};

// ---------------------------------------------------------------------------------------------
// Training: keywords are the rows of TrainOptionSpecs().

std::string KeywordOf(std::string_view flag) {
  std::string k(flag);
  for (char& c : k)
    if (c == '-') c = '_';
  return k;
}

// The JSON value a row takes from a Python value, as the command line's parser makes it.
nlohmann::json OptionValue(const OptionSpec<TrainOptions>& spec, py::handle value) {
  const std::string what = "--" + std::string(spec.flag);
  switch (spec.kind) {
    case OptionKind::kSwitch: return py::bool_(py::reinterpret_borrow<py::object>(value)).cast<bool>();
    case OptionKind::kSwitchOff: return !py::bool_(py::reinterpret_borrow<py::object>(value)).cast<bool>();
    case OptionKind::kTexts: return Strings(value, false);
    default: return ToJson(value, what);
  }
}

const char* EndName(TrainEnd end) {
  switch (end) {
    case TrainEnd::kFinished: return "finished";
    case TrainEnd::kSolved: return "solved";
    case TrainEnd::kInterrupted: return "interrupted";
    case TrainEnd::kDiverged: return "diverged";
  }
  return "";
}

py::dict TrainPy(py::kwargs kwargs) {
  py::object progress = py::none(), resume = py::none();
  int trials = 1;
  bool verbose = true;
  std::string task;
  nlohmann::json given = nlohmann::json::object();
  std::vector<std::pair<const OptionSpec<TrainOptions>*, py::object>> values;
  if (kwargs.contains("task")) task = kwargs["task"].cast<std::string>();
  const unsigned command = !task.empty() ? kTaskCommand : kwargs.contains("data") ? kSequenceCommand : kTrainCommand;
  for (auto [key, value] : kwargs) {
    const std::string name = key.cast<std::string>();
    if (name == "task") continue;
    if (name == "progress") { progress = py::reinterpret_borrow<py::object>(value); continue; }
    if (name == "resume") { resume = py::reinterpret_borrow<py::object>(value); continue; }
    if (name == "trials") { trials = value.cast<int>(); continue; }
    if (name == "verbose") { verbose = value.cast<bool>(); continue; }
    const OptionSpec<TrainOptions>* found = nullptr;
    for (const auto& spec : TrainOptionSpecs())
      if ((spec.commands & command) != 0 && KeywordOf(spec.flag) == name) found = &spec;
    if (found == nullptr)
      throw Error("unrecognised option '" + name + "' of bptt " + (task.empty() ? "train" : "task") +
                  " (bptt.train.__doc__ lists them)");
    given[std::string(found->flag)] = OptionValue(*found, value);
  }
  if (!resume.is_none() && !task.empty()) throw Error("task cannot be given with resume (the run has its task)");
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw Error("progress must be callable");

  // Between steps: the progress callback, and Python's signal handlers (Ctrl-C raises
  // KeyboardInterrupt there), at most every 50 ms. Either one raising stops the run, which
  // saves latest.safetensors; the exception is raised again when the run has ended.
  std::optional<py::error_already_set> raised;
  bool stop = false;
  auto last_check = std::chrono::steady_clock::now();
  TrainHooks hooks;
  if (!progress.is_none()) {
    hooks.progress = [&](const nlohmann::json& metrics) {
      py::gil_scoped_acquire gil;
      if (raised) return;
      try {
        const py::object answer = progress(ToPython(metrics));
        if (answer.is(py::bool_(false))) stop = true;
      } catch (py::error_already_set& e) {
        raised = std::move(e);
        stop = true;
      }
    };
  }
  hooks.stop = [&] {
    if (stop) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_check < std::chrono::milliseconds(50)) return false;
    last_check = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      raised.emplace();
      stop = true;
    }
    return stop;
  };

  std::ostream& log = verbose ? std::cerr : NullStream();
  const bool live = verbose && isatty(STDERR_FILENO) != 0;
  TrainResult result;
  if (!resume.is_none()) {
    const std::string dir = Strings(resume, false).at(0);
    py::gil_scoped_release release;
    result = Resume(dir, given, log, live, hooks);
  } else {
    TrainOptions o = task.empty() ? TrainOptions() : TaskDefaults();
    for (const auto& spec : TrainOptionSpecs())
      if (given.contains(spec.flag)) spec.set(o, given.at(std::string(spec.flag)));
    if (!task.empty()) {
      o.task = task;
      if (!given.contains("T")) o.task_length = Task::Make(task)->info().default_T;
    }
    py::gil_scoped_release release;
    result = trials == 1 ? Train(o, log, live, hooks) : TrainTrials(o, trials, log, live, hooks);
  }
  if (result.end == TrainEnd::kInterrupted)
    log << "bptt.train: stopped at step " << result.steps << "; saved "
        << (result.dir / "latest.safetensors").string() << "; resume with bptt.train(resume='" << result.dir.string()
        << "')\n";
  if (raised) throw std::move(*raised);
  if (result.end == TrainEnd::kDiverged) throw Error(result.message);
  py::dict out;
  out["end"] = EndName(result.end);
  out["steps"] = result.steps;
  out["train_loss"] = result.train_loss;
  out["best_val_loss"] = result.best_val_loss > 0 ? py::object(py::float_(result.best_val_loss)) : py::none();
  out["dir"] = result.dir.string();
  out["summary"] = ToPython(result.summary);
  return out;
}

// The training keywords, from the table: name, default and help of each (bptt.train.__doc__).
std::string TrainDoc() {
  std::string doc =
      "train(*, corpus=..., out=..., task=None, resume=None, trials=1, progress=None, verbose=True, **options)\n\n"
      "Trains a model as `bptt train` (a corpus) or `bptt task` (task='adding', ...) does, or continues\n"
      "the run in `resume` (a run directory) with the options that may change. Returns a dict: end\n"
      "('finished', 'solved' or 'interrupted'), steps, train_loss, best_val_loss, dir, summary.\n"
      "progress(metrics) is called with each line of DIR/metrics.jsonl; returning False stops the run\n"
      "(it saves, as Ctrl-C does); an exception it raises, or Ctrl-C's KeyboardInterrupt, stops the run,\n"
      "which saves latest.safetensors, and is raised again. A diverged run raises bptt.Error.\n\n"
      "Options (bptt train / bptt task flags, '-' written '_'; [task] only with task=, [train] only\n"
      "without):\n";
  const TrainOptions train_defaults;
  const TrainOptions task_defaults = TaskDefaults();
  for (const auto& spec : TrainOptionSpecs()) {
    const bool train = (spec.commands & kTrainCommand) != 0, task = (spec.commands & kTaskCommand) != 0;
    doc += "  " + KeywordOf(spec.flag);
    if (spec.kind != OptionKind::kSwitch && spec.kind != OptionKind::kSwitchOff && spec.kind != OptionKind::kTexts)
      doc += " = " + OptionText(spec.get(train ? train_defaults : task_defaults));
    if (train != task) doc += train ? " [train]" : " [task]";
    doc += ": " + std::string(spec.help) + "\n";
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Gradient decay.

py::array_t<double> Doubles(const std::vector<double>& v) { return py::array_t<double>(py::ssize_t(v.size()), v.data()); }

py::dict DecayPy(py::object cells, py::object checkpoints, int hidden, int layers, int embed, py::object init,
                 double init_scale, double forget_bias, uint64_t seed, py::object corpus, const std::string& unit,
                 int symbols, std::optional<int> steps, int batch, int loss_step, int jacobian_lags,
                 int jacobian_batch, int power_iterations, double clip_norm, int threads, py::object out,
                 bool verbose) {
  DecayStudy study;
  study.cells = Strings(cells, true);
  study.checkpoints = Strings(checkpoints, true);
  study.model.hidden_size = hidden;
  study.model.layers = layers;
  study.model.embed_size = embed;
  study.inits = Strings(init, true);
  study.init.scale = init_scale;
  study.init.forget_bias = forget_bias;
  study.seed = seed;
  if (!corpus.is_none()) study.corpus = Strings(corpus, false).at(0);
  const auto parsed_unit = ParseUnit(unit);
  if (!parsed_unit) throw Error("--unit '" + unit + "' is not one of grapheme, codepoint, byte, word");
  study.unit = *parsed_unit;
  study.symbols = symbols;
  study.steps = steps;
  study.batch = batch;
  study.measure.loss_step = loss_step;
  study.measure.jacobian_lags = jacobian_lags;
  study.measure.jacobian_batch = jacobian_batch;
  study.measure.power_iterations = power_iterations;
  study.measure.clip_norm = clip_norm;
  study.measure.threads = threads;
  std::vector<DecayReport> reports;
  DecayOptions options = study.measure;
  options.seed = seed;
  const std::filesystem::path dir = out.is_none() ? "" : Strings(out, false).at(0);
  {
    py::gil_scoped_release release;
    reports = MeasureDecayStudy(study, verbose ? std::cerr : NullStream());
    if (!dir.empty()) {
      std::error_code failed;
      std::filesystem::create_directories(dir, failed);
      if (failed) throw Error(dir.string() + ": " + failed.message());
      WriteDecayCsv(reports, dir / "decay.csv");
      WriteDecaySummary(reports, options, dir / "summary.json");
      WriteDecayPlot(reports, dir / "decay.svg");
    }
  }
  py::list models;
  for (const DecayReport& r : reports) {
    py::list curves;
    for (const DecayCurve& c : r.curves) {
      py::dict curve;
      curve["layer"] = c.layer;
      curve["quantity"] = c.quantity;
      curve["lags"] = py::array_t<int>(py::ssize_t(c.lags.size()), c.lags.data());
      curve["median"] = Doubles(c.median);
      curve["q1"] = Doubles(c.q1);
      curve["q3"] = Doubles(c.q3);
      curve["relative"] = Doubles(c.relative);
      curves.append(curve);
    }
    py::dict model;
    model["model"] = r.model;
    model["config"] = ToPython(ConfigToJson(r.config));
    model["T"] = r.T;
    model["B"] = r.B;
    model["loss_step"] = r.loss_step;
    model["grad_norm"] = r.grad_norm;
    model["clip_fraction"] = r.clip_fraction;
    model["curves"] = curves;
    models.append(model);
  }
  py::dict result;
  result["models"] = models;
  result["summary"] = ToPython(DecaySummaryJson(reports, options));
  return result;
}

}  // namespace

}  // namespace bptt::python

PYBIND11_MODULE(bptt, m) {
  using namespace bptt;
  using namespace bptt::python;
  m.doc() = "bptt: recurrent models trained by backpropagation through time (the C++ library's Python module)";
  m.attr("__version__") = Version();
  m.def("version_text", &VersionText, "What `bptt --version` prints: the version and what the build contains.");
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError).doc() =
      "An error of bptt (bad options, files or checkpoints), with the message the command line prints.";

  py::class_<Model> model(m, "Model", "A checkpoint loaded for sampling, evaluation and inspection (bptt.load).");
  model
      .def(py::init(&Model::Load), py::arg("path"))
      .def_property_readonly("path", &Model::path)
      .def_property_readonly(
          "config", [](Model& self) { return ToPython(ConfigToJson(self.checkpoint().config)); },
          "The model's configuration (cell, sizes, input, head), as the checkpoint stores it.")
      .def_property_readonly(
          "vocab",
          [](Model& self) {
            const Vocab& v = self.checkpoint().vocab;
            py::list out;
            for (int32_t id = 0; id < v.size(); ++id) out.append(Text(v.symbol(id)));
            return out;
          },
          "The symbols in id order (str; bytes for a byte vocabulary's symbols that are not UTF-8).")
      .def_property_readonly("step", [](Model& self) { return self.checkpoint().step; })
      .def_property_readonly("metrics", [](Model& self) { return ToPython(self.checkpoint().metrics); })
      .def_property_readonly("checksum_verified", [](Model& self) { return self.checkpoint().checksum_verified; })
      .def_property_readonly(
          "training_options",
          [](Model& self) -> py::object {
            const auto& t = self.checkpoint().training;
            return t ? ToPython(t->options) : py::none();
          },
          "The options the run was trained with (None for a file without training state).")
      .def(
          "tensors",
          [](py::object self) {
            Model& model = self.cast<Model&>();
            py::dict out;
            model.checkpoint().params.ForEach([&](const std::string& name, Mat<float>& t) {
              const bool vector = t.cols() == 1 && name.find("bias") != std::string::npos;
              const auto rows = static_cast<py::ssize_t>(t.rows()), cols = static_cast<py::ssize_t>(t.cols());
              constexpr py::ssize_t f = sizeof(float);
              out[py::str(name)] =
                  vector ? py::array_t<float>({rows}, {f}, t.data(), self)
                         : py::array_t<float>({rows, cols}, {f, f * rows}, t.data(), self);  // column-major
            });
            return out;
          },
          "The parameters by PyTorch name (rnn.weight_ih_l0, ..., decoder.bias) in PyTorch's shapes: views of "
          "the model's own float32 memory, no copies; writing to them changes what sample and eval compute.")
      .def(
          "encode",
          [](Model& self, const std::string& text) {
            const std::vector<int32_t> ids = self.checkpoint().vocab.Encode(text);
            return py::array_t<int32_t>(py::ssize_t(ids.size()), ids.data());
          },
          py::arg("text"), "The ids of the text's symbols (int32); symbols outside the vocabulary are an error.")
      .def(
          "decode",
          [](Model& self, const std::vector<int32_t>& ids) { return Text(self.checkpoint().vocab.Decode(ids), true); },
          py::arg("ids"), "The text of the ids.")
      .def(
          "eval",
          [](Model& self, std::optional<std::string> text, py::object file, int batch, int seq_len, int threads,
             std::optional<std::string> precision) {
            if (text.has_value() == !file.is_none()) throw Error("give the text or file= (one of them)");
            EvalOptions o;
            o.batch = batch;
            o.seq_len = seq_len;
            o.threads = threads;
            if (precision) o.precision = ParsePrecision(*precision, "--precision");
            o.Validate();
            const Checkpoint& c = self.checkpoint();
            const std::string path = file.is_none() ? "text" : Strings(file, false).at(0);
            TextEvaluation r;
            {
              py::gil_scoped_release release;
              EncodedFile encoded = text ? EncodeText(*text, c.vocab) : EncodeFile(path, c.vocab);
              try {
                r = Evaluate(c.config, c.params, c.vocab, std::move(encoded), o);
              } catch (const Error& e) {
                throw Error(path + ": " + e.what());
              }
            }
            py::dict out = ToPython(EvaluationJson(r));
            return out;
          },
          py::arg("text") = py::none(), py::kw_only(), py::arg("file") = py::none(),
          py::arg("batch") = EvalOptions{}.batch, py::arg("seq_len") = EvalOptions{}.seq_len,
          py::arg("threads") = EvalOptions{}.threads, py::arg("precision") = py::none(),
          "Scores a text (or file=PATH) as `bptt eval --json` does; the options are its flags. Returns its "
          "object: nats_per_symbol, bpc, perplexity, symbols, unknown, streams, method.");
  DefSampling(
      model, "sample",
      [](Model& self, const SampleOptions& o) {
        std::string text;
        {
          py::gil_scoped_release release;
          self.MakeSampler()->Generate(o, [&text](std::string_view piece) { text.append(piece); });
        }
        return Text(text, true);
      },
      "Generated text, as `bptt sample` prints it (without its final newline): the options are its flags.");
  DefSampling(
      model, "stream",
      [](Model& self, const SampleOptions& o) { return std::make_unique<Stream>(self.MakeSampler(), o); },
      "sample's text as it is generated: an iterator of pieces (the prime, then a symbol at a time).");

  py::class_<Stream>(m, "Stream", "The pieces of Model.stream.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Stream::Next);

  m.def("load", &Model::Load, py::arg("path"), "Loads and verifies a checkpoint (.safetensors): a Model.");
  RegisterSequences(m);
  m.def("train", &TrainPy, TrainDoc().c_str());
  m.def("decay", &DecayPy, py::kw_only(), py::arg("cells") = py::none(), py::arg("checkpoints") = py::none(),
        py::arg("hidden") = ModelConfig().hidden_size, py::arg("layers") = ModelConfig().layers,
        py::arg("embed") = 0, py::arg("init") = py::none(), py::arg("init_scale") = InitOptions().scale,
        py::arg("forget_bias") = InitOptions().forget_bias, py::arg("seed") = 1, py::arg("corpus") = py::none(),
        py::arg("unit") = "grapheme", py::arg("symbols") = DecayStudy().symbols, py::arg("steps") = py::none(),
        py::arg("batch") = DecayStudy().batch, py::arg("loss_step") = DecayOptions().loss_step,
        py::arg("jacobian_lags") = DecayOptions().jacobian_lags,
        py::arg("jacobian_batch") = DecayOptions().jacobian_batch,
        py::arg("power_iterations") = DecayOptions().power_iterations,
        py::arg("clip_norm") = DecayOptions().clip_norm, py::arg("threads") = DecayOptions().threads,
        py::arg("out") = py::none(), py::arg("verbose") = false,
        "The gradient-decay analysis of `bptt decay` (the same options, '-' written '_'; cells, checkpoints and "
        "init take a list or a comma-separated string). Returns {'models': [{'model', 'config', 'T', 'B', "
        "'loss_step', 'grad_norm', 'clip_fraction', 'curves': [{'layer', 'quantity', 'lags', 'median', 'q1', "
        "'q3', 'relative'}]}], 'summary': the summary.json object}, the curves as NumPy arrays; with out=DIR "
        "it also writes decay.csv, summary.json and decay.svg there.");
}
