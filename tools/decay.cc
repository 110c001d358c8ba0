// bptt decay: the command-line front end of decay_study.h. Fills a DecayStudy from the flags
// (DecayStudyOptionSpecs), runs it (RunDecayStudy: decay.csv, summary.json and decay.svg) and
// prints a table of each model's figures per layer.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "bptt/decay_study.h"
#include "bptt/error.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

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
  CommandLine<DecayStudy> cli(
      "bptt decay [--cell CELL[,CELL...] | --checkpoint FILE[,FILE...]] --steps T --out DIR [options]",
      DecayStudyOptionSpecs(), kAnyCommand, DecayStudy());
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const DecayStudy study = cli.Apply(DecayStudy());
  if (study.out.empty()) throw Error("--out DIR is required");
  study.Validate();

  const std::vector<DecayReport> reports = RunDecayStudy(study, std::cerr);
  const std::filesystem::path dir(study.out);
  PrintSummary(reports, std::cout);
  std::cout << "wrote " << (dir / "decay.csv").string() << ", " << (dir / "summary.json").string() << ", "
            << (dir / "decay.svg").string() << "\n";
  return 0;
}

}  // namespace bptt::cli
