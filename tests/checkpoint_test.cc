// Checkpoints: bit-for-bit round trip with training state, PyTorch names and row-major
// layouts, deterministic bytes, and refusal of files that disagree with themselves; layer-norm
// tensors present exactly with --layer-norm, and refused for the cells without it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/rng.h"
#include "bptt/safetensors.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public test::TempDirTest {
 protected:

  static Checkpoint Make(const char* cell, int embed, bool layer_norm = false) {
    Checkpoint ck;
    ck.vocab = VocabBuilder(TokenizerOptions{}).Add("héllo wörld, 日本語 👩‍👩‍👧!\n").Build();
    ck.config = LanguageModel(*FindCell(cell), ck.vocab.size(), embed, 6, 2);
    ck.config.layer_norm = layer_norm;
    Rng rng(3);
    Initialize(ck.config, InitOptions{}, rng, ck.params);
    ck.params.ForEachTensor([](const TensorInfo& tensor, Mat<float>& m) {  // layer norms as training leaves them
      if (IsNorm(tensor.role)) m.setRandom();
    });
    ck.step = 42;
    ck.metrics = {{"val_loss", 1.25}};
    TrainingState t;
    t.optimizer.step = 42;
    ck.params.ForEach([&](const std::string&, const Mat<float>& m) {
      t.optimizer.slot1.push_back(Mat<float>::Random(m.rows(), m.cols()));
      t.optimizer.slot2.push_back(Mat<float>::Random(m.rows(), m.cols()));
    });
    t.carried = State<float>::Zeros(ck.config, 3);
    for (auto& h : t.carried.h) h.setRandom();
    for (auto& c : t.carried.c) c.setRandom();
    Rng r(77);
    r.Next();
    t.rng = r.Save();
    t.epoch = 2;
    t.chunk = 17;
    t.best_val_loss = 1.25;
    t.options = {{"model", ConfigToJson(ck.config)}, {"anything", "here"}};
    ck.training = t;
    return ck;
  }

};

bool SameBits(const Mat<float>& a, const Mat<float>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);  // empty: no data
}

TEST_F(CheckpointTest, RoundTripBitForBit) {
  for (auto [cell, embed] : {std::pair{"lstm", 0}, std::pair{"gru", 5}, std::pair{"rnn-relu", 0}}) {
    const Checkpoint a = Make(cell, embed);
    const fs::path path = dir_ / "a.safetensors";
    SaveCheckpoint(a, path);
    const Checkpoint b = LoadCheckpoint(path, CheckpointUse::kResume);
    EXPECT_EQ(b.config.cell, a.config.cell);
    EXPECT_EQ(b.config.embed_size, a.config.embed_size);
    EXPECT_EQ(b.vocab.ToJson(), a.vocab.ToJson());
    EXPECT_EQ(b.step, 42);
    EXPECT_EQ(b.metrics, a.metrics);
    std::vector<const Mat<float>*> bs;
    b.params.ForEach([&](const std::string&, const Mat<float>& m) { bs.push_back(&m); });
    size_t k = 0;
    a.params.ForEach([&](const std::string& name, const Mat<float>& m) { EXPECT_TRUE(SameBits(m, *bs[k++])) << name; });
    ASSERT_TRUE(b.training.has_value());
    const TrainingState &ta = *a.training, &tb = *b.training;
    EXPECT_EQ(tb.optimizer.step, 42);
    ASSERT_EQ(tb.optimizer.slot1.size(), ta.optimizer.slot1.size());
    ASSERT_EQ(tb.optimizer.slot2.size(), ta.optimizer.slot2.size());
    for (size_t s = 0; s < ta.optimizer.slot1.size(); ++s) {
      EXPECT_TRUE(SameBits(ta.optimizer.slot1[s], tb.optimizer.slot1[s]));
      EXPECT_TRUE(SameBits(ta.optimizer.slot2[s], tb.optimizer.slot2[s]));
    }
    ASSERT_EQ(tb.carried.h.size(), 2u);
    for (int l = 0; l < 2; ++l) EXPECT_TRUE(SameBits(ta.carried.h[l], tb.carried.h[l]));
    EXPECT_EQ(tb.carried.c.size(), ta.carried.c.size());
    for (size_t l = 0; l < ta.carried.c.size(); ++l) EXPECT_TRUE(SameBits(ta.carried.c[l], tb.carried.c[l]));
    EXPECT_EQ(tb.rng, ta.rng);
    EXPECT_EQ(tb.epoch, 2);
    EXPECT_EQ(tb.chunk, 17u);
    EXPECT_EQ(tb.best_val_loss, 1.25);
    EXPECT_EQ(tb.options, ta.options);

    // Saving what was loaded gives the same bytes.
    SaveCheckpoint(b, dir_ / "b.safetensors");
    std::ifstream fa(path, std::ios::binary), fb(dir_ / "b.safetensors", std::ios::binary);
    const std::string bytes_a((std::istreambuf_iterator<char>(fa)), {}), bytes_b((std::istreambuf_iterator<char>(fb)), {});
    EXPECT_EQ(bytes_a, bytes_b);
  }
}

