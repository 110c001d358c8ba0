// bptt task: trains and scores models on the long-lag experiments of task.h, through trainer.h.
#include <unistd.h>

#include <csignal>
#include <iomanip>
#include <iostream>

#include "bptt/error.h"
#include "bptt/task.h"
#include "bptt/trainer.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

int ReportRun(const TrainResult& result, const char* command);

namespace {

void OnSignal(int) { RequestStop(); }

void List(std::ostream& out) {
  for (const TaskInfo& t : Tasks())
    out << std::left << std::setw(18) << t.name << t.description << "\n" << std::setw(18) << "" << t.source
        << " (default --T " << t.default_T << ")\n";
}

}  // namespace

int Task(int argc, char** argv) {
  CommandLine<TrainOptions> cli(
      "bptt task NAME [--T N] [--cell C] [options] --out DIR   (bptt task --list)\n"
      "   or: bptt task --resume DIR [the options marked 'may change on --resume']",
      TrainOptionSpecs(), kTaskCommand, TaskDefaults());
  std::string name, resume;
  int trials = 1;
  po::options_description other("Trials, resume and help");
  other.add_options()
      ("trials", po::value(&trials)->default_value(trials),
       "train this many models with seeds --seed, --seed + 1, ... into DIR/seed-S and summarise them in DIR/summary.json")
      ("resume", po::value(&resume),
       "continue the run (or the trials) in this directory from its checkpoints; options not marked 'may change on "
       "--resume' must keep the run's values")
      ("list", "list the tasks")
      ("help", "show this help");
  cli.Add(other);
  po::options_description hidden;
  hidden.add_options()("task", po::value(&name), "the task");
  cli.AddHidden(hidden);
  po::positional_options_description positional;
  positional.add("task", 1);
  cli.Positional(positional);
  cli.Parse(argc, argv);
  if (cli.vm().count("help")) {
    std::cout << cli.help() << "\nTasks:\n";
    List(std::cout);
    return 0;
  }
  if (cli.vm().count("list")) {
    List(std::cout);
    return 0;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const bool live = isatty(STDERR_FILENO) != 0;
  TrainResult result;
  if (!resume.empty()) {
    if (!name.empty()) throw Error("a task NAME cannot be given with --resume (the run has its task)");
    if (!cli.vm()["trials"].defaulted()) throw Error("--trials cannot be given with --resume (the run has its trials)");
    nlohmann::json given = cli.given();
    if (LaunchedByMpi()) given["distributed"] = true;  // refused by the trainer with more than one rank
    result = Resume(resume, given, std::cerr, live);
  } else {
    if (name.empty()) throw Error("missing the task's NAME (bptt task --list names them)");
    TrainOptions o = cli.Apply(TaskDefaults());
    o.task = name;
    if (!cli.Given("T")) o.task_length = Task::Make(name)->info().default_T;
    if (o.out.empty()) throw Error("--out is required");
    o.distributed = LaunchedByMpi();  // refused by the trainer with more than one rank
    result = trials == 1 ? Train(o, std::cerr, live) : TrainTrials(o, trials, std::cerr, live);
  }
  const int status = ReportRun(result, "task");
  std::cout << result.summary.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return status;
}

}  // namespace bptt::cli
