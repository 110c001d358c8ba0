// bptt train: the command-line front end of trainer.h (a corpus, or sequences with --data).
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>

#include "bptt/error.h"
#include "bptt/trainer.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

void OnSignal(int) { RequestStop(); }

}  // namespace

// How a run ended, on stderr (by rank 0 alone in a distributed run); the exit status.
int ReportRun(const TrainResult& result, const char* command) {
  if (result.rank != 0) return result.end == TrainEnd::kDiverged ? 3 : 0;
  const bool trials = result.summary.contains("trials");
  switch (result.end) {
    case TrainEnd::kDiverged:
      std::cerr << "bptt " << command << ": " << result.message << "\n";
      return 3;
    case TrainEnd::kInterrupted:
      std::cerr << "bptt " << command << ": stopped at step " << result.steps << "; saved "
                << (trials || !std::filesystem::exists(result.dir / "latest.safetensors")
                        ? result.dir.string()
                        : (result.dir / "latest.safetensors").string())
                << "\nresume with: bptt " << command << " --resume " << result.dir.string() << "\n";
      return 0;
    case TrainEnd::kSolved:
    case TrainEnd::kFinished:
      if (trials) {
        std::cerr << "bptt " << command << ": " << result.summary["trials"] << " trials, "
                  << result.summary["solved_trials"] << " solved\ntrials in " << result.dir.string()
                  << "/seed-S/, their statistics in " << (result.dir / "summary.json").string() << "\n";
        return 0;
      }
      std::cerr << "bptt " << command << ": " << (result.end == TrainEnd::kSolved ? "solved" : "finished") << " at step "
                << result.steps;
      if (result.best_val_loss > 0) std::cerr << "; best validation loss " << result.best_val_loss;
      for (const char* part : {"validation", "test"}) {  // a sequence model's scores (summary.json)
        if (!result.summary.contains(part) || !result.summary[part].is_object()) continue;
        const nlohmann::json& s = result.summary[part];
        if (s.contains("accuracy")) std::cerr << "; " << part << " accuracy " << s["accuracy"].get<double>();
        else if (s.contains("mase") && s["mase"].is_number())
          std::cerr << "; " << part << " MASE " << s["mase"].get<double>() << " (seasonal naive " << s["naive_mase"] << ")";
        else if (s.contains("mse")) std::cerr << "; " << part << " MSE " << s["mse"].get<double>();
      }
      if (result.summary.contains("best_val_loss_one_stream"))
        std::cerr << " (" << result.summary["val_streams"] << " streams), "
                  << result.summary["best_val_loss_one_stream"].get<double>() << " nats as one stream over "
                  << result.summary["one_stream_symbols"] << " symbols";
      std::cerr << "\ncheckpoints in " << result.dir.string() << "/ (latest.safetensors, best.safetensors, summary.json)\n";
      return 0;
  }
  return 0;
}

int Train(int argc, char** argv) {
  CommandLine<TrainOptions> cli(
      "bptt train --corpus PATH [--out DIR] [options]\n"
      "   or: bptt train --data FILE [--head classify|label|regress|forecast] [--out DIR] [options]\n"
      "   or: bptt train --resume DIR [the options marked 'may change on --resume']",
      TrainOptionSpecs(), kTrainCommand | kSequenceCommand, TrainOptions());
  std::string resume;
  po::options_description other("Resume and help");
  other.add_options()
      ("resume", po::value(&resume),
       "continue the run in this directory from its latest.safetensors; options not marked 'may change on --resume' "
       "must keep the run's values")
      ("help", "show this help");
  cli.Add(other);
  cli.Parse(argc, argv);
  if (cli.vm().count("help")) {
    std::cout << cli.help() << "\n";
    return 0;
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const bool live = isatty(STDERR_FILENO) != 0;
  nlohmann::json given = cli.given();
  if (LaunchedByMpi()) given["distributed"] = true;  // mpirun -np N bptt train ...
  if (!resume.empty()) return ReportRun(Resume(resume, given, std::cerr, live), "train");
  TrainOptions o = cli.Apply(TrainOptions());
  o.distributed = given.value("distributed", false);
  return ReportRun(bptt::Train(o, std::cerr, live), "train");
}

}  // namespace bptt::cli
