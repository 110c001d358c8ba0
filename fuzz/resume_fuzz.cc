// libFuzzer target for the whole resume path. Each input is a checkpoint with training state:
// it is written as RUN/latest.safetensors in an emptied run directory and resumed with
// Resume(RUN, {"max-steps": its step + 1, "threads": 1}) (trainer.h): load and verify
// (LoadCheckpoint, kResume), restore the optimizer, carried state, RNG and data position, train
// one step, validate, save. A bad checkpoint must be refused with a one-line bptt::Error; a
// crash, a sanitizer report, an exception of another type, a message of several lines or a hang
// is a finding. When the resume succeeds, the checkpoint it wrote must resume in turn.
//
//   fuzz/run 600                                            (builds and runs every target)
//   build-fuzz/resume_fuzz --write-seeds=fuzz/corpus/resume  (trains the seed checkpoints)
//   BPTT_RESUME_FUZZ_VERBOSE=1 build-fuzz/resume_fuzz INPUT  (shows the trainer's log and refusals)
//
// Paths. The stored training options name their corpus by path, so the corpus is a fixed file,
// /tmp/bptt_resume_fuzz/corpus.txt, which LLVMFuzzerInitialize writes with the text below; the
// seeds in fuzz/corpus/resume were trained on it (and must be trained again if it changes or
// the checkpoint format does). Inputs are resumed in /tmp/bptt_resume_fuzz/run-PID.
//
// Mutations. LLVMFuzzerCustomMutator parses the checkpoint, changes it as a checkpoint and
// serialises it with a fresh checksum, so that mutations reach the training-state validation
// and training itself instead of dying at the checksum: a leaf of the config, vocab, metrics or
// training JSON replaced, removed or added (option keys and names from the library's own tables);
// a model or training-shape field changed in both places the checkpoint stores it, with every
// tensor reshaped to fit; tensor values set to extremes; tensors removed, renamed, retyped or
// reshaped; string metadata replaced. One mutation in eight, and every input that does not
// parse, gets libFuzzer's byte mutator instead.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bptt/cell.h"
#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/safetensors.h"
#include "bptt/task.h"
#include "bptt/trainer.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using bptt::Safetensors;

const fs::path kRoot = "/tmp/bptt_resume_fuzz";
fs::path CorpusPath() { return kRoot / "corpus.txt"; }

// About 400 symbols: a few dozen graphemes (some outside ASCII, one a combining sequence that
// NFC composes), words that repeat for the word unit.
constexpr char kCorpusText[] =
    "the cat sees the moon.\n"
    "a dog likes a red ball.\n"
    "my aunt paints the caf\xc3\xa9.\n"
    "Zo\xc3\xab finds seven fish.\n"
    "the old man chases the river.\n"
    "a dog sees the cafe\xcc\x81 and the moon.\n"
    "the cat likes seven fish!\n"
    "my aunt finds a red ball; the old man paints.\n"
    "Zo\xc3\xab chases the cat, the cat chases a dog.\n"
    "seven fish see the river? no.\n"
    "the moon likes the old man.\n"
    "a red ball finds my aunt.\n"
    "the river paints Zo\xc3\xab.\n"
    "no fish, no moon, no caf\xc3\xa9.\n";

fs::path run_dir;
std::ostream null_log(nullptr);  // discards the trainer's log
bool verbose = false;            // BPTT_RESUME_FUZZ_VERBOSE=1: the trainer's log and refusals on stderr

void WriteFile(const fs::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::cerr << "resume_fuzz: cannot write " << path << "\n";
    std::abort();
  }
}

// Writes the corpus atomically, so that fuzzers started together (-jobs) never read half of it.
void WriteCorpus() {
  fs::create_directories(kRoot);
  const fs::path temporary = kRoot / ("corpus.txt.tmp" + std::to_string(::getpid()));
  WriteFile(temporary, kCorpusText, sizeof kCorpusText - 1);
  fs::rename(temporary, CorpusPath());
}

// ---------------------------------------------------------------------------------------------
// Seeds: tiny models trained for a few steps on the corpus or a generated task, each with the
// training state of a different cell, optimizer and set of options.

struct Seed {
  const char* name;
  void (*configure)(bptt::TrainOptions& o);
};

