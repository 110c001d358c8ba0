#include "bptt/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "bptt/error.h"
#include "bptt/safetensors.h"
#include "bptt/sequences.h"

namespace bptt {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Optimizer slot s (1 or 2) of a parameter is stored as "optimizer.slot<s>.<parameter name>".
constexpr std::string_view kSlotPrefix = "optimizer.slot";
std::string SlotName(int slot, const std::string& param_name) {
  return std::string(kSlotPrefix) + std::to_string(slot) + "." + param_name;
}

// The running average of a parameter is stored as "average.<parameter name>".
constexpr std::string_view kAveragePrefix = "average.";

// An online --credit's carried state is stored as "credit.<name>" (CarriedCreditShapes).
constexpr std::string_view kCreditPrefix = "credit.";

void PutMatrix(Safetensors& st, const std::string& name, TensorRole role, const Mat<float>& m) {
  const RowMajor r = m;
  st.Put(name, TorchShape(role, m), std::span<const float>(r.data(), static_cast<size_t>(r.size())));
}

// The tensor's row-major bytes into m, 32 rows at a time through a buffer that stays in cache
// (the bytes may lie anywhere in a file's mapping, not necessarily aligned as floats are).
// Returns whether every value is finite, checked in the buffer on the way.
bool GetMatrix(const Safetensors& st, const std::string& name, TensorRole role, Mat<float>& m) {
  const uint8_t* bytes = st.Checked<float>(name, TorchShape(role, m)).data().data();
  if (m.size() == 0) return true;
  constexpr Eigen::Index kRows = 32;
  RowMajor block(std::min(kRows, m.rows()), m.cols());
  bool finite = true;
  for (Eigen::Index i = 0; i < m.rows(); i += kRows) {
    const Eigen::Index rows = std::min(kRows, m.rows() - i);
    std::memcpy(block.data(), bytes + sizeof(float) * static_cast<size_t>(i * m.cols()),
                sizeof(float) * static_cast<size_t>(rows * m.cols()));
    finite = finite && block.topRows(rows).allFinite();
    m.middleRows(i, rows) = block.topRows(rows);
  }
  return finite;
}

// A state (L of (H, B)) as one (L, B, H) tensor: each (H, B) column-major block is (B, H) row-major.
void PutState(Safetensors& st, const std::string& name, const std::vector<Mat<float>>& s) {
  if (s.empty()) return;
  const int64_t L = static_cast<int64_t>(s.size()), H = s[0].rows(), B = s[0].cols();
  std::vector<float> v;
  v.reserve(static_cast<size_t>(L * B * H));
  for (const auto& m : s) v.insert(v.end(), m.data(), m.data() + m.size());
  st.Put(name, {L, B, H}, v);
}

std::vector<Mat<float>> GetState(const Safetensors& st, const std::string& name, int64_t L, int64_t B, int64_t H) {
  const std::vector<float> v = st.Get<float>(name, {L, B, H});
  std::vector<Mat<float>> s;
  for (int64_t l = 0; l < L; ++l) s.push_back(Eigen::Map<const Mat<float>>(v.data() + l * B * H, H, B));
  return s;
}

// Matrices of one shape (rows, cols) as one (n, rows, cols) tensor, each row-major.
void PutStack(Safetensors& st, const std::string& name, const std::vector<Mat<float>>& s) {
  const int64_t n = static_cast<int64_t>(s.size()), rows = s.empty() ? 0 : s[0].rows(), cols = s.empty() ? 0 : s[0].cols();
  std::vector<float> v;
  v.reserve(static_cast<size_t>(n * rows * cols));
  for (const auto& m : s) {
    const RowMajor r = m;
    v.insert(v.end(), r.data(), r.data() + r.size());
  }
  st.Put(name, {n, rows, cols}, v);
}

// A metadata integer: digits only (a leading '-' allowed), nothing after them.
int64_t ParseInteger(const std::string& text, const std::string& what, const std::string& source) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || std::isspace(static_cast<unsigned char>(text[0])))
    throw Error(source + ": checkpoint metadata '" + what + "' is not an integer: '" + text + "'");
  return v;
}

