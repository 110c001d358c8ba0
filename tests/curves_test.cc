// Training curves: the figure of two runs parses as SVG with four panels, one colour per run,
// a solid training line and a dashed validation line per run in the loss panels; a directory
// without metrics is an error naming it, a partial last line (a run being written) is skipped
// with a warning. Line charts: extreme finite values and any run name give a well-formed UTF-8
// document with finite coordinates inside the figure; many runs keep distinct colours and a
// legend that is drawn whole; a chart narrowed by its legend draws x tick labels apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include "bptt/curves.h"
#include "bptt/error.h"
#include "bptt/plot.h"
#include "test_util.h"
#include "utf8.h"

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


// A line chart rendered, parsed as XML (a test failure where it does not parse), and its text
// elements (pointers into tree).
struct Rendered {
  std::string svg;
  ptree tree;
  std::vector<const ptree*> texts;
};
void Render(const LineChart& chart, Rendered& r) {
  r.svg = RenderLineChart(chart);
  std::istringstream in(r.svg);
  EXPECT_NO_THROW(boost::property_tree::read_xml(in, r.tree));
  Collect(r.tree, "text", r.texts);
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
    Rendered r;
    Render(chart, r);
    EXPECT_LT(r.texts.size(), 60u) << xs.front();
    EXPECT_EQ(r.svg.find("nan"), std::string::npos) << xs.front();
    EXPECT_EQ(r.svg.find("inf"), std::string::npos) << xs.front();
  }
}

// Writes dir/metrics.jsonl with `steps` lines (a validation every other line), then `tail`.
void WriteRun(const fs::path& dir, int steps, const std::string& tail = "") {
  fs::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl", std::ios::binary);
  for (int step = 1; step <= steps; ++step) {
    nlohmann::json m = {{"step", step * 10}, {"wall_s", step * 0.5}, {"train_loss", 3.0 - step * 0.01},
                        {"lr", 0.002}, {"clip_fraction", 0.0}, {"val_loss", nullptr}};
    if (step % 2 == 0) m["val_loss"] = 3.1 - step * 0.01;
    out << m.dump() << "\n";
  }
  out << tail;
}

// Every number in an SVG path's d attribute ("M x y L x y ...").
std::vector<double> PathNumbers(const std::string& d) {
  std::vector<double> out;
  std::istringstream in(d);
  for (std::string token; in >> token;) {
    if (token == "Z") continue;
    if (token[0] == 'M' || token[0] == 'L') token.erase(0, 1);
    out.push_back(std::stod(token));
  }
  return out;
}

// Whether text is well-formed UTF-8 holding only characters XML 1.0 allows.
bool IsXmlText(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const int n = CheckUtf8Sequence(std::string_view(text).substr(i));
    if (n <= 0) return false;
    const auto lead = static_cast<unsigned char>(text[i]);
    if (n == 1 && lead < 0x20 && lead != '\t' && lead != '\n' && lead != '\r') return false;
    if (text.compare(i, 3, "\xEF\xBF\xBE") == 0 || text.compare(i, 3, "\xEF\xBF\xBF") == 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

// Values near the largest double (a diverged run's loss, a step counter gone wild) span more
// than a double holds: the axes still map every point to a finite coordinate inside the chart.
TEST(LineChart, ExtremeFiniteValuesDrawInsideTheChart) {
  const double max = std::numeric_limits<double>::max();
  for (const auto& [xs, ys, log_y] : std::vector<std::tuple<std::vector<double>, std::vector<double>, bool>>{
           {{1, 2}, {1e308, -1e308}, false},
           {{1, 2, 3}, {max, -max, 0}, false},
           {{-1e308, 1e308}, {1, 2}, false},
           {{-max, max}, {1e-300, 1e300}, true},
           {{1, 2}, {max, max}, false},
           {{1, 2}, {-max, -max}, false},
           {{max, max}, {1, 2}, false},
           {{-max}, {max}, false}}) {
    LineChart chart;
    chart.log_y = log_y;
    LineSeries series;
    series.label = "run";
    series.x = xs;
    series.y = ys;
    chart.series.push_back(series);
    const std::string svg = RenderLineChart(chart);
    const std::string what = std::to_string(xs.front()) + " " + std::to_string(ys.front());
    EXPECT_EQ(svg.find("nan"), std::string::npos) << what;
    EXPECT_EQ(svg.find("inf"), std::string::npos) << what;
    ptree tree;
    std::istringstream in(svg);
    ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree)) << what;
    std::vector<const ptree*> paths;
    Collect(tree, "path", paths);
    int drawn = 0;
    for (const ptree* p : paths) {
      if (p->get<std::string>("<xmlattr>.class", "") != "series") continue;
      const auto numbers = PathNumbers(p->get<std::string>("<xmlattr>.d"));
      EXPECT_EQ(numbers.size(), 2 * xs.size()) << what;
      for (size_t k = 0; k < numbers.size(); ++k) {
        EXPECT_GE(numbers[k], 0) << what;
        EXPECT_LE(numbers[k], k % 2 ? chart.height : chart.width) << what;
      }
      ++drawn;
    }
    EXPECT_EQ(drawn, 1) << what;
  }
}

