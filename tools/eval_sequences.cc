// bptt eval of a model trained on sequences: accuracy, per-class recall and the confusion matrix,
// MSE/MAE/R^2, or a forecast's MSE/MAE/MASE beside the seasonal-naive forecast's.
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "bptt/error.h"
#include "bptt/train_options.h"
#include "commands.h"
#include "sequence_cli.h"

namespace bptt::cli {

LoadedSequenceModel LoadSequenceModel(const std::string& path, const char* command) {
  LoadedSequenceModel m{LoadCheckpoint(path), {}};
  if (!m.checkpoint.checksum_verified)
    std::cerr << "bptt " << command << ": " << path << " has no checksum; loaded unverified\n";
  if (m.checkpoint.sequences.is_null())
    throw Error(path + ": bptt " + command + " takes a model trained on sequences (bptt train --data); this one " +
                (m.checkpoint.config.language_model() ? "is a language model" : "was trained on a task"));
  m.spec = SequenceSpec::FromJson(m.checkpoint.sequences, path);
  return m;
}

namespace {

void PrintClasses(const nlohmann::json& r, const SequenceSpec& spec) {
  const auto name = [&spec](size_t k) { return spec.class_names.empty() ? std::to_string(k) : spec.class_names[k]; };
  std::cout << std::fixed << std::setprecision(4) << "  accuracy  " << r["accuracy"].get<double>() << "\n"
            << "  loss      " << r["loss"].get<double>() << " nats\n  recall by class:";
  const auto& recall = r["per_class_recall"];
  for (size_t k = 0; k < recall.size(); ++k)
    std::cout << "  " << name(k) << " " << (recall[k].is_null() ? std::string("-") : [&] {
      std::ostringstream v;
      v << std::fixed << std::setprecision(3) << recall[k].get<double>();
      return v.str();
    }());
  std::cout << "\n  confusion matrix (rows: the true class, columns: the predicted one):\n";
  const auto& confusion = r["confusion"];
  size_t width = 6;
  for (const auto& row : confusion)
    for (const auto& v : row) width = std::max(width, std::to_string(v.get<int64_t>()).size() + 1);
  for (size_t k = 0; k < confusion.size(); ++k) width = std::max(width, name(k).size() + 1);
  std::cout << "  " << std::setw(static_cast<int>(width)) << "";
  for (size_t k = 0; k < confusion.size(); ++k) std::cout << std::setw(static_cast<int>(width)) << name(k);
  std::cout << "\n";
  for (size_t i = 0; i < confusion.size(); ++i) {
    std::cout << "  " << std::setw(static_cast<int>(width)) << name(i);
    for (const auto& v : confusion[i]) std::cout << std::setw(static_cast<int>(width)) << v.get<int64_t>();
    std::cout << "\n";
  }
}

// The held-out steps of a forecast's evaluation: --held-out, or the run's --val-frac of the series.
int64_t HeldOut(const PredictOptions& o, const Checkpoint& c, int64_t steps) {
  if (o.held_out > 0) return o.held_out;
  double frac = 0.2;
  if (c.training && c.training->options.contains("val_frac") && c.training->options["val_frac"].is_number())
    frac = c.training->options["val_frac"].get<double>();
  const auto held = static_cast<int64_t>(std::floor(frac * static_cast<double>(steps)));
  if (held < 1) throw Error("the run held out nothing of the series (--val-frac " + std::to_string(frac) + "): give --held-out N");
  return held;
}

}  // namespace

int EvalSequences(const std::string& checkpoint, const std::string& data, const PredictOptions& o, bool json) {
  const LoadedSequenceModel m = LoadSequenceModel(checkpoint, "eval");
  const ModelConfig& config = m.checkpoint.config;
  nlohmann::json r;
  if (m.spec.head == SequenceHead::kForecast) {
    if (!o.labels.empty()) throw Error("--labels does not apply to a forecasting model (the series is its own target)");
    const SequenceSet series = ReadForModel(m.spec, data, "", false);
    r = ScoreForecast(config, m.checkpoint.params, m.spec, series, HeldOut(o, m.checkpoint, series.T), o.threads);
    r.erase("forecast");
  } else {
    if (o.held_out > 0) throw Error("--held-out applies to a forecasting model");
    const SequenceSet set = ReadForModel(m.spec, data, o.labels, true);
    r = ScoreSequences(config, m.checkpoint.params, m.spec, set, o.threads);
  }
  if (json) {
    std::cout << r.dump() << "\n";
    return 0;
  }
  std::cout << std::fixed << std::setprecision(4);
  if (m.spec.head == SequenceHead::kForecast) {
    std::cout << data << ": the last " << r["held_out"] << " of " << r["steps"] << " steps forecast from the ones before\n"
              << "                 MSE          MAE          MASE (season " << m.spec.season << ")\n";
    for (const char* who : {"", "naive_"}) {
      const auto mase = r[std::string(who) + "mase"];
      std::cout << (who[0] ? "  seasonal naive" : "  model         ") << std::setw(13) << r[std::string(who) + "mse"].get<double>()
                << std::setw(13) << r[std::string(who) + "mae"].get<double>() << std::setw(13)
                << (mase.is_null() ? std::string("-") : std::to_string(mase.get<double>())) << "\n";
    }
    return 0;
  }
  if (m.spec.head == SequenceHead::kRegress) {
    std::cout << data << ": " << r["sequences"] << " sequences\n  MSE   " << r["mse"].get<double>() << "\n  RMSE  "
              << r["rmse"].get<double>() << "\n  MAE   " << r["mae"].get<double>() << "\n  R^2   " << r["r2"].get<double>()
              << "\n";
    return 0;
  }
  std::cout << data << ": " << r["sequences"] << " sequences";
  if (r.contains("steps")) std::cout << ", " << r["steps"] << " labelled steps";
  std::cout << "\n";
  PrintClasses(r, m.spec);
  return 0;
}

}  // namespace bptt::cli
