#include "bptt/average.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include "bptt/error.h"

namespace bptt {

std::string AverageName(const AverageOptions& options) {
  if (options.kind == AverageKind::kNone) return "off";
  if (options.kind == AverageKind::kAsgd) return "asgd:" + std::to_string(options.nonmono);
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, options.decay).ptr;
  return "ema:" + std::string(text, end);
}

AverageOptions ParseAverage(std::string_view text, std::string_view flag) {
  const auto bad = [&] {
    return Error(std::string(flag) + " must be off, ema:DECAY with DECAY in (0, 1) or asgd:N with N >= 1, got '" +
                 std::string(text) + "'");
  };
  AverageOptions options;
  if (text == "off") return options;
  if (text.starts_with("asgd:")) {
    const std::string_view number = text.substr(5);
    int n = 0;
    const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), n);
    if (error != std::errc() || end != number.data() + number.size() || number.empty() || n < 1) throw bad();
    options.kind = AverageKind::kAsgd;
    options.nonmono = n;
    return options;
  }
  if (!text.starts_with("ema:")) throw bad();
  const std::string_view number = text.substr(4);
  double decay = 0;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), decay);
  if (error != std::errc() || end != number.data() + number.size() || !(decay > 0 && decay < 1)) throw bad();
  options.kind = AverageKind::kEma;
  options.decay = decay;
  return options;
}

void WeightAverage::Update(const AverageOptions& options, const ModelParams<float>& weights) {
  if (options.kind == AverageKind::kNone || (options.kind == AverageKind::kAsgd && !triggered)) return;
  ++updates;
  if (updates == 1) {
    params = weights;
    return;
  }
  const double n = static_cast<double>(updates);
  const auto w = static_cast<float>(options.kind == AverageKind::kAsgd ? 1 / n
                                                                        : (1 - options.decay) / (1 - std::pow(options.decay, n)));
  std::vector<const Mat<float>*> theta;
  weights.ForEach([&theta](const std::string&, const Mat<float>& m) { theta.push_back(&m); });
  size_t k = 0;
  params.ForEach([&](const std::string&, Mat<float>& a) {
    const Mat<float>& t = *theta[k++];
    a.array() += w * (t.array() - a.array());
  });
}

}  // namespace bptt

namespace bptt {

void WeightAverage::Observe(const AverageOptions& options, double val_loss) {
  if (options.kind != AverageKind::kAsgd || triggered) return;
  const auto n = static_cast<size_t>(options.nonmono);
  if (history.size() > n && val_loss > *std::min_element(history.begin(), history.end() - static_cast<std::ptrdiff_t>(n))) {
    triggered = true;
    history.clear();
    return;
  }
  history.push_back(val_loss);
}

}  // namespace bptt