TEST_F(CheckpointTest, PyTorchNamesShapesAndRowMajorLayout) {
  const Checkpoint ck = Make("lstm", 0);
  const fs::path path = dir_ / "c.safetensors";
  SaveCheckpoint(ck, path);
  const Safetensors st = Safetensors::Load(path);
  const int64_t V = ck.config.vocab_size, H = 6;
  const auto w = st.Get<float>("rnn.weight_ih_l0", {4 * H, V});  // torch.nn.LSTM: (4H, E)
  EXPECT_EQ(w[1 * V + 2], ck.params.layers[0].weight_ih()(1, 2));   // row-major
  EXPECT_EQ(st.Get<float>("rnn.weight_hh_l1", {4 * H, H})[3 * H + 4], ck.params.layers[1].tensor("weight_hh")(3, 4));
  EXPECT_EQ(st.Get<float>("rnn.bias_ih_l1", {4 * H})[H + 1], ck.params.layers[1].tensor("bias_ih")(H + 1, 0));
  EXPECT_EQ(st.Get<float>("decoder.weight", {V, H})[2 * H + 5], ck.params.decoder_weight(2, 5));
  EXPECT_EQ(st.Get<float>("decoder.bias", {V}).size(), static_cast<size_t>(V));
  EXPECT_EQ(st.metadata().at("format"), "bptt");
  EXPECT_EQ(st.metadata().at("format_version"), "1");
  EXPECT_FALSE(st.Has("encoder.weight"));
  // state.h is (L, B, H): element (l, b, k).
  EXPECT_EQ(st.Get<float>("state.h", {2, 3, H})[1 * 3 * H + 2 * H + 4], ck.training->carried.h[1](4, 2));
}

// Rewrites a saved checkpoint through `edit` (which changes its tensors or metadata).
template <typename Edit>
fs::path Tampered(const fs::path& dir, const Checkpoint& ck, Edit edit) {
  const fs::path good = dir / "good.safetensors", bad = dir / "bad.safetensors";
  SaveCheckpoint(ck, good);
  Safetensors st = Safetensors::Load(good);
  edit(st);
  st.Save(bad);
  return bad;
}

void ExpectErrorContaining(const fs::path& path, const std::string& text,
                           CheckpointUse use = CheckpointUse::kModel) {
  try {
    LoadCheckpoint(path, use);
    ADD_FAILURE() << "loaded " << path << ", expected an error containing '" << text << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointTest, RefusesFilesThatDisagreeWithThemselves) {
  const Checkpoint ck = Make("gru", 0);
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("format_version", "99"); }),
                        "format version '99'");
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("format", "other"); }),
                        "not a bptt checkpoint");
  ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                          auto c = ConfigToJson(ck.config);
                          c["hidden_size"] = 7;
                          st.SetMetadata("config", c.dump());
                        }),
                        "has shape");
  ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                          auto c = ConfigToJson(ck.config);
                          c["vocab_size"] = ck.config.vocab_size + 1;
                          st.SetMetadata("config", c.dump());
                        }),
                        "vocabulary has");
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("config", "{not json"); }),
                        "not valid JSON");
  // The sizes the data sets are integers that fit an int: not a float out of its range, and not
  // one that would wrap to the right value.
  const nlohmann::json sizes[] = {-1e300, 1e300, 4294967296.0 + ck.config.vocab_size,
                                  uint64_t{4294967296} + static_cast<uint64_t>(ck.config.vocab_size), -1, "12"};
  for (const std::string key : {"vocab_size", "input_size", "output_size"}) {
    const std::string expected = "'" + key + "' must be a non-negative integer";
    for (const nlohmann::json& size : sizes) {
      ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                              auto c = ConfigToJson(ck.config);
                              c[key] = size;
                              st.SetMetadata("config", c.dump());
                            }),
                            expected);
    }
  }
  ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                          auto c = ConfigToJson(ck.config);
                          c["head"] = 7;
                          st.SetMetadata("config", c.dump());
                        }),
                        "model configuration is malformed");
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) {
                          const std::vector<float> x(4, 0.f);
                          st.Put("extra.weight", {2, 2}, x);
                        }),
                        "unexpected tensor 'extra.weight'");
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) {
                          const std::vector<double> x(3, 0.0);
                          st.Put("decoder.bias", {3}, x);
                        }),
                        "decoder.bias");
}

