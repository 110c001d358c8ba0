// Sequences from files, their checks and statistics, and the spec a checkpoint keeps (sequences.h).
#include "bptt/sequences.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "bptt/error.h"
#include "bptt/options.h"
#include "formats/arrays.h"
#include "formats/csv.h"

namespace bptt {

namespace fmt = formats;

std::string_view SequenceHeadName(SequenceHead head) {
  constexpr std::string_view kNames[] = {"classify", "label", "regress", "forecast"};
  return kNames[static_cast<int>(head)];
}

SequenceHead ParseSequenceHead(std::string_view name, std::string_view flag) {
  for (const SequenceHead h : {SequenceHead::kClassify, SequenceHead::kLabel, SequenceHead::kRegress,
                               SequenceHead::kForecast})
    if (SequenceHeadName(h) == name) return h;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of classify, label, regress, forecast");
}

std::string_view StepLayoutName(StepLayout steps) { return steps == StepLayout::kElements ? "elements" : "rows"; }

void SequenceOptions::Validate() const {
  if (data.empty()) throw Error("--data is required (an .npz, .npy, .csv or IDX file)");
  if (!labels.empty() && forecast()) throw Error("--labels does not apply to --head forecast (the series is its own target)");
  if (!val_labels.empty() && val_data.empty()) throw Error("--val-labels needs --val-data");
  if (!test_labels.empty() && test_data.empty()) throw Error("--test-labels needs --test-data");
  if (pool == Pooling::kNone) throw Error("--pool must be last or mean");
  if (pool != Pooling::kLast && (head == SequenceHead::kLabel || forecast()))
    throw Error("--pool applies to --head classify and regress (label and forecast predict at every step)");
  if (loss != RegressionLoss::kSquared && (head == SequenceHead::kClassify || head == SequenceHead::kLabel))
    throw Error("--loss applies to --head regress and forecast (a classifier's loss is cross-entropy)");
  if (!(huber_delta > 0 && std::isfinite(huber_delta))) throw Error("--huber-delta must be positive");
  if (horizon < 1) throw Error("--horizon must be positive, got " + std::to_string(horizon));
  if (horizon != 1 && !forecast()) throw Error("--horizon applies to --head forecast");
  if (season < 1) throw Error("--season must be positive, got " + std::to_string(season));
  if (season != 1 && !forecast()) throw Error("--season applies to --head forecast");
  if (differences != 0 && differences != 1) throw Error("--differences must be 0 or 1, got " + std::to_string(differences));
  if (differences != 0 && !forecast()) throw Error("--differences applies to --head forecast");
  if (classes < 0) throw Error("--classes must be 0 (the largest label + 1) or positive");
  if (classes > 0 && head != SequenceHead::kClassify && head != SequenceHead::kLabel)
    throw Error("--classes applies to --head classify and label");
  if (!id_column.empty() && forecast()) throw Error("--id-column does not apply to --head forecast (one series)");
  if (!label_column.empty() && forecast()) throw Error("--label-column does not apply to --head forecast");
  if (steps == StepLayout::kElements && forecast()) throw Error("--steps elements does not apply to --head forecast");
}

std::span<const OptionSpec<SequenceOptions>> SequenceOptionSpecs() {
  using S = SequenceOptions;
  constexpr OnResume kFixed = OnResume::kFixed, kChanges = OnResume::kChanges;
  const char* g = "Sequences (bptt train --data)";
  static const std::vector<OptionSpec<S>> specs = [&] {
    std::vector<OptionSpec<S>> rows = {
      Field<S>(0, "data", "data", g,
               "train on sequences of your own: .npz (x, y, lengths or mask), .npy (with --labels), .csv or IDX "
               "(gzipped or not); with --head forecast, one series",
               kFixed, [](S& s) -> auto& { return s.data; }),
      Field<S>(0, "labels", "labels", g, "the targets of --data when it holds the inputs alone (.npy, .csv, IDX)",
               kFixed, [](S& s) -> auto& { return s.labels; }),
      Field<S>(0, "val-data", "val_data", g, "validation sequences (default: --val-frac of --data)", kFixed,
               [](S& s) -> auto& { return s.val_data; }),
      Field<S>(0, "val-labels", "val_labels", g, "the targets of --val-data", kFixed,
               [](S& s) -> auto& { return s.val_labels; }),
      Field<S>(0, "test-data", "test_data", g, "test sequences, scored with the best checkpoint into summary.json",
               kChanges, [](S& s) -> auto& { return s.test_data; }),
      Field<S>(0, "test-labels", "test_labels", g, "the targets of --test-data", kChanges,
               [](S& s) -> auto& { return s.test_labels; }),
      Choice<S>(0, "head", "head", g,
                "what the model predicts: classify (a class per sequence), label (a class per step), regress (values "
                "per sequence) or forecast (the next --horizon values of a series at each step)",
                kFixed, [](S& s) -> auto& { return s.head; }, SequenceHeadName,
                [](const std::string& v, const std::string& f) { return ParseSequenceHead(v, f); }),
      Choice<S>(0, "pool", "pool", g,
                "classify, regress: predict from the last step of each sequence or the mean over its steps", kFixed,
                [](S& s) -> auto& { return s.pool; }, PoolingName,
                [](const std::string& v, const std::string& f) {
                  const Pooling p = ParsePooling(v, f);
                  if (p == Pooling::kNone) throw Error(f + " must be last or mean, got 'none'");
                  return p;
                }),
      Choice<S>(0, "loss", "loss", g, "regress, forecast: mse, mae or huber", kFixed,
                [](S& s) -> auto& { return s.loss; }, RegressionLossName,
                [](const std::string& v, const std::string& f) { return ParseRegressionLoss(v, f); }),
      Field<S>(0, "huber-delta", "huber_delta", g, "--loss huber: the error where the loss turns from squared to linear "
               "(in standardised units)", kFixed, [](S& s) -> auto& { return s.huber_delta; }),
      Field<S>(0, "horizon", "horizon", g, "forecast: values predicted at each step (H)", kFixed,
               [](S& s) -> auto& { return s.horizon; }),
      Field<S>(0, "season", "season", g, "forecast: the period of the seasonal-naive forecast MASE is scaled by",
               kFixed, [](S& s) -> auto& { return s.season; }),
      Field<S>(0, "differences", "differences", g,
               "forecast: 1 = the model reads and predicts the series' changes from step to step, which the forecast "
               "sums back (for a series with a trend)",
               kFixed, [](S& s) -> auto& { return s.differences; }),
      Field<S>(0, "classes", "classes", g, "classify, label: the number of classes (0 = the largest label + 1)", kFixed,
               [](S& s) -> auto& { return s.classes; }),
      Field<S>(0, "no-standardize", "standardize", g,
               "do not standardise the inputs (and regression targets) by the training split's mean and deviation",
               kFixed, [](S& s) -> auto& { return s.standardize; }),
      Choice<S>(0, "steps", "steps", g,
                "how an (N, A, B) array makes steps: rows (A steps of B features) or elements (A*B steps of one: "
                "an image pixel by pixel)",
                kFixed, [](S& s) -> auto& { return s.steps; }, StepLayoutName,
                [](const std::string& v, const std::string& f) {
                  if (v != "rows" && v != "elements") throw Error(f + " must be rows or elements, got '" + v + "'");
                  return v == "rows" ? StepLayout::kRows : StepLayout::kElements;
                }),
      Field<S>(0, "x-key", "x_key", g, ".npz: the array of inputs", kFixed, [](S& s) -> auto& { return s.x_key; }),
      Field<S>(0, "y-key", "y_key", g, ".npz: the array of targets", kFixed, [](S& s) -> auto& { return s.y_key; }),
      Field<S>(0, "id-column", "id_column", g,
               "CSV: the column naming each row's sequence, one step per row (default: one sequence per row)", kFixed,
               [](S& s) -> auto& { return s.id_column; }),
      Field<S>(0, "label-column", "label_column", g,
               "CSV: the target column(s), by name or 0-based index, comma-separated (default: the last; none: no "
               "targets)",
               kFixed, [](S& s) -> auto& { return s.label_column; }),
      Field<S>(0, "columns", "columns", g,
               "CSV: the feature columns (a series' channels), comma-separated (default: every column but the id "
               "and label columns)",
               kFixed, [](S& s) -> auto& { return s.columns; }),
    };
    // The heads an option applies to; given with another head, it is refused.
    const auto only = [](std::initializer_list<SequenceHead> heads, std::string_view which) {
      return [heads = std::vector<SequenceHead>(heads), which](const S& s) -> std::string {
        if (std::find(heads.begin(), heads.end(), s.head) != heads.end()) return "";
        return "applies to --head " + std::string(which) + ", not " + std::string(SequenceHeadName(s.head));
      };
    };
    using H = SequenceHead;
    for (auto& spec : rows) {
      if (spec.flag == "no-standardize") spec.kind = OptionKind::kSwitchOff;
      if (spec.flag == "pool")
        spec = Restrict(std::move(spec), only({H::kClassify, H::kRegress}, "classify and regress"));
      if (spec.flag == "loss")
        spec = Restrict(std::move(spec), only({H::kRegress, H::kForecast}, "regress and forecast"));
      if (spec.flag == "huber-delta")
        spec = Restrict(std::move(spec), [](const S& s) -> std::string {
          return s.loss == RegressionLoss::kHuber ? "" : "applies to --loss huber";
        });
      if (spec.flag == "classes")
        spec = Restrict(std::move(spec), only({H::kClassify, H::kLabel}, "classify and label"));
      for (const std::string_view flag : {"horizon", "season", "differences"})
        if (spec.flag == flag) spec = Restrict(std::move(spec), only({H::kForecast}, "forecast"));
      for (const std::string_view flag :
           {"labels", "val-labels", "test-labels", "id-column", "label-column", "steps"})
        if (spec.flag == flag)
          spec = Restrict(std::move(spec), only({H::kClassify, H::kLabel, H::kRegress}, "classify, label and regress"));
    }
    return rows;
  }();
  return specs;
}

SequenceSet SequenceSet::Owning(std::string source, int64_t N, int64_t T, int D, std::vector<float> inputs) {
  SequenceSet s;
  s.source = std::move(source);
  s.N = N;
  s.T = T;
  s.D = D;
  auto owned = std::make_shared<std::vector<float>>(std::move(inputs));
  s.inputs = owned->data();
  s.owner = owned;
  return s;
}

void SequenceSet::Check(SequenceHead head, int classes_given) const {
  if (N < 1) throw Error(source + ": no sequences");
  if (T < 1 || D < 1) throw Error(source + ": sequences need at least one step of at least one feature");
  if (!lengths.empty() && static_cast<int64_t>(lengths.size()) != N)
    throw Error(source + ": " + std::to_string(lengths.size()) + " lengths for " + std::to_string(N) + " sequences");
  for (int64_t n = 0; n < N; ++n) {
    const int64_t L = length(n);
    if (L < 1 || L > T)
      throw Error(source + ": sequence " + std::to_string(n) + " has length " + std::to_string(L) +
                  ", outside [1, " + std::to_string(T) + "]");
    const float* x = step(n, 0);
    for (int64_t k = 0; k < L * D; ++k)
      if (!std::isfinite(x[k]))
        throw Error(source + ": " + (std::isnan(x[k]) ? "NaN" : "an infinity") + " at element (" + std::to_string(n) +
                    ", " + std::to_string(k / D) + ", " + std::to_string(k % D) + ") of the inputs");
  }
  if (head == SequenceHead::kForecast) return;
  const bool per_step = head == SequenceHead::kLabel;
  if (head == SequenceHead::kClassify || per_step) {
    const int64_t want = per_step ? N * T : N;
    if (static_cast<int64_t>(classes.size()) != want)
      throw Error(source + ": " + std::to_string(classes.size()) + " labels for " + std::to_string(N) + " sequences" +
                  (per_step ? " of " + std::to_string(T) + " steps" : ""));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < (per_step ? length(n) : 1); ++t) {
        const int32_t c = classes[static_cast<size_t>(per_step ? n * T + t : n)];
        std::string at = std::to_string(n);
        if (per_step) at = std::string("(").append(at).append(", ").append(std::to_string(t)).append(")");
        if (c < 0) throw Error(source + ": label " + std::to_string(c) + " of sequence " + at + " is negative");
        if (classes_given > 0 && c >= classes_given)
          throw Error(source + ": label " + std::to_string(c) + " of sequence " + at + " is not below --classes " +
                      std::to_string(classes_given));
      }
  } else {
    if (O < 1 || static_cast<int64_t>(values.size()) != N * O)
      throw Error(source + ": " + std::to_string(values.size()) + " target values for " + std::to_string(N) +
                  " sequences");
    for (size_t k = 0; k < values.size(); ++k)
      if (!std::isfinite(values[k]))
        throw Error(source + ": the target of sequence " + std::to_string(k / static_cast<size_t>(O)) + " is not finite");
  }
}

