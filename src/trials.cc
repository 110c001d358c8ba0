#include "trials.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <vector>

#include "bptt/error.h"
#include "run_directory.h"
#include "train_loop.h"

namespace bptt {

namespace fs = std::filesystem;

namespace {

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path.string() + ": not a JSON object");
  return j;
}

// Trains (or, with `given`, resumes) the trials of `options` into root/seed-S, then writes the
// summary over them.
TrainResult RunTrials(const TrainOptions& options, int trials, const nlohmann::json* given, RunDirectory& root,
                      std::ostream& log, bool live, const TrainHooks& hooks) {
  nlohmann::json runs = nlohmann::json::array();
  TrainResult result;
  result.dir = root.path();
  for (int k = 0; k < trials; ++k) {
    // A stop asked between two trials (Ctrl-C while one was summarised) is not lost.
    if (k > 0 && (StopRequested() || (hooks.stop && hooks.stop()))) {
      result.end = TrainEnd::kInterrupted;
      result.dir = root.path();
      return result;
    }
    TrainOptions o = options;
    o.seed = options.seed + static_cast<uint64_t>(k);
    const fs::path dir = root.path() / ("seed-" + std::to_string(o.seed));
    o.out = dir.string();
    const fs::path summary = dir / "summary.json";
    if (given != nullptr && fs::exists(summary) && ReadJson(summary).value("end", "") == "solved") {
      // A solved trial is done: training it on would change what solved it.
      result = TrainResult();
      result.end = TrainEnd::kSolved;
      result.summary = ReadJson(summary);
      result.steps = result.summary.value("steps", int64_t{0});
      result.dir = dir;
      log << "bptt train: " << dir.string() << " is solved; kept\n";
    } else if (given != nullptr && fs::exists(dir / "latest.safetensors")) {
      result = Resume(dir, *given, log, live, hooks);
    } else {
      o.force = o.force || given != nullptr;  // a trial that never wrote a checkpoint starts again
      result = Train(o, log, live, hooks);
    }
    result.dir = root.path();  // what resumes the trials
    if (result.end == TrainEnd::kInterrupted || result.end == TrainEnd::kDiverged) return result;
    runs.push_back(result.summary);
  }
  int64_t solved = 0;
  for (const auto& run : runs) solved += run.value("solved", false) ? 1 : 0;
  result.summary = {{"trials", trials}, {"solved_trials", solved}, {"stats", TrialStatistics(runs)}, {"runs", runs}};
  for (const char* key : {"task", "T", "cell", "hidden", "layers", "baseline", "test_size"})
    if (runs.front().contains(key)) result.summary[key] = runs.front()[key];
  root.SaveJson("summary.json", result.summary);
  return result;
}

// The options of the trials as trials.json keeps them: the task and every stored option, by flag.
nlohmann::json TrialOptionsJson(const TrainOptions& o) {
  nlohmann::json j = {{"task", o.task}};
  for (const auto& spec : TrainOptionSpecs())
    if (!spec.key.empty()) j["options"][std::string(spec.flag)] = spec.get(o);
  return j;
}

TrainOptions TrialOptionsFromJson(const nlohmann::json& j, const std::string& source) {
  if (!j.contains("task") || !j["task"].is_string() || !j.contains("options") || !j["options"].is_object())
    throw Error(source + ": has no task and options");
  TrainOptions o = j["task"].get<std::string>().empty() ? TrainOptions() : TaskDefaults();
  o.task = j["task"];
  for (const auto& spec : TrainOptionSpecs()) {
    if (!j["options"].contains(spec.flag)) continue;
    try {
      spec.set(o, j["options"][std::string(spec.flag)]);
    } catch (const Error& e) {
      throw Error(source + ": stored option " + e.what());
    }
  }
  return o;
}

}  // namespace

nlohmann::json TrialStatistics(const nlohmann::json& runs) {
  nlohmann::json stats = nlohmann::json::object();
  if (runs.empty()) return stats;
  for (const auto& [key, value] : runs.front().items()) {
    if (!value.is_number() || key == "seed") continue;
    std::vector<double> v;
    for (const auto& run : runs)
      if (run.contains(key) && run[key].is_number()) v.push_back(run[key].get<double>());
    double mean = 0, var = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) var += (x - mean) * (x - mean) / static_cast<double>(v.size() > 1 ? v.size() - 1 : 1);
    stats[key] = {{"mean", mean}, {"std", std::sqrt(var)}, {"min", *std::min_element(v.begin(), v.end())},
                  {"max", *std::max_element(v.begin(), v.end())}};
  }
  return stats;
}

TrainResult TrainTrials(TrainOptions options, int trials, std::ostream& log, bool live, const TrainHooks& hooks) {
  ClearStopRequest();
  if (trials < 1) throw Error("--trials must be positive, got " + std::to_string(trials));
  options.Validate();
  if (options.out.empty()) throw Error("--out is required with --trials");
  RunDirectory root(options.out, options.force ? RunDirectory::kReplace : RunDirectory::kNew, log);
  nlohmann::json stored = TrialOptionsJson(options);
  stored["trials"] = trials;
  root.SaveJson("trials.json", stored);
  return RunTrials(options, trials, nullptr, root, log, live, hooks);
}

TrainResult ResumeTrials(const fs::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                         const TrainHooks& hooks) {
  ClearStopRequest();
  RunDirectory root(dir, RunDirectory::kResume, log);
  const fs::path path = dir / "trials.json";
  const nlohmann::json stored = ReadJson(path);
  if (!stored.contains("trials") || !stored["trials"].is_number_integer() || stored["trials"].get<int64_t>() < 1 ||
      stored["trials"].get<int64_t>() > std::numeric_limits<int>::max())
    throw Error(path.string() + ": has no trial count");
  TrainOptions options = ApplyOnResume(TrialOptionsFromJson(stored, path.string()), given);
  options.out = dir.string();
  options.Validate();
  log << "bptt train: resuming the trials of " << dir.string() << "\n";
  return RunTrials(options, stored["trials"].get<int>(), &given, root, log, live, hooks);
}

}  // namespace bptt