// A training-state field of JSON type T satisfying `ok`.
template <typename T, typename Ok>
T Field(const nlohmann::json& j, const char* key, Ok ok, const char* requirement, const std::string& source) {
  if (!j.contains(key)) throw Error(source + ": checkpoint training state has no '" + key + "'");
  const nlohmann::json& v = j.at(key);
  bool typed = false;
  if constexpr (std::is_same_v<T, std::string>) typed = v.is_string();
  else if constexpr (std::is_same_v<T, double>) typed = v.is_number();
  else if constexpr (std::is_unsigned_v<T>) typed = v.is_number_unsigned();
  else if constexpr (std::is_integral_v<T>) typed = v.is_number_integer();
  if (!typed || !ok(v.get<T>()))
    throw Error(source + ": checkpoint training state '" + key + "' must be " + requirement + ", got " + v.dump());
  return v.get<T>();
}

nlohmann::json ParseMetadataJson(const Safetensors& st, const std::string& key, const std::string& source) {
  const auto it = st.metadata().find(key);
  if (it == st.metadata().end()) throw Error(source + ": checkpoint metadata has no '" + key + "'");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception&) {
    throw Error(source + ": checkpoint metadata '" + key + "' is not valid JSON");
  }
}

}  // namespace

std::vector<int64_t> TorchShape(TensorRole role, const Mat<float>& m) {
  if (m.cols() == 1 && role != TensorRole::kWeight) return {m.rows()};
  return {m.rows(), m.cols()};
}

void SaveCheckpoint(const Checkpoint& ck, const std::filesystem::path& path) {
  if (!ck.params.AllFinite())
    throw Error(path.string() + ": refusing to save a model with non-finite weights");
  Safetensors st;
  ck.params.ForEachTensor([&st](const TensorInfo& t, const Mat<float>& m) { PutMatrix(st, t.name, t.role, m); });
  st.SetMetadata("format", "bptt");
  st.SetMetadata("format_version", std::to_string(kCheckpointFormatVersion));
  st.SetMetadata("config", ConfigToJson(ck.config).dump());
  st.SetMetadata("vocab", ck.vocab.ToJson().dump());
  st.SetMetadata("step", std::to_string(ck.step));
  st.SetMetadata("metrics", ck.metrics.dump());
  if (!ck.sequences.is_null()) st.SetMetadata("sequences", ck.sequences.dump());
  if (ck.training) {
    const TrainingState& t = *ck.training;
    std::vector<TensorInfo> tensors;
    ck.params.ForEachTensor([&tensors](const TensorInfo& info, const Mat<float>&) { tensors.push_back(info); });
    for (size_t k = 0; k < t.optimizer.slot1.size(); ++k)
      PutMatrix(st, SlotName(1, tensors[k].name), tensors[k].role, t.optimizer.slot1[k]);
    for (size_t k = 0; k < t.optimizer.slot2.size(); ++k)
      PutMatrix(st, SlotName(2, tensors[k].name), tensors[k].role, t.optimizer.slot2[k]);
    PutState(st, "state.h", t.carried.h);
    PutState(st, "state.c", t.carried.c);
    t.feedback.ForEach(
        [&st](const std::string& name, const Mat<float>& m) { PutMatrix(st, name, TensorRole::kWeight, m); });
    if (t.average && t.average->updates > 0)
      t.average->params.ForEachTensor([&st](const TensorInfo& info, const Mat<float>& m) {
        PutMatrix(st, std::string(kAveragePrefix) + info.name, info.role, m);
      });
    if (t.credit && t.credit->credit == Credit::kUoro) {
      PutMatrix(st, std::string(kCreditPrefix) + "state_factor", TensorRole::kWeight, t.credit->state_factor);
      PutMatrix(st, std::string(kCreditPrefix) + "param_factor", TensorRole::kWeight, t.credit->param_factor);
    }
    else if (t.credit) PutStack(st, std::string(kCreditPrefix) + "sensitivity", t.credit->sensitivity);
    nlohmann::json training = {
        {"optimizer_step", t.optimizer.step}, {"slots", t.optimizer.slot2.empty() ? t.optimizer.slot1.empty() ? 0 : 1 : 2},
        {"batch", t.carried.h.empty() ? 0 : t.carried.h[0].cols()},
        {"rng", t.rng}, {"epoch", t.epoch}, {"chunk", t.chunk}, {"data", t.data},
        {"best_val_loss", t.best_val_loss}, {"lr_scale", t.lr_scale}, {"rollbacks", t.rollbacks},
        {"feedback", std::string(FeedbackName(t.feedback.rule))}, {"options", t.options}};
    if (t.average) {
      training["average_updates"] = t.average->updates;
      training["average_triggered"] = t.average->triggered;
      training["average_history"] = t.average->history;
    }
    else if (t.average_updates >= 0) training["average_updates"] = t.average_updates;
    if (t.weights_averaged) training["weights"] = "average";
    if (t.credit) {
      training["credit"] = std::string(CreditName(t.credit->credit));
      training["credit_rng"] = t.credit->rng.Save();
    }
    st.SetMetadata("training", training.dump());
  }
  st.Save(path);
}