namespace {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// The member of an .npz named `key`, or its other case ("x" or "X").
std::string NpzKey(const std::filesystem::path& path, const std::vector<std::string>& members, const std::string& key,
                   bool required) {
  for (const std::string& m : members)
    if (m == key) return m;
  std::string other = key;
  for (char& c : other) c = std::islower(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c)) : static_cast<char>(std::tolower(c));
  for (const std::string& m : members)
    if (m == other) return m;
  if (!required) return "";
  std::string have;
  for (const std::string& m : members) have += (have.empty() ? "" : ", ") + m;
  throw Error(path.string() + ": has no array '" + key + "' (it has " + (have.empty() ? "none" : have) +
              "; --x-key and --y-key name others)");
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t d = 0; d < shape.size(); ++d) out += (d ? ", " : "") + std::to_string(shape[d]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

// Inputs from an array: (N, T) one feature a step, (N, T, D), or (N, T, ...) with the rest
// flattened; with --steps elements every element of a sequence a step of one feature.
SequenceSet InputsFromArray(const fmt::Array& x, StepLayout steps) {
  if (x.shape.size() < 2)
    throw Error(x.source + ": inputs of shape " + ShapeText(x.shape) +
                " are not sequences: they must be (N, T) or (N, T, D)");
  int64_t N = x.shape[0], T = x.shape[1], D = 1;
  for (size_t d = 2; d < x.shape.size(); ++d) D *= x.shape[d];
  if (steps == StepLayout::kElements) {
    T *= D;
    D = 1;
  }
  if (D > (1 << 24)) throw Error(x.source + ": " + std::to_string(D) + " features per step are too many");
  return SequenceSet::Owning(x.source, N, T, static_cast<int>(D), x.Floats(/*finite=*/false));
}

// Class ids from labels that may be names: numbers that are integers are ids; otherwise every
// distinct name is a class, numbered in sorted order (or by `known`, the training set's names).
std::vector<int32_t> ClassIds(const std::vector<std::string>& labels, const std::string& source,
                              std::vector<std::string>& names, const std::vector<std::string>& known,
                              const std::vector<int64_t>& lines) {
  bool numeric = known.empty();
  std::vector<int32_t> ids(labels.size());
  if (numeric) {
    for (size_t k = 0; k < labels.size() && numeric; ++k) {
      const std::string& s = labels[k];
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      numeric = used == s.size() && !s.empty();
      if (numeric) {
        if (v < 0 || v > INT32_MAX)
          throw Error(source + ": line " + std::to_string(lines[k]) + ": label " + s + " is not a class id in [0, 2^31)");
        ids[k] = static_cast<int32_t>(v);
      }
    }
    if (numeric) return ids;
  }
  if (known.empty()) {
    const std::set<std::string> distinct(labels.begin(), labels.end());
    names.assign(distinct.begin(), distinct.end());
  } else {
    names = known;
  }
  std::map<std::string, int32_t> id;
  for (size_t k = 0; k < names.size(); ++k) id[names[k]] = static_cast<int32_t>(k);
  for (size_t k = 0; k < labels.size(); ++k) {
    const auto it = id.find(labels[k]);
    if (it == id.end())
      throw Error(source + ": line " + std::to_string(lines[k]) + ": label '" + labels[k] +
                  "' is not one of the training data's classes");
    ids[k] = it->second;
  }
  return ids;
}

// The CSV's label and feature columns.
struct CsvColumns {
  std::vector<int> labels;
  std::vector<int> features;
  int id = -1;
};

CsvColumns ChooseColumns(const fmt::CsvReader& csv, const SequenceOptions& o, bool targets) {
  CsvColumns c;
  if (!o.id_column.empty()) c.id = csv.Column(o.id_column, "--id-column");
  if (!csv.header().empty() && !o.feature_names.empty()) {  // a trained model's columns, by name
    const auto has = [&csv](const std::string& name) {
      return std::find(csv.header().begin(), csv.header().end(), name) != csv.header().end();
    };
    for (const std::string& name : o.label_names)
      if (targets || has(name)) c.labels.push_back(csv.Column(name, "the training data's target column"));
    for (const std::string& name : o.feature_names) c.features.push_back(csv.Column(name, "the training data's column"));
    return c;
  }
  const std::string label = o.label_column.empty() ? "last" : o.label_column;
  if (!o.forecast() && label != "none") {
    for (const std::string& name : SplitList(label)) c.labels.push_back(csv.Column(name, "--label-column"));
  }
  if (c.labels.size() > 1 && o.head != SequenceHead::kRegress)
    throw Error(csv.source() + ": --label-column names " + std::to_string(c.labels.size()) +
                " columns; only --head regress has more than one target");
  if (!o.columns.empty()) {
    for (const std::string& name : SplitList(o.columns)) c.features.push_back(csv.Column(name, "--columns"));
  } else {
    for (int k = 0; k < csv.columns(); ++k)
      if (k != c.id && std::find(c.labels.begin(), c.labels.end(), k) == c.labels.end()) c.features.push_back(k);
  }
  if (c.features.empty()) throw Error(csv.source() + ": no feature columns are left");
  return c;
}

// Targets read from CSV fields: class labels (names or ids) or values.
struct CsvTargets {
  std::vector<std::string> labels;  // classify, label
  std::vector<int64_t> lines;
  std::vector<float> values;        // regress
};

void AddTargets(const fmt::CsvRow& row, const CsvColumns& c, SequenceHead head, CsvTargets& t) {
  if (c.labels.empty()) return;
  if (head == SequenceHead::kRegress) {
    for (int k : c.labels) t.values.push_back(static_cast<float>(row.Number(k)));
    return;
  }
  const std::string_view field = row.fields[static_cast<size_t>(c.labels[0])];
  if (field.empty())
    throw Error(row.csv->source() + ": line " + std::to_string(row.line) + ", column " +
                row.csv->ColumnName(c.labels[0]) + ": the label is empty");
  t.labels.emplace_back(field);
  t.lines.push_back(row.line);
}

SequenceSet ReadCsvSequences(const SequenceOptions& o, const std::string& path, bool targets,
                             const std::vector<std::string>& known_names) {
  const fmt::CsvReader csv(path);
  const CsvColumns c = ChooseColumns(csv, o, targets);
  CsvTargets t;
  std::vector<std::vector<float>> sequences;
  std::vector<int64_t> lengths;
  int D = 0;
  if (c.id < 0) {  // wide: one sequence per row, one feature a step
    if (o.head == SequenceHead::kLabel)
      throw Error(path + ": --head label needs a label at every step: the long layout (--id-column) or an .npz");
    D = 1;
    csv.ForEach([&](const fmt::CsvRow& row) {
      std::vector<float> x;
      bool ended = false;
      for (int k : c.features) {
        if (row.Empty(k)) {
          ended = true;
          continue;
        }
        if (ended)
          throw Error(path + ": line " + std::to_string(row.line) + ", column " + csv.ColumnName(k) +
                      ": a value after an empty field (a shorter sequence leaves its last fields empty)");
        x.push_back(static_cast<float>(row.Number(k)));
      }
      if (x.empty()) throw Error(path + ": line " + std::to_string(row.line) + ": a sequence without steps");
      AddTargets(row, c, o.head, t);
      lengths.push_back(static_cast<int64_t>(x.size()));
      sequences.push_back(std::move(x));
    });
  } else {  // long: one step per row, consecutive rows of one id a sequence
    D = static_cast<int>(c.features.size());
    std::string current;
    std::set<std::string> seen;
    std::string sequence_label;
    csv.ForEach([&](const fmt::CsvRow& row) {
      const std::string id(row.fields[static_cast<size_t>(c.id)]);
      const bool starts = sequences.empty() || id != current;
      if (starts) {
        if (!seen.insert(id).second)
          throw Error(path + ": line " + std::to_string(row.line) + ": sequence '" + id +
                      "' continues after another began (keep each sequence's rows together)");
        current = id;
        sequences.emplace_back();
        lengths.push_back(0);
      }
      for (int k : c.features) sequences.back().push_back(static_cast<float>(row.Number(k)));
      ++lengths.back();
      if (c.labels.empty()) return;
      if (o.head == SequenceHead::kLabel || starts) {
        AddTargets(row, c, o.head, t);
        if (starts && o.head != SequenceHead::kLabel)
          sequence_label = std::string(row.fields[static_cast<size_t>(c.labels[0])]);
      } else if (o.head == SequenceHead::kClassify &&
                 std::string(row.fields[static_cast<size_t>(c.labels[0])]) != sequence_label) {
        throw Error(path + ": line " + std::to_string(row.line) + ": sequence '" + id + "' has label '" +
                    std::string(row.fields[static_cast<size_t>(c.labels[0])]) + "' here and '" + sequence_label +
                    "' on its first row (a sequence has one label; --head label labels each step)");
      }
    });
  }
  const int64_t N = static_cast<int64_t>(sequences.size());
  const int64_t T = *std::max_element(lengths.begin(), lengths.end());
  std::vector<float> x(static_cast<size_t>(N * T * D), 0.0f);
  for (int64_t n = 0; n < N; ++n) std::copy(sequences[n].begin(), sequences[n].end(), x.begin() + n * T * D);
  SequenceSet set = SequenceSet::Owning(path, N, T, D, std::move(x));
  if (!csv.header().empty()) {
    for (int k : c.labels) set.label_names.push_back(csv.header()[static_cast<size_t>(k)]);
    for (int k : c.features) set.feature_names.push_back(csv.header()[static_cast<size_t>(k)]);
  }
  bool ragged = false;
  for (int64_t L : lengths) ragged = ragged || L != T;
  if (ragged) set.lengths.assign(lengths.begin(), lengths.end());
  if (!t.labels.empty()) {
    const std::vector<int32_t> ids = ClassIds(t.labels, path, set.class_names, known_names, t.lines);
    if (o.head == SequenceHead::kLabel) {  // per step, into (N, T)
      set.classes.assign(static_cast<size_t>(N * T), 0);
      size_t k = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t s = 0; s < lengths[n]; ++s) set.classes[static_cast<size_t>(n * T + s)] = ids[k++];
    } else {
      set.classes = ids;
    }
  }
  if (!t.values.empty()) {
    set.values = std::move(t.values);
    set.O = static_cast<int>(c.labels.size());
  }
  return set;
}