TEST_F(CheckpointTest, RefusesAConfigurationLargerThanTheFileBeforeAllocatingIt) {
  for (const char* cell : {"rnn-tanh", "lstm", "gru"})
    for (int embed : {0, 5})
      for (bool layer_norm : {false, true}) {
        if (layer_norm && !FindCell(cell)->layer_norm()) continue;
        const Checkpoint ck = Make(cell, embed, layer_norm);
        EXPECT_EQ(ParameterCount(ck.config), static_cast<double>(ck.params.Count()))
            << cell << " embed " << embed << (layer_norm ? " layer norm" : "");
      }
  // A (65536, 65536) weight_hh would be 16 GiB, a billion layers more.
  const Checkpoint ck = Make("lstm", 0);
  const std::pair<const char*, int> huge[] = {{"hidden_size", 65536}, {"layers", 1 << 30}, {"embed_size", 1 << 30}};
  for (const auto& [key, value] : huge) {
    ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                            auto c = ConfigToJson(ck.config);
                            c[key] = value;
                            st.SetMetadata("config", c.dump());
                          }),
                          "parameters but the file holds only");
  }
}

// The file with its "checksum" entry taken out of the header, as another tool would write it.
fs::path WithoutChecksum(const fs::path& dir, const Checkpoint& ck) {
  const fs::path good = dir / "good.safetensors", bare = dir / "bare.safetensors";
  SaveCheckpoint(ck, good);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"].erase("checksum"), 1u);
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  const uint64_t m = text.size();
  std::ofstream out(bare, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&m), 8);
  out << text << bytes.substr(8 + n);
  return bare;
}

// A model is read without the optimizer state, which is still covered by the file's checksum:
// its bytes are checked, not copied.
TEST_F(CheckpointTest, AModelIsReadWithoutItsOptimizerStateButTheWholeFileIsVerified) {
  const Checkpoint ck = Make("lstm", 0);
  const fs::path path = dir_ / "model.safetensors";
  SaveCheckpoint(ck, path);
  const Checkpoint model = LoadCheckpoint(path);
  ASSERT_TRUE(model.training.has_value());
  EXPECT_TRUE(model.training->optimizer.slot1.empty());
  EXPECT_TRUE(model.training->optimizer.slot2.empty());
  EXPECT_EQ(model.training->optimizer.step, ck.training->optimizer.step);
  EXPECT_EQ(model.training->carried.h.size(), ck.training->carried.h.size());
  EXPECT_EQ(LoadCheckpoint(path, CheckpointUse::kResume).training->optimizer.slot2.size(),
            ck.training->optimizer.slot2.size());

  // One bit of an optimizer value flipped: the model load refuses the file too.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const auto j = nlohmann::json::parse(bytes.substr(8, header));
  ASSERT_TRUE(j.contains("optimizer.slot2.decoder.weight"));
  bytes.at(8 + header + j["optimizer.slot2.decoder.weight"]["data_offsets"][0].get<size_t>()) ^= 1;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  ExpectErrorContaining(path, "checksum mismatch");
}

