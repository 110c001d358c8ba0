// Gradient-decay files: the measurements of decay.h written for people and programs. `bptt decay`
// writes one measurement per model to decay.csv, summary.json and decay.svg; a training run with
// `--decay-every N` keeps a DecayTrainLog, one measurement every N steps in decay_train.csv and
// the heatmap of all of them in heatmap.svg. Numbers are written with 9 significant digits;
// NaN and infinity become JSON null.
//
//   std::vector<DecayReport> reports = {MeasureDecay("lstm", config, params, data, options)};
//   WriteDecayCsv(reports, dir / "decay.csv");  WriteDecayPlot(reports, dir / "decay.svg");
//   DecayTrainLog log(run_dir);  log.Record(step, report);
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "bptt/decay.h"

namespace bptt {

// decay.csv: header model,layer,quantity,lag,median,q1,q3,relative; one row per curve point.
void WriteDecayCsv(const std::vector<DecayReport>& reports, const std::filesystem::path& path);

// summary.json: {"options": {...}, "models": [{"model", "cell", ..., "layers": [{"layer",
// "decay_factor", "half_life", "lag_below_1e-6", "explodes", "sigma_max", "spectral_radius",
// "pascanu_bound", "gates": [...], "c": {...}, "jacobian": {...}}]}]}; NaN and ∞ become null.
nlohmann::json DecaySummaryJson(const std::vector<DecayReport>& reports, const DecayOptions& options);
void WriteDecaySummary(const std::vector<DecayReport>& reports, const DecayOptions& options,
                       const std::filesystem::path& path);

// decay.svg: the top layer's relative ‖∂L/∂h_{s-k}‖ against lag on a log axis, one line per
// model with its quartile band (also divided by the median at k = 0), and dashed, for each model
// that has one (the Elman RNNs), the bound its own weights impose, (γ σ_max)^k with σ_max of the
// top layer's recurrent matrix: for a sigmoid RNN 0.25^k only when σ_max <= 1.
void WriteDecayPlot(const std::vector<DecayReport>& reports, const std::filesystem::path& path);

// The gradient-decay record of a training run, in its directory:
//   decay_train.csv  header step,layer,quantity,lag,median,relative; the h and c curves (and
//                    jacobian, when measured) of every layer, one row per point, appended by
//                    each Record
//   heatmap.svg      training step × lag, colour = log10 of the top layer's relative
//                    ‖∂L/∂h_{s-k}‖, redrawn from every measurement so far by each Record
// The rows a run wrote before it was resumed are read once, when the log is opened.
class DecayTrainLog {
 public:
  // A new run (resumed_at < 0): the record starts empty, replacing any file of an earlier run.
  // A run resumed at step `resumed_at`: reads run_dir/decay_train.csv when it exists and keeps
  // its rows up to that step (those of steps the interrupted run took past its checkpoint are
  // dropped, so the resumed run's own rows replace them); throws bptt::Error naming the file and
  // line when it is not such a file.
  DecayTrainLog(std::filesystem::path run_dir, int64_t resumed_at);

  // Appends the measurement of training step `step` and redraws the heatmap.
  void Record(int64_t step, const DecayReport& report);

 private:
  std::filesystem::path dir_;
  // The relative norm of quantity h by layer, step and lag.
  std::map<int, std::map<int64_t, std::map<int, double>>> relative_h_;
};

}  // namespace bptt