const Seed kSeeds[] = {
    {"lstm_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("lstm", "cell");
       o.model.hidden_size = 4;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 3;
     }},
    {"lstm2_embed_dropout_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("lstm", "cell");
       o.model.layers = 2;
       o.model.hidden_size = 4;
       o.model.embed_size = 4;
       o.model.dropout = 0.25;
       o.batch = 3;
       o.seq_len = 8;
       o.max_steps = 3;
       o.eval_every = 1;
     }},
    {"lstm2_layernorm_residual_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("lstm", "cell");
       o.model.layers = 2;
       o.model.hidden_size = 4;
       o.model.layer_norm = true;
       o.model.residual = true;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 3;
     }},
    {"gru_layernorm_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("gru", "cell");
       o.model.hidden_size = 4;
       o.model.embed_size = 3;
       o.model.layer_norm = true;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 2;
     }},
    {"gru_sgd_nesterov", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("gru", "cell");
       o.model.hidden_size = 8;
       o.model.embed_size = 4;
       o.optimizer.type = bptt::OptimizerType::kSgd;
       o.optimizer.momentum = 0.9;
       o.optimizer.nesterov = true;
       o.lr = 0.1;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 2;
     }},
    {"gru2_sgd_dropout", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("gru", "cell");
       o.model.layers = 2;
       o.model.hidden_size = 4;
       o.model.dropout = 0.5;
       o.optimizer.type = bptt::OptimizerType::kSgd;
       o.lr = 0.1;
       o.batch = 3;
       o.seq_len = 4;
       o.max_steps = 3;
     }},
    {"rnn_tanh_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("rnn-tanh", "cell");
       o.model.hidden_size = 8;
       o.batch = 2;
       o.seq_len = 8;
       o.max_steps = 2;
     }},
    {"rnn_relu2_rmsprop_clip", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("rnn-relu", "cell");
       o.model.layers = 2;
       o.model.hidden_size = 4;
       o.model.embed_size = 2;
       o.optimizer.type = bptt::OptimizerType::kRmsprop;
       o.optimizer.weight_decay = 0.01;
       o.clip_value = 0.5;
       o.clip_norm = 1.0;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 3;
     }},
    // Past the end of an epoch (8 chunks of 3 x 8), with learning-rate decay after it.
    {"rnn_sigmoid_adagrad_epoch", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("rnn-sigmoid", "cell");
       o.model.hidden_size = 4;
       o.model.embed_size = 2;
       o.optimizer.type = bptt::OptimizerType::kAdagrad;
       o.lr_decay = 0.5;
       o.lr_decay_after = 0;
       o.batch = 3;
       o.seq_len = 8;
       o.max_steps = 17;
       o.eval_every = 5;
     }},
    {"lstm_codepoint_rollback_decay", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("lstm", "cell");
       o.model.hidden_size = 4;
       o.model.embed_size = 2;
       o.tokenizer.unit = bptt::Unit::kCodepoint;
       o.tokenizer.normalize = false;
       o.rollback_on_divergence = true;
       o.decay_every = 2;
       o.decay_steps = 4;
       o.decay_batch = 2;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 2;
     }},
    {"gru_word_adam", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("gru", "cell");
       o.model.hidden_size = 4;
       o.tokenizer.unit = bptt::Unit::kWord;
       o.tokenizer.max_vocab = 12;
       o.val_frac = 0.2;
       o.batch = 2;
       o.seq_len = 4;
       o.max_steps = 3;
     }},
    {"rnn_tanh_byte_sgd_momentum", [](bptt::TrainOptions& o) {
       o.model.cell = &bptt::ParseCell("rnn-tanh", "cell");
       o.model.hidden_size = 4;
       o.model.embed_size = 3;
       o.tokenizer.unit = bptt::Unit::kByte;
       o.optimizer.type = bptt::OptimizerType::kSgd;
       o.optimizer.momentum = 0.5;
       o.test_frac = 0.1;
       o.batch = 2;
       o.seq_len = 6;
       o.max_steps = 3;
       o.eval_every = 2;
     }},
    // Generated tasks (task.h): dense or symbol input, a regression or softmax head, and the
    // stop criterion's state in the checkpoint (adding, temporal-order).
    {"lstm_task_adding", [](bptt::TrainOptions& o) {
       o.task = "adding";
       o.task_length = 20;
       o.model.cell = &bptt::ParseCell("lstm", "cell");
       o.model.hidden_size = 4;
       o.batch = 2;
       o.max_steps = 2;
     }},
    {"gru_task_copy_sgd_momentum", [](bptt::TrainOptions& o) {
       o.task = "copy";
       o.task_length = 2;
       o.model.cell = &bptt::ParseCell("gru", "cell");
       o.model.hidden_size = 4;
       o.optimizer.type = bptt::OptimizerType::kSgd;
       o.optimizer.momentum = 0.9;
       o.batch = 3;
       o.max_steps = 2;
       o.eval_every = 1;
     }},
    {"rnn_tanh_task_temporal_order_rmsprop", [](bptt::TrainOptions& o) {
       o.task = "temporal-order";
       o.model.cell = &bptt::ParseCell("rnn-tanh", "cell");
       o.model.hidden_size = 4;
       o.optimizer.type = bptt::OptimizerType::kRmsprop;
       o.batch = 2;
       o.max_steps = 2;
     }},
};

