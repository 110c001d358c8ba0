#include "bptt/decay_files.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "bptt/error.h"
#include "bptt/plot.h"

namespace bptt {

namespace {

std::string Format(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

nlohmann::json JsonNumber(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json FitJson(const DecayFit& fit) {
  return {{"decay_factor", JsonNumber(fit.decay_factor)},
          {"half_life", JsonNumber(fit.half_life)},
          {"lag_below_1e-6", fit.lag_below >= 0 ? nlohmann::json(fit.lag_below) : nlohmann::json(nullptr)},
          {"explodes", fit.explodes}};
}

constexpr std::string_view kTrainHeader = "step,layer,quantity,lag,median,relative";

// The whole field as a number of type T, nothing left over.
template <typename T>
bool ParseField(std::string_view field, T& value) {
  if constexpr (std::is_floating_point_v<T>) {
    if (field.empty()) return false;
    const std::string text(field);
    char* end = nullptr;
    value = std::strtod(text.c_str(), &end);
    return end == text.c_str() + text.size();
  } else {
    const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), value);
    return error == std::errc() && end == field.data() + field.size();
  }
}

}  // namespace

void WriteDecayCsv(const std::vector<DecayReport>& reports, const std::filesystem::path& path) {
  std::ostringstream out;
  out << "model,layer,quantity,lag,median,q1,q3,relative\n";
  for (const auto& r : reports)
    for (const auto& c : r.curves)
      for (size_t i = 0; i < c.lags.size(); ++i)
        out << CsvField(r.model) << ',' << c.layer << ',' << c.quantity << ',' << c.lags[i] << ',' << Format(c.median[i])
            << ',' << Format(c.q1[i]) << ',' << Format(c.q3[i]) << ',' << Format(c.relative[i]) << '\n';
  SaveText(out.str(), path);
}

nlohmann::json DecaySummaryJson(const std::vector<DecayReport>& reports, const DecayOptions& options) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& r : reports) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& ld : r.layers) {
      nlohmann::json j = FitJson(ld.h);
      j["layer"] = ld.layer;
      j["sigma_max"] = JsonNumber(ld.sigma_max);
      j["spectral_radius"] = JsonNumber(ld.spectral_radius);
      j["pascanu_bound"] = JsonNumber(ld.pascanu_bound);
      nlohmann::json gates = nlohmann::json::array();
      for (const auto& sp : ld.spectra)
        gates.push_back({{"gate", sp.gate}, {"sigma_max", JsonNumber(sp.sigma_max)},
                         {"spectral_radius", JsonNumber(sp.spectral_radius)}});
      j["gates"] = gates;
      if (r.Find(ld.layer, "c")) j["c"] = FitJson(ld.c);
      if (r.Find(ld.layer, "jacobian")) j["jacobian"] = FitJson(ld.jacobian);
      layers.push_back(j);
    }
    models.push_back({{"model", r.model},
                      {"cell", std::string(r.config.cell->name)},
                      {"hidden", r.config.hidden_size},
                      {"layers_count", r.config.layers},
                      {"vocab_size", r.config.vocab_size},
                      {"steps", r.T},
                      {"batch", r.B},
                      {"loss_step", r.loss_step},
                      {"grad_norm", JsonNumber(r.grad_norm)},
                      {"clip_norm", r.clip_norm},
                      {"clip_fraction", JsonNumber(r.clip_fraction)},
                      {"layers", layers}});
  }
  return {{"options",
           {{"loss_step", options.loss_step},
            {"jacobian_lags", options.jacobian_lags},
            {"jacobian_batch", options.jacobian_batch},
            {"power_iterations", options.power_iterations},
            {"power_tolerance", options.power_tolerance},
            {"clip_norm", options.clip_norm},
            {"vanish_threshold", options.vanish_threshold},
            {"seed", options.seed}}},
          {"models", models}};
}

void WriteDecaySummary(const std::vector<DecayReport>& reports, const DecayOptions& options,
                       const std::filesystem::path& path) {
  SaveText(DecaySummaryJson(reports, options).dump(2) + "\n", path);
}

void WriteDecayPlot(const std::vector<DecayReport>& reports, const std::filesystem::path& path) {
  LineChart chart;
  chart.title = "Gradient decay over timesteps (median and quartiles over sequences)";
  chart.x_label = "lag k (steps back from the loss)";
  chart.y_label = "‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖  (top layer)";
  std::vector<LineSeries> bounds;
  for (const auto& r : reports) {
    const DecayCurve* c = r.Find(r.config.layers - 1, "h");
    if (c == nullptr) continue;
    LineSeries s;
    s.label = r.model;
    const double m0 = c->median.front();
    for (size_t i = 0; i < c->lags.size(); ++i) {
      s.x.push_back(c->lags[i]);
      s.y.push_back(c->relative[i]);
      s.low.push_back(c->q1[i] / m0);
      s.high.push_back(c->q3[i] / m0);
    }
    chart.series.push_back(std::move(s));
    // The bound that holds for this model's weights: each step back multiplies the top layer's
    // gradient by diag(act') U^T, of norm at most γ σ_max(U), so ‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖ <=
    // (γ σ_max)^k. (0.25^k alone is the bound only for σ_max <= 1.) Drawn where it shows the
    // gradient vanishing: a plain RNN (gated cells have no γ) with γ σ_max below 1 (not 1 within
    // the rounding of float weights, as for a tanh RNN with an orthogonal U).
    const double gamma_sigma = r.layers.back().pascanu_bound;
    if (!(gamma_sigma < 1 - 1e-6)) continue;
    char label[128];
    std::snprintf(label, sizeof label, "(%.3g·%.3g)^k bound, %s", r.config.cell->pascanu_gamma,
                  r.layers.back().sigma_max, r.model.c_str());
    LineSeries bound;
    bound.label = label;
    bound.reference = true;
    for (int k = 0; k <= c->lags.back(); ++k) {
      bound.x.push_back(k);
      bound.y.push_back(std::pow(gamma_sigma, k));
    }
    bounds.push_back(std::move(bound));
  }
  for (auto& bound : bounds) chart.series.push_back(std::move(bound));
  SaveText(RenderLineChart(chart), path);
}