bool IsSequenceCheckpoint(const std::filesystem::path& path) {
  // A safetensors file opens with the header's length (8 bytes, little-endian), then the header.
  std::ifstream in(path, std::ios::binary);
  unsigned char size[8];
  if (!in.read(reinterpret_cast<char*>(size), sizeof size)) return false;
  uint64_t length = 0;
  for (int k = 7; k >= 0; --k) length = length << 8 | size[k];
  if (length > (uint64_t{1} << 27)) return false;
  std::string header(length, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(length))) return false;
  const nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("__metadata__") && j["__metadata__"].is_object() &&
         j["__metadata__"].contains("sequences");
}

namespace {

// Reads a checkpoint's parts, each verified as it is read, and keeps the names of the tensors
// read, so that a tensor the configuration does not account for is an error.
class CheckpointReader {
 public:
  CheckpointReader(const Safetensors& st, std::string source) : st_(st), source_(std::move(source)) {}

  // "format" and "format_version".
  void CheckFormat() const {
    const auto& meta = st_.metadata();
    const auto format = meta.find("format");
    if (format == meta.end() || format->second != "bptt")
      throw Error(source_ + ": not a bptt checkpoint (metadata 'format' is not \"bptt\")");
    const auto version = meta.find("format_version");
    if (version == meta.end() || version->second != std::to_string(kCheckpointFormatVersion))
      throw Error(source_ + ": unsupported checkpoint format version '" +
                  (version == meta.end() ? std::string("none") : version->second) + "' (this bptt reads version " +
                  std::to_string(kCheckpointFormatVersion) + ")");
  }

  // The configuration, vocabulary, step and metrics, then every parameter tensor the
  // configuration declares (ModelParams::ForEachTensor).
  void ReadModel(Checkpoint& ck) {
    const auto& meta = st_.metadata();
    ck.checksum_verified = st_.checksum_verified();
    ck.config = ConfigFromJson(ParseMetadataJson(st_, "config", source_), source_);
    ck.vocab = Vocab::FromJson(ParseMetadataJson(st_, "vocab", source_), source_);
    if (ck.vocab.size() != ck.config.vocab_size)
      throw Error(source_ + ": vocabulary has " + std::to_string(ck.vocab.size()) +
                  " symbols but the model expects " + std::to_string(ck.config.vocab_size));
    if (!meta.count("step")) throw Error(source_ + ": checkpoint metadata has no 'step'");
    ck.step = ParseInteger(meta.at("step"), "step", source_);
    if (ck.step < 0) throw Error(source_ + ": checkpoint metadata 'step' is negative");
    if (meta.count("metrics")) ck.metrics = ParseMetadataJson(st_, "metrics", source_);
    if (meta.count("sequences")) {
      ck.sequences = ParseMetadataJson(st_, "sequences", source_);
      ModelConfig shaped = ck.config;
      SequenceSpec::FromJson(ck.sequences, source_).Shape(shaped);
      if (ConfigToJson(shaped) != ConfigToJson(ck.config))
        throw Error(source_ + ": the sequence data description does not fit the model " +
                    ConfigToJson(ck.config).dump());
    }

    // A few bytes of configuration could ask for any amount of memory: the file must hold at
    // least as many values as the parameters before they are allocated.
    const double values = static_cast<double>(st_.DataBytes() / sizeof(float));
    if (ParameterCount(ck.config) > values) {
      std::ostringstream out;
      out << std::fixed << std::setprecision(0) << source_ << ": the configuration "
          << ConfigToJson(ck.config).dump() << " has " << ParameterCount(ck.config)
          << " parameters but the file holds only " << values << " values";
      throw Error(out.str());
    }
    ck.params = ModelParams<float>::Shaped(ck.config);  // each tensor is read whole below
    bool finite = true;
    ck.params.ForEachTensor([&](const TensorInfo& t, Mat<float>& m) { finite = Read(t.name, t.role, m) && finite; });
    if (!finite) throw Error(source_ + ": checkpoint holds non-finite weights");
  }

