// What a model trained on sequences predicts, how well, and its forecasts (sequences.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/options.h"
#include "bptt/safetensors.h"
#include "bptt/sequences.h"
#include "bptt/stepper.h"
#include "formats/arrays.h"
#include "sequence_batch.h"

namespace bptt {

namespace {

// The head's raw outputs for every sequence, from the zero state: (N, O) for a sequence head
// (the last step's output, or the mean over the steps), (N, T, O) per step (zeros past a
// sequence's end). Logits for classes, standardised values for a regression.
PredictionArray RawOutputs(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                           const SequenceSet& set, int threads, int batch_size) {
  if (threads <= 0) threads = std::max(1, omp_get_num_procs());
  if (spec.head == SequenceHead::kForecast)
    throw Error("a forecasting model predicts a series' next steps: use Forecast (bptt forecast)");
  if (set.D != config.input_size)
    throw Error(set.source + ": sequences of " + std::to_string(set.D) + " features a step, but the model reads " +
                std::to_string(config.input_size));
  const bool per_step = spec.head == SequenceHead::kLabel;
  const int64_t O = config.output_size;
  PredictionArray out;
  out.shape = per_step ? std::vector<int64_t>{set.N, set.T, O} : std::vector<int64_t>{set.N, O};
  out.values.assign(static_cast<size_t>(set.N * (per_step ? set.T : 1) * O), 0.0f);
  ModelCache<float> cache;
  Batch<float> batch;
  std::vector<int64_t> index;
  for (int64_t start = 0; start < set.N; start += batch_size) {
    const int64_t B = std::min<int64_t>(batch_size, set.N - start);
    index.resize(static_cast<size_t>(B));
    std::iota(index.begin(), index.end(), start);
    FillSequenceBatch(set, spec, config.pooling, index, 0, B, false, batch);
    Forward(config, params, batch, State<float>::Zeros(config, B), cache, Compute{threads});
    if (config.pooling == Pooling::kMean) {
      const Mat<float> pooled = PoolOutputs(cache.outputs, batch);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(pooled.col(b).data(), O, out.values.begin() + (start + b) * O);
      continue;
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = set.length(start + b);
      if (per_step) {
        for (int64_t t = 0; t < L; ++t)
          std::copy_n(cache.outputs.col(t * B + b).data(), O, out.values.begin() + ((start + b) * set.T + t) * O);
      } else {
        std::copy_n(cache.outputs.col((L - 1) * B + b).data(), O, out.values.begin() + (start + b) * O);
      }
    }
  }
  return out;
}

// Softmax of each row of O logits (in double, the largest subtracted), in place; with
// `log_probabilities`, log-softmax instead.
void SoftmaxRows(std::vector<float>& values, int64_t O, bool log_probabilities) {
  for (size_t r = 0; r + static_cast<size_t>(O) <= values.size(); r += static_cast<size_t>(O)) {
    float* z = values.data() + r;
    const double top = *std::max_element(z, z + O);
    double sum = 0;
    for (int64_t k = 0; k < O; ++k) sum += std::exp(static_cast<double>(z[k]) - top);
    for (int64_t k = 0; k < O; ++k)
      z[k] = log_probabilities ? static_cast<float>(z[k] - top - std::log(sum))
                               : static_cast<float>(std::exp(static_cast<double>(z[k]) - top) / sum);
  }
}

}  // namespace

PredictionArray Predict(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                        const SequenceSet& set, int threads, int batch) {
  PredictionArray out = RawOutputs(config, params, spec, set, threads, batch);
  const int64_t O = config.output_size;
  if (spec.head == SequenceHead::kRegress) {
    for (size_t k = 0; k < out.values.size(); ++k)
      out.values[k] = static_cast<float>(spec.outputs.Invert(out.values[k], k % static_cast<size_t>(O)));
    return out;
  }
  SoftmaxRows(out.values, O, false);
  if (spec.head == SequenceHead::kLabel)  // rows past a sequence's end stay zero
    for (int64_t n = 0; n < set.N; ++n)
      for (int64_t t = set.length(n); t < set.T; ++t)
        std::fill_n(out.values.begin() + (n * set.T + t) * O, O, 0.0f);
  return out;
}

std::vector<int64_t> PredictedClasses(const PredictionArray& p, const SequenceSet& set) {
  const int64_t O = p.shape.back();
  const bool per_step = p.shape.size() == 3;
  std::vector<int64_t> out(p.values.size() / static_cast<size_t>(O));
  for (size_t r = 0; r < out.size(); ++r) {
    const float* row = p.values.data() + r * static_cast<size_t>(O);
    out[r] = std::max_element(row, row + O) - row;
    if (per_step && static_cast<int64_t>(r % static_cast<size_t>(set.T)) >= set.length(static_cast<int64_t>(r) / set.T))
      out[r] = -1;
  }
  return out;
}

nlohmann::json ScoreSequences(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                              const SequenceSet& set, int threads, int batch) {
  if (!set.has_targets()) throw Error(set.source + ": has no targets to score the model against");
  PredictionArray raw = RawOutputs(config, params, spec, set, threads, batch);
  const int64_t O = config.output_size;
  nlohmann::json j = {{"sequences", set.N}};
  if (spec.head == SequenceHead::kRegress) {
    if (set.O != spec.targets)
      throw Error(set.source + ": " + std::to_string(set.O) + " targets per sequence, but the model predicts " +
                  std::to_string(spec.targets));
    double loss = 0, se = 0, ae = 0;
    std::vector<double> mean(static_cast<size_t>(O), 0.0), sse(static_cast<size_t>(O), 0.0), sst(static_cast<size_t>(O), 0.0);
    for (int64_t n = 0; n < set.N; ++n)
      for (int64_t o = 0; o < O; ++o) mean[static_cast<size_t>(o)] += set.values[static_cast<size_t>(n * O + o)] / static_cast<double>(set.N);
    for (int64_t n = 0; n < set.N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        const size_t k = static_cast<size_t>(n * O + o);
        const double target = set.values[k];
        const double r_std = raw.values[k] - spec.outputs.Apply(target, static_cast<size_t>(o));
        const double delta = config.huber_delta;
        loss += config.regression_loss == RegressionLoss::kSquared    ? r_std * r_std
                : config.regression_loss == RegressionLoss::kAbsolute ? std::abs(r_std)
                : std::abs(r_std) <= delta                             ? 0.5 * r_std * r_std
                                                                       : delta * (std::abs(r_std) - 0.5 * delta);
        const double r = spec.outputs.Invert(raw.values[k], static_cast<size_t>(o)) - target;
        se += r * r;
        ae += std::abs(r);
        sse[static_cast<size_t>(o)] += r * r;
        sst[static_cast<size_t>(o)] += (target - mean[static_cast<size_t>(o)]) * (target - mean[static_cast<size_t>(o)]);
      }
    const double count = static_cast<double>(set.N * O);
    double r2 = 0;
    for (int64_t o = 0; o < O; ++o)
      r2 += (sst[static_cast<size_t>(o)] > 0 ? 1 - sse[static_cast<size_t>(o)] / sst[static_cast<size_t>(o)] : 0.0) / static_cast<double>(O);
    j["loss"] = loss / count;
    j["mse"] = se / count;
    j["rmse"] = std::sqrt(se / count);
    j["mae"] = ae / count;
    j["r2"] = r2;
    return j;
  }
  // Classes: the log-probabilities, and for each scored position its prediction and truth.
  SoftmaxRows(raw.values, O, true);
  const bool per_step = spec.head == SequenceHead::kLabel;
  std::vector<std::vector<int64_t>> confusion(static_cast<size_t>(O), std::vector<int64_t>(static_cast<size_t>(O), 0));
  double nats = 0;
  int64_t scored = 0, right = 0;
  for (int64_t n = 0; n < set.N; ++n)
    for (int64_t t = 0; t < (per_step ? set.length(n) : 1); ++t) {
      const int32_t truth = set.classes[static_cast<size_t>(per_step ? n * set.T + t : n)];
      if (truth >= O)
        throw Error(set.source + ": label " + std::to_string(truth) + " of sequence " + std::to_string(n) +
                    " is not one of the model's " + std::to_string(O) + " classes");
      const float* row = raw.values.data() + (per_step ? n * set.T + t : n) * O;
      const int64_t guess = std::max_element(row, row + O) - row;
      nats -= row[truth];
      ++scored;
      right += guess == truth ? 1 : 0;
      ++confusion[static_cast<size_t>(truth)][static_cast<size_t>(guess)];
    }
  nlohmann::json recall = nlohmann::json::array();
  for (int64_t k = 0; k < O; ++k) {
    const auto& row = confusion[static_cast<size_t>(k)];
    const int64_t total = std::accumulate(row.begin(), row.end(), int64_t{0});
    recall.push_back(total > 0 ? nlohmann::json(static_cast<double>(row[static_cast<size_t>(k)]) / static_cast<double>(total))
                               : nlohmann::json(nullptr));
  }
  if (per_step) j["steps"] = scored;
  j["loss"] = nats / static_cast<double>(scored);
  j["accuracy"] = static_cast<double>(right) / static_cast<double>(scored);
  j["per_class_recall"] = recall;
  j["confusion"] = confusion;
  if (!spec.class_names.empty()) j["class_names"] = spec.class_names;
  return j;
}

std::vector<float> Forecast(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                            const SequenceSet& series, int64_t horizon, int threads) {
  if (spec.head != SequenceHead::kForecast) throw Error("the model does not forecast (it was trained with --head " +
                                                       std::string(SequenceHeadName(spec.head)) + ")");
  if (series.N != 1) throw Error(series.source + ": a forecast continues one series");
  if (series.D != spec.features)
    throw Error(series.source + ": a series of " + std::to_string(series.D) + " channels, but the model reads " +
                std::to_string(spec.features));
  if (horizon < 1) throw Error("--horizon must be positive");
  const int64_t D = series.D, H = spec.horizon;
  if (spec.differences > 0 && series.T < 2) throw Error(series.source + ": a forecast of changes needs two steps of history");
  const SequenceSet changes = spec.differences > 0 ? Differenced(series) : SequenceSet();
  const SequenceSet& read = spec.differences > 0 ? changes : series;
  Stepper stepper(config, params);
  stepper.Configure(Precision::kFloat32, threads);  // 0: chosen as it runs (stepper.h)
  std::vector<float> x(static_cast<size_t>(D));
  std::span<const float> out;
  for (int64_t t = 0; t < read.length(0); ++t) {
    for (int64_t d = 0; d < D; ++d) x[static_cast<size_t>(d)] = static_cast<float>(spec.inputs.Apply(read.step(0, t)[d], static_cast<size_t>(d)));
    out = stepper.Step(x.data());
  }
  std::vector<float> forecast;  // (horizon, D) standardised, then in the series' units
  while (static_cast<int64_t>(forecast.size()) < horizon * D) {
    const std::vector<float> block(out.begin(), out.begin() + H * D);  // the next H steps
    for (int64_t h = 0; h < H; ++h) {
      forecast.insert(forecast.end(), block.begin() + h * D, block.begin() + (h + 1) * D);
      if (static_cast<int64_t>(forecast.size()) >= horizon * D) break;
      out = stepper.Step(block.data() + h * D);  // read back in as if observed
    }
  }
  forecast.resize(static_cast<size_t>(horizon * D));
  for (size_t k = 0; k < forecast.size(); ++k)
    forecast[k] = static_cast<float>(spec.inputs.Invert(forecast[k], k % static_cast<size_t>(D)));
  if (spec.differences > 0) {  // the changes summed from the last value, in double
    for (int64_t d = 0; d < D; ++d) {
      double level = series.step(0, series.length(0) - 1)[d];
      for (int64_t h = 0; h < horizon; ++h) {
        level += forecast[static_cast<size_t>(h * D + d)];
        forecast[static_cast<size_t>(h * D + d)] = static_cast<float>(level);
      }
    }
  }
  return forecast;
}

SequenceSet Differenced(const SequenceSet& series) {
  const int64_t n = series.length(0), D = series.D;
  std::vector<float> changes(static_cast<size_t>(std::max<int64_t>(n - 1, 0) * D));
  for (int64_t t = 0; t + 1 < n; ++t)
    for (int64_t d = 0; d < D; ++d)
      changes[static_cast<size_t>(t * D + d)] = series.step(0, t + 1)[d] - series.step(0, t)[d];
  SequenceSet out = SequenceSet::Owning(series.source, 1, n - 1, static_cast<int>(D), std::move(changes));
  out.feature_names = series.feature_names;
  return out;
}

std::vector<float> SeasonalNaive(const SequenceSet& series, int64_t end, int64_t horizon, int season) {
  if (end < season) throw Error(series.source + ": the seasonal-naive forecast needs a season of history");
  const int64_t D = series.D;
  std::vector<float> out(static_cast<size_t>(horizon * D));
  for (int64_t h = 1; h <= horizon; ++h) {
    const int64_t from = end + h - 1 - season * ((h - 1) / season + 1);
    std::copy_n(series.step(0, from), D, out.begin() + (h - 1) * D);
  }
  return out;
}

double MaseScale(const SequenceSet& series, int64_t end, int d, int season) {
  double sum = 0;
  int64_t n = 0;
  for (int64_t t = season; t < end; ++t, ++n) sum += std::abs(series.step(0, t)[d] - series.step(0, t - season)[d]);
  return n > 0 ? sum / static_cast<double>(n) : 0.0;
}

nlohmann::json ScoreForecast(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                             const SequenceSet& series, int64_t test, int threads) {
  const int64_t n = series.length(0), end = n - test, D = series.D;
  if (test < 1 || end < spec.season + 1)
    throw Error(series.source + ": cannot hold out " + std::to_string(test) + " of its " + std::to_string(n) +
                " steps and keep more than a season (" + std::to_string(spec.season) + ") before them");
  const std::vector<float> model = Forecast(config, params, spec, SeriesPrefix(series, end), test, threads);
  const std::vector<float> naive = SeasonalNaive(series, end, test, spec.season);
  nlohmann::json j = {{"steps", n}, {"held_out", test}, {"season", spec.season}};
  for (const auto& [name, forecast] : {std::pair{"", &model}, std::pair{"naive_", &naive}}) {
    double se = 0, ae = 0, mase = 0;
    bool scaled = true;
    for (int64_t d = 0; d < D; ++d) {
      double channel_ae = 0;
      for (int64_t h = 0; h < test; ++h) {
        const double r = (*forecast)[static_cast<size_t>(h * D + d)] - series.step(0, end + h)[d];
        se += r * r;
        channel_ae += std::abs(r);
      }
      ae += channel_ae;
      const double scale = MaseScale(series, end, static_cast<int>(d), spec.season);
      scaled = scaled && scale > 0;
      mase += scale > 0 ? channel_ae / static_cast<double>(test) / scale / static_cast<double>(D) : 0.0;
    }
    const double count = static_cast<double>(test * D);
    j[std::string(name) + "mse"] = se / count;
    j[std::string(name) + "mae"] = ae / count;
    j[std::string(name) + "mase"] = scaled ? nlohmann::json(mase) : nlohmann::json(nullptr);
  }
  j["forecast"] = model;
  return j;
}


// ---------------------------------------------------------------------------------------------
// Reading data for a trained model, writing what it predicts.

void PredictOptions::Validate() const {
  CheckThreads(threads, 0);
  if (batch < 1) throw Error("--batch must be positive, got " + std::to_string(batch));
  if (held_out < 0) throw Error("--held-out must not be negative");
  if (horizon < 0) throw Error("--horizon must be positive");
}

std::span<const OptionSpec<PredictOptions>> PredictOptionSpecs() {
  using P = PredictOptions;
  constexpr OnResume kNone = OnResume::kNone;
  constexpr unsigned kPredict = kPredictCommand, kForecast = kForecastCommand, kEval = kEvalCommand;
  static const std::vector<OptionSpec<P>> specs = {
      Field<P>(kEval, "labels", "", "Options", "the targets of DATA when it holds the inputs alone", kNone,
               [](P& p) -> auto& { return p.labels; }),
      Field<P>(kPredict | kForecast, "out", "", "Options",
               "write to this .npy or .csv file (default: CSV on standard output)", kNone,
               [](P& p) -> auto& { return p.out; }),
      Field<P>(kPredict, "probabilities", "", "Options", "classify, label: each class's probability instead of the class",
               kNone, [](P& p) -> auto& { return p.probabilities; }),
      Field<P>(kPredict, "no-labels", "", "Options",
               "DATA is a CSV without the training data's target column (a CSV with a header says so itself)", kNone,
               [](P& p) -> auto& { return p.no_labels; }),
      Field<P>(kForecast, "horizon", "", "Options", "the steps to forecast after the series' last", kNone,
               [](P& p) -> auto& { return p.horizon; }),
      Field<P>(kEval, "held-out", "", "Options",
               "a forecasting model: forecast the series' last N steps from the ones before and score them (0 = the "
               "run's --val-frac of the series)",
               kNone, [](P& p) -> auto& { return p.held_out; }),
      Threads<P>(kPredict | kForecast, "", "Options", "threads (0 = every core)", kNone,
                 [](P& p) -> auto& { return p.threads; }, 0),
      Field<P>(kPredict, "batch", "", "Options", "sequences run through the model at a time", kNone,
               [](P& p) -> auto& { return p.batch; }),
  };
  return specs;
}

SequenceSet ReadForModel(const SequenceSpec& spec, const std::string& data, const std::string& labels, bool targets,
                         bool no_labels) {
  SequenceOptions o = spec.reading;
  o.head = spec.head;
  o.classes = spec.classes;
  if (no_labels) {
    o.label_column = "none";
    o.label_names.clear();
  }
  SequenceSet set = ReadSequences(o, data, labels, targets, spec.class_names);
  if (set.D != spec.features)
    throw Error(data + ": " + std::to_string(set.D) + (spec.head == SequenceHead::kForecast ? " channels" : " features a step") +
                ", but the model was trained on " + std::to_string(spec.features));
  return set;
}

namespace {

// The text of a value in CSV: the shortest that reads back as the same float.
std::string FloatText(float v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", static_cast<double>(v));
  return text;
}

// Writes rows of fields as CSV to `path` (atomically) or to `out` when path is "" or "-".
void WriteCsv(const std::string& path, const std::vector<std::string>& header,
              const std::vector<std::vector<std::string>>& rows, std::ostream& out) {
  std::string text;
  const auto line = [&text](const std::vector<std::string>& fields) {
    for (size_t k = 0; k < fields.size(); ++k) {
      if (k) text += ',';
      const std::string& f = fields[k];
      if (f.find_first_of(",\"\n\r") == std::string::npos) {
        text += f;
        continue;
      }
      text += '"';
      for (char c : f) text += c == '"' ? std::string("\"\"") : std::string(1, c);
      text += '"';
    }
    text += '\n';
  };
  if (!header.empty()) line(header);
  for (const auto& r : rows) line(r);
  if (path.empty() || path == "-") {
    out << text << std::flush;
    return;
  }
  WriteFileAtomically(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

bool IsNpy(const std::string& path) {
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.ends_with(".npy")) return true;
  if (path.empty() || path == "-" || lower.ends_with(".csv")) return false;
  throw Error("--out " + path + ": name it .npy or .csv");
}

}  // namespace

void WritePredictions(const SequenceSpec& spec, const SequenceSet& set, const PredictionArray& p,
                      const PredictOptions& o, std::ostream& out) {
  const bool npy = IsNpy(o.out);
  const int64_t N = set.N, K = p.shape.back();
  if (spec.head == SequenceHead::kRegress || o.probabilities) {
    if (spec.head == SequenceHead::kLabel && o.probabilities && !npy)
      throw Error("--probabilities of per-step labels are (N, T, K): write them to an .npy file");
    if (npy) {
      formats::WriteNpy(o.out, p.shape, p.values);
      return;
    }
    std::vector<std::string> header;
    for (int64_t k = 0; k < K; ++k)
      header.push_back(std::string(spec.head == SequenceHead::kRegress ? "y" : spec.class_names.empty() ? "p" : "p_")
                         .append(spec.class_names.empty() || spec.head == SequenceHead::kRegress
                                     ? std::to_string(k)
                                     : spec.class_names[static_cast<size_t>(k)]));
    std::vector<std::vector<std::string>> rows(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) rows[static_cast<size_t>(n)].push_back(FloatText(p.values[static_cast<size_t>(n * K + k)]));
    WriteCsv(o.out, header, rows, out);
    return;
  }
  const std::vector<int64_t> classes = PredictedClasses(p, set);
  const bool per_step = spec.head == SequenceHead::kLabel;
  if (npy) {
    const std::vector<int64_t> shape = per_step ? std::vector<int64_t>{N, set.T} : std::vector<int64_t>{N};
    formats::WriteNpy(o.out, shape, classes);
    return;
  }
  const auto name = [&spec](int64_t c) {
    return c < 0 ? std::string() : spec.class_names.empty() ? std::to_string(c) : spec.class_names[static_cast<size_t>(c)];
  };
  std::vector<std::string> header;
  if (per_step) for (int64_t t = 0; t < set.T; ++t) header.push_back(std::string("t").append(std::to_string(t)));
  else header.push_back("class");
  std::vector<std::vector<std::string>> rows(static_cast<size_t>(N));
  const int64_t width = per_step ? set.T : 1;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < width; ++t) rows[static_cast<size_t>(n)].push_back(name(classes[static_cast<size_t>(n * width + t)]));
  WriteCsv(o.out, header, rows, out);
}

void WriteForecast(const std::vector<float>& forecast, int D, int64_t first_step, const PredictOptions& o,
                   std::ostream& out) {
  const int64_t H = static_cast<int64_t>(forecast.size()) / D;
  if (IsNpy(o.out)) {
    const std::vector<int64_t> shape = D == 1 ? std::vector<int64_t>{H} : std::vector<int64_t>{H, D};
    formats::WriteNpy(o.out, shape, forecast);
    return;
  }
  std::vector<std::string> header = {"step"};
  for (int d = 0; d < D; ++d) header.push_back(D == 1 ? std::string("value") : std::string("x").append(std::to_string(d)));
  std::vector<std::vector<std::string>> rows(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    rows[static_cast<size_t>(h)].push_back(std::to_string(first_step + h));
    for (int d = 0; d < D; ++d) rows[static_cast<size_t>(h)].push_back(FloatText(forecast[static_cast<size_t>(h * D + d)]));
  }
  WriteCsv(o.out, header, rows, out);
}

}  // namespace bptt
