// Training curves: the figure of two runs parses as SVG with four panels, one colour per run,
// a solid training line and a dashed validation line per run in the loss panels; a directory
// without metrics is an error naming it.
#include <gtest/gtest.h>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include "bptt/curves.h"
#include "bptt/error.h"
#include "bptt/plot.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;
using boost::property_tree::ptree;

void Collect(const ptree& tree, const std::string& name, std::vector<const ptree*>& out) {
  for (const auto& [key, child] : tree) {
    if (key == name) out.push_back(&child);
    Collect(child, name, out);
  }
}

TEST(Curves, TwoRunsInFourPanelsOneColourPerRun) {
  const fs::path dir = fs::temp_directory_path() / ("bptt_curves_test_" + std::to_string(::getpid()));
  for (const char* run : {"a", "b"}) {
    fs::create_directories(dir / run);
    std::ofstream out(dir / run / "metrics.jsonl");
    for (int step = 10; step <= 50; step += 10) {
      nlohmann::json m = {{"step", step}, {"wall_s", step * 0.1}, {"train_loss", 3.0 - step * 0.01},
                          {"lr", 0.002}, {"clip_fraction", step == 30 ? 0.5 : 0.0}, {"val_loss", nullptr}};
      if (step % 20 == 0) m["val_loss"] = 3.1 - step * 0.01, m["val_bpc"] = (3.1 - step * 0.01) / 0.693;
      out << m.dump() << "\n";
    }
  }
  const std::string svg = RenderCurves({dir / "a", dir / "b"});
  ptree tree;
  std::istringstream in(svg);
  ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree));
  std::vector<const ptree*> panels, paths;
  Collect(tree.get_child("svg"), "svg", panels);
  EXPECT_EQ(panels.size(), 4u);
  Collect(tree, "path", paths);
  std::map<std::string, std::set<std::string>> colours_by_run;
  int dashed = 0, series = 0;
  for (const ptree* p : paths) {
    if (p->get<std::string>("<xmlattr>.class", "") != "series") continue;
    ++series;
    const std::string label = p->get<std::string>("title", "");
    colours_by_run[label.substr(0, 1)].insert(p->get<std::string>("<xmlattr>.stroke"));
    if (p->get_optional<std::string>("<xmlattr>.stroke-dasharray")) {
      ++dashed;
      EXPECT_NE(label.find("validation"), std::string::npos) << label;
    }
  }
  EXPECT_EQ(series, 2 * 4 + 2 + 2);  // loss panels: train and validation per run; lr and clip: one per run
  EXPECT_EQ(dashed, 2 * 2);
  ASSERT_EQ(colours_by_run.size(), 2u);
  EXPECT_EQ(colours_by_run["a"].size(), 1u);
  EXPECT_EQ(colours_by_run["b"].size(), 1u);
  EXPECT_NE(*colours_by_run["a"].begin(), *colours_by_run["b"].begin());
  EXPECT_NE(svg.find("nats per symbol"), std::string::npos);

  fs::create_directories(dir / "empty");
  try {
    RenderCurves({dir / "a", dir / "empty"});
    ADD_FAILURE() << "a directory without metrics was drawn";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "empty" / "metrics.jsonl").string()), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}


// Ranges whose span a double cannot resolve (one point at a step near INT64_MAX, a span of one
// step there, a constant series) draw a bounded number of ticks at finite coordinates.
TEST(LineChart, RangesTooNarrowForTheirMagnitudeDrawFewFiniteTicks) {
  const double big = 9223372036854775807.0;
  for (const auto& [xs, ys, log_y] : std::vector<std::tuple<std::vector<double>, std::vector<double>, bool>>{
           {{big}, {0.064}, true},
           {{big - 1, big}, {0.064, 0.063}, false},
           {{1e300, 1e300}, {-1e300, -1e300}, false},
           {{0, 1}, {5, 5}, false}}) {
    LineChart chart;
    chart.log_y = log_y;
    LineSeries series;
    series.label = "run";
    series.x = xs;
    series.y = ys;
    chart.series.push_back(series);
    const std::string svg = RenderLineChart(chart);
    ptree tree;
    std::istringstream in(svg);
    ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree));
    std::vector<const ptree*> texts;
    Collect(tree, "text", texts);
    EXPECT_LT(texts.size(), 60u) << xs.front();
    EXPECT_EQ(svg.find("nan"), std::string::npos) << xs.front();
    EXPECT_EQ(svg.find("inf"), std::string::npos) << xs.front();
  }
}

}  // namespace
}  // namespace bptt
