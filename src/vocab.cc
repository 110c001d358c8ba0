#include "bptt/vocab.h"

#include <unicode/brkiter.h>
#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/utext.h>

#include <algorithm>
#include <numeric>
#include <nlohmann/json.hpp>
#include <utility>

#include "bptt/error.h"
#include "bptt/options.h"
#include "utf8.h"

namespace bptt {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t kMissingNamed = 5;  // symbols named in a "not in the vocabulary" message

// Bytes in the UTF-8 sequence that starts with `lead` (already known to be well formed).
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

size_t CountCodepoints(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// True for a JSON integer >= 0, whether stored signed or unsigned.
bool IsNonNegativeInteger(const nlohmann::json& j) {
  return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0);
}

void CheckIcu(UErrorCode status, std::string_view what) {
  if (U_FAILURE(status)) {
    throw Error("ICU " + std::string(what) + " failed: " + u_errorName(status));
  }
}

// "a", "b", "c" for the first kMissingNamed symbols.
std::string NameSymbols(const std::vector<std::string>& symbols) {
  std::string names;
  for (size_t i = 0; i < symbols.size() && i < kMissingNamed; ++i) {
    if (i > 0) names += ", ";
    names += '"' + DisplaySymbol(symbols[i]) + '"';
  }
  if (symbols.size() > kMissingNamed) names += ", ...";
  return names;
}

}  // namespace

std::optional<Unit> ParseUnit(std::string_view name) {
  if (name == "grapheme") return Unit::kGrapheme;
  if (name == "codepoint") return Unit::kCodepoint;
  if (name == "byte") return Unit::kByte;
  if (name == "word") return Unit::kWord;
  return std::nullopt;
}

std::string_view UnitName(Unit unit) {
  switch (unit) {
    case Unit::kGrapheme:
      return "grapheme";
    case Unit::kCodepoint:
      return "codepoint";
    case Unit::kByte:
      return "byte";
    case Unit::kWord:
      return "word";
  }
  return "?";
}

Unit ParseUnit(std::string_view name, std::string_view flag) {
  if (const std::optional<Unit> unit = ParseUnit(name)) return *unit;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of grapheme, codepoint, byte, word");
}

std::string_view OnInvalidName(OnInvalid on_invalid) {
  return on_invalid == OnInvalid::kError ? "error" : "replace";
}

OnInvalid ParseOnInvalid(std::string_view name, std::string_view flag) {
  for (const OnInvalid o : {OnInvalid::kError, OnInvalid::kReplace})
    if (OnInvalidName(o) == name) return o;
  throw Error(std::string(flag) + " must be error or replace, got '" + std::string(name) + "'");
}

std::span<const OptionSpec<TokenizerOptions>> TokenizerOptionSpecs() {
  using T = TokenizerOptions;
  constexpr OnResume kFixed = OnResume::kFixed;
  const char* data = "Data";
  static const std::vector<OptionSpec<T>> specs = [&] {
    std::vector<OptionSpec<T>> s = {
        Choice<T>(0, "unit", "unit", data, "symbol unit: grapheme, codepoint, byte or word", kFixed,
                  [](T& t) -> auto& { return t.unit; }, UnitName,
                  [](const std::string& v, const std::string& f) { return ParseUnit(v, f); }),
        Restrict(Field<T>(0, "no-normalize", "normalize", data, "do not NFC-normalise the text", kFixed,
                          [](T& t) -> auto& { return t.normalize; }),
                 [](const T& t) { return t.unit == Unit::kByte ? "does not apply to --unit byte, which is never normalised" : ""; }),
        Restrict(Field<T>(0, "max-vocab", "max_vocab", data, "word unit: keep the most frequent words (0 = all)", kFixed,
                          [](T& t) -> auto& { return t.max_vocab; }),
                 [](const T& t) { return t.unit != Unit::kWord ? "applies to --unit word only" : ""; }),
        Choice<T>(0, "on-invalid", "on_invalid", data, "invalid UTF-8: error or replace (with U+FFFD)", kFixed,
                  [](T& t) -> auto& { return t.on_invalid; }, OnInvalidName,
                  [](const std::string& v, const std::string& f) { return ParseOnInvalid(v, f); }),
    };
    s[1].kind = OptionKind::kSwitchOff;
    return s;
  }();
  return specs;
}