// The targets of `set` from an array (an .npz's y, an .npy, an IDX file).
void TargetsFromArray(SequenceSet& set, const fmt::Array& y, SequenceHead head) {
  const int64_t rows = y.shape.empty() ? 1 : y.shape[0];
  if (rows != set.N)
    throw Error(y.source + ": targets for " + std::to_string(rows) + " sequences, but the inputs (" + set.source +
                ") have " + std::to_string(set.N));
  if (head == SequenceHead::kRegress) {
    if (y.shape.size() > 2) throw Error(y.source + ": regression targets must be (N) or (N, O), not " + ShapeText(y.shape));
    set.values = y.Floats();
    set.O = y.shape.size() == 2 ? static_cast<int>(y.shape[1]) : 1;
    return;
  }
  const bool per_step = head == SequenceHead::kLabel;
  if (per_step ? !(y.shape.size() == 2 && y.shape[1] == set.T)
               : !(y.shape.size() == 1 || (y.shape.size() == 2 && y.shape[1] == 1)))
    throw Error(y.source + ": " + (per_step ? "per-step labels must be (N, T) = (" + std::to_string(set.N) + ", " +
                                                  std::to_string(set.T) + ")"
                                            : std::string("class labels must be (N)")) +
                ", not " + ShapeText(y.shape));
  const std::vector<int64_t> ids = y.Integers();
  set.classes.resize(ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const bool read = !per_step || static_cast<int64_t>(k % static_cast<size_t>(set.T)) <
                                       set.length(static_cast<int64_t>(k / static_cast<size_t>(set.T)));
    if (read && (ids[k] < 0 || ids[k] > INT32_MAX))
      throw Error(y.source + ": label " + std::to_string(ids[k]) + " at element " + y.Index(static_cast<int64_t>(k)) +
                  (ids[k] < 0 ? " is negative" : " is too large"));
    set.classes[k] = read ? static_cast<int32_t>(ids[k]) : 0;
  }
}

