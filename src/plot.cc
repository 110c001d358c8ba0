#include "bptt/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string_view>

#include "bptt/error.h"
#include "utf8.h"

namespace bptt {

std::string PaletteColour(size_t k) {
  // Tableau 10: distinct on screen and in grey print.
  static constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                             "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  if (k < std::size(kPalette)) return kPalette[k];
  // Then hues a golden angle apart (each new hue falls in the widest gap the earlier ones left),
  // at three lightnesses in turn: HSL with saturation 0.65.
  const double n = static_cast<double>(k - std::size(kPalette));
  const double hue = std::fmod(0.1 + n * 0.3819660112501051, 1.0) * 6;  // sextants
  const double lightness = std::array{0.42, 0.58, 0.30}[(k - std::size(kPalette)) % 3];
  const double chroma = (1 - std::abs(2 * lightness - 1)) * 0.65;
  const double second = chroma * (1 - std::abs(std::fmod(hue, 2.0) - 1)), base = lightness - chroma / 2;
  const int sextant = static_cast<int>(hue);
  const double r = std::array{chroma, second, 0.0, 0.0, second, chroma}[sextant];
  const double g = std::array{second, chroma, chroma, second, 0.0, 0.0}[sextant];
  const double b = std::array{0.0, 0.0, second, chroma, chroma, second}[sextant];
  char buf[8];
  const auto byte = [&](double v) { return static_cast<int>(std::lround((v + base) * 255)); };
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", byte(r), byte(g), byte(b));
  return buf;
}

namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// Text for a document declared UTF-8: each ill-formed UTF-8 sequence (a file name is bytes) and
// each character XML 1.0 does not allow (control characters other than tab, newline and carriage
// return; U+FFFE, U+FFFF) becomes U+FFFD, and the markup characters are escaped.
std::string Escape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const int length = CheckUtf8Sequence(std::string_view(text).substr(i));
    if (length <= 0) {  // ill-formed, or cut short by the end of the text
      out += kReplacementCharacter;
      i += length < 0 ? static_cast<size_t>(-length) : text.size() - i;
      continue;
    }
    const std::string_view character(text.data() + i, static_cast<size_t>(length));
    i += static_cast<size_t>(length);
    const auto lead = static_cast<unsigned char>(character[0]);
    if ((lead < 0x20 && lead != '\t' && lead != '\n' && lead != '\r') || lead == 0x7F ||
        character == "\xEF\xBF\xBE" || character == "\xEF\xBF\xBF") {
      out += kReplacementCharacter;
      continue;
    }
    switch (lead) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += character;
    }
  }
  return out;
}