// Trains every seed into kRoot/seeds/NAME and copies its latest.safetensors to out/NAME.
void WriteSeeds(const fs::path& out) {
  fs::create_directories(out);
  for (const Seed& seed : kSeeds) {
    bptt::TrainOptions o;
    o.corpus = {CorpusPath().string()};
    o.model.layers = 1;
    o.val_frac = 0.1;
    o.threads = 1;
    o.lr = 0.01;
    o.log_every = 1;
    o.eval_every = 100;
    o.checkpoint_every = 100;
    o.out = (kRoot / "seeds" / seed.name).string();
    o.test_size = 8;  // a task's test set
    seed.configure(o);
    if (!o.task.empty()) o.corpus.clear();
    fs::remove_all(o.out);
    bptt::Train(o, null_log, false);
    fs::copy_file(fs::path(o.out) / "latest.safetensors", out / seed.name, fs::copy_options::overwrite_existing);
    std::cerr << "resume_fuzz: wrote " << (out / seed.name).string() << " (" << fs::file_size(out / seed.name)
              << " bytes)\n";
  }
}

// ---------------------------------------------------------------------------------------------
// The structure-aware mutator.

using Random = std::mt19937_64;

size_t Below(Random& random, size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(random); }
bool OneIn(Random& random, size_t n) { return Below(random, n) == 0; }
template <typename T>
const T& Pick(Random& random, const std::vector<T>& v) { return v[Below(random, v.size())]; }

// Names that the library accepts somewhere in a checkpoint.
const std::vector<std::string>& Names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n = {"sgd", "adagrad", "rmsprop", "adam", "grapheme", "codepoint", "byte", "word",
                                  "softmax", "regression", "error", "replace", "stop", "rollback", "", "<unk>",
                                  "bptt", "1", "-1", "a", "\xc3\xa9", "/tmp/bptt_resume_fuzz", "/dev/null",
                                  "/tmp/bptt_resume_fuzz/corpus.txt"};
    for (const bptt::Cell* cell : bptt::Cells()) n.emplace_back(cell->name);
    for (const bptt::TaskInfo& task : bptt::Tasks()) n.emplace_back(task.name);
    return n;
  }();
  return names;
}

// The stored keys of the training options ("model.hidden_size"), and the derived ones.
const std::vector<std::string>& OptionKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k = {"model.vocab_size", "model.input_size", "model.output_size", "model.head",
                                  "task.name"};
    for (const auto& spec : bptt::TrainOptionSpecs())
      if (!spec.key.empty()) k.push_back(spec.key);
    return k;
  }();
  return keys;
}

// v + d with wrap-around (the harness must not overflow itself).
int64_t Add(int64_t v, int64_t d) { return static_cast<int64_t>(static_cast<uint64_t>(v) + static_cast<uint64_t>(d)); }