  // The training state of a checkpoint whose metadata has "training"; the optimizer's buffers
  // only to resume from.
  TrainingState ReadTraining(const Checkpoint& ck, CheckpointUse use) {
    const nlohmann::json j = ParseMetadataJson(st_, "training", source_);
    if (!j.is_object()) throw Error(source_ + ": checkpoint training state is not a JSON object");
    TrainingState t;
    const Counts counts = ReadCounts(j, t);
    ReadOptions(j, ck.config, t);
    if (use == CheckpointUse::kResume) ReadOptimizer(ck.params, counts.slots, t.optimizer);
    ReadCarried(ck.config, counts.batch, t.carried);
    ReadFeedback(j, ck.config, t.feedback);
    ReadAverage(j, ck.config, use, t);
    if (use == CheckpointUse::kResume) ReadCredit(j, ck.config, counts.batch, t);
    return t;
  }

  // Fails on any tensor of the file that was not read (an optimizer slot skipped for kModel
  // was not loaded at all).
  void CheckNothingElse() const {
    for (const auto& name : st_.Names())
      if (!read_.count(name)) throw Error(source_ + ": unexpected tensor '" + name + "' for this configuration");
  }

 private:
  struct Counts {
    int slots = 0;    // optimizer buffers per parameter
    int64_t batch = 0;  // streams of the carried state
  };

  // Returns whether every value is finite.
  bool Read(const std::string& name, TensorRole role, Mat<float>& m) {
    const bool finite = GetMatrix(st_, name, role, m);
    read_.insert(name);
    return finite;
  }

  // The fields of the training state's JSON: counts, position, generator, schedule.
  Counts ReadCounts(const nlohmann::json& j, TrainingState& t) const {
    const auto non_negative = [](auto v) { return v >= 0; };
    Counts counts;
    t.optimizer.step = Field<int64_t>(j, "optimizer_step", non_negative, "a non-negative integer", source_);
    counts.slots = Field<int>(j, "slots", [](int v) { return v >= 0 && v <= 2; }, "0, 1 or 2", source_);
    counts.batch = Field<int64_t>(j, "batch", [](int64_t v) { return v >= 1; }, "a positive integer", source_);
    t.rng = Field<std::string>(j, "rng", [](const std::string&) { return true; }, "a string", source_);
    try {
      Rng().Restore(t.rng);
    } catch (const Error& e) {
      throw Error(source_ + ": checkpoint training state 'rng' is malformed: " + e.what());
    }
    t.epoch = Field<int64_t>(j, "epoch", non_negative, "a non-negative integer", source_);
    t.chunk = Field<uint64_t>(j, "chunk", [](uint64_t) { return true; }, "a non-negative integer", source_);
    t.best_val_loss = Field<double>(j, "best_val_loss", [](double v) { return std::isfinite(v) && v >= 0; },
                                    "a finite non-negative number", source_);
    t.lr_scale = Field<double>(j, "lr_scale", [](double v) { return v > 0 && v <= 1; }, "in (0, 1]", source_);
    t.rollbacks = Field<int64_t>(j, "rollbacks", non_negative, "a non-negative integer", source_);
    if (j.contains("data")) {
      t.data = j.at("data");
      if (!t.data.is_object()) throw Error(source_ + ": checkpoint training state 'data' is not a JSON object");
    }
    return counts;
  }

