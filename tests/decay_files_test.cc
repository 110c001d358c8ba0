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
  EXPECT_EQ(CountElements(svg, "path", "reference"), 1);  // the tanh RNN's own bound; none for LSTM and GRU
  char bound[64];
  std::snprintf(bound, sizeof bound, "(1·%.3g)^k bound, rnn-tanh", reports[0].layers.back().sigma_max);
  EXPECT_NE(ReadAll(dir / "decay.svg").find(bound), std::string::npos) << bound;
  EXPECT_EQ(svg.get<std::string>("svg.<xmlattr>.xmlns"), "http://www.w3.org/2000/svg");
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
  DecayTrainLog log(dir);
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
  DecayTrainLog(dir).Record(10, report);
  const size_t one = HeatmapCells(dir / "heatmap.svg");
  DecayTrainLog resumed(dir);  // a new process, as after --resume
  resumed.Record(20, report);
  const size_t two = HeatmapCells(dir / "heatmap.svg");
  EXPECT_EQ(two - one, 12u);  // the second row of 12 lags; the first was read back
}

TEST(DecayTrainLog, RefusesAMalformedRecordNamingTheFileAndLine) {
  const fs::path dir = TempDir("malformed");
  std::ofstream(dir / "decay_train.csv") << "step,layer,quantity,lag,median,relative\n"
                                         << "10,0,h,0,1,1\n"
                                         << "10,zero,h,1,0.5,0.5\n";
  const std::string error = test::ErrorOf([&] { DecayTrainLog log(dir); });
  EXPECT_EQ(error, (dir / "decay_train.csv").string() +
                       ":3: not a row of step,layer,quantity,lag,median,relative");
  std::ofstream(dir / "decay_train.csv") << "model,layer\n";
  EXPECT_NE(test::ErrorOf([&] { DecayTrainLog log(dir); }).find(":1: the header is not"), std::string::npos);
}

}  // namespace
}  // namespace bptt