TEST_F(CheckpointTest, WithoutAChecksumLoadsForTheModelButNotForResuming) {
  const Checkpoint ck = Make("lstm", 0);
  const fs::path bare = WithoutChecksum(dir_, ck);
  const Checkpoint model = LoadCheckpoint(bare);
  EXPECT_FALSE(model.checksum_verified);
  EXPECT_TRUE(LoadCheckpoint(dir_ / "good.safetensors").checksum_verified);
  EXPECT_EQ(model.params.layers[1].tensor("weight_hh")(2, 3), ck.params.layers[1].tensor("weight_hh")(2, 3));
  ExpectErrorContaining(bare, "has no checksum", CheckpointUse::kResume);
  Checkpoint weights_only = ck;
  weights_only.training.reset();
  SaveCheckpoint(weights_only, dir_ / "weights.safetensors");
  ExpectErrorContaining(dir_ / "weights.safetensors", "no training state", CheckpointUse::kResume);
}

// Rewrites the "training" metadata of a saved checkpoint through `edit`.
template <typename Edit>
fs::path TrainingTampered(const fs::path& dir, const Checkpoint& ck, Edit edit) {
  return Tampered(dir, ck, [&](Safetensors& st) {
    auto j = nlohmann::json::parse(st.metadata().at("training"));
    edit(j);
    st.SetMetadata("training", j.dump());
  });
}

TEST_F(CheckpointTest, ValidatesEveryFieldOfTheTrainingState) {
  const Checkpoint ck = Make("lstm", 0);
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("step", "42abc"); }),
                        "'step' is not an integer");
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("step", "-3"); }), "'step' is negative");
  // The message quotes the value on one line, its control characters escaped.
  ExpectErrorContaining(Tampered(dir_, ck, [](Safetensors& st) { st.SetMetadata("step", "\n3\r\x7f"); }),
                        "'step' is not an integer: '\\x0a3\\x0d\\x7f'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["epoch"] = -1; }), "'epoch' must be");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["optimizer_step"] = -5; }), "'optimizer_step'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["chunk"] = -2; }), "'chunk'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["chunk"] = "7"; }), "'chunk'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["best_val_loss"] = -1.0; }), "'best_val_loss'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["lr_scale"] = 2.0; }), "'lr_scale'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["rollbacks"] = -1; }), "'rollbacks'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["rng"] = "12 34"; }), "'rng' is malformed");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["batch"] = 0; }), "'batch'");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["batch"] = 4; }), "state.h");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["slots"] = 3; }), "'slots'");
  // One slot declared where the file holds two: the second slot's tensors are left over.
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["slots"] = 1; }), "unexpected tensor 'optimizer.slot2",
                        CheckpointUse::kResume);
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j.erase("rng"); }), "no 'rng'");
  // The training options' model must be the checkpoint's.
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["options"]["model"]["hidden_size"] = 7; }),
                        "is not the checkpoint's configuration");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["options"]["model"]["cell"] = "gru"; }),
                        "is not the checkpoint's configuration");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["options"].erase("model"); }), "training options");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["options"]["model"]["vocab_size"] = 1e300; }),
                        "'vocab_size' must be a non-negative integer");
}

TEST_F(CheckpointTest, FeedbackMatricesAndResidualConnectionsRoundTrip) {
  Checkpoint ck = Make("gru", 0);
  ck.config.residual = true;
  ck.training->options["model"] = ConfigToJson(ck.config);
  Rng rng(9);
  ck.training->feedback = FeedbackMatrices<float>::Draw(Feedback::kFa, ck.config, rng);
  const fs::path path = dir_ / "fa.safetensors";
  SaveCheckpoint(ck, path);
  const Checkpoint back = LoadCheckpoint(path);
  EXPECT_TRUE(back.config.residual);
  EXPECT_EQ(back.training->feedback.rule, Feedback::kFa);
  ASSERT_EQ(back.training->feedback.recurrent.size(), 2u);
  EXPECT_TRUE(SameBits(back.training->feedback.recurrent[1], ck.training->feedback.recurrent[1]));
  EXPECT_TRUE(SameBits(back.training->feedback.decoder, ck.training->feedback.decoder));
  EXPECT_TRUE(Safetensors::Load(path).Has("feedback.rnn.weight_hh_l1"));
  // A rule the file's matrices do not fit is refused.
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["feedback"] = "dfa"; }), "feedback.direct_l0");
  ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["feedback"] = "hebb"; }), "'hebb' is not one of");
}

