#include "bptt/curves.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bptt/error.h"
#include "bptt/plot.h"

namespace bptt {

namespace {

// The columns of one run's metrics.jsonl that the figure draws.
struct Metrics {
  std::string name;
  std::vector<double> step, wall, train, val_step, val_wall, val, lr, clip;
  bool language_model = false;  // has val_bpc: nats per symbol
};

// A line the trainer has not finished writing yet is the file's last line, without its newline:
// when it does not parse, it is skipped (with a message in `skipped`). Any other line that does
// not parse is an error.
Metrics Read(const std::filesystem::path& run, std::vector<std::string>* skipped) {
  Metrics m;
  m.name = run.filename().empty() ? run.parent_path().filename().string() : run.filename().string();
  const auto path = run / "metrics.jsonl";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open (is " + run.string() + " a run directory?)");
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    const bool partial = in.eof();  // getline met the end of the file before a newline
    const std::string where = path.string() + ":" + std::to_string(line_number);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    const auto has_number = [&](const char* key) { return j.is_object() && j.contains(key) && j[key].is_number(); };
    const auto number = [&](const char* key) {
      if (!has_number(key)) throw Error(where + ": no number '" + key + "'");
      return j[key].get<double>();
    };
    if (partial && !(has_number("step") && has_number("wall_s") && has_number("train_loss") && has_number("lr") &&
                     has_number("clip_fraction"))) {
      if (skipped) skipped->push_back(where + ": the last line is incomplete (a run still being written?): skipped");
      break;
    }
    if (j.is_discarded() || !j.is_object()) throw Error(where + ": not JSON");
    m.step.push_back(number("step"));
    m.wall.push_back(number("wall_s"));
    m.train.push_back(number("train_loss"));
    m.lr.push_back(number("lr"));
    m.clip.push_back(number("clip_fraction"));
    if (j.contains("val_loss") && j["val_loss"].is_number()) {
      m.val_step.push_back(m.step.back());
      m.val_wall.push_back(m.wall.back());
      m.val.push_back(j["val_loss"].get<double>());
    }
    m.language_model = m.language_model || j.contains("val_bpc");
  }
  if (m.step.empty()) throw Error(path.string() + ": no metrics yet");
  return m;
}

}  // namespace

std::string RenderCurves(const std::vector<std::filesystem::path>& runs, std::vector<std::string>* skipped) {
  if (runs.empty()) throw Error("curves: no run directory given");
  std::vector<Metrics> all;
  for (const auto& run : runs) all.push_back(Read(run, skipped));
  bool language_models = true;
  for (const auto& m : all) language_models = language_models && m.language_model;
  const std::string loss = language_models ? "loss (nats per symbol; bits = nats / 0.693)" : "loss";

  LineChart by_step{"Loss against steps", "step", loss, {}};
  LineChart by_time{"Loss against wall time", "seconds", loss, {}};
  LineChart lr{"Learning rate", "step", "learning rate", {}};
  LineChart clip{"Steps clipped", "step", "fraction of steps whose gradient was clipped", {}};
  by_step.log_y = by_time.log_y = clip.log_y = false;
  for (size_t k = 0; k < all.size(); ++k) {
    const Metrics& m = all[k];
    const std::string colour = PaletteColour(k);
    // One legend entry per run; the key says which line is which.
    by_step.series.push_back({m.name, m.step, m.train, {}, {}, false, colour, false});
    by_step.series.push_back({m.name + " validation", m.val_step, m.val, {}, {}, false, colour, true, false});
    by_time.series.push_back({m.name, m.wall, m.train, {}, {}, false, colour, false});
    by_time.series.push_back({m.name + " validation", m.val_wall, m.val, {}, {}, false, colour, true, false});
    lr.series.push_back({m.name, m.step, m.lr, {}, {}, false, colour, false});
    clip.series.push_back({m.name, m.step, m.clip, {}, {}, false, colour, false});
  }
  LineSeries train_key, validation_key;
  train_key.label = "train";
  validation_key.label = "validation";
  validation_key.dashed = true;
  for (LineChart* chart : {&by_step, &by_time}) chart->key = {train_key, validation_key};
  for (LineChart* chart : {&by_step, &by_time, &lr, &clip}) {
    chart->width = 760;
    chart->height = 440;
  }
  // The runs' names in the title while they fit on one line (about 100 characters at its size).
  std::string title = "Training curves: ";
  for (size_t k = 0; k < all.size(); ++k) title += (k ? ", " : "") + all[k].name;
  if (all.size() > 1 && title.size() > 100) title = "Training curves of " + std::to_string(all.size()) + " runs";
  return RenderPanels({by_step, by_time, lr, clip}, 2, title);
}

void WriteCurves(const std::vector<std::filesystem::path>& runs, const std::filesystem::path& out,
                 std::vector<std::string>* skipped) {
  SaveText(RenderCurves(runs, skipped), out);
}

}  // namespace bptt
