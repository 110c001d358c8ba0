// The run directory: where a training run keeps what it makes, owned by one process at a time.
//
//   DIR/.lock               flock'ed while a run owns DIR; holds the owner's pid and host
//   DIR/metrics.jsonl       one JSON object per logged step, appended; rewritten whole (a new
//                           file renamed over it) when the end of a run replaces its last line
//                           with the last validation, or a resume drops the lines after its
//                           checkpoint
//   DIR/latest.safetensors, DIR/best.safetensors   checkpoints (checkpoint.h), written by the loop
//   DIR/summary.json        how the run ended, written by rename
//   DIR/curves.svg          redrawn at each validation; one that cannot be drawn is a warning
//   DIR/trials.json         a `--trials` run's trial count and options; its trials in DIR/seed-S
//   (and, by others: corpus.ids, skipped-files.txt, decay_train.csv, heatmap.svg)
//
// A directory holds a run when it has a checkpoint, a summary, trials or metrics lines: a new run
// refuses it unless told to replace it (--force), which removes those files first and says so.
// Every file is written by rename from a temporary beside it whose name carries the writer's pid
// (".NAME.tmpPID-N", "corpus.ids.tmpPID"); opening a directory removes the temporaries of its
// own files left by processes that no longer exist, and nothing else.
//
//   RunDirectory dir(path, RunDirectory::kNew, log);   // locked until dir is destroyed
//   dir.AppendMetrics(line);  dir.SaveJson("summary.json", summary);
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>

namespace bptt {

class RunDirectory {
 public:
  enum Mode {
    kNew,      // refuse a directory that holds a run
    kReplace,  // remove the run it holds (--force), saying what on the log
    kResume,   // continue the run it holds
  };

  // Creates `dir` and its parents when missing, takes its lock (a bptt::Error naming the owner's
  // pid when another process holds it), applies `mode`, and removes stale temporaries. Errors
  // (a path that cannot be a directory, one without write permission) are one-line bptt::Errors
  // naming the path.
  RunDirectory(const std::filesystem::path& dir, Mode mode, std::ostream& log);
  ~RunDirectory();  // releases the lock
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path latest() const { return dir_ / "latest.safetensors"; }
  std::filesystem::path best() const { return dir_ / "best.safetensors"; }

  // metrics.jsonl. Start: a new, empty log. Append: one line, whole or not at all. ReplaceLast:
  // the last line, when it is of the same step, replaced by `line` (else `line` appended).
  // KeepThrough: the lines of steps after `step`, and any torn line, dropped.
  void StartMetrics();
  void AppendMetrics(const nlohmann::json& line);
  void ReplaceLastMetrics(const nlohmann::json& line);
  void KeepMetricsThrough(int64_t step);

  // DIR/name (summary.json, trials.json), written by rename.
  void SaveJson(const char* name, const nlohmann::json& json) const;
  // curves.svg from metrics.jsonl. A plot is never worth a run: a failure is not thrown but
  // returned, as a one-line warning.
  std::optional<std::string> DrawCurves() const;

 private:
  void Lock(std::ostream& log);
  void Replace(std::ostream& log);
  void RemoveStaleTemporaries();

  std::filesystem::path dir_;
  int lock_fd_ = -1;
};

// Whether `dir` holds a run: a checkpoint, summary.json, trials.json or a non-empty
// metrics.jsonl, or a trial directory seed-S that holds one.
bool HoldsRun(const std::filesystem::path& dir);

}  // namespace bptt
