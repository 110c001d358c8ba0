#include "bptt/checkpoint.h"

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

// PyTorch's shape of a parameter: biases and layer norms (as nn.LayerNorm's) are 1-D, everything
// else (rows, cols).
std::vector<int64_t> TorchShape(const std::string& name, const Mat<float>& m) {
  if (m.cols() == 1 && RoleOf(name) != TensorRole::kWeight) return {m.rows()};
  return {m.rows(), m.cols()};
}

void PutMatrix(Safetensors& st, const std::string& name, const std::string& param_name, const Mat<float>& m) {
  const RowMajor r = m;
  st.Put(name, TorchShape(param_name, m), std::span<const float>(r.data(), static_cast<size_t>(r.size())));
}

// The tensor's row-major bytes into m, 32 rows at a time through a buffer that stays in cache.
void GetMatrix(const Safetensors& st, const std::string& name, const std::string& param_name, Mat<float>& m) {
  const uint8_t* bytes = st.Checked<float>(name, TorchShape(param_name, m)).bytes.data();
  if (m.size() == 0) return;
  constexpr Eigen::Index kRows = 32;
  RowMajor block(std::min(kRows, m.rows()), m.cols());
  for (Eigen::Index i = 0; i < m.rows(); i += kRows) {
    const Eigen::Index rows = std::min(kRows, m.rows() - i);
    std::memcpy(block.data(), bytes + sizeof(float) * static_cast<size_t>(i * m.cols()),
                sizeof(float) * static_cast<size_t>(rows * m.cols()));
    m.middleRows(i, rows) = block.topRows(rows);
  }
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

void SaveCheckpoint(const Checkpoint& ck, const std::filesystem::path& path) {
  if (!ck.params.AllFinite())
    throw Error(path.string() + ": refusing to save a model with non-finite weights");
  Safetensors st;
  ck.params.ForEach([&st](const std::string& name, const Mat<float>& m) { PutMatrix(st, name, name, m); });
  st.SetMetadata("format", "bptt");
  st.SetMetadata("format_version", std::to_string(kCheckpointFormatVersion));
  st.SetMetadata("config", ConfigToJson(ck.config).dump());
  st.SetMetadata("vocab", ck.vocab.ToJson().dump());
  st.SetMetadata("step", std::to_string(ck.step));
  st.SetMetadata("metrics", ck.metrics.dump());
  if (!ck.sequences.is_null()) st.SetMetadata("sequences", ck.sequences.dump());
  if (ck.training) {
    const TrainingState& t = *ck.training;
    std::vector<std::string> names;
    ck.params.ForEach([&names](const std::string& name, const Mat<float>&) { names.push_back(name); });
    for (size_t k = 0; k < t.optimizer.slot1.size(); ++k)
      PutMatrix(st, SlotName(1, names[k]), names[k], t.optimizer.slot1[k]);
    for (size_t k = 0; k < t.optimizer.slot2.size(); ++k)
      PutMatrix(st, SlotName(2, names[k]), names[k], t.optimizer.slot2[k]);
    PutState(st, "state.h", t.carried.h);
    PutState(st, "state.c", t.carried.c);
    t.feedback.ForEach([&st](const std::string& name, const Mat<float>& m) { PutMatrix(st, name, name, m); });
    const nlohmann::json training = {
        {"optimizer_step", t.optimizer.step}, {"slots", t.optimizer.slot2.empty() ? t.optimizer.slot1.empty() ? 0 : 1 : 2},
        {"batch", t.carried.h.empty() ? 0 : t.carried.h[0].cols()},
        {"rng", t.rng}, {"epoch", t.epoch}, {"chunk", t.chunk}, {"data", t.data},
        {"best_val_loss", t.best_val_loss}, {"lr_scale", t.lr_scale}, {"rollbacks", t.rollbacks},
        {"feedback", std::string(FeedbackName(t.feedback.rule))}, {"options", t.options}};
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

Checkpoint LoadCheckpoint(const std::filesystem::path& path, CheckpointUse use) {
  const std::string source = path.string();
  // A model is read without its optimizer state, the bulk of a checkpoint (two slots per
  // parameter with Adam); the file is still verified whole.
  const Safetensors st = Safetensors::Load(path, use == CheckpointUse::kResume ? Safetensors::Keep{} : [](const std::string& name) {
    return !name.starts_with(kSlotPrefix);
  });
  const auto& meta = st.metadata();
  const auto format = meta.find("format");
  if (format == meta.end() || format->second != "bptt")
    throw Error(source + ": not a bptt checkpoint (metadata 'format' is not \"bptt\")");
  const auto version = meta.find("format_version");
  if (version == meta.end() || version->second != std::to_string(kCheckpointFormatVersion))
    throw Error(source + ": unsupported checkpoint format version '" +
                (version == meta.end() ? std::string("none") : version->second) + "' (this bptt reads version " +
                std::to_string(kCheckpointFormatVersion) + ")");

  Checkpoint ck;
  ck.checksum_verified = st.checksum_verified();
  ck.config = ConfigFromJson(ParseMetadataJson(st, "config", source), source);
  ck.vocab = Vocab::FromJson(ParseMetadataJson(st, "vocab", source), source);
  if (ck.vocab.size() != ck.config.vocab_size)
    throw Error(source + ": vocabulary has " + std::to_string(ck.vocab.size()) + " symbols but the model expects " +
                std::to_string(ck.config.vocab_size));
  if (!meta.count("step")) throw Error(source + ": checkpoint metadata has no 'step'");
  ck.step = ParseInteger(meta.at("step"), "step", source);
  if (ck.step < 0) throw Error(source + ": checkpoint metadata 'step' is negative");
  if (meta.count("metrics")) ck.metrics = ParseMetadataJson(st, "metrics", source);
  if (meta.count("sequences")) {
    ck.sequences = ParseMetadataJson(st, "sequences", source);
    ModelConfig shaped = ck.config;
    SequenceSpec::FromJson(ck.sequences, source).Shape(shaped);
    if (ConfigToJson(shaped) != ConfigToJson(ck.config))
      throw Error(source + ": the sequence data description does not fit the model " + ConfigToJson(ck.config).dump());
  }

  // A few bytes of configuration could ask for any amount of memory: the file must hold at least
  // as many values as the parameters before they are allocated.
  const double values = static_cast<double>(st.DataBytes() / sizeof(float));
  if (ParameterCount(ck.config) > values) {
    std::ostringstream out;
    out << std::fixed << std::setprecision(0) << source << ": the configuration " << ConfigToJson(ck.config).dump()
        << " has " << ParameterCount(ck.config) << " parameters but the file holds only " << values << " values";
    throw Error(out.str());
  }
  std::set<std::string> expected;
  ck.params = ModelParams<float>::Shaped(ck.config);  // each tensor is read whole below
  ck.params.ForEach([&](const std::string& name, Mat<float>& m) {
    GetMatrix(st, name, name, m);
    expected.insert(name);
  });
  if (!ck.params.AllFinite()) throw Error(source + ": checkpoint holds non-finite weights");

  if (meta.count("training")) {
    const nlohmann::json j = ParseMetadataJson(st, "training", source);
    if (!j.is_object()) throw Error(source + ": checkpoint training state is not a JSON object");
    TrainingState t;
    const auto non_negative = [](auto v) { return v >= 0; };
    t.optimizer.step = Field<int64_t>(j, "optimizer_step", non_negative, "a non-negative integer", source);
    const int slots = Field<int>(j, "slots", [](int v) { return v >= 0 && v <= 2; }, "0, 1 or 2", source);
    const int64_t B = Field<int64_t>(j, "batch", [](int64_t v) { return v >= 1; }, "a positive integer", source);
    t.rng = Field<std::string>(j, "rng", [](const std::string&) { return true; }, "a string", source);
    try {
      Rng().Restore(t.rng);
    } catch (const Error& e) {
      throw Error(source + ": checkpoint training state 'rng' is malformed: " + e.what());
    }
    t.epoch = Field<int64_t>(j, "epoch", non_negative, "a non-negative integer", source);
    t.chunk = Field<uint64_t>(j, "chunk", [](uint64_t) { return true; }, "a non-negative integer", source);
    t.best_val_loss = Field<double>(j, "best_val_loss", [](double v) { return std::isfinite(v) && v >= 0; },
                                    "a finite non-negative number", source);
    t.lr_scale = Field<double>(j, "lr_scale", [](double v) { return v > 0 && v <= 1; }, "in (0, 1]", source);
    t.rollbacks = Field<int64_t>(j, "rollbacks", non_negative, "a non-negative integer", source);
    if (j.contains("data")) {
      t.data = j.at("data");
      if (!t.data.is_object()) throw Error(source + ": checkpoint training state 'data' is not a JSON object");
    }
    if (!j.contains("options") || !j.at("options").is_object() || !j.at("options").contains("model"))
      throw Error(source + ": checkpoint training state has no training options with a model");
    t.options = j.at("options");
    const ModelConfig trained = ConfigFromJson(t.options.at("model"), source);
    if (ConfigToJson(trained) != ConfigToJson(ck.config))
      throw Error(source + ": the training options' model " + ConfigToJson(trained).dump() +
                  " is not the checkpoint's configuration " + ConfigToJson(ck.config).dump());
    ck.params.ForEach([&](const std::string& name, const Mat<float>& m) {
      for (int s = 1; s <= slots && use == CheckpointUse::kResume; ++s) {
        const std::string key = SlotName(s, name);
        Mat<float> buffer(m.rows(), m.cols());
        GetMatrix(st, key, name, buffer);
        if (!buffer.allFinite()) throw Error(source + ": optimizer state '" + key + "' is not finite");
        (s == 1 ? t.optimizer.slot1 : t.optimizer.slot2).push_back(std::move(buffer));
        expected.insert(key);
      }
    });
    t.carried.h = GetState(st, "state.h", ck.config.layers, B, ck.config.hidden_size);
    expected.insert("state.h");
    if (ck.config.cell->cell_state) {
      t.carried.c = GetState(st, "state.c", ck.config.layers, B, ck.config.hidden_size);
      expected.insert("state.c");
    }
    for (const auto* part : {&t.carried.h, &t.carried.c})
      for (const Mat<float>& m : *part)
        if (!m.allFinite()) throw Error(source + ": the carried state is not finite");
    // The fixed matrices of a learning rule other than backpropagation: shaped as the rule draws
    // them, then read.
    const std::string rule = j.contains("feedback") ? j.at("feedback").is_string() ? j.at("feedback").get<std::string>()
                                                                                   : std::string("?")
                                                    : std::string("bptt");
    Rng shapes;
    t.feedback = FeedbackMatrices<float>::Draw(ParseFeedback(rule, source + ": checkpoint training state 'feedback'"),
                                               ck.config, shapes);
    t.feedback.ForEach([&](const std::string& name, Mat<float>& m) {
      GetMatrix(st, name, name, m);
      if (!m.allFinite()) throw Error(source + ": '" + name + "' is not finite");
      expected.insert(name);
    });
    ck.training = std::move(t);
  }
  for (const auto& name : st.Names())
    if (!expected.count(name)) throw Error(source + ": unexpected tensor '" + name + "' for this configuration");
  if (use == CheckpointUse::kResume) {
    if (!ck.training) throw Error(source + ": checkpoint has no training state to resume from");
    if (!ck.checksum_verified)
      throw Error(source + ": checkpoint has no checksum; training state is only resumed from a verified file");
  }
  return ck;
}

}  // namespace bptt