// An online --credit's carried state: read to resume from, bit for bit, and verified like the rest.
TEST_F(CheckpointTest, OnlineCreditStateRoundTripsForResumingAndIsVerified) {
  for (const Credit credit : {Credit::kRtrl, Credit::kUoro, Credit::kSnap1}) {
    SCOPED_TRACE(CreditName(credit));
    Checkpoint ck = Make("lstm", 0);
    ck.config.layers = 1;
    ck.params = ModelParams<float>();
    Rng init(4);
    Initialize(ck.config, InitOptions{}, init, ck.params);
    TrainingState& t = *ck.training;
    t.options["model"] = ConfigToJson(ck.config);
    t.optimizer.slot1.clear();
    t.optimizer.slot2.clear();
    t.carried = State<float>::Zeros(ck.config, 3);
    OnlineCredit<float> online(credit, ck.config, 3, 11);
    for (Mat<float>& m : online.sensitivity) m.setRandom();
    online.state_factor.setRandom();
    online.param_factor.setRandom();
    online.rng.Next();
    t.credit = online;
    const fs::path path = dir_ / "credit.safetensors";
    SaveCheckpoint(ck, path);
    const Checkpoint back = LoadCheckpoint(path, CheckpointUse::kResume);
    ASSERT_TRUE(back.training->credit.has_value());
    const OnlineCredit<float>& b = *back.training->credit;
    EXPECT_EQ(b.credit, credit);
    ASSERT_EQ(b.sensitivity.size(), online.sensitivity.size());
    for (size_t k = 0; k < b.sensitivity.size(); ++k) EXPECT_TRUE(SameBits(b.sensitivity[k], online.sensitivity[k]));
    EXPECT_TRUE(SameBits(b.state_factor, online.state_factor));
    EXPECT_TRUE(SameBits(b.param_factor, online.param_factor));
    EXPECT_EQ(b.rng.Save(), online.rng.Save());
    EXPECT_FALSE(LoadCheckpoint(path).training->credit.has_value());  // a model load reads none of it
    const auto resume = CheckpointUse::kResume;
    ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["credit"] = "sgd"; }),
                          "'credit' 'sgd' is not one of", resume);
    ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["credit"] = "bptt"; }), "carries no state", resume);
    ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j["credit_rng"] = "1 2"; }),
                          "'credit_rng' is malformed", resume);
    ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j.erase("credit_rng"); }), "no 'credit_rng'", resume);
    ExpectErrorContaining(TrainingTampered(dir_, ck, [&](auto& j) { j["credit"] = credit == Credit::kRtrl ? "snap1" : "rtrl"; }),
                          "credit.", resume);
    ExpectErrorContaining(TrainingTampered(dir_, ck, [](auto& j) { j.erase("credit"); }), "unexpected tensor 'credit.",
                          resume);
    const std::string name = credit == Credit::kUoro ? "credit.param_factor" : "credit.sensitivity";
    ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                            const std::vector<int64_t> shape = st.Find(name)->shape;
                            std::vector<float> v = st.Get<float>(name, shape);
                            v[1] = std::nanf("");
                            st.Put(name, shape, v);
                          }),
                          "carried state is not finite", resume);
  }
}

