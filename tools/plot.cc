// bptt plot: the training curves of one or more runs (curves.h) as SVG, and PNG beside it when
// rsvg-convert (Debian's librsvg2-bin) is installed.
#include <spawn.h>
#include <sys/wait.h>

#include <iostream>

#include "bptt/curves.h"
#include "bptt/error.h"
#include "commands.h"
#include "options_cli.h"

extern char** environ;

namespace bptt::cli {

namespace {

// Runs a program found on PATH; its exit status, or -1 when it cannot be started.
int Run(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct PlotCommand {
  std::string out;  // "" = curves.svg in the first run directory
  bool png = true;
};

std::vector<OptionSpec<PlotCommand>> Specs() {
  using P = PlotCommand;
  std::vector<OptionSpec<P>> specs = {
      Field<P>(kAnyCommand, "out", "", "Output", "the SVG file (default: curves.svg in the first run directory)",
               OnResume::kNone, [](P& p) -> auto& { return p.out; }),
      Field<P>(kAnyCommand, "no-png", "", "Output", "do not also write FILE.png (written when rsvg-convert is installed)",
               OnResume::kNone, [](P& p) -> auto& { return p.png; })};
  specs.back().kind = OptionKind::kSwitchOff;
  return specs;
}

}  // namespace

int Plot(int argc, char** argv) {
  static const std::vector<OptionSpec<PlotCommand>> specs = Specs();
  CommandLine<PlotCommand> cli("bptt plot RUN_DIR [RUN_DIR ...] [--out FILE]", specs, kAnyCommand, PlotCommand());
  cli.Argument("run", "run directories", -1);
  cli.Epilog("Draws the training and validation loss against steps and wall time, the learning rate and the clipped "
             "steps from each run's metrics.jsonl, one colour per run.");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::vector<std::string> runs = cli.Arguments("run");
  if (runs.empty()) throw Error("missing RUN_DIR (see bptt plot --help)");
  const PlotCommand o = cli.Apply(PlotCommand());
  std::vector<std::filesystem::path> paths(runs.begin(), runs.end());
  const std::filesystem::path svg = o.out.empty() ? paths.front() / "curves.svg" : std::filesystem::path(o.out);
  std::vector<std::string> skipped;
  WriteCurves(paths, svg, &skipped);
  for (const auto& message : skipped) std::cerr << "bptt plot: warning: " << message << "\n";
  std::cout << "wrote " << svg.string();
  if (o.png) {
    std::filesystem::path image = svg;
    image.replace_extension(".png");
    if (Run({"rsvg-convert", "-o", image.string(), svg.string()}) == 0) std::cout << " and " << image.string();
  }
  std::cout << "\n";
  return 0;
}

}  // namespace bptt::cli
