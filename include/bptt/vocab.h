// Tokenization: text is cut into symbols (extended grapheme clusters by default, or code points,
// bytes or words), and a Vocab maps each symbol to an id in [0, V).
//
// A Segmenter turns a stream of UTF-8 pieces into symbols without holding the whole text: it
// validates UTF-8 (with the absolute byte offset of any fault), drops a leading byte-order mark,
// normalises to NFC and cuts only at boundaries that later text cannot move, carrying the rest
// to the next piece. A VocabBuilder counts the symbols of a corpus and builds a Vocab, which
// owns its symbols and counts and is a plain value (copyable, JSON round trip).
//
//   Vocab vocab = VocabBuilder(options).Add(text).Build();
//   std::vector<int32_t> ids = vocab.Encode(text);  std::string back = vocab.Decode(ids);
//
// decode(encode(text)) == NFC(text) exactly (text itself for the byte unit, or with
// normalize = false), except for words outside a vocabulary cut by max_vocab, which decode as
// "<unk>".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bptt {

// What one symbol is.
enum class Unit {
  kGrapheme,   // an extended grapheme cluster (a user-perceived character, UAX #29)
  kCodepoint,  // one Unicode code point
  kByte,       // one byte of the UTF-8 encoding
  kWord,       // a UAX #29 word segment; spaces and punctuation are segments too
};

// What to do with bytes that are not well-formed UTF-8.
enum class OnInvalid {
  kError,    // throw bptt::Error "<source>: invalid UTF-8 at byte N"
  kReplace,  // replace each maximal ill-formed subsequence with U+FFFD and count it
};

// "grapheme", "codepoint", "byte" or "word"; nullopt for anything else.
std::optional<Unit> ParseUnit(std::string_view name);
std::string_view UnitName(Unit unit);

struct TokenizerOptions {
  Unit unit = Unit::kGrapheme;
  bool normalize = true;  // NFC (Unicode canonical composition); not for the byte unit
  size_t max_vocab = 0;   // word unit: V at most, the most frequent words plus "<unk>"; 0 = all
  OnInvalid on_invalid = OnInvalid::kError;
};

template <typename Options>
struct OptionSpec;  // options.h

// The tokenizer's options (--unit, --no-normalize, --max-vocab, --on-invalid), declared once
// (options.h) for every command that cuts text into symbols. --no-normalize with the byte unit
// and --max-vocab with a unit other than word are refused, since neither would change anything.
std::span<const OptionSpec<TokenizerOptions>> TokenizerOptionSpecs();
// "error" or "replace", and back; ParseOnInvalid throws bptt::Error naming `flag` for anything else.
std::string_view OnInvalidName(OnInvalid on_invalid);
OnInvalid ParseOnInvalid(std::string_view name, std::string_view flag);
// The unit named `name`; throws bptt::Error naming `flag` for anything else.
Unit ParseUnit(std::string_view name, std::string_view flag);

// The spelling of the unknown word (word unit with max_vocab only). Word segmentation splits
// "<unk>" in text into three segments, so it never collides with a word of the corpus.
inline constexpr std::string_view kUnknownSymbol = "<unk>";

// A symbol made printable for messages and listings: control characters and lone bytes are
// escaped ("\n", "\t", "\x1b"), everything else is kept.
std::string DisplaySymbol(std::string_view symbol);

// Receives each symbol; the view is valid only during the call.
using SymbolSink = std::function<void(std::string_view symbol)>;

// Streaming segmentation of one source (a file or a string) after another.
//
// Feed takes the next piece of the source and emits every symbol that is complete; the rest
// (an unfinished line, an incomplete UTF-8 sequence) waits for the next piece. Text is cut
// right after '\n', which is a grapheme and word boundary and an NFC-stable point, or, once
// more than kMaxPendingBytes wait without a line end, right before a space that follows a
// printable ASCII character. Finish ends the source. The symbols do not depend on how the
// source is cut into pieces.
class Segmenter {
 public:
  static constexpr size_t kMaxPendingBytes = size_t{1} << 20;

  // `source` names the text in error messages (normally its file path).
  explicit Segmenter(const TokenizerOptions& options, std::string source = "text");
  ~Segmenter();
  Segmenter(Segmenter&&) noexcept;
  Segmenter& operator=(Segmenter&&) noexcept;