// Lengths from an .npz's lengths (N) or mask (N, T) array.
void LengthsFromArray(SequenceSet& set, const fmt::Array& a, bool mask) {
  const std::vector<int64_t> v = a.Integers();
  set.lengths.assign(static_cast<size_t>(set.N), 0);
  if (!mask) {
    if (a.shape.size() != 1 || a.shape[0] != set.N)
      throw Error(a.source + ": lengths must be (N) = (" + std::to_string(set.N) + "), not " + ShapeText(a.shape));
    for (int64_t n = 0; n < set.N; ++n) {
      if (v[static_cast<size_t>(n)] < 1 || v[static_cast<size_t>(n)] > set.T)
        throw Error(a.source + ": length " + std::to_string(v[static_cast<size_t>(n)]) + " of sequence " +
                    std::to_string(n) + " is outside [1, " + std::to_string(set.T) + "]");
      set.lengths[static_cast<size_t>(n)] = static_cast<int32_t>(v[static_cast<size_t>(n)]);
    }
    return;
  }
  if (a.shape.size() != 2 || a.shape[0] != set.N || a.shape[1] != set.T)
    throw Error(a.source + ": the mask must be (N, T) = (" + std::to_string(set.N) + ", " + std::to_string(set.T) +
                "), not " + ShapeText(a.shape));
  for (int64_t n = 0; n < set.N; ++n) {
    int64_t L = 0;
    for (int64_t t = 0; t < set.T; ++t) {
      const int64_t m = v[static_cast<size_t>(n * set.T + t)];
      if (m != 0 && m != 1)
        throw Error(a.source + ": mask value " + std::to_string(m) + " at element (" + std::to_string(n) + ", " +
                    std::to_string(t) + ") is not 0 or 1");
      if (m == 1 && L != t)
        throw Error(a.source + ": the mask of sequence " + std::to_string(n) + " has a step at " + std::to_string(t) +
                    " after a gap: padding goes at the end of a sequence");
      if (m == 1) ++L;
    }
    if (L == 0) throw Error(a.source + ": the mask of sequence " + std::to_string(n) + " marks no step");
    set.lengths[static_cast<size_t>(n)] = static_cast<int32_t>(L);
  }
}

