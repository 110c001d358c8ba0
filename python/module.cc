// The bptt Python module: the library's checkpoints, sampling, evaluation, training and
// gradient-decay analysis, with NumPy arrays in and out.
//
//   import bptt
//   m = bptt.load("models/run/best.safetensors")   # Model: m.config, m.vocab, m.tensors()
//   print(m.sample(length=200, temperature=0.8, seed=7))
//   for piece in m.stream(prime="Once", length=50): print(piece, end="")
//   m.eval("held-out text")                         # the keys of `bptt eval --json`
//   bptt.train(corpus="corpus.txt", out="runs/a", hidden=128, max_steps=500, progress=print)
//   bptt.decay(cell=["rnn-tanh", "lstm"], steps=100)
//
// Model.tensors() are views of the model's own parameters (no copies): writing to them changes
// what the next sample or eval computes. The options of sample, stream, eval, train and decay
// are the rows of the tables the command line is made from (SampleOptionSpecs, EvalOptionSpecs,
// TrainOptionSpecs, DecayStudyOptionSpecs): each flag a keyword with '-' written '_', None
// meaning "not given", its value turned into the row's JSON and applied by ApplyGiven, the
// command line's own path, so a value is refused exactly as the flag would be. bptt::Error
// arrives as bptt.Error with the message the command line prints. The GIL is released while
// the library computes, and Python's signal handlers run between its chunks of work, so Ctrl-C
// interrupts a long sample, eval or decay with KeyboardInterrupt.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "bptt/checkpoint.h"
#include "bptt/decay_files.h"
#include "bptt/decay_study.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "bptt/options.h"
#include "bptt/sampler.h"
#include "bptt/task.h"
#include "bptt/trainer.h"
#include "bptt/version.h"
#include "keywords.h"
#include "sequences.h"

namespace py = pybind11;

