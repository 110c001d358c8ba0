// bptt plot: the training curves of one or more runs (curves.h) as SVG, and PNG beside it when
// rsvg-convert (Debian's librsvg2-bin) is installed.
#include <spawn.h>
#include <sys/wait.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "bptt/curves.h"
#include "bptt/error.h"
#include "commands.h"

extern char** environ;

namespace po = boost::program_options;

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

}  // namespace

int Plot(int argc, char** argv) {
  std::vector<std::string> runs;
  std::string out;
  bool png = true;
  po::options_description options("bptt plot RUN_DIR [RUN_DIR ...] [--out FILE]");
  options.add_options()
      ("out", po::value(&out), "the SVG file (default: curves.svg in the first run directory)")
      ("no-png", "do not also write FILE.png (written when rsvg-convert is installed)")
      ("help", "show this help");
  po::options_description hidden;
  hidden.add_options()("run", po::value(&runs)->multitoken(), "run directories");
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("run", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << options << "\nDraws the training and validation loss against steps and wall time, the learning "
                            "rate and the clipped steps from each run's metrics.jsonl, one colour per run.\n";
    return 0;
  }
  if (runs.empty()) throw Error("missing RUN_DIR (see bptt plot --help)");
  png = vm.count("no-png") == 0;
  std::vector<std::filesystem::path> paths(runs.begin(), runs.end());
  const std::filesystem::path svg = out.empty() ? paths.front() / "curves.svg" : std::filesystem::path(out);
  std::vector<std::string> skipped;
  WriteCurves(paths, svg, &skipped);
  for (const auto& message : skipped) std::cerr << "bptt plot: warning: " << message << "\n";
  std::cout << "wrote " << svg.string();
  if (png) {
    std::filesystem::path image = svg;
    image.replace_extension(".png");
    if (Run({"rsvg-convert", "-o", image.string(), svg.string()}) == 0) std::cout << " and " << image.string();
  }
  std::cout << "\n";
  return 0;
}

}  // namespace bptt::cli
