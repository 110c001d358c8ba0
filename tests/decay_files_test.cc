// The files of gradient-decay measurements (decay_files.h): decay.csv, summary.json and
// decay.svg parse and hold their keys; a training run's decay_train.csv grows by one
// measurement a record, its heatmap.svg draws every recorded step, including those a run wrote
// before it was resumed, and a malformed record is refused with the file and line.
#include "bptt/decay_files.h"

#include <gtest/gtest.h>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/plot.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A fresh directory under the test temporary directory.
fs::path TempDir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / ("decay_files_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ModelParams<double> Fresh(const ModelConfig& config, InitScheme scheme, double scale, uint64_t seed = 7) {
  InitOptions init;
  init.scheme = scheme;
  init.scale = scale;
  Rng rng(seed);
  auto params = ModelParams<double>::Zeros(config);
  Initialize(config, init, rng, params);
  return params;
}

std::vector<std::string> Split(const std::string& line, char separator) {
  std::vector<std::string> out;
  std::stringstream in(line);
  for (std::string field; std::getline(in, field, separator);) out.push_back(field);
  return out;
}

// Elements named `name` whose class attribute is `cls`, anywhere below `tree`.
int CountElements(const boost::property_tree::ptree& tree, const std::string& name, const std::string& cls) {
  int n = 0;
  for (const auto& [key, child] : tree) {
    if (key == name && child.get<std::string>("<xmlattr>.class", "") == cls) ++n;
    n += CountElements(child, name, cls);
  }
  return n;
}

TEST(Outputs, CsvJsonAndSvgParseAndHoldTheirKeys) {
  std::vector<DecayReport> reports;
  DecayOptions options;
  options.jacobian_lags = 6;
  Rng rng(31);
  const Batch<double> data = UniformInputs(8, 40, 5, rng);
  for (const char* cell : {"rnn-tanh", "lstm", "gru"}) {
    const ModelConfig config = LanguageModel(*FindCell(cell), 8, 0, 6, 2);
    reports.push_back(MeasureDecay(cell, config, Fresh(config, InitScheme::kOrthogonal, 0), data, options));
  }
  const fs::path dir = TempDir("outputs");
  WriteDecayCsv(reports, dir / "decay.csv");
  WriteDecaySummary(reports, options, dir / "summary.json");
  WriteDecayPlot(reports, dir / "decay.svg");

  std::istringstream csv(ReadAll(dir / "decay.csv"));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "model,layer,quantity,lag,median,q1,q3,relative");
  size_t rows = 0, expected_rows = 0;
  for (const auto& r : reports)
    for (const auto& c : r.curves) expected_rows += c.lags.size();
  std::map<std::string, int> quantities;
  while (std::getline(csv, line)) {
    const auto f = Split(line, ',');
    ASSERT_EQ(f.size(), 8u) << line;
    ++quantities[f[2]];
    EXPECT_TRUE(f[2] == "h" || f[2] == "c" || f[2] == "jacobian") << line;
    EXPECT_GE(std::stoi(f[3]), 0);
    for (int i = 4; i < 8; ++i) EXPECT_GE(std::stod(f[i]), 0.0) << line;
    ++rows;
  }
  EXPECT_EQ(rows, expected_rows);
  EXPECT_EQ(quantities["h"], 3 * 2 * 40);
  EXPECT_EQ(quantities["c"], 2 * 40);  // LSTM only

  const auto json = nlohmann::json::parse(ReadAll(dir / "summary.json"));
  ASSERT_EQ(json.at("models").size(), 3u);
  for (const auto& model : json.at("models")) {
    EXPECT_TRUE(model.contains("model"));
    EXPECT_TRUE(model.at("clip_fraction").is_number());
    ASSERT_EQ(model.at("layers").size(), 2u);
    for (const auto& layer : model.at("layers"))
      for (const char* key : {"layer", "decay_factor", "half_life", "lag_below_1e-6", "explodes", "sigma_max",
                              "spectral_radius", "pascanu_bound"})
        EXPECT_TRUE(layer.contains(key)) << key;
  }
  EXPECT_TRUE(json.at("models")[0].at("layers")[0].at("pascanu_bound").is_number());  // rnn-tanh
  EXPECT_TRUE(json.at("models")[1].at("layers")[0].at("pascanu_bound").is_null());    // lstm

  boost::property_tree::ptree svg;
  std::istringstream svg_text(ReadAll(dir / "decay.svg"));
  ASSERT_NO_THROW(boost::property_tree::read_xml(svg_text, svg));
  EXPECT_EQ(CountElements(svg, "path", "series"), 3);
  EXPECT_EQ(CountElements(svg, "path", "band"), 3);
  // No bound: the orthogonal tanh RNN's γ·σ_max is 1 (its bound shows no vanishing), and LSTM
  // and GRU have none (Outputs.PlotDrawsTheBoundOnlyWhereItApplies draws one).
  EXPECT_EQ(CountElements(svg, "path", "reference"), 0);
  EXPECT_EQ(svg.get<std::string>("svg.<xmlattr>.xmlns"), "http://www.w3.org/2000/svg");
}