  // The training options, whose model must be the checkpoint's configuration.
  void ReadOptions(const nlohmann::json& j, const ModelConfig& config, TrainingState& t) const {
    if (!j.contains("options") || !j.at("options").is_object() || !j.at("options").contains("model"))
      throw Error(source_ + ": checkpoint training state has no training options with a model");
    t.options = j.at("options");
    const ModelConfig trained = ConfigFromJson(t.options.at("model"), source_);
    if (ConfigToJson(trained) != ConfigToJson(config))
      throw Error(source_ + ": the training options' model " + ConfigToJson(trained).dump() +
                  " is not the checkpoint's configuration " + ConfigToJson(config).dump());
  }

  // optimizer.slot<s>.<name> for each parameter tensor, in ModelParams::ForEachTensor order.
  void ReadOptimizer(const ModelParams<float>& params, int slots, OptimizerState<float>& optimizer) {
    params.ForEachTensor([&](const TensorInfo& tensor, const Mat<float>& m) {
      for (int s = 1; s <= slots; ++s) {
        const std::string name = SlotName(s, tensor.name);
        Mat<float> buffer(m.rows(), m.cols());
        if (!Read(name, tensor.role, buffer)) throw Error(source_ + ": optimizer state '" + name + "' is not finite");
        (s == 1 ? optimizer.slot1 : optimizer.slot2).push_back(std::move(buffer));
      }
    });
  }

  // state.h, and state.c for a cell with a cell state: (L, B, H).
  void ReadCarried(const ModelConfig& config, int64_t B, State<float>& carried) {
    carried.h = GetState(st_, "state.h", config.layers, B, config.hidden_size);
    read_.insert("state.h");
    if (config.cell->cell_state) {
      carried.c = GetState(st_, "state.c", config.layers, B, config.hidden_size);
      read_.insert("state.c");
    }
    for (const auto* part : {&carried.h, &carried.c})
      for (const Mat<float>& m : *part)
        if (!m.allFinite()) throw Error(source_ + ": the carried state is not finite");
  }

  // The fixed matrices of a learning rule other than backpropagation: shaped as the rule draws
  // them, then read.
  void ReadFeedback(const nlohmann::json& j, const ModelConfig& config, FeedbackMatrices<float>& feedback) {
    const std::string rule = j.contains("feedback") ? j.at("feedback").is_string() ? j.at("feedback").get<std::string>()
                                                                                   : std::string("?")
                                                    : std::string("bptt");
    Rng shapes;
    feedback = FeedbackMatrices<float>::Draw(ParseFeedback(rule, source_ + ": checkpoint training state 'feedback'"),
                                             config, shapes);
    feedback.ForEach([&](const std::string& name, Mat<float>& m) {
      if (!Read(name, TensorRole::kWeight, m)) throw Error(source_ + ": '" + name + "' is not finite");
    });
  }

  // "weights"; "average_updates" and, to resume from, average.<name> for each parameter tensor
  // (a checkpoint whose weights are the average has the count alone).
  void ReadAverage(const nlohmann::json& j, const ModelConfig& config, CheckpointUse use, TrainingState& t) {
    if (j.contains("weights")) {
      if (j.at("weights") != "average")
        throw Error(source_ + ": checkpoint training state 'weights' must be \"average\", got " + j.at("weights").dump());
      t.weights_averaged = true;
    }
    if (!j.contains("average_updates")) return;
    t.average_updates = Field<int64_t>(j, "average_updates", [](int64_t v) { return v >= 0; },
                                       "a non-negative integer", source_);
    if (use != CheckpointUse::kResume || t.weights_averaged) return;  // the count alone
    WeightAverage average;
    average.updates = t.average_updates;
    if (j.contains("average_triggered")) {
      if (!j.at("average_triggered").is_boolean())
        throw Error(source_ + ": checkpoint training state 'average_triggered' must be true or false");
      average.triggered = j.at("average_triggered").get<bool>();
    }
    if (j.contains("average_history")) {
      const nlohmann::json& h = j.at("average_history");
      if (!h.is_array() || !std::all_of(h.begin(), h.end(), [](const nlohmann::json& v) {
            return v.is_number() && std::isfinite(v.get<double>());
          }))
        throw Error(source_ + ": checkpoint training state 'average_history' must be a list of finite numbers");
      average.history = h.get<std::vector<double>>();
    }
    if (average.updates > 0) {
      average.params = ModelParams<float>::Shaped(config);
      average.params.ForEachTensor([&](const TensorInfo& info, Mat<float>& m) {
        const std::string name = std::string(kAveragePrefix) + info.name;
        if (!Read(name, info.role, m)) throw Error(source_ + ": '" + name + "' is not finite");
      });
    }
    t.average = std::move(average);
  }