  void Feed(std::string_view piece, const SymbolSink& emit);
  // Emits the remaining symbols and ends the source: the next Feed starts a new one, with byte
  // offsets and the byte-order mark check from the start.
  void Finish(const SymbolSink& emit);
  // Names the next source, dropping whatever is left of the current one.
  void Restart(std::string source);

  // Ill-formed subsequences replaced by U+FFFD so far, over all sources.
  size_t replacements() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Symbols in id order with their corpus counts. Ids follow the byte order of the symbols (the
// same corpus gives the same ids on every machine); "<unk>", when present, is id 0.
class Vocab {
 public:
  Vocab() = default;  // empty, V = 0
  // Throws bptt::Error (naming `source`) on an empty or duplicate symbol, a symbol that is not
  // one unit of `options` (e.g. two code points for the code point unit), mismatched counts,
  // or an unknown_id that is not a "<unk>" of a word vocabulary.
  Vocab(TokenizerOptions options, std::vector<std::string> symbols, std::vector<uint64_t> counts,
        int32_t unknown_id = -1, std::string_view source = "vocabulary");

  int32_t size() const { return static_cast<int32_t>(symbols_.size()); }
  const std::string& symbol(int32_t id) const { return symbols_[static_cast<size_t>(id)]; }
  uint64_t count(int32_t id) const { return counts_[static_cast<size_t>(id)]; }
  int32_t unknown_id() const { return unknown_id_; }  // -1 when there is none
  const TokenizerOptions& options() const { return options_; }
  std::optional<int32_t> Find(std::string_view symbol) const;
  // The ids of the n most frequent symbols (all of them when n >= V), most frequent first; ties
  // go to the lower id.
  std::vector<int32_t> MostFrequent(size_t n) const;

  // The ids of the symbols of `text`. A symbol not in the vocabulary becomes unknown_id() if
  // there is one; otherwise it is left out and listed once in *missing, or, with
  // missing == nullptr, bptt::Error names the first few.
  std::vector<int32_t> Encode(std::string_view text,
                              std::vector<std::string>* missing = nullptr) const;
  // Concatenated symbols; throws bptt::Error on an id outside [0, V).
  std::string Decode(std::span<const int32_t> ids) const;

  // {"unit", "normalize", "max_vocab", "on_invalid", "unknown_id", "symbols", "counts"}.
  // Symbols are JSON strings (UTF-8), except for the byte unit, where each is its byte value
  // 0-255, since a lone byte above 0x7f is not a string.
  nlohmann::json ToJson() const;
  // Validates as the constructor does, plus types and field names.
  static Vocab FromJson(const nlohmann::json& json, std::string_view source = "vocabulary");

 private:
  TokenizerOptions options_;
  std::vector<std::string> symbols_;
  std::vector<uint64_t> counts_;
  int32_t unknown_id_ = -1;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<int32_t> byte_ids_;  // (256) id of each one-byte symbol, -1 if absent
};

// Counts symbols over any number of sources and builds the Vocab.
//
//   VocabBuilder builder(options);
//   builder.Begin("a.txt"); builder.Feed(piece); ...; builder.End();
//   Vocab vocab = builder.Build();
class VocabBuilder {
 public:
  explicit VocabBuilder(const TokenizerOptions& options);

  // Starts a source named `source` (for error messages).
  void Begin(std::string source);
  void Feed(std::string_view piece);
  void End();
  // A whole source at once: Begin(source), Feed(text), End().
  VocabBuilder& Add(std::string_view text, std::string source = "text");

  // Symbols sorted by bytes. Word unit with max_vocab > 0: "<unk>" (id 0, counting every
  // dropped word) plus the max_vocab - 1 most frequent words (ties broken by bytes).
  Vocab Build() const;

  size_t replacements() const { return segmenter_.replacements(); }

 private:
  void Count(std::string_view symbol);

  TokenizerOptions options_;
  Segmenter segmenter_;
  std::array<uint64_t, 256> byte_counts_{};           // one-byte symbols
  std::unordered_map<std::string, uint64_t> counts_;  // longer symbols
};

}  // namespace bptt
