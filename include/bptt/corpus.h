// Corpus: text files turned into one stream of symbol ids, split into train, validation and
// test ranges, and cut into (T*B) chunks for truncated BPTT.
//
// EncodedCorpus::Build reads the files twice in pieces (once to count the vocabulary, once to
// encode), writes the ids to a compact file and memory-maps it read-only, so no corpus is held
// in memory as text or as int32. The EncodedCorpus owns its mapping (move-only) and its Vocab;
// a BatchStream reads an EncodedCorpus that must outlive it.
//
//   EncodedCorpus corpus = EncodedCorpus::Build(ListCorpusFiles({"corpora"}).files, {}, "ids.bin");
//   CorpusSplits splits = SplitCorpus(corpus.size(), 0.05, 0.05);
//   BatchStream train(corpus, splits.train, B, T);  Ids x, y;  while (train.Next(x, y) > 0) ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/batch.h"
#include "bptt/tensor.h"
#include "bptt/vocab.h"

namespace bptt {

// Why a directory walk leaves a file out of the corpus.
enum class SkipReason {
  kEmpty,    // no bytes
  kNotText,  // a NUL byte in the first kTextSampleBytes, or most of the non-ASCII bytes there
             // outside well-formed UTF-8 sequences (text in another encoding)
};
std::string_view SkipReasonName(SkipReason reason);  // "empty", "not text"

// Bytes at the start of a file that decide whether it is text; as with grep -I, the rest of the
// file is not looked at.
inline constexpr size_t kTextSampleBytes = 4096;

struct SkippedFile {
  std::filesystem::path path;
  SkipReason reason;
  std::string detail;  // e.g. "NUL byte at byte 12"; empty for kEmpty
};

// A corpus's files in reading order, and the files its directory walks left out.
struct CorpusFiles {
  std::vector<std::filesystem::path> files;
  std::vector<SkippedFile> skipped;  // in walk order
};

// The files named by `paths`, in order: a file as itself, a directory as every regular file
// below it (symbolic links are not followed) whose name and directories do not start with '.',
// sorted by path, except the empty and not-text files, which go to `skipped`. A file with a few
// ill-formed UTF-8 sequences is text: the tokenizer's OnInvalid decides what becomes of them.
// Throws bptt::Error for a missing path, a directory without text files, or a file named in
// `paths` that is empty or holds a NUL byte in its first kTextSampleBytes.
CorpusFiles ListCorpusFiles(const std::vector<std::string>& paths);

// A single text file named on a command line (`bptt eval`'s FILE, `bptt decay --corpus`): throws
// bptt::Error "PATH: ..." when it does not exist, is a directory or another kind of non-regular
// file, is empty, or holds a NUL byte in its first kTextSampleBytes.
void CheckTextFile(const std::filesystem::path& path);

// Calls `piece` with successive pieces of the file (1 MiB each, the last shorter); throws
// bptt::Error naming the path when it cannot be opened or read.
void ReadInPieces(const std::filesystem::path& path, const std::function<void(std::string_view)>& piece);

// "skipped N files: K empty, M not text", for a non-empty `skipped`.
std::string SkippedSummary(const std::vector<SkippedFile>& skipped);
// "PATH: REASON", or "PATH: REASON (DETAIL)".
std::string SkippedLine(const SkippedFile& file);
// Writes SkippedLine of each skipped file, one a line, to `list` (replacing it).
void WriteSkippedList(const std::vector<SkippedFile>& skipped, const std::filesystem::path& list);

// Symbols [begin, end) of the stream.
struct SymbolRange {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
};

// Consecutive ranges in stream order: train first, then validation, then test.
struct CorpusSplits {
  SymbolRange train;
  SymbolRange validation;
  SymbolRange test;
};

// Validation and test take floor(n * val_frac) and floor(n * test_frac) symbols from the end
// of the stream. Throws bptt::Error unless both fractions are in [0, 1) and sum below 1.
CorpusSplits SplitCorpus(size_t n, double val_frac, double test_frac);

// The corpus as symbol ids, on disk (memory-mapped) or in memory.
//
// The ids file is a 32-byte header, little-endian: "bpttids1", bytes per symbol (u32), V (u32),
// symbol count (u64), vocabulary fingerprint (u64); then each id in 1 byte when V <= 256,
// 2 bytes when V <= 65536, else 4.
class EncodedCorpus {
 public:
  // Files are concatenated in order, each segmented on its own (no separator is inserted).
  // The vocabulary is counted from the files, or is *given_vocab (e.g. on resume; its options
  // then replace `options`): a symbol not in it becomes "<unk>" if the vocabulary has one, and
  // is otherwise an error naming the file and the first few such symbols. The ids file is
  // written to a temporary name and renamed, so it is either complete or absent.
  static EncodedCorpus Build(const std::vector<std::filesystem::path>& files,
                             const TokenizerOptions& options, const std::filesystem::path& ids_path,
                             const Vocab* given_vocab = nullptr);
  // Maps an ids file written by Build with this vocabulary; throws bptt::Error if the file is
  // malformed or was written with another vocabulary.
  static EncodedCorpus Open(const std::filesystem::path& ids_path, Vocab vocab);