// The plot draws a model's bound (γ·σ_max(W_hh))^k only where it proves the gradient vanishes:
// for a plain RNN whose γ·σ_max is below 1. Not for a trained sigmoid RNN with σ_max = 6.27
// (1.57^k says nothing about vanishing), nor for an LSTM (no such bound).
TEST(Outputs, PlotDrawsTheBoundOnlyWhereItApplies) {
  std::vector<DecayReport> reports;
  for (const auto& [name, cell, sigma_max] : std::vector<std::tuple<std::string, std::string, double>>{
           {"sigmoid-init", "rnn-sigmoid", 1.0}, {"sigmoid-trained", "rnn-sigmoid", 6.27}, {"lstm", "lstm", 6.91}}) {
    DecayReport r;
    r.model = name;
    r.config = LanguageModel(*FindCell(cell), 5, 0, 4, 1, 0.0);
    DecayCurve curve;
    curve.quantity = "h";
    for (int k = 0; k <= 20; ++k) {
      curve.lags.push_back(k);
      curve.median.push_back(std::pow(0.5, k));
      curve.q1.push_back(0.9 * std::pow(0.5, k));
      curve.q3.push_back(1.1 * std::pow(0.5, k));
      curve.relative.push_back(std::pow(0.5, k));
    }
    r.curves.push_back(curve);
    LayerDecay layer;
    layer.sigma_max = sigma_max;
    layer.pascanu_bound = r.config.cell->pascanu_gamma * sigma_max;  // NaN for the LSTM
    r.layers.push_back(layer);
    reports.push_back(std::move(r));
  }
  const fs::path dir = TempDir("bounds");
  WriteDecayPlot(reports, dir / "decay.svg");
  boost::property_tree::ptree tree;
  std::istringstream in(ReadAll(dir / "decay.svg"));
  ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree));
  EXPECT_EQ(CountElements(tree, "path", "series"), 3);
  EXPECT_EQ(CountElements(tree, "path", "reference"), 1);
  const std::string svg = ReadAll(dir / "decay.svg");
  EXPECT_NE(svg.find("(0.25·1)^k bound, sigmoid-init"), std::string::npos);
  size_t labels = 0;
  for (size_t at = svg.find(")^k bound"); at != std::string::npos; at = svg.find(")^k bound", at + 1)) ++labels;
  EXPECT_EQ(labels, 1u);
}

TEST(DecayTrainLog, AppendsRowsAndDrawsTheHeatmap) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 5, 0, 4, 1, 0.0);
  InitOptions init;
  Rng init_rng(1);
  auto params = ModelParams<float>::Zeros(config);
  Initialize(config, init, init_rng, params);
  Rng rng(2);
  const Batch<double> data = UniformInputs(5, 20, 3, rng);
  DecayOptions options;
  options.jacobian_lags = 0;
  const fs::path dir = TempDir("record");
  const DecayReport report = MeasureDecay("gru", config, params.Cast<double>(), data, options);
  DecayTrainLog log(dir, -1);
  log.Record(0, report);
  log.Record(100, report);

  std::istringstream csv(ReadAll(dir / "decay_train.csv"));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "step,layer,quantity,lag,median,relative");
  std::map<std::string, int> per_step;
  while (std::getline(csv, line)) {
    const auto f = Split(line, ',');
    ASSERT_EQ(f.size(), 6u) << line;
    ++per_step[f[0]];
  }
  EXPECT_EQ(per_step["0"], 20);
  EXPECT_EQ(per_step["100"], 20);

  boost::property_tree::ptree svg;
  std::istringstream svg_text(ReadAll(dir / "heatmap.svg"));
  ASSERT_NO_THROW(boost::property_tree::read_xml(svg_text, svg));
  const std::string text = ReadAll(dir / "heatmap.svg");
  size_t cells = 0;
  for (size_t at = text.find("<rect x="); at != std::string::npos; at = text.find("<rect x=", at + 1)) ++cells;
  EXPECT_GE(cells, 2u * 20u);  // two rows of 20 lags, plus the frame and colour bar
}

