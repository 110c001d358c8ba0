#include "bptt/corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string_view>
#include <system_error>
#include <utility>

#include "bptt/error.h"
#include "utf8.h"

namespace bptt {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kIdsMagic = "bpttids1";
constexpr size_t kHeaderBytes = 32;
constexpr size_t kReadPieceBytes = size_t{1} << 20;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;
constexpr size_t kMissingNamed = 5;  // symbols named in a "not in the vocabulary" message

int BytesPerSymbol(int64_t vocab_size) {
  if (vocab_size <= 256) return 1;
  if (vocab_size <= 65536) return 2;
  return 4;
}

void PutLittleEndian(unsigned char* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}

uint64_t GetLittleEndian(const unsigned char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{in[i]} << (8 * i);
  return value;
}

// FNV-1a over the unit, the normalisation flag and the length-prefixed symbols: two
// vocabularies with the same fingerprint give the same ids to the same text.
uint64_t Fingerprint(const Vocab& vocab) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  const auto mix = [&hash](std::string_view bytes) {
    for (const char c : bytes) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 0x100000001b3ULL;
    }
  };
  mix(UnitName(vocab.options().unit));
  mix(vocab.options().normalize ? "+nfc" : "-nfc");
  for (int32_t id = 0; id < vocab.size(); ++id) {
    std::array<unsigned char, 8> length;
    PutLittleEndian(length.data(), vocab.symbol(id).size(), 8);
    mix(std::string_view(reinterpret_cast<const char*>(length.data()), length.size()));
    mix(vocab.symbol(id));
  }
  return hash;
}

std::string ErrnoText() { return std::strerror(errno); }

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

bool IsHidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// What a file holds, judged from its size and its first kTextSampleBytes.
enum class Content {
  kText,
  kEmpty,
  kBinary,         // a NUL byte
  kOtherEncoding,  // most non-ASCII bytes outside well-formed UTF-8 sequences
};

struct Examined {
  Content kind = Content::kText;
  std::string detail;  // what showed it, for kBinary and kOtherEncoding
};

Examined Examine(const fs::path& file) {
  std::error_code error;
  const uintmax_t size = fs::file_size(file, error);
  if (error) throw Error(file.string() + ": " + error.message());
  if (size == 0) return {Content::kEmpty, ""};
  File in(std::fopen(file.c_str(), "rb"));
  if (!in) throw Error(file.string() + ": cannot open: " + ErrnoText());
  std::array<char, kTextSampleBytes> buffer;
  const size_t n = std::fread(buffer.data(), 1, buffer.size(), in.get());
  if (std::ferror(in.get())) throw Error(file.string() + ": read failed: " + ErrnoText());
  const std::string_view sample(buffer.data(), n);
  if (const size_t nul = sample.find('\0'); nul != std::string_view::npos) {
    return {Content::kBinary, "NUL byte at byte " + std::to_string(nul)};
  }
  size_t non_ascii = 0, ill_formed = 0;
  for (size_t i = 0; i < sample.size();) {
    if (static_cast<unsigned char>(sample[i]) < 0x80) {
      ++i;
      continue;
    }
    const int length = CheckUtf8Sequence(sample.substr(i));
    if (length == 0) break;  // the sample ends inside a sequence
    const auto bytes = static_cast<size_t>(std::abs(length));
    non_ascii += bytes;
    if (length < 0) ill_formed += bytes;
    i += bytes;
  }
  if (2 * ill_formed > non_ascii) {
    return {Content::kOtherEncoding, std::to_string(ill_formed) + " of the " +
                                         std::to_string(non_ascii) + " non-ASCII bytes in the first " +
                                         std::to_string(n) + " bytes are not UTF-8"};
  }
  return {};
}

// Writes ids to a temporary file next to `path` and renames it to `path` on Commit; the
// temporary file is removed if Commit is never reached.
class IdsWriter {
 public:
  IdsWriter(const fs::path& path, int bytes_per_symbol)
      : path_(path),
        temp_(path.string() + ".tmp" + std::to_string(::getpid())),
        bytes_per_symbol_(bytes_per_symbol) {
    file_.reset(std::fopen(temp_.c_str(), "wb"));
    if (!file_) throw Error(temp_.string() + ": cannot create: " + ErrnoText());
    buffer_.reserve(kWriteBufferBytes);
    buffer_.resize(kHeaderBytes);  // written again by Commit
  }
  ~IdsWriter() {
    if (file_) {
      file_.reset();
      std::error_code ignored;
      fs::remove(temp_, ignored);
    }
  }