std::string DisplaySymbol(std::string_view symbol) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  while (!symbol.empty()) {
    const int n = CheckUtf8Sequence(symbol);
    const auto c = static_cast<unsigned char>(symbol[0]);
    if (n <= 0 || c < 0x20 || c == 0x7F) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else {
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
      }
      symbol.remove_prefix(1);
    } else {
      if (c == '\\') out += '\\';
      out.append(symbol.substr(0, static_cast<size_t>(n)));
      symbol.remove_prefix(static_cast<size_t>(n));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Segmenter

class Segmenter::Impl {
 public:
  Impl(const TokenizerOptions& options, std::string source)
      : options_(options), source_(std::move(source)) {
    UErrorCode status = U_ZERO_ERROR;
    if (options_.unit != Unit::kByte && options_.normalize) {
      nfc_ = icu::Normalizer2::getNFCInstance(status);
      CheckIcu(status, "NFC normalizer");
    }
    if (options_.unit == Unit::kGrapheme) {
      breaker_.reset(icu::BreakIterator::createCharacterInstance(icu::Locale::getRoot(), status));
    } else if (options_.unit == Unit::kWord) {
      breaker_.reset(icu::BreakIterator::createWordInstance(icu::Locale::getRoot(), status));
    }
    CheckIcu(status, "break iterator");
  }

  void Feed(std::string_view piece, const SymbolSink& emit) {
    raw_.append(piece);
    const size_t used = Validate(raw_, /*final=*/false);
    raw_.erase(0, used);
    raw_offset_ += used;

    size_t cut = 0;
    if (newline_scanned_ < pending_.size()) {
      const size_t newline = std::string_view(pending_).substr(newline_scanned_).rfind('\n');
      if (newline != std::string_view::npos) cut = newline_scanned_ + newline + 1;
      newline_scanned_ = pending_.size();
    }
    if (cut == 0 && pending_.size() > kMaxPendingBytes) cut = FindSpaceCut();
    if (cut > 0) {
      Segment(std::string_view(pending_).substr(0, cut), emit);
      pending_.erase(0, cut);
      newline_scanned_ = pending_.size();  // the cut was at the last candidate of each kind
      space_scanned_ = pending_.size();
    }
  }

  void Finish(const SymbolSink& emit) {
    Validate(raw_, /*final=*/true);
    raw_.clear();
    Segment(pending_, emit);
    Restart(std::move(source_));
  }

  void Restart(std::string source) {
    source_ = std::move(source);
    raw_.clear();
    raw_offset_ = 0;
    pending_.clear();
    newline_scanned_ = space_scanned_ = 0;
  }

  size_t replacements() const { return replacements_; }

 private:
  // Appends the well-formed UTF-8 of `in` to pending_ (dropping a byte-order mark at offset 0,
  // replacing or rejecting ill-formed bytes) and returns the bytes used: all of them when
  // `final`, otherwise all but an incomplete sequence at the end.
  size_t Validate(std::string_view in, bool final) {
    size_t i = 0;
    while (i < in.size()) {
      size_t ascii = i;
      while (ascii < in.size() && static_cast<unsigned char>(in[ascii]) < 0x80 && in[ascii] != 0) {
        ++ascii;
      }
      pending_.append(in.substr(i, ascii - i));
      i = ascii;
      if (i == in.size()) break;
      if (in[i] == 0) {
        throw Error(source_ + ": NUL byte at byte " + std::to_string(raw_offset_ + i) +
                    " (binary file?)");
      }
      int n = CheckUtf8Sequence(in.substr(i));
      if (n == 0) {
        if (!final) return i;
        n = -static_cast<int>(in.size() - i);  // the source ends inside a sequence
      }
      if (n > 0) {
        const std::string_view sequence = in.substr(i, static_cast<size_t>(n));
        if (!(raw_offset_ + i == 0 && sequence == "\xEF\xBB\xBF")) pending_.append(sequence);
        i += static_cast<size_t>(n);
        continue;
      }
      if (options_.on_invalid == OnInvalid::kError) {
        throw Error(source_ + ": invalid UTF-8 at byte " + std::to_string(raw_offset_ + i));
      }
      pending_.append(kReplacementCharacter);
      ++replacements_;
      i += static_cast<size_t>(-n);
    }
    return in.size();
  }

  // The last position p > 0 in pending_ with a space at p and a printable ASCII character at
  // p - 1, or 0. Cutting there separates graphemes, words and NFC runs: no rule joins a
  // printable ASCII character to a following space, and a space composes with nothing before.
  size_t FindSpaceCut() {
    const size_t from = std::max<size_t>(space_scanned_, 1);
    size_t cut = 0;
    for (size_t p = pending_.size(); p-- > from;) {
      if (pending_[p] == ' ' && pending_[p - 1] > ' ' && pending_[p - 1] < 0x7F) {
        cut = p;
        break;
      }
    }
    space_scanned_ = pending_.size();
    return cut;
  }

  // Emits the symbols of `text`, whose end is a safe boundary.
  void Segment(std::string_view text, const SymbolSink& emit) {
    if (text.empty()) return;
    if (options_.unit == Unit::kByte) {
      for (size_t i = 0; i < text.size(); ++i) emit(text.substr(i, 1));
      return;
    }
    if (nfc_ != nullptr) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
      if (!nfc_->isNormalizedUTF8(piece, status)) {
        CheckIcu(status, "NFC check");
        normalized_.clear();
        icu::StringByteSink<std::string> sink(&normalized_);
        nfc_->normalizeUTF8(0, piece, sink, nullptr, status);
        CheckIcu(status, "NFC normalization");
        text = normalized_;
      }
    }
    if (options_.unit == Unit::kCodepoint) {
      for (size_t i = 0; i < text.size();) {
        const size_t n = SequenceLength(static_cast<unsigned char>(text[i]));
        emit(text.substr(i, n));
        i += n;
      }
      return;
    }
    if (options_.unit == Unit::kWord) {
      Break(text, emit);
      return;
    }
    // Graphemes, line by line: in ASCII every character is a grapheme except CR LF, since no
    // ASCII character extends, prepends or joins; other lines go to the break iterator.
    while (!text.empty()) {
      const size_t newline = text.find('\n');
      const size_t length = newline == std::string_view::npos ? text.size() : newline + 1;
      const std::string_view line = text.substr(0, length);
      if (std::all_of(line.begin(), line.end(), [](char c) { return (c & 0x80) == 0; })) {
        for (size_t i = 0; i < line.size(); ++i) {
          const bool crlf = line[i] == '\r' && i + 1 < line.size() && line[i + 1] == '\n';
          emit(line.substr(i, crlf ? 2 : 1));
          i += crlf;
        }
      } else {
        Break(line, emit);
      }
      text.remove_prefix(length);
    }
  }

  // Emits the segments of `text` found by the break iterator.
  void Break(std::string_view text, const SymbolSink& emit) {
    UErrorCode status = U_ZERO_ERROR;
    UText utext = UTEXT_INITIALIZER;
    utext_openUTF8(&utext, text.data(), static_cast<int64_t>(text.size()), &status);
    CheckIcu(status, "UText");
    breaker_->setText(&utext, status);
    CheckIcu(status, "break iterator");
    int32_t begin = breaker_->first();
    for (int32_t end = breaker_->next(); end != icu::BreakIterator::DONE;
         begin = end, end = breaker_->next()) {
      emit(text.substr(static_cast<size_t>(begin), static_cast<size_t>(end - begin)));
    }
    utext_close(&utext);
  }

  TokenizerOptions options_;
  std::string source_;
  const icu::Normalizer2* nfc_ = nullptr;        // owned by ICU; null without normalisation
  std::unique_ptr<icu::BreakIterator> breaker_;  // grapheme and word units
  std::string raw_;             // bytes not yet validated: an incomplete sequence (at most 3 bytes)
  uint64_t raw_offset_ = 0;     // offset of raw_[0] in the source
  std::string pending_;         // valid UTF-8 not yet segmented
  size_t newline_scanned_ = 0;  // pending_[0, newline_scanned_) holds no '\n'
  size_t space_scanned_ = 0;    // pending_[0, space_scanned_) holds no space cut
  std::string normalized_;
  size_t replacements_ = 0;
};

