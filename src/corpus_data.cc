// Training data from a corpus: a character-level (or word-level) language model.
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "bptt/checkpoint.h"
#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/evaluate.h"
#include "train_data.h"

namespace bptt {

namespace {

// Symbols of the validation split scored as one stream for the summary, at most: beyond this a
// one-stream pass (a matrix-vector product per symbol) would take minutes on large corpora.
constexpr size_t kOneStreamSymbols = 1'000'000;
// Timesteps per chunk of that pass.
constexpr int kOneStreamSteps = 256;

// What identifies the encoded corpus: its symbol count and a hash of its ids (FNV-1a, 64 bits).
nlohmann::json Fingerprint(const EncodedCorpus& corpus) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < corpus.size(); ++i) {
    auto id = static_cast<uint32_t>(corpus[i]);
    for (int b = 0; b < 4; ++b, id >>= 8) hash = (hash ^ (id & 0xffu)) * 0x100000001b3ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return {{"symbols", corpus.size()}, {"hash", hex}};
}

class CorpusData final : public TrainData {
 public:
  CorpusData(const TrainOptions& o, const std::filesystem::path& dir, const Checkpoint* resume, std::ostream& log,
             Communicator& comm, StreamShare share)
      : o_(o), comm_(comm) {
    // Rank 0 encodes; the others map its file with its vocabulary.
    const std::string encoded = OnRootForAll(comm, [&] {
      const CorpusFiles listed = ListCorpusFiles(o.corpus);
      if (!listed.skipped.empty()) {
        WriteSkippedList(listed.skipped, dir / "skipped-files.txt");
        log << "bptt train: " << SkippedSummary(listed.skipped) << "; list in "
            << (dir / "skipped-files.txt").string() << "\n";
      }
      corpus_ = std::make_unique<EncodedCorpus>(
          EncodedCorpus::Build(listed.files, o.tokenizer, dir / "corpus.ids", resume ? &resume->vocab : nullptr));
      if (corpus_->replacements() > 0)
        log << "bptt train: replaced " << corpus_->replacements() << " invalid UTF-8 sequences with U+FFFD\n";
      fingerprint_ = Fingerprint(*corpus_);
      return nlohmann::json{{"vocab", corpus_->vocab().ToJson()}, {"fingerprint", fingerprint_}}.dump();
    });
    if (comm.rank() != 0) {
      const nlohmann::json j = nlohmann::json::parse(encoded);
      const auto ids = dir / "corpus.ids";
      if (!std::filesystem::exists(ids))
        throw Error(ids.string() + ", which rank 0 wrote, is not there: the run directory must be on a file system " +
                    "that every rank shares");
      corpus_ = std::make_unique<EncodedCorpus>(EncodedCorpus::Open(ids, Vocab::FromJson(j.at("vocab"))));
      fingerprint_ = j.at("fingerprint");
    }
    splits_ = SplitCorpus(corpus_->size(), o.val_frac, o.test_frac);
    if (splits_.train.size() < static_cast<size_t>(o.batch) * o.seq_len + 1)
      throw Error("corpus has " + std::to_string(splits_.train.size()) +
                  " training symbols, fewer than --batch x --seq-len + 1 = " +
                  std::to_string(static_cast<size_t>(o.batch) * o.seq_len + 1) + "; use a smaller --batch or --seq-len");
    train_ = std::make_unique<BatchStream>(*corpus_, splits_.train, o.batch, o.seq_len, false, share);
    if (splits_.validation.size() >= 2)
      val_batch_ = static_cast<int>(std::min<size_t>(o.batch, splits_.validation.size() - 1));
  }

  void Shape(ModelConfig& config) const override {
    config.vocab_size = corpus_->vocab().size();
    config.input_size = 0;
    config.head = Head::kSoftmax;
    config.output_size = config.vocab_size;
  }
  const Vocab& vocab() const override { return corpus_->vocab(); }
  int timesteps() const override { return o_.seq_len; }
  std::string Describe() const override {
    std::ostringstream out;
    out << "V=" << corpus_->vocab().size() << ", " << corpus_->size() << " symbols (train " << splits_.train.size()
        << ", validation " << splits_.validation.size() << "); " << train_->chunks_per_epoch() << " steps per epoch";
    return out.str();
  }

  bool Next(Batch<float>& batch) override {
    batch.T = train_->Next(batch.ids, batch.classes);
    return batch.T > 0;
  }
  void Rewind() override { train_->Rewind(); }
  bool carries_state() const override { return true; }
  double EpochFraction() const override {
    return static_cast<double>(train_->chunk()) / static_cast<double>(train_->chunks_per_epoch());
  }
  bool Observe(const Batch<float>&, const Mat<float>&) override { return false; }

