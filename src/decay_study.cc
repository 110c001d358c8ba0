#include "bptt/decay_study.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "bptt/corpus.h"
#include "bptt/decay_files.h"
#include "bptt/error.h"
#include "bptt/options.h"
#include "bptt/task.h"
#include "bptt/trainer.h"

namespace bptt {

namespace {

// The scheme named `name`, parsed by the --init row of InitOptionSpecs.
InitScheme ParseScheme(const std::string& name) {
  InitOptions init;
  for (const auto& spec : InitOptionSpecs())
    if (spec.flag == "init") spec.set(init, name);
  return init.scheme;
}

std::vector<OptionSpec<DecayStudy>> MakeSpecs() {
  using D = DecayStudy;
  constexpr OnResume kNone = OnResume::kNone;
  const char* models = "Models (--cell or --checkpoint, or both)";
  const char* fresh = "Fresh models (--cell)";
  const char* input = "Input";
  const char* measure = "Measurement";
  static const std::string cell_help = "fresh models, comma-separated: " + CellNames();
  const auto fresh_only = [](const D& d) {
    return d.cells.empty() ? "describes fresh models (--cell); a checkpoint has its own" : "";
  };

  std::vector<OptionSpec<D>> specs = {
      List<D>(kAnyCommand, "cell", "", models, cell_help, kNone, [](D& d) -> auto& { return d.cells; },
              [](const Cell* c) { return c->name; },
              [](const std::string& v, const std::string& f) { return &ParseCell(v, f); }),
      List<D>(kAnyCommand, "checkpoint", "", models, "trained models: checkpoint files, comma-separated", kNone,
              [](D& d) -> auto& { return d.checkpoints; }, [](const std::string& s) { return s; },
              [](const std::string& v, const std::string&) { return v; }),
  };
  for (auto spec : Nest<D>(ModelOptionSpecs(), kAnyCommand, "", [](D& d) -> auto& { return d.model; })) {
    // --cell is a list here; no dropout in a measurement (zoneout stays: its expectation).
    if (spec.flag == "cell" || spec.flag == "dropout" || spec.flag == "recurrent-dropout") continue;
    spec.group = fresh;
    specs.push_back(Restrict(std::move(spec), fresh_only));
  }
  specs.push_back(Restrict(List<D>(kAnyCommand, "init", "", fresh,
                                   "initialisation: one scheme for all models or one per --cell, comma-separated "
                                   "(uniform, pytorch, xavier, he, orthogonal, identity)",
                                   kNone, [](D& d) -> auto& { return d.inits; }, InitName,
                                   [](const std::string& v, const std::string&) { return ParseScheme(v); }),
                           fresh_only));
  for (auto spec : Nest<D>(InitOptionSpecs(), kAnyCommand, "", [](D& d) -> auto& { return d.init; })) {
    if (spec.flag == "init") continue;  // a list here
    spec.group = fresh;
    specs.push_back(Restrict(std::move(spec), fresh_only));
  }

  specs.push_back(Field<D>(kAnyCommand, "corpus", "", input,
                           "text file to cut the input sequences from (evenly spaced windows); empty = random symbols: "
                           "a checkpoint's drawn with its vocabulary's frequencies, uniform over --symbols for fresh models",
                           kNone, [](D& d) -> auto& { return d.corpus; }));
  for (auto spec : Nest<D>(TokenizerOptionSpecs(), kAnyCommand, "", [](D& d) -> auto& { return d.tokenizer; })) {
    spec.group = input;
    specs.push_back(Restrict(std::move(spec), [](const D& d) {
      return d.cells.empty()   ? "describes how fresh models (--cell) read --corpus; a checkpoint has its own vocabulary"
             : d.corpus.empty() ? "applies to --corpus only"
                                : "";
    }));
  }
  specs.push_back(Restrict(Field<D>(kAnyCommand, "symbols", "", input,
                                    "fresh models without --corpus: vocabulary size V of the random input", kNone,
                                    [](D& d) -> auto& { return d.symbols; }),
                           [](const D& d) {
                             return d.cells.empty()     ? "describes fresh models (--cell); a checkpoint has its own"
                                    : !d.corpus.empty() ? "does not apply with --corpus, whose symbols are the input"
                                                        : "";
                           }));
  static const std::string steps_help = "timesteps per sequence (T; " + std::to_string(D::kDefaultSteps) +
                                        " when not given, a task checkpoint's own)";
  specs.push_back(
      Field<D>(kAnyCommand, "steps", "", input, steps_help, kNone, [](D& d) -> auto& { return d.steps; }));
  specs.push_back(Field<D>(kAnyCommand, "batch", "", input, "sequences, for the median and quartiles (B)", kNone,
                           [](D& d) -> auto& { return d.batch; }));

  const auto without_jacobian = [](const D& d) {
    return d.measure.jacobian_lags == 0 ? "does not apply with --jacobian-lags 0 (no Jacobian norms)" : "";
  };
  specs.push_back(Field<D>(kAnyCommand, "seed", "", measure,
                           "random seed (initialisation as in bptt train, random input, power iteration)", kNone,
                           [](D& d) -> auto& { return d.measure.seed; }));
  specs.push_back(Field<D>(kAnyCommand, "loss-step", "", measure,
                           "step s (1..T) of the loss; lags count back from it (0 = T)", kNone,
                           [](D& d) -> auto& { return d.measure.loss_step; }));
  specs.push_back(Field<D>(kAnyCommand, "jacobian-lags", "", measure,
                           "lags (log-spaced) at which ||dh_s/dh_{s-k}||_2 is computed by power iteration (0 = none)",
                           kNone, [](D& d) -> auto& { return d.measure.jacobian_lags; }));
  specs.push_back(Restrict(Field<D>(kAnyCommand, "jacobian-batch", "", measure,
                                    "sequences (the first of --batch) whose Jacobian norm is computed (0 = all)", kNone,
                                    [](D& d) -> auto& { return d.measure.jacobian_batch; }),
                           without_jacobian));
  specs.push_back(Restrict(Field<D>(kAnyCommand, "power-iterations", "", measure,
                                    "power iterations per lag, at most", kNone,
                                    [](D& d) -> auto& { return d.measure.power_iterations; }),
                           without_jacobian));
  specs.push_back(Field<D>(kAnyCommand, "clip-norm", "", measure,
                           "global-norm clipping threshold: report the fraction of the gradient it removes", kNone,
                           [](D& d) -> auto& { return d.measure.clip_norm; }));
  specs.push_back(Threads<D>(kAnyCommand, "", measure,
                             "threads for the model's products; the products here are small, so 1 is usually fastest",
                             kNone, [](D& d) -> auto& { return d.measure.threads; }, 1));
  specs.push_back(Field<D>(kAnyCommand, "out", "", "Output",
                           "directory for decay.csv, summary.json and decay.svg (created if missing)", kNone,
                           [](D& d) -> auto& { return d.out; }));
  return specs;
}

// The whole file as text, after the checks of a text file named on the command line.
std::string ReadText(const std::string& path) {
  CheckTextFile(path);
  std::string text;
  ReadInPieces(path, [&text](std::string_view piece) { text.append(piece); });
  return text;
}

}  // namespace

std::span<const OptionSpec<DecayStudy>> DecayStudyOptionSpecs() {
  static const std::vector<OptionSpec<DecayStudy>> specs = MakeSpecs();
  return specs;
}

void DecayStudy::Validate() const {
  if (cells.empty() && checkpoints.empty()) throw Error("give --cell or --checkpoint (or both)");
  if (inits.size() != 1 && inits.size() != cells.size())
    throw Error("--init takes one scheme for all models or one per --cell (" + std::to_string(cells.size()) + ")");
  if (symbols < 1) throw Error("--symbols must be positive, got " + std::to_string(symbols));
  if (steps && *steps < 1) throw Error("--steps must be positive, got " + std::to_string(*steps));
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  measure.Validate();
}

bool TrainedOnTask(const Checkpoint& checkpoint) {
  return checkpoint.training && !TaskOf(checkpoint.training->options).empty();
}

Batch<double> CheckpointInputs(const Checkpoint& checkpoint, const std::string& text, int T, int B, uint64_t seed,
                               size_t* unknown) {
  if (TrainedOnTask(checkpoint)) {
    const TrainOptions o = TrainOptionsFromJson(checkpoint.training->options, "checkpoint");
    const std::unique_ptr<Task> task = Task::Make(o.task, o.task_length);
    Batch<float> batch;
    task->Generate(StreamSeed(seed, kTestDataStream), 0, B, batch);
    Batch<double> data;
    data.T = batch.T;
    data.B = batch.B;
    data.ids = batch.ids;
    data.dense = batch.dense.cast<double>();
    data.classes = batch.classes;
    data.values = batch.values.cast<double>();
    data.scored = batch.scored;
    return ScoredAt(data, 0);
  }
  Rng rng(seed);
  if (text.empty()) return UnigramInputs(checkpoint.vocab, T, B, rng);
  std::vector<std::string> missing;
  const std::vector<int32_t> ids = checkpoint.vocab.Encode(text, &missing);
  if (unknown) *unknown = missing.size();
  return CorpusInputs(ids, T, B);
}

std::vector<DecayReport> MeasureDecayStudy(const DecayStudy& study, std::ostream& log,
                                           const std::function<void()>& between_chunks) {
  study.Validate();
  const int steps = study.steps.value_or(DecayStudy::kDefaultSteps);
  const DecayOptions& options = study.measure;
  const uint64_t seed = options.seed;
  const std::string text = study.corpus.empty() ? std::string() : ReadText(study.corpus);

  std::vector<DecayReport> reports;
  const auto label_of = [&reports](std::string label) {
    int same = 1;
    for (const auto& r : reports) same += r.model == label || r.model.rfind(label + " #", 0) == 0;
    return same > 1 ? label + " #" + std::to_string(same) : label;
  };
  const auto measure = [&](const std::string& label, const ModelConfig& c, const ModelParams<float>& params,
                           const Batch<double>& data) {
    log << "bptt decay: " << label << " (" << c.cell->name << ", L=" << c.layers << ", H=" << c.hidden_size
        << ", T=" << data.T << ", B=" << data.B << ")\n";
    reports.push_back(MeasureDecay(label_of(label), c, params.Cast<double>(), data, options, between_chunks));
  };

  // Fresh models share one vocabulary and one input.
  if (!study.cells.empty()) {
    ModelConfig config = study.model;
    Batch<double> data;
    if (!study.corpus.empty()) {
      const Vocab vocab = VocabBuilder(study.tokenizer).Add(text, study.corpus).Build();
      config.vocab_size = vocab.size();
      data = CorpusInputs(vocab.Encode(text), steps, study.batch);
    } else {
      config.vocab_size = study.symbols;
      Rng rng(seed + 1);
      data = UniformInputs(study.symbols, steps, study.batch, rng);
    }
    for (size_t i = 0; i < study.cells.size(); ++i) {
      ModelConfig c = config;
      c.cell = study.cells[i];
      c.output_size = c.vocab_size;
      c.Validate();
      InitOptions init = study.init;
      init.scheme = study.inits.size() == 1 ? study.inits[0] : study.inits[i];
      Rng init_rng(seed);
      auto params = ModelParams<float>::Zeros(c);
      Initialize(c, init, init_rng, params);
      std::string label(c.cell->name);
      if (init.scheme != InitOptions().scheme) label += " (" + std::string(InitName(init.scheme)) + ")";
      measure(label, c, params, data);
    }
  }

  for (const auto& path : study.checkpoints) {
    const Checkpoint checkpoint = LoadCheckpoint(path);
    if (TrainedOnTask(checkpoint) && (study.steps || !study.corpus.empty()))
      throw Error(path + " was trained on a task; its sequences are the task's, so --steps and --corpus do not apply");
    size_t unknown = 0;
    const Batch<double> data = CheckpointInputs(checkpoint, text, steps, study.batch, seed + 1, &unknown);
    if (unknown > 0)
      log << "bptt decay: " << unknown << " symbols of " << study.corpus << " are not in the vocabulary of " << path
          << "; left out\n";
    const std::filesystem::path p(path);
    const std::string parent = p.parent_path().filename().string();
    measure(parent.empty() ? p.stem().string() : parent + "/" + p.stem().string(), checkpoint.config,
            checkpoint.params, data);
  }
  return reports;
}

std::vector<DecayReport> RunDecayStudy(const DecayStudy& study, std::ostream& log,
                                       const std::function<void()>& between_chunks) {
  std::vector<DecayReport> reports = MeasureDecayStudy(study, log, between_chunks);
  if (study.out.empty()) return reports;
  const std::filesystem::path dir(study.out);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error(study.out + ": " + error.message());
  WriteDecayCsv(reports, dir / "decay.csv");
  WriteDecaySummary(reports, study.measure, dir / "summary.json");
  WriteDecayPlot(reports, dir / "decay.svg");
  return reports;
}

}  // namespace bptt
