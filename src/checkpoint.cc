#include "bptt/checkpoint.h"

#include <cmath>
#include <set>

#include "bptt/error.h"
#include "bptt/safetensors.h"

namespace bptt {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// PyTorch's shape of a parameter: biases are 1-D, everything else (rows, cols).
std::vector<int64_t> TorchShape(const std::string& name, const Mat<float>& m) {
  if (m.cols() == 1 && name.find("bias") != std::string::npos) return {m.rows()};
  return {m.rows(), m.cols()};
}

void PutMatrix(Safetensors& st, const std::string& name, const std::string& param_name, const Mat<float>& m) {
  const RowMajor r = m;
  st.Put(name, TorchShape(param_name, m), std::span<const float>(r.data(), static_cast<size_t>(r.size())));
}

void GetMatrix(const Safetensors& st, const std::string& name, const std::string& param_name, Mat<float>& m) {
  const std::vector<float> v = st.Get<float>(name, TorchShape(param_name, m));
  m = Eigen::Map<const RowMajor>(v.data(), m.rows(), m.cols());
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

bool AllFinite(const ModelParams<float>& p) {
  bool finite = true;
  p.ForEach([&finite](const std::string&, const Mat<float>& m) { finite = finite && m.allFinite(); });
  return finite;
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

nlohmann::json ConfigToJson(const ModelConfig& c) {
  return {{"cell", std::string(CellName(c.cell))}, {"vocab_size", c.vocab_size},
          {"embed_size", c.embed_size},           {"hidden_size", c.hidden_size},
          {"layers", c.layers},                   {"dropout", c.dropout}};
}

ModelConfig ConfigFromJson(const nlohmann::json& j) {
  ModelConfig c;
  try {
    const auto cell = ParseCell(j.at("cell").get<std::string>());
    if (!cell) throw Error("model configuration has an unknown cell '" + j.at("cell").get<std::string>() + "'");
    c.cell = *cell;
    c.vocab_size = j.at("vocab_size").get<int>();
    c.embed_size = j.at("embed_size").get<int>();
    c.hidden_size = j.at("hidden_size").get<int>();
    c.layers = j.at("layers").get<int>();
    c.dropout = j.at("dropout").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model configuration is malformed: ") + e.what());
  }
  c.Validate();
  return c;
}

void SaveCheckpoint(const Checkpoint& ck, const std::filesystem::path& path) {
  if (!AllFinite(ck.params))
    throw Error(path.string() + ": refusing to save a model with non-finite weights");
  Safetensors st;
  ck.params.ForEach([&st](const std::string& name, const Mat<float>& m) { PutMatrix(st, name, name, m); });
  st.SetMetadata("format", "bptt");
  st.SetMetadata("format_version", std::to_string(kCheckpointFormatVersion));
  st.SetMetadata("config", ConfigToJson(ck.config).dump());
  st.SetMetadata("vocab", ck.vocab.ToJson().dump());
  st.SetMetadata("step", std::to_string(ck.step));
  st.SetMetadata("metrics", ck.metrics.dump());
  if (ck.training) {
    const TrainingState& t = *ck.training;
    std::vector<std::string> names;
    ck.params.ForEach([&names](const std::string& name, const Mat<float>&) { names.push_back(name); });
    for (size_t k = 0; k < t.optimizer.slot1.size(); ++k)
      PutMatrix(st, "optimizer.slot1." + names[k], names[k], t.optimizer.slot1[k]);
    for (size_t k = 0; k < t.optimizer.slot2.size(); ++k)
      PutMatrix(st, "optimizer.slot2." + names[k], names[k], t.optimizer.slot2[k]);
    PutState(st, "state.h", t.carried.h);
    PutState(st, "state.c", t.carried.c);
    const nlohmann::json training = {
        {"optimizer_step", t.optimizer.step}, {"slots", t.optimizer.slot2.empty() ? t.optimizer.slot1.empty() ? 0 : 1 : 2},
        {"batch", t.carried.h.empty() ? 0 : t.carried.h[0].cols()},
        {"rng", t.rng}, {"epoch", t.epoch}, {"chunk", t.chunk},
        {"best_val_loss", t.best_val_loss}, {"lr_scale", t.lr_scale}, {"rollbacks", t.rollbacks},
        {"options", t.options}};
    st.SetMetadata("training", training.dump());
  }
  st.Save(path);
}

Checkpoint LoadCheckpoint(const std::filesystem::path& path) {
  const std::string source = path.string();
  const Safetensors st = Safetensors::Load(path);
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
  try {
    ck.config = ConfigFromJson(ParseMetadataJson(st, "config", source));
  } catch (const Error& e) {
    if (std::string(e.what()).rfind(source, 0) == 0) throw;
    throw Error(source + ": " + e.what());
  }
  ck.vocab = Vocab::FromJson(ParseMetadataJson(st, "vocab", source), source);
  if (ck.vocab.size() != ck.config.vocab_size)
    throw Error(source + ": vocabulary has " + std::to_string(ck.vocab.size()) + " symbols but the model expects " +
                std::to_string(ck.config.vocab_size));
  try {
    ck.step = std::stoll(meta.count("step") ? meta.at("step") : std::string("x"));
  } catch (const std::exception&) {
    throw Error(source + ": checkpoint metadata 'step' is missing or not a number");
  }
  if (meta.count("metrics")) ck.metrics = ParseMetadataJson(st, "metrics", source);

  std::set<std::string> expected;
  ck.params = ModelParams<float>::Zeros(ck.config);
  ck.params.ForEach([&](const std::string& name, Mat<float>& m) {
    GetMatrix(st, name, name, m);
    expected.insert(name);
  });
  if (!AllFinite(ck.params)) throw Error(source + ": checkpoint holds non-finite weights");

  if (meta.count("training")) {
    const nlohmann::json j = ParseMetadataJson(st, "training", source);
    TrainingState t;
    try {
      t.optimizer.step = j.at("optimizer_step").get<int64_t>();
      const int slots = j.at("slots").get<int>();
      const int64_t B = j.at("batch").get<int64_t>();
      t.rng = j.at("rng").get<std::string>();
      t.epoch = j.at("epoch").get<int64_t>();
      t.chunk = j.at("chunk").get<uint64_t>();
      t.best_val_loss = j.at("best_val_loss").get<double>();
      t.lr_scale = j.at("lr_scale").get<double>();
      t.rollbacks = j.at("rollbacks").get<int64_t>();
      if (!(t.lr_scale > 0 && t.lr_scale <= 1) || t.rollbacks < 0)
        throw Error(source + ": checkpoint training state has an invalid learning-rate scale or rollback count");
      t.options = j.at("options");
      if (slots < 0 || slots > 2 || B < 1) throw Error(source + ": checkpoint training state is malformed");
      ck.params.ForEach([&](const std::string& name, const Mat<float>& m) {
        for (int s = 1; s <= slots; ++s) {
          const std::string key = "optimizer.slot" + std::to_string(s) + "." + name;
          Mat<float> buffer(m.rows(), m.cols());
          GetMatrix(st, key, name, buffer);
          (s == 1 ? t.optimizer.slot1 : t.optimizer.slot2).push_back(std::move(buffer));
          expected.insert(key);
        }
      });
      t.carried.h = GetState(st, "state.h", ck.config.layers, B, ck.config.hidden_size);
      expected.insert("state.h");
      if (ck.config.cell == CellType::kLstm) {
        t.carried.c = GetState(st, "state.c", ck.config.layers, B, ck.config.hidden_size);
        expected.insert("state.c");
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(source + ": checkpoint training state is malformed: " + e.what());
    }
    ck.training = std::move(t);
  }
  for (const auto& name : st.Names())
    if (!expected.count(name)) throw Error(source + ": unexpected tensor '" + name + "' for this configuration");
  return ck;
}

}  // namespace bptt