Segmenter::Segmenter(const TokenizerOptions& options, std::string source)
    : impl_(std::make_unique<Impl>(options, std::move(source))) {}
Segmenter::~Segmenter() = default;
Segmenter::Segmenter(Segmenter&&) noexcept = default;
Segmenter& Segmenter::operator=(Segmenter&&) noexcept = default;

void Segmenter::Feed(std::string_view piece, const SymbolSink& emit) { impl_->Feed(piece, emit); }
void Segmenter::Finish(const SymbolSink& emit) { impl_->Finish(emit); }
void Segmenter::Restart(std::string source) { impl_->Restart(std::move(source)); }
size_t Segmenter::replacements() const { return impl_->replacements(); }

// ---------------------------------------------------------------------------------------------
// Vocab

Vocab::Vocab(TokenizerOptions options, std::vector<std::string> symbols,
             std::vector<uint64_t> counts, int32_t unknown_id, std::string_view source)
    : options_(options),
      symbols_(std::move(symbols)),
      counts_(std::move(counts)),
      unknown_id_(unknown_id),
      byte_ids_(256, -1) {
  const std::string where(source);
  if (counts_.size() != symbols_.size()) {
    throw Error(where + ": " + std::to_string(symbols_.size()) + " symbols but " +
                std::to_string(counts_.size()) + " counts");
  }
  if (symbols_.size() > static_cast<size_t>(INT32_MAX)) {
    throw Error(where + ": more than 2^31 - 1 symbols");
  }
  if (unknown_id_ < -1 || unknown_id_ >= size()) {
    throw Error(where + ": unknown_id " + std::to_string(unknown_id_) + " outside [-1, " +
                std::to_string(size()) + ")");
  }
  if (unknown_id_ >= 0 && (options_.unit != Unit::kWord || symbol(unknown_id_) != kUnknownSymbol)) {
    throw Error(where + ": unknown_id " + std::to_string(unknown_id_) +
                " must be \"<unk>\" of a word vocabulary");
  }
  ids_.reserve(symbols_.size());
  for (int32_t id = 0; id < size(); ++id) {
    const std::string& s = symbols_[static_cast<size_t>(id)];
    if (s.empty()) throw Error(where + ": symbol " + std::to_string(id) + " is empty");
    const bool unit_ok = [&] {
      switch (options_.unit) {
        case Unit::kByte:
          return s.size() == 1;
        case Unit::kCodepoint:
          return IsValidUtf8(s) && CountCodepoints(s) == 1;
        case Unit::kGrapheme:
        case Unit::kWord:
          return IsValidUtf8(s);
      }
      return false;
    }();
    if (!unit_ok) {
      throw Error(where + ": symbol " + std::to_string(id) + " \"" + DisplaySymbol(s) +
                  "\" is not one " + std::string(UnitName(options_.unit)) + " of UTF-8");
    }
    if (!ids_.emplace(s, id).second) {
      throw Error(where + ": duplicate symbol \"" + DisplaySymbol(s) + "\"");
    }
    if (s.size() == 1) byte_ids_[static_cast<unsigned char>(s[0])] = id;
  }
}