// Targets from a --labels file.
void ReadLabelsFile(SequenceSet& set, const SequenceOptions& o, const std::string& path,
                    const std::vector<std::string>& known_names) {
  switch (fmt::FormatOf(path)) {
    case fmt::FileFormat::kNpy: TargetsFromArray(set, fmt::ReadNpy(path), o.head); return;
    case fmt::FileFormat::kIdx: TargetsFromArray(set, fmt::ReadIdx(path), o.head); return;
    case fmt::FileFormat::kNpz: {
      const std::vector<std::string> members = fmt::NpzMembers(path);
      TargetsFromArray(set, fmt::ReadNpzMember(path, NpzKey(path, members, o.y_key, true)), o.head);
      return;
    }
    case fmt::FileFormat::kCsv: {
      // One row per sequence: its class (an id or a name), or its O values.
      const fmt::CsvReader csv(path);
      CsvTargets t;
      CsvColumns c;
      for (int k = 0; k < csv.columns(); ++k) c.labels.push_back(k);
      if (o.head == SequenceHead::kLabel)
        throw Error(path + ": per-step labels in a --labels file must be an .npy or .npz array (N, T)");
      if (o.head != SequenceHead::kRegress && csv.columns() != 1)
        throw Error(path + ": a --labels CSV holds one class per row; it has " + std::to_string(csv.columns()) +
                    " columns");
      csv.ForEach([&](const fmt::CsvRow& row) { AddTargets(row, c, o.head, t); });
      const int64_t rows = static_cast<int64_t>(o.head == SequenceHead::kRegress ? t.values.size() / csv.columns()
                                                                                 : t.labels.size());
      if (rows != set.N)
        throw Error(path + ": targets for " + std::to_string(rows) + " sequences, but the inputs (" + set.source +
                    ") have " + std::to_string(set.N));
      if (o.head == SequenceHead::kRegress) {
        set.values = std::move(t.values);
        set.O = csv.columns();
      } else {
        set.classes = ClassIds(t.labels, path, set.class_names, known_names, t.lines);
      }
      return;
    }
  }
}