  // In memory; every id must be in [0, V) (any id >= 0 with an empty vocabulary).
  explicit EncodedCorpus(std::vector<int32_t> ids, Vocab vocab = Vocab());

  EncodedCorpus(EncodedCorpus&& other) noexcept;
  EncodedCorpus& operator=(EncodedCorpus&& other) noexcept;
  EncodedCorpus(const EncodedCorpus&) = delete;
  EncodedCorpus& operator=(const EncodedCorpus&) = delete;
  ~EncodedCorpus();

  size_t size() const { return size_; }
  int32_t operator[](size_t i) const {
    const unsigned char* p = data_ + i * static_cast<size_t>(bytes_per_symbol_);
    switch (bytes_per_symbol_) {
      case 1:
        return p[0];
      case 2:
        return static_cast<int32_t>(p[0] | (p[1] << 8));
      default:
        return static_cast<int32_t>(uint32_t{p[0]} | (uint32_t{p[1]} << 8) |
                                    (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24));
    }
  }
  const Vocab& vocab() const { return vocab_; }
  int bytes_per_symbol() const { return bytes_per_symbol_; }
  // Ill-formed UTF-8 sequences replaced by U+FFFD while building (OnInvalid::kReplace).
  size_t replacements() const { return replacements_; }

 private:
  EncodedCorpus() = default;
  void Unmap();

  Vocab vocab_;
  std::vector<unsigned char> memory_;  // the ids of an in-memory corpus, 4 bytes each
  void* mapping_ = nullptr;            // the mmap of an ids file
  size_t mapping_size_ = 0;
  const unsigned char* data_ = nullptr;  // first id
  size_t size_ = 0;
  int bytes_per_symbol_ = 4;
  size_t replacements_ = 0;
};

// What `bptt tokenize` shows of a corpus: its files, the vocabulary training would build from
// them, and whether the corpus as training encodes it (EncodedCorpus::Build, memory-mapped ids)
// decodes back to the normalised text, symbol by symbol.
struct CorpusSummary {
  CorpusFiles files;
  Vocab vocab;
  uint64_t file_bytes = 0;    // read from the files
  uint64_t text_bytes = 0;    // of the normalised text, the symbols' bytes
  uint64_t symbols = 0;       // in the encoded corpus
  size_t replacements = 0;    // ill-formed UTF-8 sequences replaced by U+FFFD
  uint64_t as_unknown = 0;    // words outside a max_vocab vocabulary, encoded and decoded as "<unk>"
  std::string mismatch;       // "" when decoding gives the text back (but for as_unknown); else
                              //   the first difference ("symbol 12 is "a" but decodes as "b"")
};

// Lists the files (ListCorpusFiles), encodes them as training does into an ids file in the
// temporary directory (removed again) and checks the encoding against a second segmentation of
// the files. Throws bptt::Error as ListCorpusFiles and EncodedCorpus::Build do.
CorpusSummary SummarizeCorpus(const std::vector<std::string>& paths, const TokenizerOptions& options);

// Chunks of one range for truncated BPTT with B streams of T timesteps.
//
// The range of n symbols is laid out as B contiguous streams of Ls = (n - 1) / B inputs:
// stream b reads inputs at range.begin + b*Ls + t and targets one symbol later, for t in
// [0, Ls). Chunk k covers t in [k*T, k*T + T); in inputs and targets, (T*B), element t*B + b is
// timestep t of stream b. Without allow_partial an epoch is floor(Ls / T) full chunks; with it
// (validation, to cover the whole range) the last chunk may be shorter.
// With a share (batch.h; every stream when none is given), only streams [share.begin, share.end) of the B are read: the columns
// are then t*S + (b - share.begin) for the S = share.size() streams of the share, the part of
// the whole chunk that one process of a distributed run trains on.
class BatchStream {
 public:
  // Throws bptt::Error if the range lies outside the corpus or is too short for one chunk
  // (B*T + 1 symbols, or B + 1 with allow_partial), or the share is not within [0, B).
  BatchStream(const EncodedCorpus& corpus, SymbolRange range, int batch_size, int timesteps,
              bool allow_partial = false, std::optional<StreamShare> share = std::nullopt);

  // Fills the next chunk (resizing inputs and targets to steps*S; S = B without a share) and
  // returns its timesteps `steps` (T, or fewer for a partial last chunk); 0 at the end of the
  // epoch.
  int Next(Ids& inputs, Ids& targets);
  void Rewind() { chunk_ = 0; }
  // The next Next() returns chunk `chunk`; chunk == chunks_per_epoch() is the end of the epoch.
  void Seek(size_t chunk);

  size_t chunk() const { return chunk_; }
  size_t chunks_per_epoch() const { return chunks_per_epoch_; }
  size_t stream_length() const { return stream_length_; }  // Ls
  int batch_size() const { return batch_size_; }
  StreamShare share() const { return share_; }
  int timesteps() const { return timesteps_; }

 private:
  const EncodedCorpus* corpus_;
  SymbolRange range_;
  int batch_size_;
  StreamShare share_;
  int timesteps_;
  size_t stream_length_ = 0;
  size_t chunks_per_epoch_ = 0;
  size_t chunk_ = 0;
};

}  // namespace bptt
