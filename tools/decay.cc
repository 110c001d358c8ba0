// bptt decay: the command-line front end of decay.h. Builds or loads the models, takes the
// input sequences, runs MeasureDecay on each and writes decay.csv, summary.json and decay.svg.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/trainer.h"
#include "commands.h"

namespace po = boost::program_options;

namespace bptt::cli {

namespace {

std::vector<std::string> SplitList(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Figure(double v, const char* format) {
  if (!std::isfinite(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

void PrintSummary(const std::vector<DecayReport>& reports, std::ostream& out) {
  char line[256];
  std::snprintf(line, sizeof line, "%-24s %5s %10s %10s %9s %8s %9s %8s %8s %9s\n", "model", "layer", "factor/step",
                "half-life", "lag<1e-6", "explodes", "sigma_max", "radius", "pascanu", "clipped");
  out << line;
  for (const auto& r : reports) {
    for (const auto& ld : r.layers) {
      std::snprintf(line, sizeof line, "%-24s %5d %10s %10s %9s %8s %9s %8s %8s %8s%%\n", r.model.c_str(), ld.layer,
                    Figure(ld.h.decay_factor, "%.4f").c_str(), Figure(ld.h.half_life, "%.1f").c_str(),
                    ld.h.lag_below >= 0 ? std::to_string(ld.h.lag_below).c_str() : "never",
                    ld.h.explodes ? "yes" : "no", Figure(ld.sigma_max, "%.3f").c_str(),
                    Figure(ld.spectral_radius, "%.3f").c_str(), Figure(ld.pascanu_bound, "%.3f").c_str(),
                    Figure(100 * r.clip_fraction, "%.1f").c_str());
      out << line;
    }
  }
}

}  // namespace

int Decay(int argc, char** argv) {
  const ModelConfig default_config;
  const InitOptions default_init;
  DecayOptions o;
  ModelConfig config;
  InitOptions init;
  std::string cells, checkpoints, inits = std::string(InitName(default_init.scheme)), corpus, unit = "grapheme", out;
  uint64_t seed = 1;
  int steps = 200, batch = 16, symbols = 64;

  po::options_description models("Models (--cell or --checkpoint, or both)"), input("Input"), measure("Measurement");
  models.add_options()
      ("cell", po::value(&cells)->default_value(""), "fresh models, comma-separated: rnn-tanh, rnn-sigmoid, rnn-relu, lstm, gru")
      ("checkpoint", po::value(&checkpoints)->default_value(""), "trained models: checkpoint files, comma-separated")
      ("hidden", po::value(&config.hidden_size)->default_value(default_config.hidden_size), "fresh models: hidden units per layer (H)")
      ("layers", po::value(&config.layers)->default_value(default_config.layers), "fresh models: stacked recurrent layers (L)")
      ("embed", po::value(&config.embed_size)->default_value(default_config.embed_size), "fresh models: embedding width (0 = one-hot input)")
      ("init", po::value(&inits)->default_value(inits), "fresh models: uniform, pytorch, xavier, he, orthogonal or identity; one for all, or one per --cell, comma-separated")
      ("init-scale", po::value(&init.scale)->default_value(default_init.scale), "fresh models: uniform bound or orthogonal/identity gain (0 = the scheme's default)")
      ("forget-bias", po::value(&init.forget_bias)->default_value(default_init.forget_bias), "fresh models: LSTM forget-gate bias")
      ("seed", po::value(&seed)->default_value(seed), "random seed (initialisation as in bptt train, random input, power iteration)");
  input.add_options()
      ("corpus", po::value(&corpus)->default_value(""), "text file to cut the input sequences from (evenly spaced windows); empty = random symbols: a checkpoint's drawn with its vocabulary's frequencies, uniform over --symbols for fresh models")
      ("unit", po::value(&unit)->default_value(unit), "fresh models with --corpus: symbol unit (grapheme, codepoint, byte or word)")
      ("symbols", po::value(&symbols)->default_value(symbols), "fresh models without --corpus: vocabulary size V of the random input")
      ("steps", po::value(&steps)->default_value(steps), "timesteps per sequence (T)")
      ("batch", po::value(&batch)->default_value(batch), "sequences, for the median and quartiles (B)");
  measure.add_options()
      ("loss-step", po::value(&o.loss_step)->default_value(o.loss_step), "step s (1..T) of the loss; lags count back from it (0 = T)")
      ("jacobian-lags", po::value(&o.jacobian_lags)->default_value(o.jacobian_lags), "lags (log-spaced) at which ||dh_s/dh_{s-k}||_2 is computed by power iteration (0 = none)")
      ("jacobian-batch", po::value(&o.jacobian_batch)->default_value(o.jacobian_batch), "sequences (the first of --batch) whose Jacobian norm is computed (0 = all)")
      ("power-iterations", po::value(&o.power_iterations)->default_value(o.power_iterations), "power iterations per lag, at most")
      ("clip-norm", po::value(&o.clip_norm)->default_value(o.clip_norm), "global-norm clipping threshold: report the fraction of the gradient it removes")
      ("threads", po::value(&o.threads)->default_value(o.threads), "threads for the model's products; the products here are small, so 1 is usually fastest")
      ("out", po::value(&out), "output directory for decay.csv, summary.json and decay.svg (required)")
      ("help", "show this help");
  po::options_description all("bptt decay [--cell CELL[,CELL...] | --checkpoint FILE[,FILE...]] --steps T --out DIR [options]");
  all.add(models).add(input).add(measure);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << all << "\n";
    return 0;
  }
  if (out.empty()) throw Error("--out DIR is required");
  const auto cell_names = SplitList(cells), checkpoint_paths = SplitList(checkpoints), init_names = SplitList(inits);
  if (cell_names.empty() && checkpoint_paths.empty()) throw Error("give --cell or --checkpoint (or both)");
  if (init_names.size() != 1 && init_names.size() != cell_names.size())
    throw Error("--init takes one scheme for all models or one per --cell (" + std::to_string(cell_names.size()) + ")");
  o.seed = seed;
  if (o.threads < 1) throw Error("--threads must be positive, got " + std::to_string(o.threads));

  std::string text;
  if (!corpus.empty()) text = ReadFile(corpus);
  std::vector<DecayReport> reports;
  auto label_of = [&reports](std::string label) {
    int same = 1;
    for (const auto& r : reports) same += r.model == label || r.model.rfind(label + " #", 0) == 0;
    return same > 1 ? label + " #" + std::to_string(same) : label;
  };
  auto measure_one = [&](const std::string& label, const ModelConfig& c, const ModelParams<float>& params,
                         const Batch<double>& data) {
    std::cerr << "bptt decay: " << label << " (" << c.cell->name << ", L=" << c.layers << ", H=" << c.hidden_size
              << ", T=" << data.T << ", B=" << data.B << ")\n";
    reports.push_back(MeasureDecay(label_of(label), c, params.Cast<double>(), data, o));
  };

  // Fresh models share one vocabulary and one input.
  if (!cell_names.empty()) {
    Vocab vocab;
    Batch<double> data;
    if (!corpus.empty()) {
      TokenizerOptions tokenizer;
      const auto parsed = ParseUnit(unit);
      if (!parsed) throw Error("--unit '" + unit + "' is not one of grapheme, codepoint, byte, word");
      tokenizer.unit = *parsed;
      vocab = VocabBuilder(tokenizer).Add(text, corpus).Build();
      config.vocab_size = vocab.size();
      const std::vector<int32_t> ids = vocab.Encode(text);
      data = CorpusInputs(ids, steps, batch);
    } else {
      config.vocab_size = symbols;
      Rng rng(seed + 1);
      data = UniformInputs(symbols, steps, batch, rng);
    }
    for (size_t i = 0; i < cell_names.size(); ++i) {
      const Cell& cell = ParseCell(cell_names[i]);
      const std::string& scheme = init_names.size() == 1 ? init_names[0] : init_names[i];
      const auto parsed = ParseInit(scheme);
      if (!parsed) throw Error("--init '" + scheme + "' is not one of uniform, pytorch, xavier, he, orthogonal, identity");
      ModelConfig c = config;
      c.cell = &cell;
      c.output_size = c.vocab_size;
      c.Validate();
      InitOptions io = init;
      io.scheme = *parsed;
      Rng init_rng(seed);
      auto params = ModelParams<float>::Zeros(c);
      Initialize(c, io, init_rng, params);
      std::string label = cell_names[i];
      if (io.scheme != default_init.scheme) label += " (" + scheme + ")";
      measure_one(label, c, params, data);
    }
  }

  for (const auto& path : checkpoint_paths) {
    const Checkpoint checkpoint = LoadCheckpoint(path);
    const bool task = checkpoint.training && !TaskOf(checkpoint.training->options).empty();
    if (task && (!vm["steps"].defaulted() || !corpus.empty()))
      throw Error(path + " was trained on a task; its sequences are the task's, so --steps and --corpus do not apply");
    size_t unknown = 0;
    const Batch<double> data = CheckpointInputs(checkpoint, text, steps, batch, seed + 1, &unknown);
    if (unknown > 0)
      std::cerr << "bptt decay: " << unknown << " symbols of " << corpus << " are not in the vocabulary of " << path
                << "; left out\n";
    const std::filesystem::path p(path);
    const std::string parent = p.parent_path().filename().string();
    measure_one(parent.empty() ? p.stem().string() : parent + "/" + p.stem().string(), checkpoint.config,
                checkpoint.params, data);
  }

  const std::filesystem::path dir(out);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error(out + ": " + error.message());
  WriteDecayCsv(reports, dir / "decay.csv");
  WriteDecaySummary(reports, o, dir / "summary.json");
  WriteDecayPlot(reports, dir / "decay.svg");
  PrintSummary(reports, std::cout);
  std::cout << "wrote " << (dir / "decay.csv").string() << ", " << (dir / "summary.json").string() << ", "
            << (dir / "decay.svg").string() << "\n";
  return 0;
}

}  // namespace bptt::cli
