// bptt.fit, bptt.SequenceModel and the scikit-learn style estimators: models of the user's own
// sequences (sequences.h) trained from NumPy arrays.
//
//   m = bptt.fit(X, y, head="classify", hidden=64, max_epochs=10)   # X (N, T, D) or (N, T)
//   m.predict(X_test); m.predict_proba(X_test); m.score(X_test, y_test); m.save("model.safetensors")
//   f = bptt.fit(series, head="forecast", seq_len=48, season=12).forecast(series, 24)
//   sklearn.model_selection.cross_val_score(bptt.SequenceClassifier(hidden=32), X, y, cv=3)
//
// Arrays come in without a copy when they are float32 and C-contiguous (others are converted
// once), and go out as NumPy arrays that own the library's result (no copy). Training runs with
// the GIL released; its progress line goes to Python's sys.stderr, the progress callback gets
// each metrics line, and Ctrl-C stops the run as bptt.train's does. The estimators keep their
// parameters as given (get_params returns the very objects), so scikit-learn's clone, Pipeline
// and cross_val_score take them like its own.
#include "sequences.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <streambuf>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/options.h"
#include "bptt/sequences.h"
#include "bptt/trainer.h"
#include "keywords.h"

namespace py = pybind11;

namespace bptt::python {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// ---------------------------------------------------------------------------------------------
// Values between Python and the library.

// A library array as a NumPy array that owns it: the vector moves into the array's base.
template <typename T>
py::array Owned(std::vector<T> values, const std::vector<int64_t>& shape) {
  auto* held = new std::vector<T>(std::move(values));
  py::capsule owner(held, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  return py::array_t<T>(dims, held->data(), owner);
}

// Writes to Python's sys.stderr a line (or a progress line's redraw) at a time.
class PythonStderr : public std::streambuf {
 protected:
  int overflow(int c) override {
    if (c == EOF) return 0;
    pending_ += static_cast<char>(c);
    if (c == '\n' || c == '\r') Flush();
    return c;
  }
  int sync() override {
    Flush();
    return 0;
  }

 private:
  void Flush() {
    if (pending_.empty()) return;
    py::gil_scoped_acquire gil;
    py::object err = py::module_::import("sys").attr("stderr");
    err.attr("write")(py::reinterpret_steal<py::str>(
        PyUnicode_DecodeUTF8(pending_.data(), static_cast<Py_ssize_t>(pending_.size()), "replace")));
    err.attr("flush")();
    pending_.clear();
  }
  std::string pending_;
};

// ---------------------------------------------------------------------------------------------
// Arrays in.

// Inputs as a SequenceSet viewing `array` (kept alive by the caller): (N, T) one feature a step,
// (N, T, D), or a series (n) / (n, D). Without lengths or a mask, steps at the end of a
// sequence that are NaN in every feature are padding.
SequenceSet Inputs(const FloatArray& a, bool series, py::object lengths, py::object mask) {
  SequenceSet s;
  s.source = "X";
  const py::ssize_t dims = a.ndim();
  if (series) {
    if (dims < 1 || dims > 2) throw Error("a series must be an array (n) or (n, D), not of " + std::to_string(dims) + " dimensions");
    s.N = 1;
    s.T = a.shape(0);
    s.D = dims == 2 ? static_cast<int>(a.shape(1)) : 1;
  } else {
    if (dims < 2) throw Error("X must be sequences, an array (N, T) or (N, T, D), not of shape (" + std::to_string(a.shape(0)) + ",)");
    s.N = a.shape(0);
    s.T = a.shape(1);
    int64_t D = 1;
    for (py::ssize_t d = 2; d < dims; ++d) D *= a.shape(d);
    s.D = static_cast<int>(D);
  }
  s.inputs = a.data();
  if (!lengths.is_none() && !mask.is_none()) throw Error("give lengths or mask, not both");
  if (!lengths.is_none()) {
    const auto l = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(lengths);
    if (!l || l.ndim() != 1 || l.shape(0) != s.N) throw Error("lengths must be an array (N) of integers");
    for (int64_t n = 0; n < s.N; ++n) {
      if (l.at(n) < 1 || l.at(n) > s.T)
        throw Error("lengths[" + std::to_string(n) + "] = " + std::to_string(l.at(n)) + " is outside [1, " + std::to_string(s.T) + "]");
      s.lengths.push_back(static_cast<int32_t>(l.at(n)));
    }
  } else if (!mask.is_none()) {
    const auto m = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(mask);
    if (!m || m.ndim() != 2 || m.shape(0) != s.N || m.shape(1) != s.T) throw Error("mask must be an array (N, T) of 0 and 1");
    for (int64_t n = 0; n < s.N; ++n) {
      int64_t L = 0;
      for (int64_t t = 0; t < s.T; ++t) {
        const int64_t v = m.at(n, t);
        if ((v != 0 && v != 1) || (v == 1 && L != t))
          throw Error("mask[" + std::to_string(n) + ", " + std::to_string(t) + "]: a mask is 1 for a sequence's steps and 0 "
                      "for the padding after them");
        L += v;
      }
      if (L == 0) throw Error("mask[" + std::to_string(n) + "] marks no step");
      s.lengths.push_back(static_cast<int32_t>(L));
    }
  } else if (!series) {
    bool ragged = false;
    std::vector<int32_t> found(static_cast<size_t>(s.N));
    for (int64_t n = 0; n < s.N; ++n) {
      int64_t L = s.T;
      while (L > 1) {
        const float* x = s.step(n, L - 1);
        bool all_nan = true;
        for (int d = 0; d < s.D && all_nan; ++d) all_nan = std::isnan(x[d]);
        if (!all_nan) break;
        --L;
      }
      found[static_cast<size_t>(n)] = static_cast<int32_t>(L);
      ragged = ragged || L != s.T;
    }
    if (ragged) s.lengths = std::move(found);
  }
  return s;
}

// Targets from y for the head.
void Targets(SequenceSet& s, py::handle y, SequenceHead head) {
  if (head == SequenceHead::kForecast) {
    if (!y.is_none()) throw Error("a forecast takes no y: the series is its own target");
    return;
  }
  if (y.is_none()) throw Error("y is required: the targets of X");
  if (head == SequenceHead::kRegress) {
    const auto v = FloatArray::ensure(y);
    if (!v || v.ndim() < 1 || v.ndim() > 2 || v.shape(0) != s.N)
      throw Error("y must be an array (N) or (N, O) of N = " + std::to_string(s.N) + " targets");
    s.values.assign(v.data(), v.data() + v.size());
    s.O = v.ndim() == 2 ? static_cast<int>(v.shape(1)) : 1;
    return;
  }
  const py::array raw = py::array::ensure(y);
  if (!raw) throw Error("y must be an array of class labels");
  const auto v = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(raw);
  if (!v) throw Error("y must hold class labels that are integers (0, 1, ...); SequenceClassifier takes any labels");
  const bool per_step = head == SequenceHead::kLabel;
  if (per_step ? !(v.ndim() == 2 && v.shape(0) == s.N && v.shape(1) == s.T) : !(v.ndim() == 1 && v.shape(0) == s.N))
    throw Error(per_step ? "y must be an array (N, T) of per-step labels" : "y must be an array (N) of class labels");
  s.classes.resize(static_cast<size_t>(v.size()));
  for (py::ssize_t k = 0; k < v.size(); ++k) {
    const double c = v.data()[k];
    const bool read = !per_step || k % s.T < s.length(k / s.T);
    if (read && !(c >= 0 && c == std::floor(c) && c < 2147483648.0))
      throw Error("y[" + std::to_string(per_step ? k / s.T : k) + (per_step ? ", " + std::to_string(k % s.T) : "") +
                  "] = " + std::to_string(c) + " is not a class id (an integer from 0)");
    s.classes[static_cast<size_t>(k)] = read ? static_cast<int32_t>(c) : 0;
  }
}

// ---------------------------------------------------------------------------------------------
// A trained model.

class SequenceModel {
 public:
  SequenceModel(Checkpoint checkpoint, nlohmann::json summary, std::string dir)
      : checkpoint_(std::move(checkpoint)), summary_(std::move(summary)), dir_(std::move(dir)) {
    if (checkpoint_.sequences.is_null())
      throw Error("the checkpoint is not a model of sequences (bptt train --data, bptt.fit): use bptt.load");
    spec_ = SequenceSpec::FromJson(checkpoint_.sequences, "the checkpoint");
    checkpoint_.training.reset();  // a model: saving it writes the weights and their description
  }

  static std::shared_ptr<SequenceModel> Load(const py::object& path) {
    const std::string p = py::module_::import("os").attr("fspath")(path).cast<std::string>();
    return std::make_shared<SequenceModel>(LoadCheckpoint(p), nullptr, "");
  }

  const SequenceSpec& spec() const { return spec_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  const nlohmann::json& summary() const { return summary_; }
  const std::string& dir() const { return dir_; }

  SequenceSet Read(py::handle X, py::object lengths, py::object mask, FloatArray& keep) const {
    keep = FloatArray::ensure(X);
    if (!keep) throw Error("X must be an array of numbers");
    SequenceSet s = Inputs(keep, spec_.head == SequenceHead::kForecast, lengths, mask);
    if (s.D != spec_.features)
      throw Error("X has " + std::to_string(s.D) + " features a step, but the model was trained on " + std::to_string(spec_.features));
    s.Check(SequenceHead::kForecast, 0);  // finite inputs within the lengths
    return s;
  }

  py::array Probabilities(py::handle X, py::object lengths, py::object mask, int threads, int batch) const {
    if (spec_.head == SequenceHead::kRegress || spec_.head == SequenceHead::kForecast)
      throw Error("predict_proba is for classifiers (--head classify or label)");
    FloatArray keep;
    const SequenceSet s = Read(X, lengths, mask, keep);
    PredictionArray p;
    {
      py::gil_scoped_release release;
      p = Predict(checkpoint_.config, checkpoint_.params, spec_, s, threads, batch);
    }
    return Owned(std::move(p.values), p.shape);
  }

  py::array PredictArray(py::handle X, py::object lengths, py::object mask, int threads, int batch) const {
    if (spec_.head == SequenceHead::kForecast) throw Error("a forecasting model: use forecast(series, horizon)");
    FloatArray keep;
    const SequenceSet s = Read(X, lengths, mask, keep);
    PredictionArray p;
    {
      py::gil_scoped_release release;
      p = Predict(checkpoint_.config, checkpoint_.params, spec_, s, threads, batch);
    }
    if (spec_.head == SequenceHead::kRegress) {
      std::vector<int64_t> shape = p.shape;
      if (shape.back() == 1) shape.pop_back();
      return Owned(std::move(p.values), shape);
    }
    std::vector<int64_t> classes = PredictedClasses(p, s);
    std::vector<int64_t> shape(p.shape.begin(), p.shape.end() - 1);
    py::array ids = Owned(std::move(classes), shape);
    if (spec_.class_names.empty()) return ids;
    py::list names;
    for (const std::string& n : spec_.class_names) names.append(n);
    return py::module_::import("numpy").attr("asarray")(names, "object").attr("__getitem__")(ids);
  }

  py::dict Evaluate(py::handle X, py::handle y, py::object lengths, py::object mask, int threads) const {
    FloatArray keep;
    SequenceSet s = Read(X, lengths, mask, keep);
    nlohmann::json r;
    if (spec_.head == SequenceHead::kForecast)
      throw Error("a forecasting model: evaluate_forecast(series, held_out)");
    Targets(s, y, spec_.head);
    s.Check(spec_.head, spec_.classes);
    {
      py::gil_scoped_release release;
      r = ScoreSequences(checkpoint_.config, checkpoint_.params, spec_, s, threads);
    }
    return ToPython(r);
  }

  py::array ForecastArray(py::handle series, int64_t horizon, int threads) const {
    if (spec_.head != SequenceHead::kForecast) throw Error("the model does not forecast (head " + std::string(SequenceHeadName(spec_.head)) + ")");
    FloatArray keep;
    const SequenceSet s = Read(series, py::none(), py::none(), keep);
    std::vector<float> f;
    {
      py::gil_scoped_release release;
      f = Forecast(checkpoint_.config, checkpoint_.params, spec_, s, horizon, threads);
    }
    const std::vector<int64_t> shape = spec_.features == 1 ? std::vector<int64_t>{horizon} : std::vector<int64_t>{horizon, spec_.features};
    return Owned(std::move(f), shape);
  }

  py::dict EvaluateForecast(py::handle series, int64_t held_out, int threads) const {
    FloatArray keep;
    const SequenceSet s = Read(series, py::none(), py::none(), keep);
    nlohmann::json r;
    {
      py::gil_scoped_release release;
      r = ScoreForecast(checkpoint_.config, checkpoint_.params, spec_, s, held_out, threads);
    }
    return ToPython(r);
  }

  void Save(const py::object& path) const {
    const std::string p = py::module_::import("os").attr("fspath")(path).cast<std::string>();
    SaveCheckpoint(checkpoint_, p);
  }

 private:
  Checkpoint checkpoint_;
  SequenceSpec spec_;
  nlohmann::json summary_;
  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Training from arrays.

// A row of the `bptt train --data` options that names a file (--data, --labels, --val-data, ...):
// bptt.fit takes arrays in their place.
bool FileOption(const OptionSpec<TrainOptions>& spec) {
  return spec.key.starts_with("sequences.") && (spec.flag.ends_with("data") || spec.flag.ends_with("labels"));
}

// The keywords of bptt.fit that are not options.
const std::set<std::string> kFitKeywords = {"progress", "validation_data", "out", "lengths", "mask", "resume", "verbose"};

std::shared_ptr<SequenceModel> Fit(py::handle X, py::handle y, py::dict kwargs_dict) {
  const py::kwargs kwargs = py::reinterpret_borrow<py::kwargs>(kwargs_dict);
  const py::object progress = Own(kwargs, "progress"), validation = Own(kwargs, "validation_data"),
                   out = Own(kwargs, "out"), lengths = Own(kwargs, "lengths"), mask = Own(kwargs, "mask"),
                   resume = Own(kwargs, "resume"), verbose_arg = Own(kwargs, "verbose");
  const bool verbose = verbose_arg.is_none() || verbose_arg.cast<bool>();
  for (const auto& spec : TrainOptionSpecs())
    if (FileOption(spec) && kwargs.contains(OptionKeyword(spec.flag)))
      throw Error("bptt.fit takes arrays, not " + OptionKeyword(spec.flag) +
                  "= (bptt.train(data=...) trains on files)");
  // The rows of bptt train: those of a corpus are refused, as with --data.
  constexpr unsigned kCommand = kTrainCommand | kSequenceCommand;
  const nlohmann::json given = GivenKeywords(TrainOptionSpecs(), kCommand, kwargs, kFitKeywords, "bptt.fit");
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw Error("progress must be callable");

  TrainOptions arrays_run;
  arrays_run.sequences.data = std::string(kArraysData);
  TrainOptions o = ApplyGiven(TrainOptionSpecs(), kCommand, given, arrays_run);
  const bool series = o.sequences.forecast();
  auto arrays = std::make_shared<SequenceArrays>();
  const FloatArray x = FloatArray::ensure(X);
  if (!x) throw Error("X must be an array of numbers");
  arrays->train = Inputs(x, series, lengths, mask);
  Targets(arrays->train, y, o.sequences.head);
  arrays->train.Check(o.sequences.head, o.sequences.classes);
  FloatArray xv;
  if (!validation.is_none()) {
    const py::tuple v = validation.cast<py::tuple>();
    if (v.size() != 2) throw Error("validation_data must be (X, y)");
    xv = FloatArray::ensure(v[0]);
    if (!xv) throw Error("validation_data's X must be an array of numbers");
    SequenceSet s = Inputs(xv, series, py::none(), py::none());
    s.source = "validation_data";
    Targets(s, v[1], o.sequences.head);
    s.Check(o.sequences.head, o.sequences.classes);
    arrays->validation = std::move(s);
  }
  o.arrays = arrays;

  // A run directory of the caller's, or a temporary one removed after the run.
  std::string dir;
  bool temporary = false;
  if (!out.is_none()) {
    dir = py::module_::import("os").attr("fspath")(out).cast<std::string>();
  } else if (resume.is_none()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "bptt-fit-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw Error("cannot make a temporary run directory");
    dir = pattern + "/run";
    temporary = true;
  }
  o.out = dir;

  PythonTrainHooks python_hooks(progress);
  const TrainHooks& hooks = python_hooks.hooks();
  PythonStderr buffer;
  std::ostream stderr_stream(&buffer);
  std::ostream& log = verbose ? stderr_stream : NullStream();
  const bool live = verbose && py::module_::import("sys").attr("stderr").attr("isatty")().cast<bool>();
  TrainResult result;
  std::optional<Checkpoint> best;
  const auto cleanup = [&] {
    if (temporary) std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
  };
  const std::string from = resume.is_none() ? "" : py::module_::import("os").attr("fspath")(resume).cast<std::string>();
  try {
    py::gil_scoped_release release;
    result = from.empty() ? Train(o, log, live, hooks) : Resume(from, given, log, live, hooks, arrays);
    log << std::flush;
    const std::filesystem::path chosen =
        std::filesystem::exists(result.dir / "best.safetensors") ? result.dir / "best.safetensors" : result.dir / "latest.safetensors";
    if (result.end != TrainEnd::kDiverged) best = LoadCheckpoint(chosen);
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  python_hooks.RethrowIfRaised();
  if (result.end == TrainEnd::kDiverged) throw Error(result.message);
  return std::make_shared<SequenceModel>(std::move(*best), result.summary, temporary ? "" : result.dir.string());
}

std::string FitDoc() {
  std::string doc =
      "fit(X, y=None, *, head='classify', validation_data=None, lengths=None, mask=None, out=None, resume=None,\n"
      "    progress=None, verbose=True, **options) -> SequenceModel\n\n"
      "Trains a model of your own sequences as `bptt train --data` does, from arrays: X (N, T, D) or (N, T)\n"
      "(a series (n) or (n, D) for head='forecast'); y (N) class ids for 'classify', (N, T) for 'label', (N)\n"
      "or (N, O) values for 'regress', none for 'forecast'. Sequences of different lengths: lengths (N),\n"
      "mask (N, T), or NaN in every feature of the steps after a sequence's end. validation_data=(X, y)\n"
      "validates on those instead of val_frac of X. Returns the best checkpoint's model (lowest validation\n"
      "loss; the last one without validation). out=DIR keeps the run directory (checkpoints, metrics,\n"
      "summary); resume=DIR continues that run, given the same arrays. progress(metrics) receives each\n"
      "metrics line and may return False to stop; Ctrl-C stops the run and raises KeyboardInterrupt.\n\n"
      "Options (bptt train flags, '-' written '_'):\n";
  const TrainOptions defaults;
  for (const auto& spec : TrainOptionSpecs()) {
    if ((spec.commands & kSequenceCommand) == 0 || FileOption(spec)) continue;
    doc += "  " + OptionKeyword(spec.flag);
    if (spec.kind != OptionKind::kSwitch && spec.kind != OptionKind::kSwitchOff) doc += " = " + OptionText(spec.get(defaults));
    doc += ": " + std::string(spec.help) + "\n";
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// scikit-learn style estimators.

// The parameters of the estimators and their defaults: the training options people tune most,
// by their bptt.fit keyword, and `options`, a dict of any other.
struct Parameter {
  const char* name;
  const char* flag;  // the option it sets ("" for options and verbose)
};
constexpr Parameter kCommonParameters[] = {
    {"cell", "cell"},         {"hidden", "hidden"},         {"layers", "layers"},     {"dropout", "dropout"},
    {"pool", "pool"},         {"lr", "lr"},                 {"batch", "batch"},       {"max_epochs", "max-epochs"},
    {"max_steps", "max-steps"}, {"time_budget", "time-budget"}, {"val_frac", "val-frac"}, {"seed", "seed"},
    {"threads", "threads"},   {"verbose", ""},              {"options", ""},
};
constexpr Parameter kRegressionParameters[] = {{"loss", "loss"}, {"huber_delta", "huber-delta"}};

class Estimator {
 public:
  Estimator(SequenceHead head, const py::kwargs& kwargs) : head_(head) {
    for (auto [key, value] : kwargs) {
      const std::string name = key.cast<std::string>();
      if (!Known(name))
        throw py::type_error(std::string(head == SequenceHead::kClassify ? "SequenceClassifier" : "SequenceRegressor") +
                             " got an unexpected keyword argument '" + name + "'");
      params_[py::str(name)] = value;
    }
  }

  // Every parameter: as given, or its default.
  py::dict GetParams(bool) const {
    py::dict out;
    const TrainOptions defaults;
    for (const Parameter& p : Parameters()) {
      if (params_.contains(p.name)) {
        out[p.name] = params_[p.name];
      } else if (std::string(p.name) == "verbose") {
        out[p.name] = py::bool_(false);
      } else if (std::string(p.name) == "options") {
        out[p.name] = py::none();
      } else {
        for (const auto& spec : TrainOptionSpecs())
          if (spec.flag == p.flag) out[p.name] = ToPython(spec.get(defaults));
      }
    }
    return out;
  }

  void SetParams(const py::kwargs& kwargs) {
    for (auto [key, value] : kwargs) {
      const std::string name = key.cast<std::string>();
      if (!Known(name)) throw py::value_error("invalid parameter '" + name + "' for the estimator");
      params_[py::str(name)] = value;
    }
  }

  // The keywords of bptt.fit these parameters make.
  py::dict FitKeywords() const {
    py::dict kw;
    const py::dict all = GetParams(false);
    for (const Parameter& p : Parameters()) {
      const std::string name = p.name;
      if (name == "options") {
        if (!all[p.name].is_none())
          for (auto [k, v] : all[p.name].cast<py::dict>()) kw[k] = v;
      } else if (p.flag[0] == '\0') {
        kw[p.name] = all[p.name];
      } else {
        // A parameter at its option's default is not given, so that an option that does not
        // apply to the others (huber_delta without loss='huber') is refused only when set.
        for (const auto& spec : TrainOptionSpecs())
          if (spec.flag == p.flag && !all[p.name].is_none() &&
              KeywordValue(spec, all[p.name]) != spec.get(TrainOptions()))
            kw[p.name] = all[p.name];
      }
    }
    kw["head"] = py::str(std::string(SequenceHeadName(head_)));
    return kw;
  }

  SequenceHead head() const { return head_; }
  std::shared_ptr<SequenceModel> model;

 private:
  std::vector<Parameter> Parameters() const {
    std::vector<Parameter> out(std::begin(kCommonParameters), std::end(kCommonParameters));
    if (head_ == SequenceHead::kRegress) out.insert(out.end(), std::begin(kRegressionParameters), std::end(kRegressionParameters));
    return out;
  }
  bool Known(const std::string& name) const {
    for (const Parameter& p : Parameters())
      if (name == p.name) return true;
    return false;
  }

  SequenceHead head_;
  py::dict params_;
};

struct Classifier : Estimator {
  explicit Classifier(const py::kwargs& kw) : Estimator(SequenceHead::kClassify, kw) {}
};
struct Regressor : Estimator {
  explicit Regressor(const py::kwargs& kw) : Estimator(SequenceHead::kRegress, kw) {}
};

const SequenceModel& Fitted(const Estimator& e) {
  if (!e.model) throw py::attribute_error("the estimator is not fitted yet: call fit(X, y) first");
  return *e.model;
}

template <typename E>
void DefEstimator(py::class_<E>& c, const char* type) {
  c.attr("_estimator_type") = type;
  c.def(py::init([](const py::kwargs& kw) { return std::make_unique<E>(kw); }))
      .def("get_params", &E::GetParams, py::arg("deep") = true, "The estimator's parameters (scikit-learn's get_params).")
      .def(
          "set_params",
          [](py::object self, const py::kwargs& kw) {
            self.cast<E&>().SetParams(kw);
            return self;
          },
          "Sets parameters; returns the estimator.")
      .def("__repr__", [](const E& e) {
        std::string out = e.head() == SequenceHead::kClassify ? "SequenceClassifier(" : "SequenceRegressor(";
        bool first = true;
        for (auto [k, v] : e.GetParams(false)) {
          out += first ? "" : ", ";
          out += py::str(k).template cast<std::string>() + "=" + py::repr(v).template cast<std::string>();
          first = false;
        }
        return out + ")";
      });
}

}  // namespace

void RegisterSequences(py::module_& m) {
  py::class_<SequenceModel, std::shared_ptr<SequenceModel>> model(
      m, "SequenceModel", "A model of your own sequences (bptt.fit, or SequenceModel.load of a bptt train --data checkpoint).");
  const auto threads = py::arg("threads") = 0;
  model.def_static("load", &SequenceModel::Load, py::arg("path"), "Loads a checkpoint of bptt train --data.")
      .def_property_readonly("head", [](const SequenceModel& s) { return std::string(SequenceHeadName(s.spec().head)); })
      .def_property_readonly("config", [](const SequenceModel& s) { return ToPython(ConfigToJson(s.checkpoint().config)); },
                             "The model's configuration, as the checkpoint stores it.")
      .def_property_readonly("spec", [](const SequenceModel& s) { return ToPython(s.spec().ToJson()); },
                             "What the model reads and predicts: head, features, classes, standardisation.")
      .def_property_readonly("summary", [](const SequenceModel& s) { return ToPython(s.summary()); },
                             "The run's summary.json (validation scores of the best checkpoint); None when loaded.")
      .def_property_readonly("dir", [](const SequenceModel& s) { return s.dir().empty() ? py::object(py::none()) : py::object(py::str(s.dir())); })
      .def("predict", &SequenceModel::PredictArray, py::arg("X"), py::kw_only(), py::arg("lengths") = py::none(),
           py::arg("mask") = py::none(), threads, py::arg("batch") = 256,
           "The class of each sequence (N) (or of each step, (N, T), -1 past the end), or the predicted values "
           "((N), or (N, O) for O > 1 targets).")
      .def("predict_proba", &SequenceModel::Probabilities, py::arg("X"), py::kw_only(), py::arg("lengths") = py::none(),
           py::arg("mask") = py::none(), threads, py::arg("batch") = 256,
           "Class probabilities: (N, K), or (N, T, K) per step.")
      .def(
          "score",
          [](const SequenceModel& s, py::handle X, py::handle y, py::object lengths, py::object mask, int t) {
            const py::dict r = s.Evaluate(X, y, lengths, mask, t);
            return py::object(r[s.spec().head == SequenceHead::kRegress ? "r2" : "accuracy"]);
          },
          py::arg("X"), py::arg("y"), py::kw_only(), py::arg("lengths") = py::none(), py::arg("mask") = py::none(), threads,
          "Accuracy (classify, label) or R^2 (regress), as scikit-learn's score.")
      .def("evaluate", &SequenceModel::Evaluate, py::arg("X"), py::arg("y"), py::kw_only(), py::arg("lengths") = py::none(),
           py::arg("mask") = py::none(), threads,
           "What `bptt eval --json` reports: loss, accuracy, per_class_recall, confusion; or mse, mae, rmse, r2.")
      .def("forecast", &SequenceModel::ForecastArray, py::arg("series"), py::arg("horizon"), threads,
           "The series continued by `horizon` steps, the model's own predictions fed back in: (horizon) or (horizon, D).")
      .def("evaluate_forecast", &SequenceModel::EvaluateForecast, py::arg("series"), py::arg("held_out"), threads,
           "The last `held_out` steps forecast from the ones before: mse, mae, mase, and the seasonal-naive "
           "forecast's naive_mse, naive_mae, naive_mase.")
      .def("save", &SequenceModel::Save, py::arg("path"),
           "Writes the model as a checkpoint (.safetensors) that bptt predict, eval and forecast read.");

  {
    py::options options;
    options.disable_function_signatures();  // FitDoc writes fit's signature line
    m.def(
        "fit",
        [](py::handle X, py::handle y, py::kwargs kwargs) -> std::shared_ptr<SequenceModel> {
          return Fit(X, y, kwargs);
        },
        py::arg("X"), py::arg("y") = py::none(), FitDoc().c_str());
  }

  py::class_<Classifier> classifier(m, "SequenceClassifier", py::dynamic_attr(),
                                    "A sequence classifier with scikit-learn's conventions: fit(X, y) with any labels, "
                                    "predict, predict_proba, score (accuracy), get_params, set_params.");
  DefEstimator(classifier, "classifier");
  classifier
      .def(
          "fit",
          [](py::object self, py::handle X, py::handle y) {
            Classifier& e = self.cast<Classifier&>();
            py::module_ np = py::module_::import("numpy");
            const py::tuple unique = np.attr("unique")(y, py::arg("return_inverse") = true);
            self.attr("classes_") = unique[0];
            py::dict kw = e.FitKeywords();
            kw["classes"] = py::int_(py::len(unique[0]));
            e.model = Fit(X, unique[1], kw);
            return self;
          },
          py::arg("X"), py::arg("y"))
      .def("predict",
           [](py::object self, py::handle X) {
             const py::array ids = Fitted(self.cast<Classifier&>()).PredictArray(X, py::none(), py::none(), 0, 256);
             return self.attr("classes_").attr("__getitem__")(ids);
           })
      .def("predict_proba",
           [](const Classifier& e, py::handle X) { return Fitted(e).Probabilities(X, py::none(), py::none(), 0, 256); })
      .def("score", [](py::object self, py::handle X, py::handle y) {
        py::module_ np = py::module_::import("numpy");
        return np.attr("mean")(self.attr("predict")(X).attr("__eq__")(np.attr("asarray")(y))).cast<double>();
      });

  py::class_<Regressor> regressor(m, "SequenceRegressor", py::dynamic_attr(),
                                  "A sequence regressor with scikit-learn's conventions: fit(X, y), predict, score "
                                  "(R^2), get_params, set_params.");
  DefEstimator(regressor, "regressor");
  regressor
      .def(
          "fit",
          [](py::object self, py::handle X, py::handle y) {
            Regressor& e = self.cast<Regressor&>();
            e.model = Fit(X, y, e.FitKeywords());
            return self;
          },
          py::arg("X"), py::arg("y"))
      .def("predict",
           [](const Regressor& e, py::handle X) { return Fitted(e).PredictArray(X, py::none(), py::none(), 0, 256); })
      .def("score", [](const Regressor& e, py::handle X, py::handle y) {
        // scikit-learn's R^2: 1 - SSE / SST per target, averaged over the targets.
        py::module_ np = py::module_::import("numpy");
        const py::object truth = np.attr("asarray")(y, "float64");
        const py::object guess = np.attr("asarray")(Fitted(e).PredictArray(X, py::none(), py::none(), 0, 256), "float64")
                                     .attr("reshape")(truth.attr("shape"));
        const py::object residual = np.attr("subtract")(truth, guess);
        const py::object centred = np.attr("subtract")(truth, np.attr("mean")(truth, py::arg("axis") = 0));
        const py::object sse = np.attr("sum")(np.attr("square")(residual), py::arg("axis") = 0);
        const py::object sst = np.attr("sum")(np.attr("square")(centred), py::arg("axis") = 0);
        return np.attr("mean")(np.attr("subtract")(1.0, np.attr("divide")(sse, sst))).cast<double>();
      });
}

}  // namespace bptt::python