  void Put(int32_t id) {
    const auto value = static_cast<uint32_t>(id);
    for (int i = 0; i < bytes_per_symbol_; ++i) {
      buffer_.push_back(static_cast<unsigned char>(value >> (8 * i)));
    }
    ++count_;
    if (buffer_.size() >= kWriteBufferBytes) Flush();
  }

  void Commit(const Vocab& vocab) {
    Flush();
    unsigned char header[kHeaderBytes] = {};
    std::memcpy(header, kIdsMagic.data(), kIdsMagic.size());
    PutLittleEndian(header + 8, static_cast<uint64_t>(bytes_per_symbol_), 4);
    PutLittleEndian(header + 12, static_cast<uint64_t>(vocab.size()), 4);
    PutLittleEndian(header + 16, count_, 8);
    PutLittleEndian(header + 24, Fingerprint(vocab), 8);
    if (std::fseek(file_.get(), 0, SEEK_SET) != 0 ||
        std::fwrite(header, 1, kHeaderBytes, file_.get()) != kHeaderBytes ||
        std::fflush(file_.get()) != 0 || ::fsync(::fileno(file_.get())) != 0) {
      throw Error(temp_.string() + ": write failed: " + ErrnoText());
    }
    std::error_code error;
    if (std::fclose(file_.release()) != 0) {
      const std::string why = ErrnoText();
      fs::remove(temp_, error);
      throw Error(temp_.string() + ": write failed: " + why);
    }
    fs::rename(temp_, path_, error);
    if (error) {
      const std::string why = error.message();
      fs::remove(temp_, error);
      throw Error(path_.string() + ": cannot rename from " + temp_.string() + ": " + why);
    }
  }

 private:
  void Flush() {
    if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_.get()) != buffer_.size()) {
      throw Error(temp_.string() + ": write failed: " + ErrnoText());
    }
    buffer_.clear();
  }

  fs::path path_;
  fs::path temp_;
  int bytes_per_symbol_;
  File file_;
  std::vector<unsigned char> buffer_;
  uint64_t count_ = 0;
};

}  // namespace

void ReadInPieces(const fs::path& path, const std::function<void(std::string_view)>& piece) {
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw Error(path.string() + ": cannot open: " + ErrnoText());
  std::vector<char> buffer(kReadPieceBytes);
  for (;;) {
    const size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    if (n > 0) piece(std::string_view(buffer.data(), n));
    if (n < buffer.size()) {
      if (std::ferror(file.get())) throw Error(path.string() + ": read failed: " + ErrnoText());
      return;
    }
  }
}

void CheckTextFile(const fs::path& path) {
  const std::string name = path.string();
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (!fs::exists(status)) throw Error(name + ": no such file or directory");
  if (fs::is_directory(status)) throw Error(name + ": is a directory, not a text file");
  if (!fs::is_regular_file(status)) throw Error(name + ": not a regular file");
  const Examined examined = Examine(path);
  if (examined.kind == Content::kEmpty) throw Error(name + ": empty file");
  if (examined.kind == Content::kBinary) throw Error(name + ": not text (" + examined.detail + ")");
}