TEST_F(CheckpointTest, LayerNormTensorsRoundTripAsOneDimensionalTensors) {
  for (const auto& [cell, gates] : {std::pair{"lstm", 4}, std::pair{"gru", 3}}) {
    SCOPED_TRACE(cell);
    const Checkpoint a = Make(cell, 0, true);
    const fs::path path = dir_ / "ln.safetensors";
    SaveCheckpoint(a, path);
    const Checkpoint b = LoadCheckpoint(path, CheckpointUse::kResume);
    EXPECT_TRUE(b.config.layer_norm);
    std::vector<std::string> names;
    std::vector<const Mat<float>*> bs;
    b.params.ForEach([&](const std::string& name, const Mat<float>& m) {
      names.push_back(name);
      bs.push_back(&m);
    });
    size_t k = 0;
    a.params.ForEach([&](const std::string& name, const Mat<float>& m) {
      ASSERT_LT(k, names.size());
      EXPECT_EQ(name, names[k]);
      EXPECT_TRUE(SameBits(m, *bs[k++])) << name;
    });
    EXPECT_EQ(k, names.size());
    for (size_t s = 0; s < a.training->optimizer.slot2.size(); ++s)
      EXPECT_TRUE(SameBits(a.training->optimizer.slot2[s], b.training->optimizer.slot2[s])) << names[s];

    // PyTorch's nn.LayerNorm shapes: 1-D gains and biases, G*H for the projections, H for c.
    const Safetensors st = Safetensors::Load(path);
    const int64_t H = 6, G = gates;
    EXPECT_EQ(st.Get<float>("rnn.ln_ih_weight_l0", {G * H})[5], a.params.layers[0].tensor("ln_ih_weight")(5, 0));
    EXPECT_EQ(st.Get<float>("rnn.ln_hh_bias_l1", {G * H})[G * H - 1], a.params.layers[1].tensor("ln_hh_bias")(G * H - 1, 0));
    EXPECT_TRUE(st.Has("optimizer.slot1.rnn.ln_ih_bias_l1"));
    EXPECT_EQ(st.Has("rnn.ln_c_weight_l1"), G == 4);
    if (G == 4) {
      EXPECT_EQ(st.Get<float>("rnn.ln_c_bias_l1", {H})[2], a.params.layers[1].tensor("ln_c_bias")(2, 0));
    }

    // The configuration and the tensors must agree (without the training state, whose own copy
    // of the configuration would disagree first).
    Checkpoint weights = a;
    weights.training.reset();
    ExpectErrorContaining(Tampered(dir_, weights, [&](Safetensors& t) {
                            auto c = ConfigToJson(a.config);
                            c["layer_norm"] = false;
                            t.SetMetadata("config", c.dump());
                          }),
                          "unexpected tensor 'rnn.ln_");
    const Checkpoint plain = Make(cell, 0);
    ExpectErrorContaining(Tampered(dir_, plain, [&](Safetensors& t) {
                            auto c = ConfigToJson(plain.config);
                            c["layer_norm"] = true;
                            t.SetMetadata("config", c.dump());
                          }),
                          "tensor 'rnn.ln_ih_weight_l0' is missing");
  }
  // Without --layer-norm there are no such tensors, and the stored configuration says so.
  const Checkpoint plain = Make("lstm", 0);
  SaveCheckpoint(plain, dir_ / "plain.safetensors");
  for (const std::string& name : Safetensors::Load(dir_ / "plain.safetensors").Names())
    EXPECT_EQ(name.find(".ln_"), std::string::npos) << name;
  EXPECT_EQ(ConfigToJson(plain.config).at("layer_norm"), false);
  // A stored configuration from before --layer-norm (no key) loads without it.
  auto old_config = ConfigToJson(plain.config);
  old_config.erase("layer_norm");
  EXPECT_FALSE(ConfigFromJson(old_config, "old").layer_norm);
}

TEST(ModelConfigJson, KeepsTheTrainingRegularisersAndOlderFilesHaveThemOff) {
  ModelConfig c = LanguageModel(*FindCell("gru"), 7, 0, 5, 2, 0.25);
  c.input_dropout = 0.125;
  c.output_dropout = 0.375;
  c.variational = true;
  c.weight_drop = 0.5;
  c.ar = 2;
  c.tar = 1.5;
  nlohmann::json j = ConfigToJson(c);
  const ModelConfig back = ConfigFromJson(j, "stored");
  EXPECT_EQ(back.dropout, 0.25);
  EXPECT_EQ(back.input_dropout, 0.125);
  EXPECT_EQ(back.output_dropout, 0.375);
  EXPECT_TRUE(back.variational);
  EXPECT_EQ(back.weight_drop, 0.5);
  EXPECT_EQ(back.ar, 2);
  EXPECT_EQ(back.tar, 1.5);
  for (const char* key : {"input_dropout", "output_dropout", "variational", "weight_drop", "ar", "tar"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    j.erase(key);
  }
  const ModelConfig old = ConfigFromJson(j, "old");
  EXPECT_EQ(old.dropout, 0.25);
  EXPECT_EQ(old.input_dropout, 0);
  EXPECT_EQ(old.output_dropout, 0);
  EXPECT_FALSE(old.variational);
  EXPECT_EQ(old.weight_drop, 0);
  EXPECT_EQ(old.ar, 0);
  EXPECT_EQ(old.tar, 0);
  // A stored value out of range is refused, naming the file and the option.
  j["weight_drop"] = 1.5;
  try {
    ConfigFromJson(j, "bad.safetensors");
    ADD_FAILURE() << "weight_drop 1.5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--weight-drop must be in [0, 1)"), std::string::npos) << e.what();
  }
}