std::optional<int32_t> Vocab::Find(std::string_view symbol) const {
  if (symbol.size() == 1 && !byte_ids_.empty()) {
    const int32_t id = byte_ids_[static_cast<unsigned char>(symbol[0])];
    if (id < 0) return std::nullopt;
    return id;
  }
  const auto it = ids_.find(std::string(symbol));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::vector<int32_t> Vocab::MostFrequent(size_t n) const {
  std::vector<int32_t> ids(symbols_.size());
  std::iota(ids.begin(), ids.end(), 0);
  n = std::min(n, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(), [this](int32_t a, int32_t b) {
    return count(a) > count(b) || (count(a) == count(b) && a < b);
  });
  ids.resize(n);
  return ids;
}

std::vector<int32_t> Vocab::Encode(std::string_view text, std::vector<std::string>* missing) const {
  std::vector<int32_t> ids;
  std::vector<std::string> absent;
  Segmenter segmenter(options_);
  const SymbolSink emit = [&](std::string_view s) {
    if (const std::optional<int32_t> id = Find(s)) {
      ids.push_back(*id);
    } else if (unknown_id_ >= 0) {
      ids.push_back(unknown_id_);
    } else if (std::find(absent.begin(), absent.end(), s) == absent.end()) {
      absent.emplace_back(s);
    }
  };
  segmenter.Feed(text, emit);
  segmenter.Finish(emit);
  if (!absent.empty()) {
    if (missing == nullptr) {
      throw Error("text: " + std::to_string(absent.size()) +
                  " symbols not in the vocabulary: " + NameSymbols(absent));
    }
    missing->insert(missing->end(), absent.begin(), absent.end());
  }
  return ids;
}

std::string Vocab::Decode(std::span<const int32_t> ids) const {
  std::string text;
  for (const int32_t id : ids) {
    if (id < 0 || id >= size()) {
      throw Error("decode: id " + std::to_string(id) + " outside the vocabulary [0, " +
                  std::to_string(size()) + ")");
    }
    text += symbols_[static_cast<size_t>(id)];
  }
  return text;
}

nlohmann::json Vocab::ToJson() const {
  nlohmann::json symbols = nlohmann::json::array();
  for (const std::string& s : symbols_) {
    if (options_.unit == Unit::kByte) {
      symbols.push_back(static_cast<unsigned char>(s[0]));
    } else {
      symbols.push_back(s);
    }
  }
  return {
      {"unit", UnitName(options_.unit)},
      {"normalize", options_.normalize},
      {"max_vocab", options_.max_vocab},
      {"on_invalid", OnInvalidName(options_.on_invalid)},
      {"unknown_id", unknown_id_},
      {"symbols", std::move(symbols)},
      {"counts", counts_},
  };
}

Vocab Vocab::FromJson(const nlohmann::json& json, std::string_view source) {
  const std::string where(source);
  if (!json.is_object()) throw Error(where + ": vocabulary is not a JSON object");
  const auto field = [&](const char* name) -> const nlohmann::json& {
    const auto it = json.find(name);
    if (it == json.end()) throw Error(where + ": vocabulary has no \"" + name + "\"");
    return *it;
  };
  const auto wrong_type = [&](const std::string& name, const char* expected) {
    return Error(where + ": vocabulary \"" + name + "\" is not " + expected);
  };

  TokenizerOptions options;
  const nlohmann::json& unit = field("unit");
  if (!unit.is_string()) throw wrong_type("unit", "a string");
  const std::optional<Unit> parsed = ParseUnit(unit.get<std::string>());
  if (!parsed) throw Error(where + ": unknown unit \"" + unit.get<std::string>() + "\"");
  options.unit = *parsed;
  const nlohmann::json& normalize = field("normalize");
  if (!normalize.is_boolean()) throw wrong_type("normalize", "true or false");
  options.normalize = normalize.get<bool>();
  const nlohmann::json& max_vocab = field("max_vocab");
  if (!IsNonNegativeInteger(max_vocab)) throw wrong_type("max_vocab", "a non-negative integer");
  options.max_vocab = max_vocab.get<size_t>();
  const nlohmann::json& on_invalid = field("on_invalid");
  if (on_invalid == "error" || on_invalid == "replace") {
    options.on_invalid = ParseOnInvalid(on_invalid.get<std::string>(), "on_invalid");
  } else {
    throw wrong_type("on_invalid", "\"error\" or \"replace\"");
  }
  const nlohmann::json& unknown_id = field("unknown_id");
  if (!unknown_id.is_number_integer()) throw wrong_type("unknown_id", "an integer");

  const nlohmann::json& symbols = field("symbols");
  const nlohmann::json& counts = field("counts");
  if (!symbols.is_array()) throw wrong_type("symbols", "an array");
  if (!counts.is_array()) throw wrong_type("counts", "an array");
  std::vector<std::string> symbol_list;
  symbol_list.reserve(symbols.size());
  for (size_t i = 0; i < symbols.size(); ++i) {
    const nlohmann::json& s = symbols[i];
    const std::string name = "symbols[" + std::to_string(i) + "]";
    if (options.unit == Unit::kByte) {
      if (!IsNonNegativeInteger(s) || s.get<uint64_t>() > 255)
        throw wrong_type(name, "a byte 0-255");
      symbol_list.emplace_back(1, static_cast<char>(s.get<uint64_t>()));
    } else {
      if (!s.is_string()) throw wrong_type(name, "a string");
      symbol_list.push_back(s.get<std::string>());
    }
  }
  std::vector<uint64_t> count_list;
  count_list.reserve(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    if (!IsNonNegativeInteger(counts[i])) {
      throw wrong_type("counts[" + std::to_string(i) + "]", "a non-negative integer");
    }
    count_list.push_back(counts[i].get<uint64_t>());
  }
  const int64_t unknown = unknown_id.get<int64_t>();
  if (unknown < -1 || unknown > INT32_MAX) throw wrong_type("unknown_id", "-1 or a symbol id");
  return Vocab(options, std::move(symbol_list), std::move(count_list),
               static_cast<int32_t>(unknown), source);
}

// ---------------------------------------------------------------------------------------------
// VocabBuilder

VocabBuilder::VocabBuilder(const TokenizerOptions& options)
    : options_(options), segmenter_(options) {
  if (options_.max_vocab == 1) {
    throw Error("max_vocab must be 0 (no limit) or at least 2 (\"<unk>\" and one word)");
  }
}

void VocabBuilder::Begin(std::string source) { segmenter_.Restart(std::move(source)); }

void VocabBuilder::Feed(std::string_view piece) {
  segmenter_.Feed(piece, [this](std::string_view s) { Count(s); });
}

void VocabBuilder::End() {
  segmenter_.Finish([this](std::string_view s) { Count(s); });
}

void VocabBuilder::Count(std::string_view symbol) {
  if (symbol.size() == 1) {
    ++byte_counts_[static_cast<unsigned char>(symbol[0])];
  } else {
    ++counts_[std::string(symbol)];
  }
}

VocabBuilder& VocabBuilder::Add(std::string_view text, std::string source) {
  Begin(std::move(source));
  Feed(text);
  End();
  return *this;
}

Vocab VocabBuilder::Build() const {
  std::vector<std::pair<std::string, uint64_t>> entries(counts_.begin(), counts_.end());
  for (size_t byte = 0; byte < byte_counts_.size(); ++byte) {
    if (byte_counts_[byte] > 0)
      entries.emplace_back(std::string(1, static_cast<char>(byte)), byte_counts_[byte]);
  }
  const bool limited = options_.unit == Unit::kWord && options_.max_vocab > 0;
  uint64_t unknown_count = 0;
  if (limited && entries.size() > options_.max_vocab - 1) {
    const auto more_frequent = [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    };
    const auto keep = entries.begin() + static_cast<std::ptrdiff_t>(options_.max_vocab - 1);
    std::nth_element(entries.begin(), keep, entries.end(), more_frequent);
    for (auto it = keep; it != entries.end(); ++it) unknown_count += it->second;
    entries.erase(keep, entries.end());
  }
  std::sort(entries.begin(), entries.end());
  std::vector<std::string> symbols;
  std::vector<uint64_t> counts;
  if (limited) {
    symbols.emplace_back(kUnknownSymbol);
    counts.push_back(unknown_count);
  }
  for (auto& [symbol, count] : entries) {
    symbols.push_back(std::move(symbol));
    counts.push_back(count);
  }
  return Vocab(options_, std::move(symbols), std::move(counts), limited ? 0 : -1);
}

}  // namespace bptt