  // An online --credit's carried state: "credit" names the algorithm, "credit_rng" its
  // generator; its tensors, shaped as the algorithm shapes them for the model and the carried
  // state's streams, are checked against the file before they are allocated.
  void ReadCredit(const nlohmann::json& j, const ModelConfig& config, int64_t B, TrainingState& t) {
    if (!j.contains("credit")) return;
    const std::string what = source_ + ": checkpoint training state 'credit'";
    if (!j.at("credit").is_string()) throw Error(what + " must be a string, got " + j.at("credit").dump());
    const Credit credit = ParseCredit(j.at("credit").get<std::string>(), what);
    if (const std::string why = CreditRefusal(credit, config); credit == Credit::kBptt || !why.empty())
      throw Error(what + ": " + (why.empty() ? "bptt carries no state" : why));
    const auto shapes = CarriedCreditShapes(credit, config, B);
    for (const auto& [name, shape] : shapes) st_.Checked<float>(std::string(kCreditPrefix) + name, shape);
    OnlineCredit<float> online(credit, config, B, 0);
    bool finite = true;
    if (credit == Credit::kUoro) {
      finite = Read(std::string(kCreditPrefix) + "state_factor", TensorRole::kWeight, online.state_factor) &&
               Read(std::string(kCreditPrefix) + "param_factor", TensorRole::kWeight, online.param_factor);
    } else {
      const std::string name = std::string(kCreditPrefix) + "sensitivity";
      const std::vector<float> v = st_.Get<float>(name, shapes[0].second);
      const Eigen::Index rows = online.sensitivity[0].rows(), cols = online.sensitivity[0].cols();
      for (int64_t b = 0; b < B; ++b)
        online.sensitivity[b] = Eigen::Map<const RowMajor>(v.data() + b * rows * cols, rows, cols);
      read_.insert(name);
    }
    for (const Mat<float>& m : online.sensitivity) finite = finite && m.allFinite();
    if (!finite) throw Error(what + ": the carried state is not finite");
    const std::string rng = Field<std::string>(j, "credit_rng", [](const std::string&) { return true; }, "a string",
                                               source_);
    try {
      online.rng.Restore(rng);
    } catch (const Error& e) {
      throw Error(source_ + ": checkpoint training state 'credit_rng' is malformed: " + e.what());
    }
    t.credit = std::move(online);
  }

  const Safetensors& st_;
  const std::string source_;
  std::set<std::string> read_;
};

}  // namespace

Checkpoint LoadCheckpoint(const std::filesystem::path& path, CheckpointUse use) {
  // A model is read without its optimizer state, the bulk of a checkpoint (two slots per
  // parameter with Adam); the file is still verified whole.
  const Safetensors st = Safetensors::Load(path, use == CheckpointUse::kResume ? Safetensors::Keep{} : [](const std::string& name) {
    return !name.starts_with(kSlotPrefix) && !name.starts_with(kAveragePrefix) && !name.starts_with(kCreditPrefix);
  });
  CheckpointReader reader(st, path.string());
  reader.CheckFormat();
  Checkpoint ck;
  reader.ReadModel(ck);
  if (st.metadata().count("training")) ck.training = reader.ReadTraining(ck, use);
  reader.CheckNothingElse();
  if (use == CheckpointUse::kResume) {
    if (!ck.training) throw Error(path.string() + ": checkpoint has no training state to resume from");
    if (!ck.checksum_verified)
      throw Error(path.string() + ": checkpoint has no checksum; training state is only resumed from a verified file");
    if (ck.training->weights_averaged)
      throw Error(path.string() + ": checkpoint holds the averaged weights (the best of an --average run), not the "
                  "weights training continues from; resume from the run's latest.safetensors");
  }
  return ck;
}

}  // namespace bptt