namespace bptt::python {

namespace {

// ---------------------------------------------------------------------------------------------
// Model: a loaded checkpoint.

class Model {
 public:
  // Loads and verifies the checkpoint; a file without a checksum loads with a UserWarning (an
  // exception when warnings are errors, -W error).
  static std::unique_ptr<Model> Load(const py::object& path) {
    auto model = std::make_unique<Model>(Strings(path, false).at(0));
    if (!model->checkpoint().checksum_verified &&
        PyErr_WarnEx(PyExc_UserWarning, (model->path() + " has no checksum; loaded unverified").c_str(), 1) != 0)
      throw py::error_already_set();
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

// The sampling options of `bptt sample` from keywords, validated.
SampleOptions SamplingKeywords(const py::kwargs& kwargs, const std::string& function) {
  const SampleOptions o = ApplyGiven(SampleOptionSpecs(), kAnyCommand,
                                     GivenKeywords(SampleOptionSpecs(), kAnyCommand, kwargs, {}, function), SampleOptions());
  o.Validate();
  return o;
}

// The pieces of Sampler::Next as str. A piece that ends inside a UTF-8 sequence (a byte
// vocabulary's) waits for the bytes that complete it. One thread at a time: the sampler is
// stepped without the GIL, so a second thread taking a piece while one is being made gets
// bptt.Error "stream in use".
class Stream {
 public:
  Stream(std::unique_ptr<Sampler> sampler, const SampleOptions& options) : sampler_(std::move(sampler)) {
    sampler_->Start(options);
  }

  py::object Next() {
    const std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) throw Error("stream in use: another thread is taking its next piece");
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

  std::mutex busy_;  // held while a piece is made
  std::unique_ptr<Sampler> sampler_;
  std::string pending_;
};

// ---------------------------------------------------------------------------------------------
// Training: keywords are the rows of TrainOptionSpecs().

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
  const py::object progress = Own(kwargs, "progress"), resume = Own(kwargs, "resume");
  const py::object task_arg = Own(kwargs, "task"), trials_arg = Own(kwargs, "trials"), verbose_arg = Own(kwargs, "verbose");
  const std::string task = task_arg.is_none() ? std::string() : Strings(task_arg, false).at(0);
  const int trials = trials_arg.is_none() ? 1 : trials_arg.cast<int>();
  const bool verbose = verbose_arg.is_none() ? true : verbose_arg.cast<bool>();
  const unsigned command = task.empty() ? kTrainCommand | kSequenceCommand : kTaskCommand;
  nlohmann::json given = GivenKeywords(TrainOptionSpecs(), command, kwargs,
                                       {"task", "progress", "resume", "trials", "verbose"},
                                       task.empty() ? "bptt train" : "bptt task");
  if (!resume.is_none() && !task.empty()) throw Error("task cannot be given with resume (the run has its task)");
  if (!progress.is_none() && !PyCallable_Check(progress.ptr())) throw Error("progress must be callable");
  if (trials < 1) throw Error("trials must be positive, got " + std::to_string(trials));
  // Under mpirun, as `bptt train`: a corpus run trains distributed (a task is refused by the
  // trainer with more than one rank).
  if (LaunchedByMpi() && task.empty()) given["distributed"] = true;

  PythonTrainHooks python_hooks(progress);
  const TrainHooks& hooks = python_hooks.hooks();

  std::ostream& log = verbose ? std::cerr : NullStream();
  const bool live = verbose && isatty(STDERR_FILENO) != 0;
  TrainResult result;
  if (!resume.is_none()) {
    const std::string dir = Strings(resume, false).at(0);
    py::gil_scoped_release release;
    result = Resume(dir, given, log, live, hooks);
  } else {
    TrainOptions o = ApplyGiven(TrainOptionSpecs(), command, given, task.empty() ? TrainOptions() : TaskDefaults());
    if (!task.empty()) {
      o.task = task;
      if (!given.contains("T")) o.task_length = Task::Make(task)->info().default_T;
      o.distributed = LaunchedByMpi();
    }
    py::gil_scoped_release release;
    result = trials == 1 ? Train(o, log, live, hooks) : TrainTrials(o, trials, log, live, hooks);
  }
  if (result.end == TrainEnd::kInterrupted)
    log << "bptt.train: stopped at step " << result.steps << "; saved "
        << (result.dir / "latest.safetensors").string() << "; resume with bptt.train(resume='" << result.dir.string()
        << "')\n";
  python_hooks.RethrowIfRaised();
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
      "Trains a model as `bptt train` (a corpus, or data= sequences of your own) or `bptt task`\n"
      "(task='adding', ...) does, or continues the run in `resume` (a run directory) with the options\n"
      "that may change. Returns a dict: end ('finished', 'solved' or 'interrupted'), steps, train_loss,\n"
      "best_val_loss, dir, summary.\n"
      "progress(metrics) is called with each line of DIR/metrics.jsonl; returning False stops the run\n"
      "(it saves, as Ctrl-C does); an exception it raises, or Ctrl-C's KeyboardInterrupt, stops the run,\n"
      "which saves latest.safetensors, and is raised again. A diverged run raises bptt.Error. Under\n"
      "mpirun a corpus run trains distributed, as `bptt train` does. A keyword given as None is not given.\n\n"
      "Options (bptt train / bptt task flags, '-' written '_'; [corpus] only with corpus=, [data] only with\n"
      "data= (sequences of your own; bptt.fit trains on arrays), [task] only with task=):\n";
  const TrainOptions train_defaults;
  const TrainOptions task_defaults = TaskDefaults();
  for (const auto& spec : TrainOptionSpecs()) {
    const bool corpus = (spec.commands & kTrainCommand) != 0, task = (spec.commands & kTaskCommand) != 0,
               data = (spec.commands & kSequenceCommand) != 0;
    doc += "  " + OptionKeyword(spec.flag);
    if (spec.kind != OptionKind::kSwitch && spec.kind != OptionKind::kSwitchOff && spec.kind != OptionKind::kTexts)
      doc += " = " + OptionText(spec.get(corpus || data ? train_defaults : task_defaults));
    if (!(corpus && task && data)) {
      std::string tags;
      for (const auto& [takes, name] : {std::pair{corpus, "corpus"}, {data, "data"}, {task, "task"}})
        if (takes) tags += (tags.empty() ? "" : ", ") + std::string(name);
      doc += " [" + tags + "]";
    }
    doc += ": " + std::string(spec.help) + "\n";
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Gradient decay.

py::array_t<double> Doubles(const std::vector<double>& v) { return py::array_t<double>(py::ssize_t(v.size()), v.data()); }

py::dict DecayPy(py::kwargs kwargs) {
  const py::object verbose_arg = Own(kwargs, "verbose");
  const bool verbose = !verbose_arg.is_none() && verbose_arg.cast<bool>();
  const DecayStudy study = ApplyGiven(
      DecayStudyOptionSpecs(), kAnyCommand,
      GivenKeywords(DecayStudyOptionSpecs(), kAnyCommand, kwargs, {"verbose"}, "bptt.decay"), DecayStudy());
  study.Validate();
  const std::vector<DecayReport> reports = WithoutGil().Run([&](const std::function<void()>& between_chunks) {
    return RunDecayStudy(study, verbose ? std::cerr : NullStream(), between_chunks);
  });
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
  result["summary"] = ToPython(DecaySummaryJson(reports, study.measure));
  return result;
}

std::string DecayDoc() {
  return KeywordSignature("decay", "*, verbose=False", DecayStudyOptionSpecs(), kAnyCommand, DecayStudy()) +
         "\n\nThe gradient-decay analysis of `bptt decay`, with its options as keywords ('-' written '_'; "
         "cell, checkpoint and init take a list or a comma-separated string; None is not given). Returns "
         "{'models': [{'model', 'config', 'T', 'B', 'loss_step', 'grad_norm', 'clip_fraction', 'curves': "
         "[{'layer', 'quantity', 'lags', 'median', 'q1', 'q3', 'relative'}]}], 'summary': the summary.json "
         "object}, the curves as NumPy arrays; with out=DIR it also writes decay.csv, summary.json and "
         "decay.svg there. verbose=True names each model on stderr as it starts. Ctrl-C interrupts it.\n\n"
         "Options:\n" +
         KeywordList(DecayStudyOptionSpecs(), kAnyCommand, DecayStudy());
}

std::string SamplingDoc(const std::string& name, const std::string& what) {
  return KeywordSignature(name, "self, *", SampleOptionSpecs(), kAnyCommand, SampleOptions()) + "\n\n" + what +
         " The options are `bptt sample`'s flags, '-' written '_' (None is not given):\n" +
         KeywordList(SampleOptionSpecs(), kAnyCommand, SampleOptions());
}

std::string EvalDoc() {
  return KeywordSignature("eval", "self, text=None, *, file=None", EvalOptionSpecs(), kAnyCommand, EvalOptions()) +
         "\n\nScores a text (or file=PATH) as `bptt eval --json` does; the options are its flags, '-' written '_' "
         "(None is not given). Returns its object: nats_per_symbol, bpc, perplexity, symbols, unknown, streams, "
         "method. Ctrl-C interrupts it.\n\nOptions:\n" +
         KeywordList(EvalOptionSpecs(), kAnyCommand, EvalOptions());
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
            model.checkpoint().params.ForEachTensor([&](const TensorInfo& tensor, Mat<float>& t) {
              const std::string& name = tensor.name;
              // 1-D as the checkpoint stores them (and PyTorch's modules take them): every bias and
              // layer-norm gain or bias.
              const bool vector = TorchShape(tensor.role, t).size() == 1;
              const auto rows = static_cast<py::ssize_t>(t.rows()), cols = static_cast<py::ssize_t>(t.cols());
              constexpr py::ssize_t f = sizeof(float);
              out[py::str(name)] =
                  vector ? py::array_t<float>({rows}, {f}, t.data(), self)
                         : py::array_t<float>({rows, cols}, {f, f * rows}, t.data(), self);  // column-major
            });
            return out;
          },
          "The parameters by PyTorch name (rnn.weight_ih_l0, ..., decoder.bias) in the checkpoint's (PyTorch's) "
          "shapes, biases and layer norms 1-D: views of the model's own float32 memory, no copies; writing to them "
          "changes what sample and eval compute.")
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
          py::arg("ids"), "The text of the ids.");
  {
    // The keyword functions write their own signature line, made from their tables.
    py::options options;
    options.disable_function_signatures();
    model.def(
        "eval",
        [](Model& self, py::object text, py::object file, py::kwargs kwargs) {
          if (text.is_none() == file.is_none()) throw Error("give the text or file= (one of them)");
          const EvalOptions o = ApplyGiven(EvalOptionSpecs(), kAnyCommand,
                                           GivenKeywords(EvalOptionSpecs(), kAnyCommand, kwargs, {}, "Model.eval"),
                                           EvalOptions());
          o.Validate();
          const Checkpoint& c = self.checkpoint();
          const std::string path = file.is_none() ? "text" : Strings(file, false).at(0);
          const std::optional<std::string> content =
              text.is_none() ? std::nullopt : std::optional<std::string>(text.cast<std::string>());
          const TextEvaluation r = WithoutGil().Run([&](const std::function<void()>& between_chunks) {
            EncodedFile encoded = content ? EncodeText(*content, c.vocab, path, between_chunks)
                                          : EncodeFile(path, c.vocab, between_chunks);
            try {
              return Evaluate(c.config, c.params, c.vocab, std::move(encoded), o, between_chunks);
            } catch (const Error& e) {
              throw Error(path + ": " + e.what());
            }
          });
          return ToPython(EvaluationJson(r));
        },
        py::arg("text") = py::none(), py::kw_only(), py::arg("file") = py::none(), EvalDoc().c_str());
    model.def(
        "sample",
        [](Model& self, py::kwargs kwargs) {
          const SampleOptions o = SamplingKeywords(kwargs, "Model.sample");
          std::string text;
          WithoutGil().Run([&](const std::function<void()>& between_chunks) {
            self.MakeSampler()->Generate(o, [&](std::string_view piece) {
              between_chunks();
              text.append(piece);
            });
          });
          return Text(text, true);
        },
        SamplingDoc("sample", "Generated text, as `bptt sample` prints it (without its final newline). Ctrl-C "
                              "interrupts it.")
            .c_str());
    model.def(
        "stream",
        [](Model& self, py::kwargs kwargs) {
          return std::make_unique<Stream>(self.MakeSampler(), SamplingKeywords(kwargs, "Model.stream"));
        },
        SamplingDoc("stream",
                    "sample's text as it is generated: an iterator of pieces (the prime, then a symbol at a time), "
                    "for one thread at a time.")
            .c_str());
    m.def("train", &TrainPy, TrainDoc().c_str());
    m.def("decay", &DecayPy, DecayDoc().c_str());
  }

  py::class_<Stream>(m, "Stream", "The pieces of Model.stream.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Stream::Next);

  m.def("load", &Model::Load, py::arg("path"), "Loads and verifies a checkpoint (.safetensors): a Model.");
  RegisterSequences(m);
}
