// bptt decay: the command-line front end of decay.h. Fills a DecayStudy from the flags, measures
// it (MeasureDecayStudy) and writes decay.csv, summary.json and decay.svg.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/init.h"
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
  DecayStudy study;
  DecayOptions& o = study.measure;
  std::string cells, checkpoints, inits = std::string(InitName(study.init.scheme)), unit = "grapheme", out;
  int steps = DecayStudy::kDefaultSteps;

  po::options_description models("Models (--cell or --checkpoint, or both)"), input("Input"), measure("Measurement");
  models.add_options()
      ("cell", po::value(&cells)->default_value(""), "fresh models, comma-separated: rnn-tanh, rnn-sigmoid, rnn-relu, lstm, gru")
      ("checkpoint", po::value(&checkpoints)->default_value(""), "trained models: checkpoint files, comma-separated")
      ("hidden", po::value(&study.model.hidden_size)->default_value(study.model.hidden_size), "fresh models: hidden units per layer (H)")
      ("layers", po::value(&study.model.layers)->default_value(study.model.layers), "fresh models: stacked recurrent layers (L)")
      ("embed", po::value(&study.model.embed_size)->default_value(study.model.embed_size), "fresh models: embedding width (0 = one-hot input)")
      ("init", po::value(&inits)->default_value(inits), "fresh models: uniform, pytorch, xavier, he, orthogonal or identity; one for all, or one per --cell, comma-separated")
      ("init-scale", po::value(&study.init.scale)->default_value(study.init.scale), "fresh models: uniform bound or orthogonal/identity gain (0 = the scheme's default)")
      ("forget-bias", po::value(&study.init.forget_bias)->default_value(study.init.forget_bias), "fresh models: LSTM forget-gate bias")
      ("seed", po::value(&study.seed)->default_value(study.seed), "random seed (initialisation as in bptt train, random input, power iteration)");
  input.add_options()
      ("corpus", po::value(&study.corpus)->default_value(""), "text file to cut the input sequences from (evenly spaced windows); empty = random symbols: a checkpoint's drawn with its vocabulary's frequencies, uniform over --symbols for fresh models")
      ("unit", po::value(&unit)->default_value(unit), "fresh models with --corpus: symbol unit (grapheme, codepoint, byte or word)")
      ("symbols", po::value(&study.symbols)->default_value(study.symbols), "fresh models without --corpus: vocabulary size V of the random input")
      ("steps", po::value(&steps)->default_value(steps), "timesteps per sequence (T)")
      ("batch", po::value(&study.batch)->default_value(study.batch), "sequences, for the median and quartiles (B)");
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
  study.cells = SplitList(cells);
  study.checkpoints = SplitList(checkpoints);
  study.inits = SplitList(inits);
  if (!vm["steps"].defaulted()) study.steps = steps;
  if (!study.corpus.empty()) {
    const auto parsed = ParseUnit(unit);
    if (!parsed) throw Error("--unit '" + unit + "' is not one of grapheme, codepoint, byte, word");
    study.unit = *parsed;
  }
  const std::vector<DecayReport> reports = MeasureDecayStudy(study, std::cerr);
  o.seed = study.seed;

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