// A JSON value likely to find an edge: limits, signs, fractions, names, other types.
Json InterestingValue(Random& random, const Json& old) {
  static const std::vector<int64_t> ints = {0, 1, -1, 2, 3, 4, 7, 8, 100, 255, 256, 65535, 65536,
                                            std::numeric_limits<int32_t>::max(),
                                            int64_t{std::numeric_limits<int32_t>::max()} + 1,
                                            std::numeric_limits<int32_t>::min(),
                                            std::numeric_limits<int64_t>::max(),
                                            std::numeric_limits<int64_t>::max() - 1,
                                            std::numeric_limits<int64_t>::min()};
  static const std::vector<double> reals = {0.0, -0.0, 0.5, -0.5, 1.0, 0.999999, 1.0000001, 1e-300, 5e-324,
                                            1e300, -1e300, 2147483648.0, 9.3e18, 1.8e19, 3.5e38};
  switch (Below(random, 8)) {
    case 0:
      if (old.is_number_integer()) {
        const int64_t v = old.get<int64_t>();
        const int64_t near[] = {Add(v, 1), Add(v, -1), Add(v, v), static_cast<int64_t>(0 - static_cast<uint64_t>(v)), v / 2,
                                Add(v, 1000)};
        return near[Below(random, 6)];
      }
      if (old.is_number_float()) {
        const double v = old.get<double>();
        const double near[] = {v * 2, v / 2, -v, 1 - v, v + 1e-9};
        return near[Below(random, 5)];
      }
      return Pick(random, ints);
    case 1: return Pick(random, ints);
    case 2: return std::numeric_limits<uint64_t>::max() - Below(random, 2);
    case 3: return Pick(random, reals);
    case 4: return Pick(random, Names());
    case 5: {
      const Json others[] = {nullptr, true, false, Json::array(), Json::object(), Json::array({1, 2}),
                             Json::array({Pick(random, Names())}), Json::object({{"a", 1}})};
      return others[Below(random, 8)];
    }
    case 6:
      if (old.is_string()) {  // the string's bytes through libFuzzer's mutator
        std::string s = old.get<std::string>();
        const size_t size = s.size();
        s.resize(size + 16);
        s.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(s.data()), size, s.size()));
        return s;  // may be invalid UTF-8: dump() then throws and the mutation is dropped
      }
      return Pick(random, ints);
    default: return Add(Pick(random, ints), static_cast<int64_t>(Below(random, 3)));
  }
}

// A value of the type that the training option stored at `key` takes ("model.hidden_size" an
// integer, "optimizer.type" a name, ...), and now and then any interesting value.
Json OptionValue(Random& random, const std::string& key, const Json& old) {
  if (OneIn(random, 4)) return InterestingValue(random, old);
  if (key == "task.name") return std::string(bptt::Tasks()[Below(random, bptt::Tasks().size())].name);
  bptt::OptionKind kind = bptt::OptionKind::kInt;  // the derived sizes
  for (const auto& spec : bptt::TrainOptionSpecs())
    if (spec.key == key) kind = spec.kind;
  switch (kind) {
    case bptt::OptionKind::kSwitch:
    case bptt::OptionKind::kSwitchOff: return OneIn(random, 2);
    case bptt::OptionKind::kText: return Pick(random, Names());
    case bptt::OptionKind::kTexts: return Json::array({Pick(random, Names())});
    case bptt::OptionKind::kNumber:
      if (OneIn(random, 2)) {
        static const double small[] = {0.0, 1e-9, 0.001, 0.1, 0.5, 0.9, 0.99, 1.0, 2.0, 10.0, 1e6};
        return small[Below(random, std::size(small))];
      }
      return InterestingValue(random, old.is_number() ? old : Json(1.0));
    case bptt::OptionKind::kInt:
      if (OneIn(random, 2)) return Below(random, 10);
      return InterestingValue(random, old.is_number_integer() ? old : Json(1));
  }
  return InterestingValue(random, old);
}

// JSON pointers to every value inside `j` (itself excluded).
void Paths(const Json& j, const Json::json_pointer& at, std::vector<Json::json_pointer>& out) {
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      out.push_back(at / key);
      Paths(value, at / key, out);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      out.push_back(at / i);
      Paths(j[i], at / i, out);
    }
  }
}

// A checkpoint taken apart: its string metadata and its tensors.
struct Parts {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Safetensors::Tensor> tensors;

  static Parts Of(const Safetensors& st) {
    Parts p;
    p.metadata = st.metadata();
    for (const std::string& name : st.Names()) p.tensors[name] = *st.Find(name);
    return p;
  }