// At most max_characters characters of text (U+FFFD counting as one for each ill-formed
// sequence): a longer text keeps its beginning and its end, which tells run names apart, around
// an ellipsis. Returns the text escaped.
std::string Shorten(const std::string& text, size_t max_characters) {
  std::vector<std::string> characters;
  for (size_t i = 0; i < text.size();) {
    const int length = CheckUtf8Sequence(std::string_view(text).substr(i));
    const size_t n = length > 0 ? static_cast<size_t>(length) : length < 0 ? static_cast<size_t>(-length) : text.size() - i;
    characters.push_back(text.substr(i, n));
    i += n;
  }
  if (characters.size() <= max_characters || max_characters < 3) return Escape(text);
  const size_t head = (max_characters - 1) / 2, tail = max_characters - 1 - head;
  std::string out;
  for (size_t k = 0; k < head; ++k) out += characters[k];
  out += "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS
  for (size_t k = characters.size() - tail; k < characters.size(); ++k) out += characters[k];
  return Escape(out);
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// A tick label: integers as such, others with up to 3 significant digits.
std::string TickLabel(double v) {
  char buf[32];
  if (std::abs(v - std::round(v)) < 1e-9 && std::abs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// (hi - lo) / 2, finite for any finite lo <= hi (hi - lo itself can pass the largest double).
double HalfSpan(double lo, double hi) { return hi / 2 - lo / 2; }

// 1, 2 or 5 times a power of ten, so that (hi - lo) / step is at most max_ticks.
double NiceStep(double lo, double hi, int max_ticks) {
  const double half_span = HalfSpan(lo, hi);
  if (!(half_span > 0)) return 1;
  const double raw = half_span / max_ticks * 2;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

// Gives [lo, hi] a width when it is a single value, by `pad` above it (below it where above
// would pass the largest double).
void Widen(double& lo, double& hi, double pad) {
  if (hi > lo) return;
  if (std::isfinite(lo + pad)) hi = lo + pad;
  else lo = hi - pad;
}

// The multiples of `step` in [lo, hi] (within a billionth of a step), at most 100 of them: the
// count is fixed first, so a step too small to move a large value cannot loop.
std::vector<double> Ticks(double lo, double hi, double step) {
  std::vector<double> ticks;
  const double first = std::ceil(lo / step);
  const double last = std::floor(hi / step + 1e-9);
  if (!std::isfinite(first) || !std::isfinite(last)) return ticks;
  for (double k = first; k <= last && ticks.size() < 100; ++k) ticks.push_back(k * step);
  return ticks;
}

// The plotting area inside the margins, and the maps from data to pixels. The maps work on
// halves, so that ranges wider than the largest double stay finite; points far outside the area
// (reference lines) are held ten thousand widths away, where the clip path hides them.
struct Frame {
  double left, top, right, bottom;  // pixels
  double x_min, x_max;              // data
  double y_min, y_max;              // on the axis: decades (log10) for a log axis, else data
  bool log_y = true;
  double X(double x) const { return left + Fraction(x, x_min, x_max) * (right - left); }
  double Y(double axis) const { return bottom - Fraction(axis, y_min, y_max) * (bottom - top); }
  // A data value on the axis, and whether it can be drawn there.
  double Axis(double y) const { return log_y ? std::log10(y) : y; }
  bool Plottable(double y) const { return std::isfinite(y) && (!log_y || y > 0); }

 private:
  static double Fraction(double v, double lo, double hi) {
    return std::clamp(HalfSpan(lo, v) / HalfSpan(lo, hi), -1e4, 1e4);
  }
};

void Header(std::ostringstream& svg, int width, int height, const std::string& title) {
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"Helvetica, Arial, sans-serif\""
      << " font-size=\"13\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << width / 2 << "\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">"
      << Escape(title) << "</text>\n";
}

void AxisLabels(std::ostringstream& svg, const Frame& f, const std::string& x_label, const std::string& y_label) {
  svg << "<text x=\"" << Num((f.left + f.right) / 2) << "\" y=\"" << Num(f.bottom + 44)
      << "\" text-anchor=\"middle\" font-size=\"14\">" << Escape(x_label) << "</text>\n";
  const double cy = (f.top + f.bottom) / 2;
  svg << "<text x=\"" << Num(f.left - 62) << "\" y=\"" << Num(cy) << "\" text-anchor=\"middle\" font-size=\"14\""
      << " transform=\"rotate(-90 " << Num(f.left - 62) << " " << Num(cy) << ")\">" << Escape(y_label) << "</text>\n";
}

// Whether point i is drawn: at most one point per pixel column (the first in it, and the last
// point of the series), which keeps a 1000-step curve to a few hundred coordinates.
bool Thinned(const Frame& f, const std::vector<double>& x, size_t i, double& last_px) {
  const double px = f.X(x[i]);
  if (i + 1 < x.size() && i > 0 && px - last_px < 1.0) return true;
  last_px = px;
  return false;
}

// "M x y L x y ..." over the plottable points, starting a new subpath after each gap.
std::string LinePath(const Frame& f, const std::vector<double>& x, const std::vector<double>& y) {
  std::string d;
  bool pen_down = false;
  double last_px = -1e300;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (!f.Plottable(y[i]) || !std::isfinite(x[i])) {
      pen_down = false;
      continue;
    }
    if (pen_down && Thinned(f, x, i, last_px)) continue;
    last_px = f.X(x[i]);
    d += pen_down ? " L" : (d.empty() ? "M" : " M");
    d += Num(f.X(x[i])) + " " + Num(f.Y(f.Axis(y[i])));
    pen_down = true;
  }
  return d;
}

// Closed polygons between low and high over each run of points where both are plottable.
std::string BandPath(const Frame& f, const LineSeries& s) {
  std::string d;
  size_t i = 0;
  const size_t n = std::min({s.x.size(), s.low.size(), s.high.size()});
  while (i < n) {
    while (i < n && !(f.Plottable(s.low[i]) && f.Plottable(s.high[i]))) ++i;
    size_t j = i;
    while (j < n && f.Plottable(s.low[j]) && f.Plottable(s.high[j])) ++j;
    if (j - i >= 2) {
      std::vector<size_t> kept;
      double last_px = -1e300;
      for (size_t k = i; k < j; ++k)
        if (k == i || k + 1 == j || !Thinned(f, s.x, k, last_px)) kept.push_back(k), last_px = f.X(s.x[k]);
      for (size_t k : kept)
        d += (k == i ? (d.empty() ? "M" : " M") : " L") + Num(f.X(s.x[k])) + " " + Num(f.Y(f.Axis(s.high[k])));
      for (auto k = kept.rbegin(); k != kept.rend(); ++k)
        d += " L" + Num(f.X(s.x[*k])) + " " + Num(f.Y(f.Axis(s.low[*k])));
      d += " Z";
    }
    i = j;
  }
  return d;
}

// Viridis, from five of its stops, interpolated linearly; t in [0, 1].
std::string Viridis(double t) {
  static constexpr double kStops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int k = std::min(3, static_cast<int>(t));
  const double u = t - k;
  char buf[8];
  int rgb[3];
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<int>(std::lround(kStops[k][c] * (1 - u) + kStops[k + 1][c] * u));
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

// Up to `keep` indices of [0, n), evenly spaced, first and last included.
std::vector<Eigen::Index> Subsample(Eigen::Index n, Eigen::Index keep) {
  std::vector<Eigen::Index> out;
  if (n <= keep) {
    for (Eigen::Index i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  for (Eigen::Index i = 0; i < keep; ++i) out.push_back(i * (n - 1) / (keep - 1));
  return out;
}

// The legend, right of the plotting area: one entry per series, kLegendRow pixels apart from
// kLegendTop down, a key kLegendKey wide and a label of about kCharacterWidth pixels a character.
// Its margin is wide enough for the longest label, from 230 pixels up to 45% of the chart; a
// label longer than that is cut to fit.
constexpr double kLegendTop = 60, kLegendRow = 24, kLegendKey = 54, kCharacterWidth = 7;

size_t Characters(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
}

double LegendMargin(const LineChart& chart) {
  size_t longest = 0;
  for (const auto* entries : {&chart.key, &chart.series})
    for (const auto& s : *entries)
      if (s.in_legend) longest = std::max(longest, Characters(s.label));
  const double wanted = kLegendKey + kCharacterWidth * static_cast<double>(longest) + 10;
  return std::clamp(wanted, 230.0, std::max(230.0, 0.45 * chart.width));
}

// The chart's height: its own, or more where the legend needs it (the plotting area keeps the
// chart's own height; the legend runs on below it).
int Height(const LineChart& chart) {
  const auto entries = static_cast<double>(
      chart.key.size() + std::count_if(chart.series.begin(), chart.series.end(), [](const auto& s) { return s.in_legend; }));
  const double legend_bottom = kLegendTop + kLegendRow * entries;
  return std::max(chart.height, static_cast<int>(std::ceil(legend_bottom)));
}

}  // namespace

std::string RenderLineChart(const LineChart& chart) {
  std::ostringstream svg;
  Header(svg, chart.width, Height(chart), chart.title);

  // Ranges from the data series (lines and bands); references only follow.
  Frame f{90, 50, chart.width - LegendMargin(chart), static_cast<double>(chart.height) - 70, 0, 1, 0, 1,
          chart.log_y};
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : chart.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i])) continue;
      const bool any = (i < s.y.size() && f.Plottable(s.y[i])) || (i < s.low.size() && f.Plottable(s.low[i]));
      if (s.reference || !any) continue;
      x_min = std::min(x_min, s.x[i]);
      x_max = std::max(x_max, s.x[i]);
      for (const auto* v : {&s.y, &s.low, &s.high}) {
        if (i < v->size() && f.Plottable((*v)[i])) {
          lo = std::min(lo, (*v)[i]);
          hi = std::max(hi, (*v)[i]);
        }
      }
    }
  }
  if (!std::isfinite(x_min)) x_min = 0, x_max = 1;
  Widen(x_min, x_max, std::max(1.0, std::abs(x_min) * 1e-6));
  // The axis ends at multiples of the tick step where those are finite doubles.
  const auto snap = [](double v, double snapped) { return std::isfinite(snapped) ? snapped : v; };
  double d_min, d_max, y_step;
  if (chart.log_y) {
    if (!std::isfinite(lo)) lo = 0.1, hi = 1;
    lo = std::max(lo, chart.y_floor);
    d_min = std::floor(std::log10(lo));
    d_max = std::ceil(std::log10(hi));
    if (d_max <= d_min) d_max = d_min + 1;
    y_step = std::max(1.0, NiceStep(d_min, d_max, 10));
  } else {
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    Widen(lo, hi, lo == 0 ? 1 : std::abs(lo) * 0.1);
    y_step = NiceStep(lo, hi, 8);
    d_min = snap(lo, std::floor(lo / y_step) * y_step);
    d_max = snap(hi, std::ceil(hi / y_step) * y_step);
  }
  f.x_min = x_min;
  f.x_max = x_max;
  f.y_min = d_min;
  f.y_max = d_max;

  // Grid and ticks.
  svg << "<g class=\"grid\" stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  // Up to ten x ticks, fewer where their labels would not fit side by side: each label takes
  // about kCharacterWidth pixels a character and a gap of two characters.
  double x_step = 0;
  for (int max_ticks = 10; max_ticks >= 1; --max_ticks) {
    x_step = NiceStep(x_min, x_max, max_ticks);
    const std::vector<double> ticks = Ticks(x_min, x_max, x_step);
    size_t longest = 0;
    for (double x : ticks) longest = std::max(longest, TickLabel(x).size());
    if (static_cast<double>(ticks.size()) * kCharacterWidth * static_cast<double>(longest + 2) <= f.right - f.left)
      break;
  }
  for (double d : Ticks(d_min, d_max, y_step))
    svg << "<line x1=\"" << Num(f.left) << "\" x2=\"" << Num(f.right) << "\" y1=\"" << Num(f.Y(d)) << "\" y2=\""
        << Num(f.Y(d)) << "\"/>\n";
  for (double x : Ticks(x_min, x_max, x_step))
    svg << "<line x1=\"" << Num(f.X(x)) << "\" x2=\"" << Num(f.X(x)) << "\" y1=\"" << Num(f.top) << "\" y2=\""
        << Num(f.bottom) << "\"/>\n";
  svg << "</g>\n<g class=\"ticks\" fill=\"#333\">\n";
  for (double d : Ticks(d_min, d_max, y_step)) {
    if (chart.log_y)
      svg << "<text x=\"" << Num(f.left - 8) << "\" y=\"" << Num(f.Y(d) + 4) << "\" text-anchor=\"end\">10<tspan dy=\"-6\""
          << " font-size=\"10\">" << TickLabel(d) << "</tspan></text>\n";
    else
      svg << "<text x=\"" << Num(f.left - 8) << "\" y=\"" << Num(f.Y(d) + 4) << "\" text-anchor=\"end\">"
          << TickLabel(std::abs(d) < 1e-12 * y_step ? 0.0 : d) << "</text>\n";
  }
  for (double x : Ticks(x_min, x_max, x_step))
    svg << "<text x=\"" << Num(f.X(x)) << "\" y=\"" << Num(f.bottom + 18) << "\" text-anchor=\"middle\">"
        << TickLabel(x) << "</text>\n";
  svg << "</g>\n";
  AxisLabels(svg, f, chart.x_label, chart.y_label);

  // Data, clipped to the plotting area: references first, then bands, then lines on top.
  svg << "<clipPath id=\"" << Escape(chart.id) << "-area\"><rect x=\"" << Num(f.left) << "\" y=\"" << Num(f.top)
      << "\" width=\"" << Num(f.right - f.left) << "\" height=\"" << Num(f.bottom - f.top) << "\"/></clipPath>\n"
      << "<g clip-path=\"url(#" << Escape(chart.id) << "-area)\" fill=\"none\" stroke-linejoin=\"round\">\n";
  std::vector<std::string> colours;
  int next_colour = 0;
  for (const auto& s : chart.series)
    colours.push_back(s.reference        ? std::string("#555555")
                      : !s.colour.empty() ? s.colour
                                         : std::string(PaletteColour(static_cast<size_t>(next_colour++))));
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    if (s.reference)
      svg << "<path class=\"reference\" stroke=\"" << colours[i] << "\" stroke-width=\"1.5\" stroke-dasharray=\"7 5\" d=\""
          << LinePath(f, s.x, s.y) << "\"/>\n";
  }
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    if (s.reference || s.low.empty()) continue;
    svg << "<path class=\"band\" fill=\"" << colours[i] << "\" fill-opacity=\"0.18\" stroke=\"none\" d=\""
        << BandPath(f, s) << "\"/>\n";
  }
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    if (!s.reference)
      svg << "<path class=\"series\" stroke=\"" << colours[i] << "\" stroke-width=\"2.2\""
          << (s.dashed ? " stroke-dasharray=\"7 4\"" : "") << " d=\"" << LinePath(f, s.x, s.y) << "\"><title>"
          << Escape(s.label) << "</title></path>\n";
  }
  svg << "</g>\n";
  svg << "<rect x=\"" << Num(f.left) << "\" y=\"" << Num(f.top) << "\" width=\"" << Num(f.right - f.left)
      << "\" height=\"" << Num(f.bottom - f.top) << "\" fill=\"none\" stroke=\"#333\"/>\n";

  // Legend, right of the plotting area, in series order.
  svg << "<g class=\"legend\">\n";
  const double key_x = f.right + 16, label_x = f.right + kLegendKey;
  const auto label_characters = static_cast<size_t>(std::max(0.0, (chart.width - 6 - label_x) / kCharacterWidth));
  double y = kLegendTop;
  const auto entry = [&](const LineSeries& s, const std::string& colour) {
    if (!s.reference && !s.low.empty())
      svg << "<rect x=\"" << Num(key_x) << "\" y=\"" << Num(y - 7) << "\" width=\"30\" height=\"14\" fill=\"" << colour
          << "\" fill-opacity=\"0.18\"/>\n";
    svg << "<line x1=\"" << Num(key_x) << "\" x2=\"" << Num(key_x + 30) << "\" y1=\"" << Num(y) << "\" y2=\"" << Num(y)
        << "\" stroke=\"" << colour << "\" stroke-width=\"" << (s.reference ? "1.5" : "2.2") << "\""
        << (s.reference ? " stroke-dasharray=\"7 5\"" : s.dashed ? " stroke-dasharray=\"7 4\"" : "") << "/>\n";
    svg << "<text x=\"" << Num(label_x) << "\" y=\"" << Num(y + 4) << "\">" << Shorten(s.label, label_characters)
        << "</text>\n";
    y += kLegendRow;
  };
  for (const auto& s : chart.key) entry(s, s.colour.empty() ? "#555555" : s.colour);
  for (size_t i = 0; i < chart.series.size(); ++i)
    if (chart.series[i].in_legend) entry(chart.series[i], colours[i]);
  svg << "</g>\n</svg>\n";
  return svg.str();
}

