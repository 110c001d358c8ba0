// Sequences: the user's own numeric data — labelled sequences of feature vectors, or a time series
// to forecast — read from files (or taken from memory), and what a model trained on them needs to
// read new data and predict.
//
// Data. N sequences of up to T steps of D features (a SequenceSet), each with its length, and their
// targets. Files: NumPy .npz (arrays x (N, T, D) or (N, T), y, and optionally lengths (N) or a
// mask (N, T) of the steps that are there), .npy (x; the targets in --labels), IDX (the MNIST
// format, gzipped or not: an (N, R, C) image file is N sequences of R steps of C features, row by
// row; --steps elements reads each pixel as a step), and CSV in two layouts: one sequence per row
// (wide: the label in --label-column, the steps in the other fields, a shorter sequence leaving
// its last fields empty), or one step per row (long: --id-column names the sequence each row
// belongs to; consecutive rows with one id are one sequence). A series to forecast is an (n) or
// (n, D) array, or a CSV table whose columns (--columns) are its D channels.
// Sequences of different lengths are padded at the end; padded steps are never read.
//
// Heads (SequenceHead), built from the model's softmax and regression heads (model.h, loss.h):
//   classify  one class per sequence: its last step's output (--pool last) or the mean of its
//             steps' outputs (--pool mean), softmax cross-entropy over K classes
//   label     a class at every step (labels (N, T))
//   regress   O values per sequence (targets (N) or (N, O)), last step or pooled, with a squared,
//             absolute or Huber loss (--loss)
//   forecast  at every step t of a series, the next H values x_{t+1} .. x_{t+H} (O = H*D), trained
//             on windows of --seq-len steps of the training part; a forecast further ahead feeds
//             its own predictions back in, H at a time (Forecast). With --differences 1 the model
//             reads and predicts the changes x_{t+1} - x_t, and the forecast sums them back from
//             the series' last value: a trend then needs no values the training part never had.
// Inputs are standardised per feature by the mean and standard deviation of the training split
// (regression targets and a series likewise), and the statistics are kept in the checkpoint
// (SequenceSpec) and applied to whatever the model reads later: predictions come back in the
// data's own units.
//
//   SequenceSet data = ReadSequences(options, options.data, options.labels);
//   SequenceSpec spec = Checkpoint's SequenceSpec::FromJson(checkpoint.sequences, path);
//   PredictionArray p = Predict(config, params, spec, data, threads);    // (N, K) probabilities, ...
//   nlohmann::json scores = ScoreSequences(config, params, spec, data, threads);
//   std::vector<float> next = Forecast(config, params, spec, series, 12, threads);   // (12, D)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/model.h"

namespace bptt {

template <typename Options>
struct OptionSpec;  // options.h

enum class SequenceHead { kClassify, kLabel, kRegress, kForecast };
std::string_view SequenceHeadName(SequenceHead head);  // "classify", "label", "regress", "forecast"
SequenceHead ParseSequenceHead(std::string_view name, std::string_view flag);  // throws bptt::Error

// How the elements of an (N, A, B) array become steps: each row of B features a step (A steps),
// or each element a step of one feature (A*B steps: an image pixel by pixel).
enum class StepLayout { kRows, kElements };
std::string_view StepLayoutName(StepLayout steps);  // "rows", "elements"

// The options of `bptt train --data` (TrainOptions::sequences), declared once in
// SequenceOptionSpecs(): what the data is, where it is, and what the model does with it.
struct SequenceOptions {
  std::string data;         // --data: the training sequences (or the series to forecast)
  std::string labels;       // --labels: their targets, when --data holds the inputs alone
  std::string val_data;     // --val-data: validation sequences (else --val-frac of --data)
  std::string val_labels;
  std::string test_data;    // --test-data: scored with the best checkpoint at the end of the run
  std::string test_labels;
  SequenceHead head = SequenceHead::kClassify;
  Pooling pool = Pooling::kLast;  // classify, regress: kLast or kMean
  RegressionLoss loss = RegressionLoss::kSquared;  // regress, forecast
  double huber_delta = 1.0;
  int horizon = 1;          // forecast: H values predicted at each step
  int season = 1;           // forecast: the seasonal-naive forecast's period m, for MASE
  int differences = 0;      // forecast: 1 = model the steps' changes x_{t+1} - x_t, summed back
  int classes = 0;          // classify, label: K; 0 = the largest label + 1
  bool standardize = true;  // standardise inputs (and regression targets) by the training split
  StepLayout steps = StepLayout::kRows;
  std::string x_key = "x";  // .npz: the inputs' array (x or X)
  std::string y_key = "y";  // .npz: the targets' array (y or Y)
  std::string id_column;    // CSV: the column naming each row's sequence (the long layout); "" = wide
  std::string label_column; // CSV: the targets' column(s), comma-separated; "" = the last; "none"
  std::string columns;      // CSV: the feature columns (a series' channels), comma-separated; "" = all others
  // Not options: the header names of the target and feature columns of the CSV a model was
  // trained on (SequenceSpec keeps them), by which a CSV with a header is read later, whatever
  // its columns' order and whether it has the targets.
  std::vector<std::string> label_names, feature_names;