SequenceSet ReadSeries(const SequenceOptions& o, const std::string& path) {
  fmt::Array a;
  switch (fmt::FormatOf(path)) {
    case fmt::FileFormat::kNpy: a = fmt::ReadNpy(path); break;
    case fmt::FileFormat::kIdx: a = fmt::ReadIdx(path); break;
    case fmt::FileFormat::kNpz: a = fmt::ReadNpzMember(path, NpzKey(path, fmt::NpzMembers(path), o.x_key, true)); break;
    case fmt::FileFormat::kCsv: {
      const fmt::CsvReader csv(path);
      const CsvColumns c = ChooseColumns(csv, o, false);
      std::vector<float> values;
      int64_t n = 0;
      csv.ForEach([&](const fmt::CsvRow& row) {
        for (int k : c.features) values.push_back(static_cast<float>(row.Number(k)));
        ++n;
      });
      SequenceSet series = SequenceSet::Owning(path, 1, n, static_cast<int>(c.features.size()), std::move(values));
      if (!csv.header().empty())
        for (int k : c.features) series.feature_names.push_back(csv.header()[static_cast<size_t>(k)]);
      return series;
    }
  }
  if (a.shape.empty() || a.shape.size() > 2)
    throw Error(a.source + ": a series must be (n) or (n, D), not " + ShapeText(a.shape));
  const int64_t D = a.shape.size() == 2 ? a.shape[1] : 1;
  return SequenceSet::Owning(a.source, 1, a.shape[0], static_cast<int>(D), a.Floats());
}

}  // namespace