  const char* ItemName() const override { return "chars/s"; }
  int64_t ItemsPerStep(const Batch<float>& batch) const override { return batch.T * batch.whole_B(); }
  std::string Progress(int64_t epoch) const override {
    std::ostringstream out;
    out << "epoch " << std::fixed << std::setprecision(2) << static_cast<double>(epoch) + EpochFraction();
    return out.str();
  }
  void NameRate(nlohmann::json& metrics, double rate) const override { metrics["chars_per_s"] = rate; }

  nlohmann::json Validate(const ModelConfig& config, const ModelParams<float>& params, int threads) override {
    if (val_batch_ == 0) return {{"val_loss", nullptr}};
    const StreamShare share = StreamShare::OfRank(val_batch_, comm_.rank(), comm_.size());
    const LossSum part = EvaluateLossSum(config, params, *corpus_, splits_.validation, val_batch_, o_.seq_len, threads,
                                         share);
    double sums[2] = {part.nats, static_cast<double>(part.symbols)};
    comm_.Sum(std::span<double>(sums));
    const double val = sums[0] / sums[1];
    return {{"val_loss", val}, {"val_bpc", val / std::log(2.0)}, {"val_streams", val_batch_}};
  }
  std::string DescribeValidation(const nlohmann::json& m) const override {
    std::ostringstream out;
    out << std::fixed << std::setprecision(4) << "val " << m["val_loss"].get<double>() << " ("
        << m["val_bpc"].get<double>() << " bpc, " << val_batch_ << " streams)";
    return out.str();
  }

  // Validation runs this rank's share of the val_batch_ streams seq_len steps at a time; the
  // summary one stream kOneStreamSteps at a time.
  uint64_t EvaluationBytes(const ModelConfig& config) const override {
    if (val_batch_ == 0) return 0;
    const StreamShare share = StreamShare::OfRank(val_batch_, comm_.rank(), comm_.size());
    return std::max(EstimateEvaluationBytes(config, o_.seq_len, share.size()),
                    EstimateEvaluationBytes(config, kOneStreamSteps, 1));
  }

  uint64_t position() const override { return train_->chunk(); }
  nlohmann::json SaveState() const override { return {{"corpus", fingerprint_}}; }
  void Seek(uint64_t position, const nlohmann::json& state, const std::string& source) override {
    if (state.contains("corpus") && state.at("corpus") != fingerprint_)
      throw Error(source + ": the corpus " + Join(o_.corpus) + " is not the one this run was trained on (" +
                  std::to_string(corpus_->size()) + " symbols, hash " + fingerprint_["hash"].get<std::string>() +
                  "; the run's: " + state.at("corpus").dump() + ")");
    if (position > train_->chunks_per_epoch())
      throw Error(source + ": data position is past the end of the corpus");
    train_->Seek(position);
  }

  Batch<double> DecayProbe(int T, int B) const override {
    // The first B x T chunk of the validation split (or of the training split when validation
    // is too short), fixed for the whole run.
    const SymbolRange range =
        splits_.validation.size() >= static_cast<size_t>(B) * T + 1 ? splits_.validation : splits_.train;
    BatchStream probe(*corpus_, range, B, T);
    Batch<double> data;
    data.B = B;
    data.T = probe.Next(data.ids, data.classes);
    return data;
  }

  nlohmann::json Summary(const ModelConfig& config, const ModelParams<float>& best, int64_t, bool,
                         int threads) override {
    nlohmann::json s = {{"corpus", CorpusPathsJson(o_.corpus)}, {"symbols", corpus_->size()}, {"cell", config.cell->name},
                        {"seed", o_.seed}};
    if (val_batch_ > 0) {
      const SymbolRange one{splits_.validation.begin,
                            splits_.validation.begin + std::min(splits_.validation.size(), kOneStreamSymbols)};
      const double val = EvaluateLoss(config, best, *corpus_, one, 1, kOneStreamSteps, threads);
      s["val_streams"] = val_batch_;
      s["best_val_loss_one_stream"] = val;
      s["best_val_bpc_one_stream"] = val / std::log(2.0);
      s["one_stream_symbols"] = one.size();
    }
    return s;
  }

 private:
  static std::string Join(const std::vector<std::string>& paths) {
    std::string out;
    for (const auto& p : paths) out += (out.empty() ? "" : ", ") + p;
    return out;
  }

  TrainOptions o_;
  Communicator& comm_;
  std::unique_ptr<EncodedCorpus> corpus_;
  nlohmann::json fingerprint_;
  CorpusSplits splits_;
  std::unique_ptr<BatchStream> train_;
  int val_batch_ = 0;
};

}  // namespace

std::unique_ptr<TrainData> MakeCorpusData(const TrainOptions& options, const std::filesystem::path& dir,
                                          const Checkpoint* resume, std::ostream& log, Communicator& comm,
                                          StreamShare share) {
  return std::make_unique<CorpusData>(options, dir, resume, log, comm, share);
}

}  // namespace bptt