TEST(ModelConfigJson, StoresTheLoopRegularisersAndOlderFilesKeepTheirDefaults) {
  ModelConfig c = LanguageModel(*FindCell("lstm"), 5, 0, 8, 2);
  c.recurrent_dropout = 0.25;
  c.zoneout = 0.125;
  c.zoneout_cell = 0.0625;
  const nlohmann::json j = ConfigToJson(c);
  EXPECT_EQ(j.at("recurrent_dropout"), 0.25);
  EXPECT_EQ(j.at("zoneout"), 0.125);
  EXPECT_EQ(j.at("zoneout_cell"), 0.0625);
  const ModelConfig back = ConfigFromJson(j, "new");
  EXPECT_EQ(back.recurrent_dropout, 0.25);
  EXPECT_EQ(back.zoneout, 0.125);
  EXPECT_EQ(back.zoneout_cell, 0.0625);
  // A configuration from before the options (no keys) loads with them off.
  nlohmann::json old = j;
  for (const char* key : {"recurrent_dropout", "zoneout", "zoneout_cell"}) old.erase(key);
  const ModelConfig older = ConfigFromJson(old, "old");
  EXPECT_EQ(older.recurrent_dropout, 0.0);
  EXPECT_EQ(older.zoneout, 0.0);
  EXPECT_EQ(older.zoneout_cell, 0.0);
  // A stored value the cell cannot take is refused, naming the file and the flag.
  nlohmann::json gru = ConfigToJson(LanguageModel(*FindCell("gru"), 5, 0, 8, 2));
  gru["zoneout_cell"] = 0.1;
  try {
    ConfigFromJson(gru, "gru.safetensors");
    ADD_FAILURE() << "took --zoneout-cell for a gru";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gru.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--zoneout-cell applies to cells with a cell state"), std::string::npos)
        << e.what();
  }
}

TEST_F(CheckpointTest, LayerNormIsRefusedForTheElmanCells) {
  Checkpoint ck = Make("rnn-tanh", 0);
  ExpectErrorContaining(Tampered(dir_, ck, [&](Safetensors& st) {
                          auto c = ConfigToJson(ck.config);
                          c["layer_norm"] = true;
                          st.SetMetadata("config", c.dump());
                        }),
                        "--layer-norm applies to lstm, gru, not to rnn-tanh");
}

TEST_F(CheckpointTest, NeverWritesNonFiniteWeights) {
  Checkpoint ck = Make("lstm", 0);
  const fs::path path = dir_ / "latest.safetensors";
  SaveCheckpoint(ck, path);
  ck.params.layers[1].tensor("weight_hh")(0, 0) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(SaveCheckpoint(ck, path), Error);
  const Checkpoint kept = LoadCheckpoint(path);  // the good file is untouched
  EXPECT_TRUE(std::isfinite(kept.params.layers[1].tensor("weight_hh")(0, 0)));
}

// A file with a non-finite value anywhere (in the last rows of a large tensor too: the check runs
// as the rows are copied) is refused, naming what holds it.
TEST_F(CheckpointTest, RefusesNonFiniteValuesInTheFile) {
  const Checkpoint ck = Make("lstm", 0);
  const auto poisoned = [&](const std::string& name, float value) {
    return Tampered(dir_, ck, [&](Safetensors& st) {
      const std::vector<int64_t> shape = st.Find(name)->shape;
      std::vector<float> v = st.Get<float>(name, shape);
      v.back() = value;
      st.Put(name, shape, v);
    });
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  ExpectErrorContaining(poisoned("rnn.weight_hh_l1", nan), "checkpoint holds non-finite weights");
  ExpectErrorContaining(poisoned("rnn.weight_ih_l0", -inf), "checkpoint holds non-finite weights");
  ExpectErrorContaining(poisoned("decoder.bias", inf), "checkpoint holds non-finite weights");
  ExpectErrorContaining(poisoned("optimizer.slot2.rnn.weight_hh_l0", nan),
                        "optimizer state 'optimizer.slot2.rnn.weight_hh_l0' is not finite", CheckpointUse::kResume);
}

}  // namespace
}  // namespace bptt