std::string RenderPanels(const std::vector<LineChart>& charts, int columns, const std::string& title) {
  if (charts.empty() || columns < 1) throw Error("panels: need at least one chart and one column");
  const auto per_row = static_cast<size_t>(columns);
  // Each row as tall as its tallest chart (a long legend makes a chart taller).
  std::vector<int> row_top = {40};
  for (size_t first = 0; first < charts.size(); first += per_row) {
    int height = 0;
    for (size_t i = first; i < std::min(charts.size(), first + per_row); ++i) height = std::max(height, Height(charts[i]));
    row_top.push_back(row_top.back() + height);
  }
  const int width = columns * charts[0].width;
  std::ostringstream svg;
  Header(svg, width, row_top.back(), title);
  for (size_t i = 0; i < charts.size(); ++i) {
    LineChart chart = charts[i];
    chart.id = "panel" + std::to_string(i);
    std::string inner = RenderLineChart(chart);
    inner.erase(0, inner.find("<svg"));  // one document: drop the inner XML declaration
    const size_t open = inner.find("<svg") + 4;
    const int x = static_cast<int>(i % per_row) * charts[0].width;
    inner.insert(open, " x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(row_top[i / per_row]) + "\"");
    svg << inner;
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string RenderHeatmap(const Heatmap& heatmap) {
  const auto& v = heatmap.values;
  if (v.rows() != static_cast<Eigen::Index>(heatmap.rows.size()) ||
      v.cols() != static_cast<Eigen::Index>(heatmap.columns.size()))
    throw Error("heatmap: values are " + std::to_string(v.rows()) + "x" + std::to_string(v.cols()) + " but there are " +
                std::to_string(heatmap.rows.size()) + " rows and " + std::to_string(heatmap.columns.size()) + " columns");
  std::ostringstream svg;
  Header(svg, heatmap.width, heatmap.height, heatmap.title);
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (Eigen::Index k = 0; k < v.size(); ++k)
    if (std::isfinite(v(k))) lo = std::min(lo, v(k)), hi = std::max(hi, v(k));
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi <= lo) hi = lo + 1;

  const auto rows = Subsample(v.rows(), 240), cols = Subsample(v.cols(), 240);
  Frame f{90, 50, static_cast<double>(heatmap.width) - 150, static_cast<double>(heatmap.height) - 70, 0, 1, 0, 1};
  const double cell_w = (f.right - f.left) / std::max<size_t>(cols.size(), 1);
  const double cell_h = (f.bottom - f.top) / std::max<size_t>(rows.size(), 1);
  svg << "<g class=\"cells\" shape-rendering=\"crispEdges\">\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < cols.size(); ++j) {
      const double value = v(rows[i], cols[j]);
      if (!std::isfinite(value)) continue;
      svg << "<rect x=\"" << Num(f.left + j * cell_w) << "\" y=\"" << Num(f.top + i * cell_h) << "\" width=\""
          << Num(cell_w + 0.5) << "\" height=\"" << Num(cell_h + 0.5) << "\" fill=\"" << Viridis((value - lo) / (hi - lo))
          << "\"/>\n";
    }
  }
  svg << "</g>\n<rect x=\"" << Num(f.left) << "\" y=\"" << Num(f.top) << "\" width=\"" << Num(f.right - f.left)
      << "\" height=\"" << Num(f.bottom - f.top) << "\" fill=\"none\" stroke=\"#333\"/>\n";

  // Ticks: about eight labels on each axis, at cell centres.
  svg << "<g class=\"ticks\" fill=\"#333\">\n";
  for (size_t j = 0; j < cols.size(); j += std::max<size_t>(1, cols.size() / 8))
    svg << "<text x=\"" << Num(f.left + (j + 0.5) * cell_w) << "\" y=\"" << Num(f.bottom + 18)
        << "\" text-anchor=\"middle\">" << TickLabel(heatmap.columns[cols[j]]) << "</text>\n";
  for (size_t i = 0; i < rows.size(); i += std::max<size_t>(1, rows.size() / 8))
    svg << "<text x=\"" << Num(f.left - 8) << "\" y=\"" << Num(f.top + (i + 0.5) * cell_h + 4)
        << "\" text-anchor=\"end\">" << TickLabel(heatmap.rows[rows[i]]) << "</text>\n";
  svg << "</g>\n";
  AxisLabels(svg, f, heatmap.x_label, heatmap.y_label);

  // Colour bar.
  const double bx = f.right + 24, bw = 18;
  svg << "<g class=\"colour-bar\">\n";
  constexpr int kBands = 64;
  for (int k = 0; k < kBands; ++k) {
    const double t = (k + 0.5) / kBands;
    svg << "<rect x=\"" << Num(bx) << "\" y=\"" << Num(f.bottom - (k + 1) * (f.bottom - f.top) / kBands) << "\" width=\""
        << Num(bw) << "\" height=\"" << Num((f.bottom - f.top) / kBands + 0.5) << "\" fill=\"" << Viridis(t)
        << "\" shape-rendering=\"crispEdges\"/>\n";
  }
  for (int k = 0; k <= 4; ++k) {
    const double value = lo + (hi - lo) * k / 4;
    svg << "<text x=\"" << Num(bx + bw + 5) << "\" y=\"" << Num(f.bottom - k * (f.bottom - f.top) / 4 + 4) << "\">"
        << TickLabel(std::round(value * 10) / 10) << "</text>\n";
  }
  const double cy = (f.top + f.bottom) / 2, lx = bx + bw + 48;
  svg << "<text x=\"" << Num(lx) << "\" y=\"" << Num(cy) << "\" text-anchor=\"middle\" transform=\"rotate(-90 "
      << Num(lx) << " " << Num(cy) << ")\">" << Escape(heatmap.colour_label) << "</text>\n</g>\n</svg>\n";
  return svg.str();
}

void SaveText(const std::string& text, const std::filesystem::path& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path.string() + ": cannot open for writing");
  out << text;
  out.flush();
  if (!out) throw Error(path.string() + ": write failed");
}

}  // namespace bptt