  bool forecast() const { return head == SequenceHead::kForecast; }
  // Throws bptt::Error naming the flag of the first invalid value.
  void Validate() const;
};

std::span<const OptionSpec<SequenceOptions>> SequenceOptionSpecs();

// N sequences of up to T steps of D features, their lengths, and their targets when they have
// them. The inputs may be the set's own memory or a caller's (a NumPy array's), which must then
// outlive the set.
struct SequenceSet {
  std::string source;        // what the sequences came from, for messages
  int64_t N = 0, T = 0;
  int D = 0;
  const float* inputs = nullptr;      // (N, T, D) row-major: step t of sequence n at (n*T + t)*D
  std::shared_ptr<const void> owner;  // keeps `inputs` alive; null for a caller's memory
  std::vector<int32_t> lengths;       // (N), each in [1, T]; empty: every sequence has T steps
  // Targets: classify (N) / label (N*T, row-major; unread past a sequence's end) class ids ...
  std::vector<int32_t> classes;
  // ... or regress (N, O) row-major values.
  std::vector<float> values;
  int O = 0;
  std::vector<std::string> class_names;  // CSV labels that are names: the name of each class id
  std::vector<std::string> label_names, feature_names;  // a CSV with a header: the columns read

  int64_t length(int64_t n) const { return lengths.empty() ? T : lengths[static_cast<size_t>(n)]; }
  const float* step(int64_t n, int64_t t) const { return inputs + (n * T + t) * D; }
  bool has_targets() const { return !classes.empty() || !values.empty(); }

  // A set that owns a copy of `inputs` (N, T, D).
  static SequenceSet Owning(std::string source, int64_t N, int64_t T, int D, std::vector<float> inputs);
  // Checks every field against the others and the head (lengths in [1, T], finite inputs within
  // each sequence's length, targets of the head's shape, classes in [0, classes) when classes >
  // 0); throws naming `source` and the element.
  void Check(SequenceHead head, int classes) const;
};

// Sequences a library caller holds in memory (Python's bptt.fit): the training set, and the
// validation set when it is not --val-frac of the training set.
struct SequenceArrays {
  SequenceSet train;
  std::optional<SequenceSet> validation;
};

// Reads `data` (and its targets from `labels` when that is not empty; else from `data` when it
// holds them, as an .npz's y or a CSV's label column) as the options say. For a forecast the file
// is one series, a set of one sequence of its n steps (no targets). With `targets` false the
// targets are not required (data to predict). Labels that are names (a CSV's) number the
// distinct names in sorted order, or, given `class_names` (the training data's), by those.
// Throws a one-line bptt::Error naming the file, the row or element, and what is wrong.
SequenceSet ReadSequences(const SequenceOptions& options, const std::string& data, const std::string& labels,
                          bool targets = true, const std::vector<std::string>& class_names = {});

// Per-feature standardisation: x' = (x - mean) / scale, with the mean and standard deviation of a
// training split (a feature that never varies keeps scale 1). Empty: the identity.
struct Standardizer {
  std::vector<double> mean, scale;

  bool empty() const { return mean.empty(); }
  double Apply(double x, size_t k) const { return empty() ? x : (x - mean[k]) / scale[k]; }
  double Invert(double x, size_t k) const { return empty() ? x : x * scale[k] + mean[k]; }
  nlohmann::json ToJson() const;
  static Standardizer FromJson(const nlohmann::json& json, size_t size, const std::string& source);
};

// The inputs' statistics over the sequences `index` of `set` (every step within their lengths;
// for a forecast, steps [0, end) of the series).
Standardizer InputStatistics(const SequenceSet& set, std::span<const int64_t> index);
// The regression targets' statistics over the sequences `index`.
Standardizer TargetStatistics(const SequenceSet& set, std::span<const int64_t> index);

// What a model trained on sequences reads and predicts, kept in its checkpoint
// (Checkpoint::sequences): the head, the input's shape and standardisation, the classes, the
// forecast's horizon and season, and how its files were read (for predict and eval).
struct SequenceSpec {
  SequenceHead head = SequenceHead::kClassify;
  int features = 0;      // D
  int classes = 0;       // K (classify, label)
  std::vector<std::string> class_names;  // when the labels were names
  int targets = 0;       // regress: O; forecast: D (the values of one step)
  int horizon = 1;       // forecast: H
  int season = 1;        // forecast: m of the seasonal-naive forecast
  int differences = 0;   // forecast: 1 when the model reads and predicts the series' changes
  Standardizer inputs;   // (D)
  Standardizer outputs;  // regress: (O); forecast: the series' own, as `inputs`
  SequenceOptions reading;  // the file options of training: steps, keys and columns