  // Nullopt when a metadata JSON field is not valid JSON or not an object.
  std::optional<Json> JsonField(const std::string& key) const {
    const auto it = metadata.find(key);
    if (it == metadata.end()) return std::nullopt;
    Json j = Json::parse(it->second, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    return j;
  }

  // Throws bptt::Error (metadata that Safetensors refuses) or nlohmann::json's exception.
  std::vector<uint8_t> Serialize() const {
    Safetensors st;
    for (const auto& [name, t] : tensors) {
      const auto put = [&, &name = name, &t = t]<typename T>(T) {
        std::vector<T> values(t.bytes.size() / sizeof(T));
        if (!values.empty()) std::memcpy(values.data(), t.bytes.data(), values.size() * sizeof(T));
        st.Put(name, t.shape, std::span<const T>(values));
      };
      switch (t.dtype) {
        case bptt::DType::kF32: put(float{}); break;
        case bptt::DType::kF64: put(double{}); break;
        case bptt::DType::kI32: put(int32_t{}); break;
        case bptt::DType::kI64: put(int64_t{}); break;
        case bptt::DType::kU8: put(uint8_t{}); break;
        case bptt::DType::kU16: put(uint16_t{}); break;
        case bptt::DType::kU32: put(uint32_t{}); break;
        case bptt::DType::kU64: put(uint64_t{}); break;
      }
    }
    for (const auto& [key, value] : metadata) st.SetMetadata(key, value);
    return st.Serialize();
  }
};

Safetensors::Tensor FloatTensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  Safetensors::Tensor t{bptt::DType::kF32, std::move(shape), std::vector<uint8_t>(values.size() * sizeof(float))};
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Makes tensor `name` an F32 tensor of `shape`, keeping what values it has and filling the
// rest with small non-negative ones.
void Fit(Parts& p, Random& random, const std::string& name, const std::vector<int64_t>& shape) {
  const auto it = p.tensors.find(name);
  if (it != p.tensors.end() && it->second.dtype == bptt::DType::kF32 && it->second.shape == shape) return;
  std::vector<float> values(static_cast<size_t>(Elements(shape)));
  std::uniform_real_distribution<float> small(0.0f, 0.1f);
  for (float& v : values) v = small(random);
  const size_t kept = it == p.tensors.end() || it->second.dtype != bptt::DType::kF32
                          ? 0
                          : std::min(values.size() * 4, it->second.bytes.size());
  if (kept > 0) std::memcpy(values.data(), it->second.bytes.data(), kept);
  p.tensors[name] = FloatTensor(shape, values);
}

// Reshapes every tensor to what the checkpoint's config and training state call for, and
// removes the tensors they do not name: after a change to the model or the training shape, the
// checkpoint still loads far enough to reach the code that uses the change.
void Repair(Parts& p, Random& random) {
  const std::optional<Json> config_json = p.JsonField("config");
  if (!config_json) return;
  bptt::ModelConfig config;
  try {
    config = bptt::ConfigFromJson(*config_json, "fuzz");
  } catch (const bptt::Error&) {
    return;
  }
  const double H = config.hidden_size, floats = static_cast<double>(config.layers) * 4 * H *
                                                  (H + config.vocab_size + config.input_size + config.embed_size + 2) +
                                              static_cast<double>(config.vocab_size) * config.embed_size +
                                              static_cast<double>(config.output_size) * (H + 1);
  if (floats > 1 << 18) return;  // too large to serialise within max_len anyway
  const std::optional<Json> training = p.JsonField("training");
  int slots = 0;
  int64_t B = 0;
  if (training) {
    const Json& s = training->contains("slots") ? training->at("slots") : Json();
    const Json& b = training->contains("batch") ? training->at("batch") : Json();
    if (s.is_number_integer() && s.get<int64_t>() >= 0 && s.get<int64_t>() <= 2) slots = s.get<int>();
    if (b.is_number_integer() && b.get<int64_t>() >= 1 && b.get<int64_t>() <= 16) B = b.get<int64_t>();
  }
  std::map<std::string, std::vector<int64_t>> shapes;
  bptt::ModelParams<float>::Zeros(config).ForEach([&](const std::string& name, const bptt::Mat<float>& m) {
    const std::vector<int64_t> shape = m.cols() == 1 && name.find("bias") != std::string::npos
                                           ? std::vector<int64_t>{m.rows()}
                                           : std::vector<int64_t>{m.rows(), m.cols()};
    shapes[name] = shape;
    for (int s = 1; s <= slots; ++s) shapes["optimizer.slot" + std::to_string(s) + "." + name] = shape;
  });
  if (B > 0) {
    shapes["state.h"] = {config.layers, B, config.hidden_size};
    if (config.cell->cell_state) shapes["state.c"] = {config.layers, B, config.hidden_size};
  }
  std::erase_if(p.tensors, [&](const auto& entry) { return !shapes.count(entry.first); });
  for (const auto& [name, shape] : shapes) Fit(p, random, name, shape);
}

// The stored training options' value at `key` ("model.hidden_size"), as a JSON pointer.
Json::json_pointer OptionPointer(const std::string& key) {
  return Json::json_pointer("/options") / bptt::OptionPointer(key);
}

// One mutation of a JSON metadata field: a value replaced, removed or added.
bool MutateJson(Parts& p, Random& random) {
  static const char* const keys[] = {"config", "vocab", "metrics", "training", "training"};
  const size_t op = Below(random, 4);
  const std::string key = op == 1 ? "training" : keys[Below(random, 5)];
  std::optional<Json> j = p.JsonField(key);
  if (!j) return false;
  std::vector<Json::json_pointer> paths;
  Paths(*j, Json::json_pointer(), paths);
  switch (op) {
    case 0:  // remove a value
      if (paths.empty()) return false;
      {
        const Json::json_pointer at = Pick(random, paths);
        Json& parent = (*j)[at.parent_pointer()];
        if (parent.is_object()) parent.erase(at.back());
        else parent.erase(static_cast<size_t>(std::stoul(at.back())));
      }
      break;
    case 1:  // set a training option, present or not
      {
        const std::string option = Pick(random, OptionKeys());
        const Json::json_pointer at = OptionPointer(option);
        (*j)[at] = OptionValue(random, option, j->contains(at) ? j->at(at) : Json());
      }
      break;
    default:  // replace a value
      if (paths.empty()) return false;
      {
        const Json::json_pointer at = Pick(random, paths);
        (*j)[at] = InterestingValue(random, (*j)[at]);
      }
  }
  p.metadata[key] = j->dump();
  return true;
}

// A model field changed in the config and in the training options alike, or the batch or the
// optimizer changed in the training state and options alike; then every tensor fitted to it.
bool MutateShape(Parts& p, Random& random) {
  std::optional<Json> config = p.JsonField("config"), training = p.JsonField("training");
  if (!config || !training) return false;
  static const char* const model_keys[] = {"cell", "layers", "hidden_size", "embed_size", "dropout",
                                           "vocab_size", "input_size", "output_size", "head"};
  switch (Below(random, 3)) {
    case 0: {
      const std::string key = model_keys[Below(random, 9)];
      Json value;
      if (key == "cell") value = bptt::Cells()[Below(random, bptt::Cells().size())]->name;
      else if (key == "head") value = OneIn(random, 2) ? "softmax" : "regression";
      else if (key == "dropout") value = OneIn(random, 2) ? 0.0 : 0.5;
      else value = OneIn(random, 8) ? InterestingValue(random, config->value(key, Json())) : Json(Below(random, 10));
      (*config)[key] = value;
      if (!OneIn(random, 8)) (*training)[OptionPointer("model." + key)] = value;
      break;
    }
    case 1: {
      const Json b = OneIn(random, 8) ? InterestingValue(random, training->value("batch", Json()))
                                      : Json(1 + Below(random, 5));
      (*training)["batch"] = b;
      if (!OneIn(random, 8)) (*training)[OptionPointer("batch")] = b;
      break;
    }
    default: {
      static const char* const optimizers[] = {"sgd", "adagrad", "rmsprop", "adam"};
      const std::string type = optimizers[Below(random, 4)];
      (*training)[OptionPointer("optimizer.type")] = type;
      if (type == "sgd") (*training)[OptionPointer("optimizer.momentum")] = OneIn(random, 2) ? 0.0 : 0.9;
      const int slots = type == "adam" ? 2 : type == "sgd" ? (*training)[OptionPointer("optimizer.momentum")] != 0.0
                                                               : 1;
      (*training)["slots"] = OneIn(random, 8) ? static_cast<int>(Below(random, 3)) : slots;
    }
  }
  p.metadata["config"] = config->dump();
  p.metadata["training"] = training->dump();
  Repair(p, random);
  return true;
}

// Values of one tensor: elements set to extremes, or its bytes through libFuzzer's mutator.
bool MutateValues(Parts& p, Random& random) {
  if (p.tensors.empty()) return false;
  auto it = p.tensors.begin();
  std::advance(it, static_cast<long>(Below(random, p.tensors.size())));
  std::vector<uint8_t>& bytes = it->second.bytes;
  if (bytes.empty()) return false;
  if (it->second.dtype == bptt::DType::kF32 && !OneIn(random, 4)) {
    static const float extremes[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                                     -std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                                     -0.0f, 0.0f, 1.0f, -1.0f, 1e4f, -1e4f, 1e19f, 1e-30f};
    const size_t n = bytes.size() / 4, changes = 1 + Below(random, OneIn(random, 4) ? n : 3);
    for (size_t k = 0; k < changes; ++k) {
      const size_t at = Below(random, n) * 4;
      float v;
      if (OneIn(random, 3)) {
        std::memcpy(&v, bytes.data() + at, 4);
        v *= OneIn(random, 2) ? 1e6f : -3.0f;
      } else {
        v = extremes[Below(random, std::size(extremes))];
      }
      std::memcpy(bytes.data() + at, &v, 4);
    }
  } else {
    const size_t size = bytes.size();
    bytes.resize(LLVMFuzzerMutate(bytes.data(), size, size));
    bytes.resize(size);
  }
  return true;
}

// The set of tensors: one removed, copied under another name, retyped or reshaped.
bool MutateTensors(Parts& p, Random& random) {
  if (p.tensors.empty()) return false;
  auto it = p.tensors.begin();
  std::advance(it, static_cast<long>(Below(random, p.tensors.size())));
  const std::string name = it->first;
  Safetensors::Tensor& t = it->second;
  switch (Below(random, 5)) {
    case 0: p.tensors.erase(it); break;
    case 1: {  // copied to another tensor's name, or a name of the right form that no config has
      std::string to;
      if (OneIn(random, 2)) {
        auto other = p.tensors.begin();
        std::advance(other, static_cast<long>(Below(random, p.tensors.size())));
        to = other->first;
      } else {
        static const char* const names[] = {"optimizer.slot1.", "optimizer.slot2.", "optimizer.slot3.", "",
                                            "state."};
        static const char* const params[] = {"encoder.weight", "rnn.weight_ih_l1", "rnn.weight_hh_l2",
                                             "rnn.bias_ih_l7", "decoder.weight", "c", "h", "x"};
        to = std::string(names[Below(random, 5)]) + params[Below(random, 8)];
      }
      p.tensors[to] = p.tensors.at(name);
      break;
    }
    case 2:  // F32 as F64 (values kept), or any tensor's bytes as another type
      if (t.dtype == bptt::DType::kF32 && OneIn(random, 2)) {
        std::vector<double> values(t.bytes.size() / 4);
        for (size_t k = 0; k < values.size(); ++k) {
          float v;
          std::memcpy(&v, t.bytes.data() + 4 * k, 4);
          values[k] = v;
        }
        t.dtype = bptt::DType::kF64;
        t.bytes.resize(values.size() * 8);
        if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
      } else {
        t.dtype = bptt::DType::kU8;
        t.shape = {static_cast<int64_t>(t.bytes.size())};
      }
      break;
    case 3:  // the same elements in another shape
      if (t.shape.size() >= 2 && OneIn(random, 2)) {
        std::swap(t.shape[0], t.shape[1]);
      } else if (OneIn(random, 2)) {
        t.shape.insert(t.shape.begin() + static_cast<long>(Below(random, t.shape.size() + 1)), 1);
      } else {
        t.shape = {Elements(t.shape)};
      }
      break;
    default: {  // one more or one fewer row
      if (t.dtype != bptt::DType::kF32 || t.shape.empty()) return false;
      std::vector<int64_t> shape = t.shape;
      shape[0] = OneIn(random, 2) ? shape[0] + 1 : std::max<int64_t>(0, shape[0] - 1);
      Fit(p, random, name, shape);
    }
  }
  return true;
}

// A string metadata value replaced, or a metadata key removed or added.
bool MutateMetadata(Parts& p, Random& random) {
  static const char* const keys[] = {"step", "step", "format", "format_version", "config", "vocab", "metrics",
                                     "training", "extra"};
  const std::string key = keys[Below(random, std::size(keys))];
  static const char* const values[] = {"0", "1", "-1", "2", "3", "9223372036854775806", "9223372036854775807",
                                       "9223372036854775808", "-9223372036854775808", "18446744073709551615",
                                       " 1", "1 ", "+1", "0x10", "1e3", "", "01", "bptt", "2", "{}", "[]", "null",
                                       "{\"a\":1}"};
  switch (Below(random, 4)) {
    case 0: p.metadata.erase(key); break;
    case 1: {
      std::string s = p.metadata.count(key) ? p.metadata[key] : "";
      const size_t size = s.size();
      s.resize(size + 16);
      s.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(s.data()), size, s.size()));
      p.metadata[key] = s;
      break;
    }
    default: p.metadata[key] = values[Below(random, std::size(values))];
  }
  return true;
}