CorpusFiles ListCorpusFiles(const std::vector<std::string>& paths) {
  CorpusFiles corpus;
  for (const std::string& name : paths) {
    const fs::path path(name);
    std::error_code error;
    const fs::file_status status = fs::status(path, error);
    if (!fs::exists(status)) throw Error(name + ": no such file or directory");
    if (fs::is_directory(status)) {
      std::vector<fs::path> found;
      fs::recursive_directory_iterator it(path, error);
      if (error) throw Error(name + ": cannot list: " + error.message());
      for (const fs::recursive_directory_iterator end; it != end; it.increment(error)) {
        if (error) throw Error(name + ": cannot list: " + error.message());
        if (IsHidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (fs::is_regular_file(it->symlink_status())) found.push_back(it->path());
      }
      if (error) throw Error(name + ": cannot list: " + error.message());
      std::sort(found.begin(), found.end());
      const size_t text_before = corpus.files.size();
      for (const fs::path& file : found) {
        Examined examined = Examine(file);
        if (examined.kind == Content::kText) {
          corpus.files.push_back(file);
        } else {
          const SkipReason reason =
              examined.kind == Content::kEmpty ? SkipReason::kEmpty : SkipReason::kNotText;
          corpus.skipped.push_back({file, reason, std::move(examined.detail)});
        }
      }
      if (corpus.files.size() == text_before) throw Error(name + ": directory has no text files");
    } else if (fs::is_regular_file(status)) {
      CheckTextFile(path);
      corpus.files.push_back(path);
    } else {
      throw Error(name + ": not a regular file or directory");
    }
  }
  return corpus;
}

std::string_view SkipReasonName(SkipReason reason) {
  return reason == SkipReason::kEmpty ? "empty" : "not text";
}

std::string SkippedSummary(const std::vector<SkippedFile>& skipped) {
  const auto empty = static_cast<size_t>(std::count_if(
      skipped.begin(), skipped.end(), [](const SkippedFile& s) { return s.reason == SkipReason::kEmpty; }));
  return "skipped " + std::to_string(skipped.size()) + " files: " + std::to_string(empty) + " empty, " +
         std::to_string(skipped.size() - empty) + " not text";
}

std::string SkippedLine(const SkippedFile& file) {
  std::string line = file.path.string() + ": " + std::string(SkipReasonName(file.reason));
  if (!file.detail.empty()) line += " (" + file.detail + ")";
  return line;
}

void WriteSkippedList(const std::vector<SkippedFile>& skipped, const fs::path& list) {
  std::ofstream out(list, std::ios::trunc);
  for (const SkippedFile& file : skipped) out << SkippedLine(file) << "\n";
  out.close();
  if (!out) throw Error(list.string() + ": cannot write");
}

CorpusSplits SplitCorpus(size_t n, double val_frac, double test_frac) {
  if (!(val_frac >= 0 && val_frac < 1) || !(test_frac >= 0 && test_frac < 1) ||
      !(val_frac + test_frac < 1)) {
    throw Error("validation fraction " + std::to_string(val_frac) + " and test fraction " +
                std::to_string(test_frac) + " must each be in [0, 1) and sum below 1");
  }
  const auto n_val = static_cast<size_t>(static_cast<double>(n) * val_frac);
  const auto n_test = static_cast<size_t>(static_cast<double>(n) * test_frac);
  CorpusSplits splits;
  splits.train = {0, n - n_val - n_test};
  splits.validation = {splits.train.end, splits.train.end + n_val};
  splits.test = {splits.validation.end, n};
  return splits;
}

// ---------------------------------------------------------------------------------------------
// EncodedCorpus

EncodedCorpus EncodedCorpus::Build(const std::vector<fs::path>& files,
                                   const TokenizerOptions& options, const fs::path& ids_path,
                                   const Vocab* given_vocab) {
  Vocab vocab;
  size_t replacements = 0;
  if (given_vocab != nullptr) {
    vocab = *given_vocab;
  } else {
    VocabBuilder builder(options);
    for (const fs::path& file : files) {
      builder.Begin(file.string());
      ReadInPieces(file, [&](std::string_view piece) { builder.Feed(piece); });
      builder.End();
    }
    vocab = builder.Build();
    replacements = builder.replacements();
  }
  if (vocab.size() == 0) {
    throw Error((files.empty() ? std::string("corpus") : files.front().string()) +
                ": the corpus has no symbols");
  }

  IdsWriter writer(ids_path, BytesPerSymbol(vocab.size()));
  Segmenter segmenter(vocab.options());
  std::vector<std::string> missing;
  uint64_t missing_count = 0;
  const SymbolSink put = [&](std::string_view symbol) {
    if (const std::optional<int32_t> id = vocab.Find(symbol)) {
      writer.Put(*id);
    } else if (vocab.unknown_id() >= 0) {
      writer.Put(vocab.unknown_id());
    } else {
      ++missing_count;
      if (missing.size() < kMissingNamed &&
          std::find(missing.begin(), missing.end(), symbol) == missing.end()) {
        missing.emplace_back(symbol);
      }
    }
  };
  for (const fs::path& file : files) {
    segmenter.Restart(file.string());
    ReadInPieces(file, [&](std::string_view piece) { segmenter.Feed(piece, put); });
    segmenter.Finish(put);
    if (!missing.empty()) {
      std::string names;
      for (const std::string& s : missing)
        names += (names.empty() ? "\"" : ", \"") + DisplaySymbol(s) + '"';
      throw Error(file.string() + ": " + std::to_string(missing_count) +
                  " symbols not in the vocabulary, e.g. " + names);
    }
  }
  writer.Commit(vocab);
  if (given_vocab != nullptr) replacements = segmenter.replacements();

  EncodedCorpus corpus = Open(ids_path, std::move(vocab));
  corpus.replacements_ = replacements;
  return corpus;
}

EncodedCorpus EncodedCorpus::Open(const fs::path& ids_path, Vocab vocab) {
  const std::string name = ids_path.string();
  const int fd = ::open(ids_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(name + ": cannot open: " + ErrnoText());
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    const std::string why = ErrnoText();
    ::close(fd);
    throw Error(name + ": cannot stat: " + why);
  }
  const auto file_size = static_cast<size_t>(info.st_size);
  if (file_size < kHeaderBytes) {
    ::close(fd);
    throw Error(name + ": not an ids file (" + std::to_string(file_size) + " bytes)");
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string why = ErrnoText();
  ::close(fd);
  if (mapping == MAP_FAILED) throw Error(name + ": cannot map: " + why);

  EncodedCorpus corpus;  // owns the mapping from here on
  corpus.mapping_ = mapping;
  corpus.mapping_size_ = file_size;
  const auto* header = static_cast<const unsigned char*>(mapping);
  if (std::memcmp(header, kIdsMagic.data(), kIdsMagic.size()) != 0) {
    throw Error(name + ": not an ids file (bad magic)");
  }
  const uint64_t width = GetLittleEndian(header + 8, 4);
  const uint64_t vocab_size = GetLittleEndian(header + 12, 4);
  const uint64_t count = GetLittleEndian(header + 16, 8);
  const uint64_t fingerprint = GetLittleEndian(header + 24, 8);
  if (vocab_size != static_cast<uint64_t>(vocab.size()) || fingerprint != Fingerprint(vocab)) {
    throw Error(name + ": written with another vocabulary");
  }
  if (width != static_cast<uint64_t>(BytesPerSymbol(vocab.size()))) {
    throw Error(name + ": " + std::to_string(width) + " bytes per symbol, expected " +
                std::to_string(BytesPerSymbol(vocab.size())));
  }
  if (count > (file_size - kHeaderBytes) / width || kHeaderBytes + count * width != file_size) {
    throw Error(name + ": truncated or overlong: header says " + std::to_string(count) +
                " symbols, file has " + std::to_string(file_size) + " bytes");
  }
  corpus.vocab_ = std::move(vocab);
  corpus.data_ = header + kHeaderBytes;
  corpus.size_ = count;
  corpus.bytes_per_symbol_ = static_cast<int>(width);
  for (size_t i = 0; i < corpus.size_; ++i) {
    if (corpus[i] >= corpus.vocab_.size()) {
      throw Error(name + ": id " + std::to_string(corpus[i]) + " at symbol " + std::to_string(i) +
                  " is outside the vocabulary");
    }
  }
  return corpus;
}

EncodedCorpus::EncodedCorpus(std::vector<int32_t> ids, Vocab vocab) : vocab_(std::move(vocab)) {
  memory_.resize(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || (vocab_.size() > 0 && ids[i] >= vocab_.size())) {
      throw Error("corpus: id " + std::to_string(ids[i]) + " at symbol " + std::to_string(i) +
                  " is outside the vocabulary");
    }
    PutLittleEndian(memory_.data() + 4 * i, static_cast<uint32_t>(ids[i]), 4);
  }
  data_ = memory_.data();
  size_ = ids.size();
  bytes_per_symbol_ = 4;
}

EncodedCorpus::EncodedCorpus(EncodedCorpus&& other) noexcept
    : vocab_(std::move(other.vocab_)),
      memory_(std::move(other.memory_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      bytes_per_symbol_(other.bytes_per_symbol_),
      replacements_(other.replacements_) {}

EncodedCorpus& EncodedCorpus::operator=(EncodedCorpus&& other) noexcept {
  if (this != &other) {
    Unmap();
    vocab_ = std::move(other.vocab_);
    memory_ = std::move(other.memory_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    bytes_per_symbol_ = other.bytes_per_symbol_;
    replacements_ = other.replacements_;
  }
  return *this;
}

EncodedCorpus::~EncodedCorpus() { Unmap(); }

void EncodedCorpus::Unmap() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  mapping_size_ = 0;
}

// ---------------------------------------------------------------------------------------------
// BatchStream

BatchStream::BatchStream(const EncodedCorpus& corpus, SymbolRange range, int batch_size,
                         int timesteps, bool allow_partial, std::optional<StreamShare> share)
    : corpus_(&corpus), range_(range), batch_size_(batch_size), share_(share.value_or(StreamShare{0, batch_size})),
      timesteps_(timesteps) {
  if (batch_size < 1 || timesteps < 1) {
    throw Error("batch size " + std::to_string(batch_size) + " and timesteps " +
                std::to_string(timesteps) + " must be at least 1");
  }
  if (share_.begin < 0 || share_.end > batch_size || share_.size() < 1) {
    throw Error("streams [" + std::to_string(share_.begin) + ", " + std::to_string(share_.end) +
                ") are not a share of a batch of " + std::to_string(batch_size));
  }
  if (range.begin > range.end || range.end > corpus.size()) {
    throw Error("symbol range [" + std::to_string(range.begin) + ", " + std::to_string(range.end) +
                ") is outside the corpus of " + std::to_string(corpus.size()) + " symbols");
  }
  const auto b = static_cast<size_t>(batch_size);
  const auto t = static_cast<size_t>(timesteps);
  const size_t needed = allow_partial ? b + 1 : b * t + 1;
  if (range.size() < needed) {
    throw Error("range of " + std::to_string(range.size()) +
                " symbols is too short: B=" + std::to_string(batch_size) +
                (allow_partial ? "" : ", T=" + std::to_string(timesteps)) + " needs at least " +
                std::to_string(needed));
  }
  stream_length_ = (range.size() - 1) / b;
  chunks_per_epoch_ = allow_partial ? (stream_length_ + t - 1) / t : stream_length_ / t;
}

int BatchStream::Next(Ids& inputs, Ids& targets) {
  if (chunk_ >= chunks_per_epoch_) return 0;
  const auto t_max = static_cast<size_t>(timesteps_);
  const size_t first = chunk_ * t_max;  // first timestep of the chunk within each stream
  const size_t steps = std::min(t_max, stream_length_ - first);
  const auto b0 = static_cast<size_t>(share_.begin), width = static_cast<size_t>(share_.size());
  const auto n = static_cast<Eigen::Index>(steps * width);
  if (inputs.size() != n) inputs.resize(n);
  if (targets.size() != n) targets.resize(n);
  for (size_t b = b0; b < b0 + width; ++b) {
    const size_t start = range_.begin + b * stream_length_ + first;
    for (size_t t = 0; t < steps; ++t) {
      const auto column = static_cast<Eigen::Index>(t * width + b - b0);
      inputs[column] = (*corpus_)[start + t];
      targets[column] = (*corpus_)[start + t + 1];
    }
  }
  ++chunk_;
  return static_cast<int>(steps);
}

void BatchStream::Seek(size_t chunk) {
  if (chunk > chunks_per_epoch_) {
    throw Error("chunk " + std::to_string(chunk) + " is beyond the epoch of " +
                std::to_string(chunks_per_epoch_) + " chunks");
  }
  chunk_ = chunk;
}

// ---------------------------------------------------------------------------------------------
// SummarizeCorpus

CorpusSummary SummarizeCorpus(const std::vector<std::string>& paths, const TokenizerOptions& options) {
  CorpusSummary summary;
  summary.files = ListCorpusFiles(paths);
  const std::vector<fs::path>& files = summary.files.files;
  // The ids file of a training run, in the temporary directory; removed on the way out.
  struct Remove {
    fs::path path;
    ~Remove() {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  } ids{fs::temp_directory_path() / ("bptt-tokenize-" + std::to_string(::getpid()) + ".ids")};
  const EncodedCorpus encoded = EncodedCorpus::Build(files, options, ids.path);
  summary.vocab = encoded.vocab();
  summary.symbols = encoded.size();
  summary.replacements = encoded.replacements();

  // The text segmented once more, symbol by symbol against the decoded ids.
  const Vocab& vocab = summary.vocab;
  uint64_t position = 0;
  bool mismatched = false;
  const SymbolSink check = [&](std::string_view symbol) {
    summary.text_bytes += symbol.size();
    const uint64_t i = position++;
    if (mismatched || i >= encoded.size()) return;
    const std::string& decoded = vocab.symbol(encoded[i]);
    if (decoded == symbol) return;
    if (encoded[i] == vocab.unknown_id() && !vocab.Find(symbol)) {
      ++summary.as_unknown;
      return;
    }
    mismatched = true;
    summary.mismatch = "symbol " + std::to_string(i) + " is \"" + DisplaySymbol(symbol) + "\" but decodes as \"" +
                       DisplaySymbol(decoded) + "\"";
  };
  Segmenter segmenter(vocab.options());
  for (const fs::path& file : files) {
    segmenter.Restart(file.string());
    ReadInPieces(file, [&](std::string_view piece) {
      summary.file_bytes += piece.size();
      segmenter.Feed(piece, check);
    });
    segmenter.Finish(check);
  }
  if (position != encoded.size() && !mismatched)
    summary.mismatch = "the text has " + std::to_string(position) + " symbols but the encoding " +
                       std::to_string(encoded.size());
  return summary;
}

}  // namespace bptt
