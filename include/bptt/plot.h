// Plot: small, readable SVG figures written without any plotting library: a line chart with a
// logarithmic or linear y axis (lines, shaded bands, dashed reference lines, legend, title, axis
// labels), several charts as panels of one figure, and a heatmap with a colour bar. Each Render
// function returns the whole SVG document as a string; SaveText writes it. The caller owns the
// data; nothing is kept between calls.
//
//   LineChart chart{"Gradient decay", "lag k", "relative norm"};
//   chart.series.push_back({"lstm", lags, medians, q1s, q3s});
//   SaveText(RenderLineChart(chart), "decay.svg");
//
// In the SVG, each line is a <path class="series">, each band a <path class="band">, each
// reference line a <path class="reference">, so that tools and tests can find them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bptt/tensor.h"

namespace bptt {

// The k-th colour of the charts' palette: Tableau 10, then hues a golden angle apart at three
// lightnesses, so that every series of a chart has a colour of its own.
std::string PaletteColour(size_t k);

// One line of a chart. Points with a non-finite or non-positive y (for the log axis) are
// left out, breaking the line; the same for the band.
struct LineSeries {
  std::string label;
  std::vector<double> x, y;
  std::vector<double> low, high;  // optional band (same length as x); empty = no band
  bool reference = false;         // dashed grey, drawn under the data; does not set the y range
  std::string colour;             // "" = the next colour of the palette
  bool dashed = false;            // a dashed data line (e.g. a second quantity of the same run)
  bool in_legend = true;          // false: drawn, not listed (e.g. a run's second line, told by its dashes)
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<LineSeries> series;
  double y_floor = 1e-300;  // the y axis never extends below this (log axis)
  bool log_y = true;        // false: a linear y axis (points need only be finite)
  int width = 900, height = 540;
  std::string id = "plot";  // names the chart's clip path; unique within a document
  // Listed at the top of the legend and not drawn: what the line styles mean (label, dashed;
  // colour "" = grey), e.g. {"train"}, {"validation", dashed}.
  std::vector<LineSeries> key = {};
};

// Log-scale y axis with decade ticks (every 1, 2, 5, 10, ... decades so that at most about
// ten are labelled), or a linear one with 1-2-5 ticks; linear x axis, legend at the right (the
// chart grows taller than `height` where the legend needs it; a label too long for the margin
// keeps its beginning and end around an ellipsis). Any finite value is drawn at a finite
// coordinate, and any text (labels are bytes, e.g. a file name) is written as well-formed UTF-8.
std::string RenderLineChart(const LineChart& chart);

// The charts as panels of one figure, `columns` to a row (each row as tall as its tallest
// chart), under a title.
std::string RenderPanels(const std::vector<LineChart>& charts, int columns, const std::string& title);

// values (rows, columns); row i is drawn at y = rows[i] (top to bottom in order), column j at
// x = columns[j]. NaN cells are left blank. Grids larger than 240×240 are subsampled evenly.
struct Heatmap {
  std::string title, x_label, y_label, colour_label;
  std::vector<double> columns;
  std::vector<double> rows;
  Mat<double> values;
  int width = 900, height = 540;
};

// Colours on the viridis scale from the smallest to the largest finite value.
std::string RenderHeatmap(const Heatmap& heatmap);

// Writes text to path (replacing it); throws bptt::Error naming the path on failure.
void SaveText(const std::string& text, const std::filesystem::path& path);

}  // namespace bptt