SequenceSet ReadSequences(const SequenceOptions& o, const std::string& data, const std::string& labels, bool targets,
                          const std::vector<std::string>& class_names) {
  if (o.forecast()) {
    SequenceSet series = ReadSeries(o, data);
    series.Check(o.head, 0);
    return series;
  }
  SequenceSet set;
  switch (fmt::FormatOf(data)) {
    case fmt::FileFormat::kNpy: set = InputsFromArray(fmt::ReadNpy(data), o.steps); break;
    case fmt::FileFormat::kIdx: set = InputsFromArray(fmt::ReadIdx(data), o.steps); break;
    case fmt::FileFormat::kCsv: set = ReadCsvSequences(o, data, targets && labels.empty(), class_names); break;
    case fmt::FileFormat::kNpz: {
      const std::vector<std::string> members = fmt::NpzMembers(data);
      set = InputsFromArray(fmt::ReadNpzMember(data, NpzKey(data, members, o.x_key, true)), o.steps);
      set.source = data;
      const std::string lengths = NpzKey(data, members, "lengths", false), mask = NpzKey(data, members, "mask", false);
      if (!lengths.empty() && !mask.empty()) throw Error(data + ": has both lengths and a mask; give one");
      if (!lengths.empty()) LengthsFromArray(set, fmt::ReadNpzMember(data, lengths), false);
      if (!mask.empty()) {
        if (o.steps == StepLayout::kElements) throw Error(data + ": a mask of steps does not apply to --steps elements");
        LengthsFromArray(set, fmt::ReadNpzMember(data, mask), true);
      }
      const std::string y = NpzKey(data, members, o.y_key, false);
      if (labels.empty() && !y.empty()) TargetsFromArray(set, fmt::ReadNpzMember(data, y), o.head);
      break;
    }
  }
  if (!labels.empty()) ReadLabelsFile(set, o, labels, class_names);
  if (targets && !set.has_targets())
    throw Error(data + ": no targets: give --labels FILE" +
                std::string(fmt::FormatOf(data) == fmt::FileFormat::kNpz ? ", or an array '" + o.y_key + "' in it" : ""));
  if (!targets && !set.has_targets()) {
    set.Check(SequenceHead::kForecast, 0);  // the inputs alone
    return set;
  }
  set.Check(o.head, o.classes);
  return set;
}

// ---------------------------------------------------------------------------------------------
// Statistics and the spec.

nlohmann::json Standardizer::ToJson() const { return {{"mean", mean}, {"scale", scale}}; }

Standardizer Standardizer::FromJson(const nlohmann::json& j, size_t size, const std::string& source) {
  Standardizer s;
  if (j.is_null()) return s;
  try {
    s.mean = j.at("mean").get<std::vector<double>>();
    s.scale = j.at("scale").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": the standardisation is malformed: " + e.what());
  }
  if (s.mean.empty() && s.scale.empty()) return s;
  if (s.mean.size() != size || s.scale.size() != size)
    throw Error(source + ": the standardisation has " + std::to_string(s.mean.size()) + " means and " +
                std::to_string(s.scale.size()) + " scales for " + std::to_string(size) + " values");
  for (size_t k = 0; k < size; ++k)
    if (!std::isfinite(s.mean[k]) || !(s.scale[k] > 0 && std::isfinite(s.scale[k])))
      throw Error(source + ": the standardisation of value " + std::to_string(k) + " is not finite and positive");
  return s;
}

namespace {

// Mean and standard deviation of each of `width` columns over the rows that `each` visits
// (Welford's update, in double).
template <typename Visit>
Standardizer Statistics(size_t width, Visit each) {
  std::vector<double> mean(width, 0.0), m2(width, 0.0);
  double count = 0;
  each([&](const float* row) {
    count += 1;
    for (size_t k = 0; k < width; ++k) {
      const double x = row[k], delta = x - mean[k];
      mean[k] += delta / count;
      m2[k] += delta * (x - mean[k]);
    }
  });
  Standardizer s;
  s.mean = mean;
  s.scale.resize(width);
  for (size_t k = 0; k < width; ++k) {
    const double sd = count > 0 ? std::sqrt(m2[k] / count) : 0.0;
    s.scale[k] = sd > 1e-12 * std::max(1.0, std::abs(mean[k])) ? sd : 1.0;
  }
  return s;
}

}  // namespace

Standardizer InputStatistics(const SequenceSet& set, std::span<const int64_t> index) {
  return Statistics(static_cast<size_t>(set.D), [&](auto add) {
    for (int64_t n : index)
      for (int64_t t = 0; t < set.length(n); ++t) add(set.step(n, t));
  });
}

Standardizer TargetStatistics(const SequenceSet& set, std::span<const int64_t> index) {
  return Statistics(static_cast<size_t>(set.O), [&](auto add) {
    for (int64_t n : index) add(set.values.data() + n * set.O);
  });
}

nlohmann::json SequenceSpec::ToJson() const {
  nlohmann::json j = {{"head", std::string(SequenceHeadName(head))},
                      {"features", features},
                      {"inputs", inputs.empty() ? nlohmann::json(nullptr) : inputs.ToJson()},
                      {"reading", ::bptt::ToJson(SequenceOptionSpecs(), reading)}};
  for (const char* key : {"data", "labels", "val_data", "val_labels", "test_data", "test_labels"}) j["reading"].erase(key);
  if (!reading.feature_names.empty()) {
    j["csv_features"] = reading.feature_names;
    j["csv_labels"] = reading.label_names;
  }
  if (head == SequenceHead::kClassify || head == SequenceHead::kLabel) {
    j["classes"] = classes;
    if (!class_names.empty()) j["class_names"] = class_names;
  } else {
    j["targets"] = targets;
    j["outputs"] = outputs.empty() ? nlohmann::json(nullptr) : outputs.ToJson();
  }
  if (head == SequenceHead::kForecast) {
    j["horizon"] = horizon;
    j["season"] = season;
    if (differences > 0) j["differences"] = differences;
  }
  return j;
}