  nlohmann::json ToJson() const;
  static SequenceSpec FromJson(const nlohmann::json& json, const std::string& source);
  // The model configuration's data-dictated fields: dense input of D, the head, O, and the
  // pooling and loss of `reading`.
  void Shape(ModelConfig& config) const;
};

// A spec for training data: its shape and, with options.standardize, the statistics of the
// training split `train` (indices of `set`; a forecast's series: steps [0, train_steps)).
SequenceSpec MakeSequenceSpec(const SequenceOptions& options, const SequenceSet& set, std::span<const int64_t> train,
                              int64_t train_steps = 0);

// A NumPy-shaped array of predictions.
struct PredictionArray {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

// The model's predictions for every sequence of `set`, in the data's units, from the zero state,
// `batch` sequences at a time, on `threads` (0: every core; so for ScoreSequences, Forecast and
// ScoreForecast): classify (N, K) class probabilities; label (N, T, K) per step
// (zeros past a sequence's end); regress (N, O) values. Throws for a forecast (Forecast) and for
// inputs whose D is not the model's.
PredictionArray Predict(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                        const SequenceSet& set, int threads, int batch = 256);

// The most probable class of each row of probabilities (N, K) or (N, T, K): (N) or (N, T) ids,
// -1 past a sequence's end when `set` has lengths.
std::vector<int64_t> PredictedClasses(const PredictionArray& probabilities, const SequenceSet& set);

// How well the model predicts `set`'s targets, as `bptt eval --json` prints it: classify and
// label: loss (nats), accuracy, per_class_recall, confusion (K x K, rows the true class); regress:
// loss (the training loss, standardised), mse, mae, rmse, r2 (in the data's units, over every
// target value). `batch` sequences at a time, as Predict.
nlohmann::json ScoreSequences(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                              const SequenceSet& set, int threads, int batch = 256);

// The series (a set of one sequence of n steps) continued by `horizon` steps: the model reads
// the series one step at a time, predicts the next H, reads those back in as if observed, and so
// on (the autoregressive multi-step forecast). Returns (horizon, D) in the series' units.
std::vector<float> Forecast(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                            const SequenceSet& series, int64_t horizon, int threads = 1);

// The seasonal-naive forecast of `horizon` steps after the first `end` steps of the series:
// step end + h repeats step end + h - m*ceil(h/m).
std::vector<float> SeasonalNaive(const SequenceSet& series, int64_t end, int64_t horizon, int season);

// The forecast of the last `test` steps of the series from the steps before them against those
// steps: mse, mae, and MASE (Hyndman & Koehler 2006), the MAE over the in-sample MAE of the
// one-season-back forecast (per channel, averaged); with the seasonal-naive forecast's figures
// beside them (naive_mse, naive_mae, naive_mase).
nlohmann::json ScoreForecast(const ModelConfig& config, const ModelParams<float>& params, const SequenceSpec& spec,
                             const SequenceSet& series, int64_t test, int threads = 1);

// The changes of a series, x_{t+1} - x_t: a series of one step fewer.
SequenceSet Differenced(const SequenceSet& series);

// MASE's scale: the mean absolute difference between steps m apart over the first `end` steps
// of channel d.
double MaseScale(const SequenceSet& series, int64_t end, int d, int season);

// The options of `bptt predict`, `bptt forecast` and `bptt eval` of a sequence model, declared
// once in PredictOptionSpecs(); a row is taken by the commands of its bits. `bptt eval` takes
// the kEvalCommand rows beside the rows of a language model's evaluation (evaluate.h), whose
// --threads, --batch and --json serve both.
inline constexpr unsigned kPredictCommand = 1, kForecastCommand = 2, kEvalCommand = 4;
struct PredictOptions {
  std::string labels;          // eval: the targets of DATA when it holds the inputs alone
  std::string out;             // predict, forecast: a .npy or .csv file ("" = CSV on standard output)
  bool probabilities = false;  // predict (classify, label): each class's probability, not the class
  bool no_labels = false;      // predict: a CSV DATA without the training data's target column
  int64_t horizon = 0;         // forecast: the steps to forecast
  int64_t held_out = 0;        // eval of a forecast: the last steps, forecast from the ones before
                               //   (0 = the run's --val-frac of the series)
  int threads = 0;             // 0 = every core
  int batch = 256;             // predict, eval: sequences run through the model at a time

  // Throws bptt::Error naming the flag.
  void Validate() const;
};
std::span<const OptionSpec<PredictOptions>> PredictOptionSpecs();

// Reads DATA (and `labels`) as the model's training data was read (spec.reading: its keys,
// columns and step layout), with targets when `targets`.
SequenceSet ReadForModel(const SequenceSpec& spec, const std::string& data, const std::string& labels, bool targets,
                         bool no_labels = false);

// Writes predictions by options.out's extension, or as CSV to `out` when it is "": classify the
// class (its name when the labels were names) or, with options.probabilities, (N, K)
// probabilities; label (N, T) classes, -1 (CSV: empty) past a sequence's end, or (N, T, K)
// probabilities (.npy only); regress (N, O) values.
void WritePredictions(const SequenceSpec& spec, const SequenceSet& set, const PredictionArray& predictions,
                      const PredictOptions& options, std::ostream& out);
// Writes a forecast (horizon, D): .npy, or CSV with the step of each row (counted from the
// series' first step as 0) and one column per channel.
void WriteForecast(const std::vector<float>& forecast, int D, int64_t first_step, const PredictOptions& options,
                   std::ostream& out);

}  // namespace bptt