// A chart narrowed by a long legend draws fewer x ticks rather than labels on top of each other:
// neighbouring labels (about 7 pixels a character, centred on their tick) are a character apart.
TEST(LineChart, XTickLabelsDoNotOverlapOnANarrowChart) {
  for (const int width : {420, 760, 1200}) {
    LineChart chart;
    chart.width = width;
    chart.log_y = false;
    for (const char* label : {"dropout, output dropout, weight drop 0.25", "no dropout"}) {
      LineSeries series;
      series.label = label;
      for (int step = 50; step <= 2028; step += 50) {
        series.x.push_back(step);
        series.y.push_back(3.0 - step * 0.001);
      }
      chart.series.push_back(series);
    }
    Rendered r;
    Render(chart, r);
    // The x tick labels: numbers centred on their ticks, on the row that holds most of them.
    std::map<std::string, std::vector<std::pair<double, std::string>>> rows;
    for (const ptree* t : r.texts) {
      const std::string content = t->get_value<std::string>();
      if (t->get<std::string>("<xmlattr>.text-anchor", "") != "middle" || content.empty() ||
          content.find_first_not_of("0123456789.-") != std::string::npos)
        continue;
      rows[t->get<std::string>("<xmlattr>.y")].emplace_back(t->get<double>("<xmlattr>.x"), content);
    }
    ASSERT_FALSE(rows.empty()) << width;
    auto ticks = std::max_element(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
                   return a.second.size() < b.second.size();
                 })->second;
    std::sort(ticks.begin(), ticks.end());
    EXPECT_GE(ticks.size(), 2u) << width;
    for (size_t i = 1; i < ticks.size(); ++i) {
      const double half_widths = 7.0 * static_cast<double>(ticks[i - 1].second.size() + ticks[i].second.size()) / 2;
      EXPECT_GE(ticks[i].first - ticks[i - 1].first, half_widths + 7)
          << width << ": " << ticks[i - 1].second << " and " << ticks[i].second;
    }
  }
}

// A run directory's name is bytes: whatever they are, the figure is a well-formed UTF-8 XML
// document that shows the name (ill-formed sequences and control characters as U+FFFD).
TEST(Curves, RunNamesThatAreNotUtf8GiveAWellFormedDocument) {
  const fs::path dir = fs::temp_directory_path() / ("bptt_curves_names_" + std::to_string(::getpid()));
  const std::vector<std::string> names = {"caf\xE9", "run\xFF\xFE", "ctl\x01\x1F", "cut\xE2\x82", "ok \xE2\x82\xAC <&>\""};
  std::vector<fs::path> runs;
  for (const auto& name : names) {
    runs.push_back(dir / name);
    WriteRun(runs.back(), 4);
  }
  const std::string svg = RenderCurves(runs);
  EXPECT_TRUE(IsXmlText(svg));
  ptree tree;
  std::istringstream in(svg);
  EXPECT_NO_THROW(boost::property_tree::read_xml(in, tree));
  EXPECT_NE(svg.find("caf\xEF\xBF\xBD"), std::string::npos);
  EXPECT_NE(svg.find("run\xEF\xBF\xBD\xEF\xBF\xBD"), std::string::npos);
  EXPECT_NE(svg.find("ok \xE2\x82\xAC &lt;&amp;&gt;&quot;"), std::string::npos);
  fs::remove_all(dir);
}