SequenceSpec SequenceSpec::FromJson(const nlohmann::json& j, const std::string& source) {
  SequenceSpec s;
  try {
    s.head = ParseSequenceHead(j.at("head").get<std::string>(), "head");
    s.features = j.at("features").get<int>();
    s.reading = bptt::FromJson(SequenceOptionSpecs(), j.at("reading"), SequenceOptions(), source);
    if (j.contains("csv_features")) {
      s.reading.feature_names = j.at("csv_features").get<std::vector<std::string>>();
      s.reading.label_names = j.at("csv_labels").get<std::vector<std::string>>();
    }
    if (s.features < 1) throw Error("features must be positive");
    s.inputs = Standardizer::FromJson(j.at("inputs"), static_cast<size_t>(s.features), source);
    if (s.head == SequenceHead::kClassify || s.head == SequenceHead::kLabel) {
      s.classes = j.at("classes").get<int>();
      if (s.classes < 1) throw Error("classes must be positive");
      if (j.contains("class_names")) s.class_names = j.at("class_names").get<std::vector<std::string>>();
      if (!s.class_names.empty() && static_cast<int>(s.class_names.size()) != s.classes)
        throw Error("class_names must name every class");
    } else {
      s.targets = j.at("targets").get<int>();
      if (s.targets < 1) throw Error("targets must be positive");
      s.outputs = Standardizer::FromJson(j.at("outputs"), static_cast<size_t>(s.targets), source);
    }
    if (s.head == SequenceHead::kForecast) {
      s.horizon = j.at("horizon").get<int>();
      s.season = j.at("season").get<int>();
      s.differences = j.value("differences", 0);
      if (s.differences != 0 && s.differences != 1) throw Error("differences must be 0 or 1");
      if (s.horizon < 1 || s.season < 1) throw Error("horizon and season must be positive");
      if (s.targets != s.features) throw Error("a forecast's targets are its features");
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": the checkpoint's sequence data description is malformed: " + e.what());
  } catch (const Error& e) {
    if (std::string(e.what()).starts_with(source)) throw;
    throw Error(source + ": the checkpoint's sequence data description is malformed: " + e.what());
  }
  s.reading.head = s.head;
  return s;
}

void SequenceSpec::Shape(ModelConfig& config) const {
  const SequenceOptions& o = reading;
  config.vocab_size = 0;
  config.embed_size = 0;
  config.input_size = features;
  const bool classes_out = head == SequenceHead::kClassify || head == SequenceHead::kLabel;
  config.head = classes_out ? Head::kSoftmax : Head::kRegression;
  config.output_size = classes_out ? classes : head == SequenceHead::kForecast ? targets * horizon : targets;
  config.pooling = head == SequenceHead::kClassify || head == SequenceHead::kRegress ? o.pool : Pooling::kNone;
  config.regression_loss = classes_out ? RegressionLoss::kSquared : o.loss;
  config.huber_delta = config.regression_loss == RegressionLoss::kHuber ? o.huber_delta : 1.0;
}

SequenceSpec MakeSequenceSpec(const SequenceOptions& o, const SequenceSet& set, std::span<const int64_t> train,
                              int64_t train_steps) {
  SequenceSpec s;
  s.head = o.head;
  s.features = set.D;
  s.reading = o;
  s.reading.label_names = set.label_names;
  s.reading.feature_names = set.feature_names;
  s.horizon = o.horizon;
  s.season = o.season;
  s.differences = o.forecast() ? o.differences : 0;
  s.class_names = set.class_names;
  if (o.head == SequenceHead::kClassify || o.head == SequenceHead::kLabel) {
    int largest = -1;
    for (size_t k = 0; k < set.classes.size(); ++k) {
      if (o.head == SequenceHead::kLabel &&
          static_cast<int64_t>(k % static_cast<size_t>(set.T)) >= set.length(static_cast<int64_t>(k) / set.T))
        continue;
      largest = std::max(largest, set.classes[k]);
    }
    s.classes = o.classes > 0 ? o.classes : std::max(largest + 1, static_cast<int>(set.class_names.size()));
    if (s.classes < 2)
      throw Error(set.source + ": every label is " + std::to_string(largest) +
                  ": a classifier needs at least two classes (--classes K says how many there are)");
  }
  if (o.head == SequenceHead::kRegress) s.targets = set.O;
  if (o.head == SequenceHead::kForecast) s.targets = set.D;
  if (o.standardize) {
    if (o.head == SequenceHead::kForecast) {
      SequenceSet head = set;
      head.T = train_steps;  // the first train_steps steps of the one series
      const int64_t zero = 0;
      s.inputs = InputStatistics(head, std::span<const int64_t>(&zero, 1));
      s.outputs = s.inputs;
    } else {
      s.inputs = InputStatistics(set, train);
      if (o.head == SequenceHead::kRegress) s.outputs = TargetStatistics(set, train);
    }
  }
  return s;
}

}  // namespace bptt