DecayTrainLog::DecayTrainLog(std::filesystem::path run_dir, int64_t resumed_at) : dir_(std::move(run_dir)) {
  const std::filesystem::path csv = dir_ / "decay_train.csv";
  if (resumed_at < 0) {  // a new record
    std::error_code error;
    std::filesystem::remove(csv, error);
    if (error) throw Error(csv.string() + ": cannot replace: " + error.message());
    return;
  }
  std::ifstream in(csv);
  if (!in) return;  // nothing recorded before the resume
  std::string line, kept;
  int64_t number = 0;
  bool dropped = false;
  while (std::getline(in, line)) {
    ++number;
    const auto bad = [&](const std::string& why) {
      return Error(csv.string() + ":" + std::to_string(number) + ": " + why);
    };
    if (number == 1) {
      if (line != kTrainHeader) throw bad("the header is not " + std::string(kTrainHeader));
      continue;
    }
    std::vector<std::string_view> fields;
    for (std::string_view rest = line;;) {
      const size_t comma = rest.find(',');
      fields.push_back(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    int64_t step = 0;
    int layer = 0, lag = 0;
    double median = 0, relative = 0;
    if (fields.size() != 6 || !ParseField(fields[0], step) || !ParseField(fields[1], layer) ||
        !ParseField(fields[3], lag) || !ParseField(fields[4], median) || !ParseField(fields[5], relative))
      throw bad("not a row of " + std::string(kTrainHeader));
    if (step > resumed_at) {
      dropped = true;
      continue;
    }
    kept += line + '\n';
    if (fields[2] == "h") relative_h_[layer][step][lag] = relative;
  }
  if (in.bad()) throw Error(csv.string() + ": read failed");
  if (dropped) SaveText(std::string(kTrainHeader) + '\n' + kept, csv);
}

void DecayTrainLog::Record(int64_t step, const DecayReport& report) {
  const std::filesystem::path csv = dir_ / "decay_train.csv";
  std::error_code error;
  const bool fresh = !std::filesystem::exists(csv, error) || std::filesystem::file_size(csv, error) == 0;
  {
    std::ofstream out(csv, std::ios::app);
    if (!out) throw Error(csv.string() + ": cannot open for appending");
    if (fresh) out << kTrainHeader << '\n';
    for (const auto& c : report.curves)
      for (size_t i = 0; i < c.lags.size(); ++i)
        out << step << ',' << c.layer << ',' << c.quantity << ',' << c.lags[i] << ',' << Format(c.median[i]) << ','
            << Format(c.relative[i]) << '\n';
    if (!out) throw Error(csv.string() + ": write failed");
  }
  for (const auto& c : report.curves) {
    if (c.quantity != "h") continue;
    std::map<int, double>& row = relative_h_[c.layer][step];
    row.clear();
    for (size_t i = 0; i < c.lags.size(); ++i) row[c.lags[i]] = c.relative[i];
  }

  // The heatmap of every recorded step: top layer, log10 of the relative norm.
  const std::map<int64_t, std::map<int, double>>& grid = relative_h_[report.config.layers - 1];
  Heatmap map;
  map.title = "Gradient decay during training (" + std::string(report.config.cell->name) + ", top layer)";
  map.x_label = "lag k (steps back from the loss)";
  map.y_label = "training step";
  map.colour_label = "log10 ‖∂L/∂h(s−k)‖ / ‖∂L/∂h(s)‖";
  std::map<int, size_t> column_of;
  for (const auto& [st, row] : grid)
    for (const auto& [lag, v] : row) column_of.emplace(lag, 0);
  for (auto& [lag, j] : column_of) {
    j = map.columns.size();
    map.columns.push_back(lag);
  }
  map.values = Mat<double>::Constant(static_cast<Eigen::Index>(grid.size()), static_cast<Eigen::Index>(map.columns.size()),
                                     std::numeric_limits<double>::quiet_NaN());
  for (const auto& [st, row] : grid) {
    const Eigen::Index i = static_cast<Eigen::Index>(map.rows.size());
    map.rows.push_back(static_cast<double>(st));
    for (const auto& [lag, v] : row)
      if (v > kSmallestDecayNorm) map.values(i, static_cast<Eigen::Index>(column_of[lag])) = std::log10(v);
  }
  SaveText(RenderHeatmap(map), dir_ / "heatmap.svg");
}

}  // namespace bptt