// Runs past the palette's first ten colours keep colours of their own; every entry of every
// panel's legend lies inside that panel, and the panels inside the figure.
TEST(Curves, ManyRunsHaveDistinctColoursAndAWholeLegend) {
  std::set<std::string> palette;
  for (size_t k = 0; k < 64; ++k) palette.insert(PaletteColour(k));
  EXPECT_EQ(palette.size(), 64u);

  const fs::path dir = fs::temp_directory_path() / ("bptt_curves_many_" + std::to_string(::getpid()));
  constexpr int kRuns = 24;
  std::vector<fs::path> runs;
  for (int r = 0; r < kRuns; ++r) {
    runs.push_back(dir / ("a-run-directory-with-a-name-too-long-for-the-legend-" + std::to_string(r)));
    WriteRun(runs.back(), 4);
  }
  const std::string svg = RenderCurves(runs);
  ptree tree;
  std::istringstream in(svg);
  ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree));
  const ptree& figure = tree.get_child("svg");
  const double figure_height = figure.get<double>("<xmlattr>.height");
  std::set<std::string> colours;
  int panels = 0;
  for (const auto& [key, panel] : figure) {
    if (key != "svg") continue;
    ++panels;
    const double top = panel.get<double>("<xmlattr>.y"), height = panel.get<double>("<xmlattr>.height");
    const double width = panel.get<double>("<xmlattr>.width");
    EXPECT_LE(top + height, figure_height);
    // The loss panels list the key (solid: train, dashed: validation), then one entry per run.
    const size_t listed_key = panels <= 2 ? 2 : 0;
    size_t entries = 0, lines = 0;
    for (const auto& [child_key, child] : panel) {
      if (child_key != "g" || child.get<std::string>("<xmlattr>.class", "") != "legend") continue;
      for (const auto& [item_key, item] : child) {
        if (item_key == "line" && lines++ >= listed_key) colours.insert(item.get<std::string>("<xmlattr>.stroke"));
        if (item_key != "text") continue;
        if (entries++ < listed_key) continue;
        EXPECT_GT(item.get<double>("<xmlattr>.y"), 0);
        EXPECT_LT(item.get<double>("<xmlattr>.y"), height);
        // about 7 pixels a character at 13 px: the label ends inside the panel
        const std::string label = item.get_value<std::string>();
        const auto characters = std::count_if(label.begin(), label.end(), [](char ch) { return (ch & 0xC0) != 0x80; });
        EXPECT_LT(item.get<double>("<xmlattr>.x") + 7.0 * static_cast<double>(characters), width + 1) << label;
        // what tells the runs apart (the end of the name) is still there
        const std::string suffix = std::to_string(entries - listed_key - 1);
        EXPECT_EQ(label.substr(label.size() - suffix.size() - 1), "-" + suffix);
      }
    }
    EXPECT_EQ(entries, listed_key + kRuns);
  }
  EXPECT_EQ(panels, 4);
  EXPECT_EQ(colours.size(), static_cast<size_t>(kRuns));
  fs::remove_all(dir);
}

// A run being written may end in a partial line: it is skipped with a warning naming the file
// and the line, and the complete lines are drawn. A complete last line without its newline is
// drawn; a malformed line before the last is still an error.
TEST(Curves, APartialLastLineIsSkippedWithAWarning) {
  const fs::path dir = fs::temp_directory_path() / ("bptt_curves_partial_" + std::to_string(::getpid()));
  WriteRun(dir / "writing", 3, "{\"step\": 40, \"wall_s\": 2.0, \"train_lo");
  std::vector<std::string> warnings;
  std::string svg;
  ASSERT_NO_THROW(svg = RenderCurves({dir / "writing"}, &warnings));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find((dir / "writing" / "metrics.jsonl").string() + ":4"), std::string::npos) << warnings[0];
  ptree tree;
  std::istringstream in(svg);
  ASSERT_NO_THROW(boost::property_tree::read_xml(in, tree));
  std::vector<const ptree*> paths;
  Collect(tree, "path", paths);
  int drawn = 0;
  for (const ptree* p : paths) {
    if (p->get<std::string>("title", "") == "writing") {
      EXPECT_EQ(PathNumbers(p->get<std::string>("<xmlattr>.d")).size(), 2u * 3) << p->get<std::string>("<xmlattr>.d");
      ++drawn;
    }
  }
  EXPECT_EQ(drawn, 4);  // training loss against steps and time, learning rate, clipped steps

  // A whole object without its newline is a complete line.
  WriteRun(dir / "unterminated", 2,
           R"({"step": 30, "wall_s": 1.5, "train_loss": 2.9, "lr": 0.002, "clip_fraction": 0.0})");
  warnings.clear();
  EXPECT_NO_THROW(RenderCurves({dir / "unterminated"}, &warnings));
  EXPECT_TRUE(warnings.empty());

  // Only a partial line: nothing to draw.
  WriteRun(dir / "started", 0, "{\"step\": 1");
  EXPECT_NE(test::ErrorOf([&] { RenderCurves({dir / "started"}); }).find("no metrics"), std::string::npos);

  // A broken line that is not the last is corruption, not a run being written.
  WriteRun(dir / "broken", 0, "{\"step\": 1\n");
  std::ofstream(dir / "broken" / "metrics.jsonl", std::ios::app)
      << R"({"step": 30, "wall_s": 1.5, "train_loss": 2.9, "lr": 0.002, "clip_fraction": 0.0})" << "\n";
  EXPECT_NE(test::ErrorOf([&] { RenderCurves({dir / "broken"}); }).find("metrics.jsonl:1: not JSON"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bptt