// The step an input is resumed to: one past its metadata 'step', so that it trains one step;
// 1 when the file has no such step (LoadCheckpoint refuses it) or it is INT64_MAX (no step).
int64_t NextStep(const uint8_t* data, size_t size) {
  try {
    const Safetensors st = Safetensors::Parse(std::span<const uint8_t>(data, size), "fuzz");
    const auto it = st.metadata().find("step");
    if (it == st.metadata().end()) return 1;
    int64_t step = 0;
    const auto [end, error] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), step);
    if (error != std::errc() || step < 0 || step == std::numeric_limits<int64_t>::max()) return 1;
    return step + 1;
  } catch (const bptt::Error&) {
    return 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  WriteCorpus();
  for (int k = 1; k < *argc; ++k) {
    const std::string arg = (*argv)[k];
    if (arg.rfind("--write-seeds=", 0) == 0) {
      WriteSeeds(arg.substr(std::strlen("--write-seeds=")));
      std::exit(0);
    }
  }
  run_dir = kRoot / ("run-" + std::to_string(::getpid()));
  verbose = std::getenv("BPTT_RESUME_FUZZ_VERBOSE") != nullptr;
  std::atexit([] {
    std::error_code ignored;
    fs::remove_all(run_dir, ignored);
  });
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Random random(seed);
  if (OneIn(random, 8)) return LLVMFuzzerMutate(data, size, max_size);
  try {
    Parts p = Parts::Of(Safetensors::Parse(std::span<const uint8_t>(data, size), "fuzz"));
    bool changed = false;
    for (size_t n = 1 + Below(random, 3), k = 0; k < n; ++k) {
      switch (Below(random, 10)) {
        case 0: case 1: case 2: changed |= MutateJson(p, random); break;
        case 3: case 4: changed |= MutateShape(p, random); break;
        case 5: case 6: changed |= MutateValues(p, random); break;
        case 7: case 8: changed |= MutateTensors(p, random); break;
        default: changed |= MutateMetadata(p, random);
      }
    }
    const std::vector<uint8_t> bytes = p.Serialize();
    if (changed && bytes.size() <= max_size) {
      std::memcpy(data, bytes.data(), bytes.size());
      return bytes.size();
    }
  } catch (const bptt::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::error_code ignored;
  fs::remove_all(run_dir, ignored);
  fs::create_directories(run_dir);
  WriteFile(run_dir / "latest.safetensors", data, size);
  const Json given = {{"max-steps", NextStep(data, size)}, {"threads", 1}};
  try {
    bptt::Resume(run_dir, given, verbose ? std::cerr : null_log, false);
  } catch (const bptt::Error& e) {
    const std::string message = e.what();
    if (verbose) std::cerr << "resume_fuzz: refused: " << message << "\n";
    if (message.empty() || message.find('\n') != std::string::npos) {
      std::cerr << "resume_fuzz: the refusal is not one line:\n" << message << "\n";
      std::abort();
    }
    return 0;
  }
  // What Resume accepted and saved must resume in turn.
  try {
    bptt::LoadCheckpoint(run_dir / "latest.safetensors", bptt::CheckpointUse::kResume);
  } catch (const bptt::Error& e) {
    std::cerr << "resume_fuzz: the checkpoint a resume wrote does not load: " << e.what() << "\n";
    std::abort();
  }
  return 0;
}
