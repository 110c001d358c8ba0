// Training data from sequences of the user's own (sequences.h): batches of B sequences drawn
// without replacement in an order shuffled afresh each epoch (windows of a series, for a
// forecast), each from the zero state; validation on a held-out part; the best checkpoint's
// scores in the summary.
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/loss.h"
#include "bptt/rng.h"
#include "sequence_batch.h"
#include "train_data.h"

namespace bptt {

namespace {

// Sequences run through the model at a time when validating and scoring.
constexpr int kValidationBatch = 256;

// What identifies the training data: FNV-1a (64 bits) over its inputs, lengths and targets, a
// 64-bit word at a time.
std::string Fingerprint(const SequenceSet& s) {
  uint64_t hash = 0xcbf29ce484222325ull;
  const auto add = [&hash](const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    size_t k = 0;
    for (; k + 8 <= bytes; k += 8) {
      uint64_t word;
      std::memcpy(&word, p + k, 8);
      hash = (hash ^ word) * 0x100000001b3ull;
    }
    for (; k < bytes; ++k) hash = (hash ^ p[k]) * 0x100000001b3ull;
  };
  const int64_t shape[] = {s.N, s.T, s.D, s.O};
  add(shape, sizeof shape);
  for (int64_t n = 0; n < s.N; ++n) add(s.step(n, 0), sizeof(float) * static_cast<size_t>(s.length(n) * s.D));
  add(s.lengths.data(), s.lengths.size() * sizeof(int32_t));
  add(s.classes.data(), s.classes.size() * sizeof(int32_t));
  add(s.values.data(), s.values.size() * sizeof(float));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

std::vector<int64_t> Range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Fisher-Yates with `rng`.
void Shuffle(std::vector<int64_t>& v, Rng& rng) {
  for (size_t k = v.size(); k > 1; --k) std::swap(v[k - 1], v[rng.Below(k)]);
}

template <typename T, typename S>
Batch<T> CastBatch(const Batch<S>& b) {
  Batch<T> out;
  out.T = b.T;
  out.B = b.B;
  out.dense = b.dense.template cast<T>();
  out.classes = b.classes;
  out.values = b.values.template cast<T>();
  out.scored = b.scored;
  return out;
}

class SequenceData final : public TrainData {
 public:
  SequenceData(const TrainOptions& o, Communicator& comm, StreamShare share)
      : o_(o), comm_(comm), share_(share) {
    const SequenceOptions& s = o.sequences;
    if (o.arrays) {
      train_ = o.arrays->train;
      if (o.arrays->validation) validation_ = *o.arrays->validation;
    } else {
      train_ = ReadSequences(s, s.data, s.labels);
      if (!s.val_data.empty()) validation_ = ReadSequences(s, s.val_data, s.val_labels, true, train_.class_names);
    }
    if (!s.test_data.empty()) test_ = ReadSequences(s, s.test_data, s.test_labels, true, train_.class_names);
    if (s.forecast()) SplitSeries();
    else SplitSequences();
    // A forecast of changes trains on the series' changes; its validation forecasts the series.
    if (s.forecast()) model_series_ = s.differences > 0 ? Differenced(train_) : train_;
    spec_ = s.forecast() ? MakeSequenceSpec(s, model_series_, train_index_, train_steps_ - s.differences)
                         : MakeSequenceSpec(s, train_, train_index_, 0);
    ModelConfig shaped = o.model;
    spec_.Shape(shaped);
    pooling_ = shaped.pooling;
    fingerprint_ = Fingerprint(train_);
    Reorder();
  }

  void Shape(ModelConfig& config) const override { spec_.Shape(config); }
  const Vocab& vocab() const override { return vocab_; }
  int timesteps() const override { return static_cast<int>(forecast() ? o_.seq_len : train_.T); }
  std::string Describe() const override {
    std::ostringstream out;
    if (forecast()) {
      out << "series " << train_.source << " of " << train_.T << " steps x " << train_.D << " (train " << train_steps_
          << ", validation " << train_.T - train_steps_ << "); windows of " << o_.seq_len << " steps predicting "
          << spec_.horizon << " ahead; " << steps_per_epoch_ << " steps per epoch";
      return out.str();
    }
    out << train_.source << ": " << train_index_.size() << " training sequences of up to " << train_.T << " steps x "
        << train_.D << " features";
    if (val_set()) out << ", " << val_index_.size() << " validation";
    if (test_) out << ", " << test_->N << " test";
    out << "; --head " << SequenceHeadName(spec_.head);
    if (spec_.classes > 0) out << " (" << spec_.classes << " classes)";
    out << "; " << steps_per_epoch_ << " steps per epoch";
    return out.str();
  }

  bool Next(Batch<float>& batch) override {
    if (position_ >= steps_per_epoch_) return false;
    const std::span<const int64_t> index(order_.data() + position_ * o_.batch, static_cast<size_t>(o_.batch));
    if (forecast()) FillWindowBatch(model_series_, spec_, index, o_.seq_len, share_.begin, share_.size(), 0, batch);
    else FillSequenceBatch(train_, spec_, pooling_, index, share_.begin, share_.size(), true, batch);
    ++position_;
    return true;
  }
  void Rewind() override {
    ++epoch_;
    position_ = 0;
    Reorder();
  }
  bool carries_state() const override { return false; }
  double EpochFraction() const override {
    return static_cast<double>(position_) / static_cast<double>(steps_per_epoch_);
  }
  bool Observe(const Batch<float>&, const Mat<float>&) override { return false; }

  const char* ItemName() const override { return "seq/s"; }
  int64_t ItemsPerStep(const Batch<float>& batch) const override { return batch.whole_B(); }
  std::string Progress(int64_t epoch) const override {
    std::ostringstream out;
    out << "epoch " << std::fixed << std::setprecision(2) << static_cast<double>(epoch) + EpochFraction();
    return out.str();
  }
  void NameRate(nlohmann::json& metrics, double rate) const override { metrics["sequences_per_s"] = rate; }

  nlohmann::json Validate(const ModelConfig& config, const ModelParams<float>& params, int threads) override {
    if (forecast()) return ValidateForecast(config, params, threads);
    if (!val_set()) return {{"val_loss", nullptr}};
    // Each rank scores its share of the validation sequences; the sums over the ranks give the
    // figures.
    const StreamShare part = StreamShare::OfRank(static_cast<int>(val_index_.size()), comm_.rank(), comm_.size());
    const std::span<const int64_t> mine(val_index_.data() + part.begin, static_cast<size_t>(part.size()));
    double sums[4] = {0, 0, 0, 0};  // loss x count, right (or squared error), absolute error, count
    if (!mine.empty()) {
      const nlohmann::json j = ScoreSequences(config, params, spec_, Subset(*val_set(), mine), threads, kValidationBatch);
      const double count = regress() ? j["sequences"].get<double>() * spec_.targets
                                     : j.value("steps", j["sequences"].get<double>());
      sums[0] = j["loss"].get<double>() * count;
      sums[1] = regress() ? j["mse"].get<double>() * count : j["accuracy"].get<double>() * count;
      sums[2] = regress() ? j["mae"].get<double>() * count : 0;
      sums[3] = count;
    }
    comm_.Sum(std::span<double>(sums));
    nlohmann::json m = {{"val_loss", sums[0] / sums[3]}};
    if (regress()) {
      m["val_mse"] = sums[1] / sums[3];
      m["val_mae"] = sums[2] / sums[3];
    } else {
      m["val_accuracy"] = sums[1] / sums[3];
    }
    return m;
  }
  std::string DescribeValidation(const nlohmann::json& m) const override {
    std::ostringstream out;
    out << std::fixed << std::setprecision(4) << "val loss " << m["val_loss"].get<double>();
    if (m.contains("val_accuracy")) out << ", accuracy " << m["val_accuracy"].get<double>();
    if (m.contains("val_mae")) out << ", MAE " << std::setprecision(6) << m["val_mae"].get<double>();
    if (m.contains("val_mase") && m["val_mase"].is_number())
      out << std::setprecision(4) << ", MASE " << m["val_mase"].get<double>() << " (seasonal naive "
          << m["val_naive_mase"].get<double>() << ")";
    return out.str();
  }

  // Validation and the summary run kValidationBatch sequences (of the longest set's T) at a
  // time; a forecast's validation runs the whole series as one stream.
  uint64_t EvaluationBytes(const ModelConfig& config) const override {
    if (forecast())
      return model_series_.T > spec_.horizon
                 ? EstimateEvaluationBytes(config, static_cast<int>(model_series_.T - spec_.horizon), 1)
                 : 0;
    uint64_t bytes = 0;
    for (const SequenceSet* set : {val_set(), test_ ? &*test_ : nullptr})
      if (set != nullptr)
        bytes = std::max(bytes, EstimateEvaluationBytes(config, static_cast<int>(set->T),
                                                        static_cast<int>(std::min<int64_t>(kValidationBatch, set->N))));
    return bytes;
  }

  uint64_t position() const override { return static_cast<uint64_t>(position_); }
  nlohmann::json SaveState() const override { return {{"sequences", fingerprint_}, {"epoch", epoch_}}; }
  void Seek(uint64_t position, const nlohmann::json& state, const std::string& source) override {
    if (!state.contains("sequences") || state.at("sequences") != fingerprint_) {
      const nlohmann::json& stored = state.contains("sequences") ? state.at("sequences") : nlohmann::json();
      throw Error(source + ": the data " + train_.source + " is not the data this run was trained on (fingerprint " +
                  fingerprint_ + "; the run's: " + (stored.is_string() ? stored.get<std::string>() : "none") + ")");
    }
    if (!state.contains("epoch") || !state.at("epoch").is_number_integer() || state.at("epoch").get<int64_t>() < 0)
      throw Error(source + ": the checkpoint's data state has no epoch");
    if (position > static_cast<uint64_t>(steps_per_epoch_)) throw Error(source + ": data position is past the end of an epoch");
    epoch_ = state.at("epoch").get<int64_t>();
    Reorder();
    position_ = static_cast<int64_t>(position);
  }

  Batch<double> DecayProbe(int T, int B) const override {
    Batch<float> batch;
    if (forecast()) {
      const int64_t windows = train_steps_ - spec_.differences - T - spec_.horizon + 1;
      if (windows < 1) throw Error("--decay-steps " + std::to_string(T) + " is longer than the training series allows");
      std::vector<int64_t> starts(static_cast<size_t>(B));
      for (int b = 0; b < B; ++b) starts[static_cast<size_t>(b)] = windows * b / B;
      FillWindowBatch(model_series_, spec_, starts, T, 0, B, 0, batch);
      return CastBatch<double>(batch);
    }
    const SequenceSet& set = val_set() ? *val_set() : train_;
    const std::vector<int64_t>& from = val_set() ? val_index_ : train_index_;
    std::vector<int64_t> index(from.begin(), from.begin() + std::min<size_t>(static_cast<size_t>(B), from.size()));
    FillSequenceBatch(set, spec_, pooling_, index, 0, static_cast<int64_t>(index.size()), true, batch);
    return ScoredAt(CastBatch<double>(batch), 0);
  }

  nlohmann::json Summary(const ModelConfig& config, const ModelParams<float>& best, int64_t, bool,
                         int threads) override {
    nlohmann::json s = {{"data", o_.arrays ? std::string(kArraysData) : o_.sequences.data},
                        {"head", std::string(SequenceHeadName(spec_.head))},
                        {"cell", config.cell->name},
                        {"seed", o_.seed}};
    if (forecast()) {
      s["series_steps"] = train_.T;
      s["train_steps"] = train_steps_;
      if (train_.T > train_steps_) {
        nlohmann::json v = ScoreForecast(config, best, spec_, train_, train_.T - train_steps_, threads);
        v.erase("forecast");
        s["validation"] = v;
      }
      return s;
    }
    s["train_sequences"] = train_index_.size();
    if (val_set()) s["validation"] = ScoreSequences(config, best, spec_, Subset(*val_set(), val_index_), threads, kValidationBatch);
    if (test_) s["test"] = ScoreSequences(config, best, spec_, *test_, threads, kValidationBatch);
    return s;
  }

  nlohmann::json ModelData() const override { return spec_.ToJson(); }

 private:
  bool forecast() const { return spec_.head == SequenceHead::kForecast || o_.sequences.forecast(); }
  bool regress() const { return spec_.head == SequenceHead::kRegress; }
  const SequenceSet* val_set() const {
    if (validation_) return &*validation_;
    return val_index_.empty() ? nullptr : &train_;
  }

  // Sequences `index` of `set` as a set of their own (a copy of their inputs and targets).
  static SequenceSet Subset(const SequenceSet& set, std::span<const int64_t> index) {
    const int64_t N = static_cast<int64_t>(index.size()), T = set.T, D = set.D;
    std::vector<float> x(static_cast<size_t>(N * T * D), 0.0f);
    SequenceSet out;
    for (int64_t k = 0; k < N; ++k) {
      const int64_t n = index[static_cast<size_t>(k)];
      std::copy_n(set.step(n, 0), set.length(n) * D, x.begin() + k * T * D);
      if (!set.lengths.empty()) out.lengths.push_back(set.lengths[static_cast<size_t>(n)]);
      if (set.classes.size() == static_cast<size_t>(set.N))
        out.classes.push_back(set.classes[static_cast<size_t>(n)]);
      else if (!set.classes.empty())
        out.classes.insert(out.classes.end(), set.classes.begin() + n * T, set.classes.begin() + (n + 1) * T);
      out.values.insert(out.values.end(), set.values.begin() + n * set.O, set.values.begin() + (n + 1) * set.O);
    }
    SequenceSet owned = SequenceSet::Owning(set.source, N, T, static_cast<int>(D), std::move(x));
    owned.lengths = std::move(out.lengths);
    owned.classes = std::move(out.classes);
    owned.values = std::move(out.values);
    owned.O = set.O;
    owned.class_names = set.class_names;
    return owned;
  }

  // Validation of sequences: --val-data, or --val-frac of the training file drawn by the seed.
  void SplitSequences() {
    std::vector<int64_t> all = Range(train_.N);
    if (!validation_) {
      Rng rng(StreamSeed(o_.seed, kTestDataStream));
      Shuffle(all, rng);
      const auto held = static_cast<size_t>(std::floor(o_.val_frac * static_cast<double>(train_.N)));
      val_index_.assign(all.end() - static_cast<std::ptrdiff_t>(held), all.end());
      all.resize(all.size() - held);
      std::sort(all.begin(), all.end());
      std::sort(val_index_.begin(), val_index_.end());
    } else {
      val_index_ = Range(validation_->N);
    }
    train_index_ = std::move(all);
    if (static_cast<int64_t>(train_index_.size()) < o_.batch)
      throw Error(train_.source + ": " + std::to_string(train_index_.size()) +
                  " training sequences, fewer than --batch " + std::to_string(o_.batch));
    steps_per_epoch_ = static_cast<int64_t>(train_index_.size()) / o_.batch;
  }

  // A series: its last --val-frac held out; training windows of --seq-len steps before it.
  void SplitSeries() {
    if (validation_) throw Error("--val-data does not apply to --head forecast: --val-frac holds out the series' end");
    const int64_t n = train_.T, H = o_.sequences.horizon, T = o_.seq_len;
    const auto held = static_cast<int64_t>(std::floor(o_.val_frac * static_cast<double>(n)));
    train_steps_ = n - held;
    if (held > 0 && held < H)
      throw Error(train_.source + ": the validation part (--val-frac " + std::to_string(o_.val_frac) + ", " +
                  std::to_string(held) + " steps) is shorter than --horizon " + std::to_string(H));
    // Windows of the series the model reads: its changes have one step fewer.
    const int64_t windows = train_steps_ - o_.sequences.differences - T - H + 1;
    if (windows < o_.batch)
      throw Error(train_.source + ": its " + std::to_string(train_steps_) + " training steps hold " +
                  std::to_string(std::max<int64_t>(windows, 0)) + " windows of --seq-len " + std::to_string(T) +
                  " + --horizon " + std::to_string(H) + ", fewer than --batch " + std::to_string(o_.batch) +
                  "; use a smaller --seq-len or --batch");
    train_index_ = Range(windows);
    steps_per_epoch_ = windows / o_.batch;
  }

  // The epoch's order of the training sequences (or windows): shuffled by (seed, epoch).
  void Reorder() {
    order_ = train_index_;
    Rng rng(StreamSeed(StreamSeed(o_.seed, kTrainDataStream), static_cast<uint64_t>(epoch_)));
    Shuffle(order_, rng);
  }

  // A forecast's validation: the one-step-ahead loss over the held-out steps (the model reads
  // the series up to each one), and the forecast of the whole held-out part from the steps
  // before it, fed back autoregressively, as MASE beside the seasonal-naive forecast's.
  nlohmann::json ValidateForecast(const ModelConfig& config, const ModelParams<float>& params, int threads) {
    const int64_t n = model_series_.T, H = spec_.horizon, train = train_steps_ - spec_.differences;
    if (train >= n) return {{"val_loss", nullptr}};
    const int64_t start = 0;
    Batch<float> batch;
    FillWindowBatch(model_series_, spec_, std::span<const int64_t>(&start, 1), n - H, 0, 1, train - 1, batch);
    Forward(config, params, batch, State<float>::Zeros(config, 1), cache_, Compute{threads});
    const double loss = HeadLoss<float>(config, cache_.outputs, batch, nullptr, threads);
    const nlohmann::json f = ScoreForecast(config, params, spec_, train_, n - train_steps_, threads);
    return {{"val_loss", loss}, {"val_mae", f["mae"]}, {"val_mase", f["mase"]}, {"val_naive_mase", f["naive_mase"]}};
  }

  const TrainOptions o_;
  Communicator& comm_;
  const StreamShare share_;
  SequenceSet train_;
  SequenceSet model_series_;  // forecast: the series the model reads (its changes with --differences 1)
  std::optional<SequenceSet> validation_, test_;
  std::vector<int64_t> train_index_;  // sequences of train_ (or window starts) trained on
  std::vector<int64_t> val_index_;    // sequences of the validation set scored
  int64_t train_steps_ = 0;           // forecast: the series' steps before the validation part
  SequenceSpec spec_;
  Pooling pooling_ = Pooling::kNone;
  std::string fingerprint_;
  Vocab vocab_;
  int64_t steps_per_epoch_ = 0;
  int64_t epoch_ = 0;
  int64_t position_ = 0;          // batches of this epoch taken
  std::vector<int64_t> order_;    // this epoch's order of train_index_
  ModelCache<float> cache_;
};

}  // namespace

std::unique_ptr<TrainData> MakeSequenceData(const TrainOptions& options, Communicator& comm, StreamShare share) {
  return std::make_unique<SequenceData>(options, comm, share);
}

}  // namespace bptt