TEST(Heatmap, RejectsMismatchedShapes) {
  Heatmap map;
  map.rows = {1, 2};
  map.columns = {0};
  map.values = Mat<double>::Zero(3, 1);
  EXPECT_THROW(RenderHeatmap(map), Error);
}

// The heatmap's rows: the y labels of its cells, one per recorded step.
size_t HeatmapCells(const fs::path& svg) {
  const std::string text = ReadAll(svg);
  size_t cells = 0;
  for (size_t at = text.find("<rect x="); at != std::string::npos; at = text.find("<rect x=", at + 1)) ++cells;
  return cells;
}

TEST(DecayTrainLog, ReadsTheRowsOfTheRunBeforeAResume) {
  const ModelConfig config = LanguageModel(*FindCell("rnn-tanh"), 5, 0, 3, 1, 0.0);
  Rng rng(2);
  DecayOptions options;
  options.jacobian_lags = 0;
  const DecayReport report =
      MeasureDecay("rnn-tanh", config, Fresh(config, InitScheme::kOrthogonal, 0), UniformInputs(5, 12, 3, rng), options);
  const fs::path dir = TempDir("resume");
  DecayTrainLog first(dir, -1);
  first.Record(10, report);
  const size_t one = HeatmapCells(dir / "heatmap.svg");
  first.Record(30, report);  // past the checkpoint the run is resumed from
  DecayTrainLog resumed(dir, 20);  // a new process, as after --resume at step 20
  resumed.Record(30, report);
  const size_t two = HeatmapCells(dir / "heatmap.svg");
  EXPECT_EQ(two - one, 12u);  // the second row of 12 lags; the first was read back, the dropped one redrawn once
  std::map<std::string, int> per_step;
  std::istringstream csv(ReadAll(dir / "decay_train.csv"));
  std::string line;
  std::getline(csv, line);
  while (std::getline(csv, line)) ++per_step[Split(line, ',')[0]];
  EXPECT_EQ(per_step.size(), 2u);
  EXPECT_EQ(per_step["10"], per_step["30"]);  // step 30's rows once: the interrupted run's were dropped
}

TEST(DecayTrainLog, ANewRunStartsAfresh) {
  const fs::path dir = TempDir("fresh");
  std::ofstream(dir / "decay_train.csv") << "step,layer,quantity,lag,median,relative\nx,y,h,z,1,1\n";
  DecayTrainLog log(dir, -1);
  EXPECT_FALSE(fs::exists(dir / "decay_train.csv"));
}

TEST(DecayTrainLog, RefusesAMalformedRecordNamingTheFileAndLine) {
  const fs::path dir = TempDir("malformed");
  std::ofstream(dir / "decay_train.csv") << "step,layer,quantity,lag,median,relative\n"
                                         << "10,0,h,0,1,1\n"
                                         << "10,zero,h,1,0.5,0.5\n";
  const std::string error = test::ErrorOf([&] { DecayTrainLog log(dir, 100); });
  EXPECT_EQ(error, (dir / "decay_train.csv").string() +
                       ":3: not a row of step,layer,quantity,lag,median,relative");
  std::ofstream(dir / "decay_train.csv") << "model,layer\n";
  EXPECT_NE(test::ErrorOf([&] { DecayTrainLog log(dir, 100); }).find(":1: the header is not"), std::string::npos);
}

}  // namespace
}  // namespace bptt
