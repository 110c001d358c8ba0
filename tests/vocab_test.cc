// Segmentation, normalisation, invalid input and the vocabulary, against expectations written
// out by hand from the Unicode rules (UAX #29 segmentation, UAX #15 NFC).
#include "bptt/vocab.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

using Symbols = std::vector<std::string>;

TokenizerOptions Options(Unit unit, bool normalize = true) {
  TokenizerOptions options;
  options.unit = unit;
  options.normalize = normalize;
  return options;
}

// The symbols of `text` fed to a Segmenter in pieces of `piece` bytes (0 = all at once).
Symbols Segment(std::string_view text, const TokenizerOptions& options, size_t piece = 0) {
  Symbols symbols;
  Segmenter segmenter(options, "test.txt");
  const SymbolSink emit = [&](std::string_view s) { symbols.emplace_back(s); };
  if (piece == 0) piece = text.size() + 1;
  for (size_t i = 0; i < text.size(); i += piece) segmenter.Feed(text.substr(i, piece), emit);
  segmenter.Finish(emit);
  return symbols;
}

// Builds the vocabulary of `text` and checks decode(encode(text)) == expected.
void ExpectRoundTrip(std::string_view text, const TokenizerOptions& options,
                     std::string_view expected) {
  const Vocab vocab = VocabBuilder(options).Add(text).Build();
  const std::vector<int32_t> ids = vocab.Encode(text);
  EXPECT_EQ(vocab.Decode(ids), expected) << "unit " << UnitName(options.unit);
}

// Text exercising every kind of segment: combining marks, Hangul jamo, emoji ZWJ sequences,
// skin tones, flags, CJK, Hebrew, Arabic, CRLF, tabs, digits and punctuation.
const std::string kMixed =
    "Cafe\u0301 \u1100\u1161 na\u00efve\r\n"
    "\U0001F468\u200D\U0001F469\u200D\U0001F467 family \U0001F44D\U0001F3FD\n"
    "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA flags\t\u6F22\u5B57\u304B\u306A\n"
    "\u05E9\u05DC\u05D5\u05DD \u0645\u0631\u062D\u0628\u0627 3.14 don't stop.\n"
    "last line without newline \u00e9";

TEST(UnitTest, NamesRoundTrip) {
  for (const Unit unit : {Unit::kGrapheme, Unit::kCodepoint, Unit::kByte, Unit::kWord}) {
    EXPECT_EQ(ParseUnit(UnitName(unit)), unit);
  }
  EXPECT_EQ(ParseUnit("char"), std::nullopt);
  EXPECT_EQ(TokenizerOptions().unit, Unit::kGrapheme);
  EXPECT_TRUE(TokenizerOptions().normalize);
}

TEST(SegmenterTest, CombiningMarkIsComposedByNfc) {
  EXPECT_EQ(Segment("e\u0301", Options(Unit::kGrapheme)), (Symbols{"\u00e9"}));
  EXPECT_EQ(Segment("e\u0301", Options(Unit::kCodepoint)), (Symbols{"\u00e9"}));
  // Without normalisation: one grapheme of two code points.
  EXPECT_EQ(Segment("e\u0301", Options(Unit::kGrapheme, false)), (Symbols{"e\u0301"}));
  EXPECT_EQ(Segment("e\u0301", Options(Unit::kCodepoint, false)), (Symbols{"e", "\u0301"}));
  // Conjoining Hangul jamo compose to one syllable.
  EXPECT_EQ(Segment("\u1100\u1161", Options(Unit::kCodepoint)), (Symbols{"\uAC00"}));
  // Canonical reordering: dot below (ccc 220) goes before acute (ccc 230), then q has no
  // precomposed form with either.
  EXPECT_EQ(Segment("q\u0301\u0323", Options(Unit::kGrapheme)), (Symbols{"q\u0323\u0301"}));
}

TEST(SegmenterTest, GraphemeClusters) {
  const std::string family = "\U0001F468\u200D\U0001F469\u200D\U0001F467";
  EXPECT_EQ(Segment(family, Options(Unit::kGrapheme)), (Symbols{family}));
  EXPECT_EQ(Segment(family, Options(Unit::kCodepoint)).size(), 5u);
  EXPECT_EQ(Segment("\U0001F44D\U0001F3FD", Options(Unit::kGrapheme)),
            (Symbols{"\U0001F44D\U0001F3FD"}));
  // Regional indicators pair up into flags.
  EXPECT_EQ(Segment("\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA", Options(Unit::kGrapheme)),
            (Symbols{"\U0001F1EB\U0001F1F7", "\U0001F1E9\U0001F1EA"}));
  EXPECT_EQ(Segment("\u6F22\u5B57", Options(Unit::kGrapheme)), (Symbols{"\u6F22", "\u5B57"}));
  EXPECT_EQ(Segment("\u05E9\u05DC\u05D5\u05DD", Options(Unit::kGrapheme)),
            (Symbols{"\u05E9", "\u05DC", "\u05D5", "\u05DD"}));
  EXPECT_EQ(Segment("\u0645\u0631\u062D\u0628\u0627", Options(Unit::kGrapheme)),
            (Symbols{"\u0645", "\u0631", "\u062D", "\u0628", "\u0627"}));
  EXPECT_EQ(Segment("a\r\nb\n", Options(Unit::kGrapheme)), (Symbols{"a", "\r\n", "b", "\n"}));
  // ASCII lines and lines with other characters follow the same rules.
  EXPECT_EQ(Segment("a\rb\r\n\r\n\r", Options(Unit::kGrapheme)),
            (Symbols{"a", "\r", "b", "\r\n", "\r\n", "\r"}));
  EXPECT_EQ(Segment("\u00e9\rb\r\n\r\u00e9\r", Options(Unit::kGrapheme)),
            (Symbols{"\u00e9", "\r", "b", "\r\n", "\r", "\u00e9", "\r"}));
}

TEST(SegmenterTest, BytesAreRawAndNotNormalised) {
  EXPECT_EQ(Segment("\u00e9", Options(Unit::kByte)), (Symbols{"\xC3", "\xA9"}));
  EXPECT_EQ(Segment("e\u0301", Options(Unit::kByte)), (Symbols{"e", "\xCC", "\x81"}));
  EXPECT_EQ(Segment("a\r\n", Options(Unit::kByte)), (Symbols{"a", "\r", "\n"}));
}

TEST(SegmenterTest, WordsKeepSpacesAndPunctuation) {
  EXPECT_EQ(Segment("Hello, world! 3.14 don't\r\n\u6F22\u5B57", Options(Unit::kWord)),
            (Symbols{"Hello", ",", " ", "world", "!", " ", "3.14", " ", "don't", "\r\n",
                     "\u6F22\u5B57"}));
  EXPECT_EQ(Segment("a  b", Options(Unit::kWord)), (Symbols{"a", "  ", "b"}));
  EXPECT_EQ(Segment("<unk>", Options(Unit::kWord)), (Symbols{"<", "unk", ">"}));
}

TEST(SegmenterTest, RoundTripEveryUnit) {
  const std::string nfc_mixed =
      "Caf\u00e9 \uAC00 na\u00efve\r\n"
      "\U0001F468\u200D\U0001F469\u200D\U0001F467 family \U0001F44D\U0001F3FD\n"
      "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA flags\t\u6F22\u5B57\u304B\u306A\n"
      "\u05E9\u05DC\u05D5\u05DD \u0645\u0631\u062D\u0628\u0627 3.14 don't stop.\n"
      "last line without newline \u00e9";
  for (const Unit unit : {Unit::kGrapheme, Unit::kCodepoint, Unit::kWord}) {
    ExpectRoundTrip(kMixed, Options(unit), nfc_mixed);
    ExpectRoundTrip(kMixed, Options(unit, false), kMixed);
  }
  ExpectRoundTrip(kMixed, Options(Unit::kByte), kMixed);
}

TEST(SegmenterTest, PiecesGiveTheSameSymbolsAsOnePiece) {
  for (const Unit unit : {Unit::kGrapheme, Unit::kCodepoint, Unit::kByte, Unit::kWord}) {
    const Symbols whole = Segment(kMixed, Options(unit));
    for (size_t piece = 1; piece <= 9; ++piece) {
      EXPECT_EQ(Segment(kMixed, Options(unit), piece), whole)
          << UnitName(unit) << " in pieces of " << piece;
    }
  }
  // A multibyte character split across pieces, and a combining mark in the next piece.
  Symbols symbols;
  Segmenter segmenter(Options(Unit::kGrapheme), "test.txt");
  const SymbolSink emit = [&](std::string_view s) { symbols.emplace_back(s); };
  segmenter.Feed("x\n\xF0\x9F", emit);
  EXPECT_EQ(symbols, (Symbols{"x", "\n"}));
  segmenter.Feed(
      "\x91\x8D"
      "e",
      emit);
  segmenter.Feed("\xCC", emit);
  segmenter.Feed("\x81\n", emit);
  EXPECT_EQ(symbols, (Symbols{"x", "\n", "\U0001F44D", "\u00e9", "\n"}));
  segmenter.Finish(emit);
  EXPECT_EQ(symbols.size(), 5u);
}

TEST(SegmenterTest, LongLineIsCutAtASpace) {
  // More than kMaxPendingBytes without a line end: cut before a space instead. Symbols are
  // compared joined by '|', which the text does not contain.
  std::string text, nfc;
  while (text.size() <= Segmenter::kMaxPendingBytes + 5000) {
    text += "ab\u00e9 cd  e\u0301f. ";
    nfc += "ab\u00e9 cd  \u00e9f. ";
  }
  for (const Unit unit : {Unit::kGrapheme, Unit::kWord}) {
    std::string whole, pieces;
    Segmenter one(Options(unit)), many(Options(unit));
    const SymbolSink to_whole = [&](std::string_view s) { (whole += s) += '|'; };
    const SymbolSink to_pieces = [&](std::string_view s) { (pieces += s) += '|'; };
    one.Feed(text, to_whole);
    one.Finish(to_whole);
    for (size_t i = 0; i < text.size(); i += 4093) {
      many.Feed(std::string_view(text).substr(i, 4093), to_pieces);
    }
    EXPECT_GT(pieces.size(), Segmenter::kMaxPendingBytes) << "no cut before the end";
    many.Finish(to_pieces);
    EXPECT_EQ(pieces, whole) << UnitName(unit);
    std::erase(whole, '|');
    EXPECT_EQ(whole, nfc) << UnitName(unit);
  }
}

TEST(SegmenterTest, InvalidUtf8IsAnErrorWithItsAbsoluteOffset) {
  const TokenizerOptions options = Options(Unit::kGrapheme);
  EXPECT_EQ(ErrorOf([&] {
              Segment(
                  "abc\xFF"
                  "def",
                  options);
            }),
            "test.txt: invalid UTF-8 at byte 3");
  EXPECT_EQ(ErrorOf([&] {
              Segment(
                  "0123456789\n"
                  "ab\xC3(",
                  options, 11);
            }),
            "test.txt: invalid UTF-8 at byte 13");
  // Surrogates, overlong forms, code points above U+10FFFF, a lone continuation byte.
  EXPECT_EQ(ErrorOf([&] { Segment("a\xED\xA0\x80", options); }),
            "test.txt: invalid UTF-8 at byte 1");
  EXPECT_EQ(ErrorOf([&] { Segment("ab\xC0\xAF", options); }), "test.txt: invalid UTF-8 at byte 2");
  EXPECT_EQ(ErrorOf([&] { Segment("\xF4\x90\x80\x80", options); }),
            "test.txt: invalid UTF-8 at byte 0");
  EXPECT_EQ(ErrorOf([&] { Segment("abcd\x80", options); }), "test.txt: invalid UTF-8 at byte 4");
  // A sequence cut off by the end of the text, fed in one piece or byte by byte.
  EXPECT_EQ(ErrorOf([&] { Segment("ab\xE2\x82", options); }), "test.txt: invalid UTF-8 at byte 2");
  EXPECT_EQ(ErrorOf([&] { Segment("ab\xE2\x82", options, 1); }),
            "test.txt: invalid UTF-8 at byte 2");
  // The same offsets for every unit.
  EXPECT_EQ(ErrorOf([&] { Segment("abc\xFF", Options(Unit::kByte)); }),
            "test.txt: invalid UTF-8 at byte 3");
}

TEST(SegmenterTest, InvalidUtf8IsReplacedAndCounted) {
  TokenizerOptions options = Options(Unit::kCodepoint);
  options.on_invalid = OnInvalid::kReplace;
  Segmenter segmenter(options, "test.txt");
  std::string text;
  const SymbolSink emit = [&](std::string_view s) { text += s; };
  // \xE2\x82 is one maximal ill-formed subpart (one U+FFFD); \xC0\xAF is two.
  segmenter.Feed(
      "a\xFF"
      "b\xE2\x82"
      "c\xC0\xAF"
      "d\xF0\x9F\x98",
      emit);
  segmenter.Finish(emit);
  EXPECT_EQ(text, "a\uFFFDb\uFFFDc\uFFFD\uFFFDd\uFFFD");
  EXPECT_EQ(segmenter.replacements(), 5u);

  const Vocab vocab = VocabBuilder(options).Add("\xFFok").Build();
  EXPECT_EQ(vocab.Decode(vocab.Encode("o\xFFk")), "o\uFFFDk");
}

TEST(SegmenterTest, ByteOrderMarkAtTheStartIsDropped) {
  const TokenizerOptions options = Options(Unit::kGrapheme);
  EXPECT_EQ(Segment("\xEF\xBB\xBFhi", options), (Symbols{"h", "i"}));
  EXPECT_EQ(Segment("\xEF\xBB\xBFhi", options, 1), (Symbols{"h", "i"}));
  EXPECT_EQ(Segment("\xEF\xBB\xBFhi", Options(Unit::kByte)), (Symbols{"h", "i"}));
  // Elsewhere U+FEFF is text.
  EXPECT_EQ(Segment("h\xEF\xBB\xBFi", Options(Unit::kCodepoint)), (Symbols{"h", "\uFEFF", "i"}));
  // Each source starts afresh.
  Symbols symbols;
  Segmenter segmenter(options, "a.txt");
  const SymbolSink emit = [&](std::string_view s) { symbols.emplace_back(s); };
  segmenter.Feed(
      "\xEF\xBB\xBF"
      "a",
      emit);
  segmenter.Finish(emit);
  segmenter.Restart("b.txt");
  segmenter.Feed(
      "\xEF\xBB\xBF"
      "b",
      emit);
  segmenter.Finish(emit);
  EXPECT_EQ(symbols, (Symbols{"a", "b"}));
}

TEST(SegmenterTest, NulByteIsRejected) {
  EXPECT_EQ(ErrorOf([] { Segment(std::string("ab\0c", 4), Options(Unit::kGrapheme)); }),
            "test.txt: NUL byte at byte 2 (binary file?)");
  EXPECT_EQ(ErrorOf([] { Segment(std::string("ab\n\xC3\0", 5), Options(Unit::kByte), 2); }),
            "test.txt: invalid UTF-8 at byte 3");
}

TEST(VocabTest, IdsFollowSymbolBytes) {
  const Vocab vocab = VocabBuilder(Options(Unit::kGrapheme)).Add("ba\u00e9\nab").Build();
  ASSERT_EQ(vocab.size(), 4);
  EXPECT_EQ(vocab.symbol(0), "\n");
  EXPECT_EQ(vocab.symbol(1), "a");
  EXPECT_EQ(vocab.symbol(2), "b");
  EXPECT_EQ(vocab.symbol(3), "\u00e9");
  EXPECT_EQ(vocab.count(1), 2u);
  EXPECT_EQ(vocab.count(3), 1u);
  EXPECT_EQ(vocab.Find("b"), 2);
  EXPECT_EQ(vocab.Find("z"), std::nullopt);
  EXPECT_EQ(vocab.unknown_id(), -1);
  EXPECT_EQ(vocab.Encode("ab\u00e9\n"), (std::vector<int32_t>{1, 2, 3, 0}));
}

TEST(VocabTest, MostFrequentFirstTiesToTheLowerId) {
  const Vocab vocab = VocabBuilder(Options(Unit::kGrapheme)).Add("abbcccdd").Build();  // a1 b2 c3 d2
  EXPECT_EQ(vocab.MostFrequent(3), (std::vector<int32_t>{2, 1, 3}));
  EXPECT_EQ(vocab.MostFrequent(10), (std::vector<int32_t>{2, 1, 3, 0}));
  EXPECT_TRUE(vocab.MostFrequent(0).empty());
}

TEST(VocabTest, MissingSymbols) {
  const Vocab vocab = VocabBuilder(Options(Unit::kGrapheme)).Add("abc").Build();
  std::vector<std::string> missing;
  EXPECT_EQ(vocab.Encode("abdxd", &missing), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(missing, (Symbols{"d", "x"}));
  EXPECT_EQ(ErrorOf([&] { vocab.Encode("a\tb"); }),
            "text: 1 symbols not in the vocabulary: \"\\t\"");
  EXPECT_EQ(ErrorOf([&] {
              vocab.Decode(std::vector<int32_t>{0, 3});
            }),
            "decode: id 3 outside the vocabulary [0, 3)");
}

TEST(VocabTest, WordVocabularyWithMaxVocabHasUnknown) {
  TokenizerOptions options = Options(Unit::kWord);
  options.max_vocab = 4;
  const Vocab vocab = VocabBuilder(options).Add("a a a b b c d").Build();
  // " " x6, "a" x3, "b" x2 are kept; "c" and "d" count for "<unk>".
  ASSERT_EQ(vocab.size(), 4);
  EXPECT_EQ(vocab.unknown_id(), 0);
  EXPECT_EQ(vocab.symbol(0), "<unk>");
  EXPECT_EQ(vocab.count(0), 2u);
  EXPECT_EQ(vocab.symbol(1), " ");
  EXPECT_EQ(vocab.count(1), 6u);
  EXPECT_EQ(vocab.symbol(2), "a");
  EXPECT_EQ(vocab.symbol(3), "b");
  EXPECT_EQ(vocab.Encode("a c"), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(vocab.Decode(vocab.Encode("b zebra a")), "b <unk> a");

  // Ties are broken by bytes: of "x" and "y" (one each), "x" is kept.
  options.max_vocab = 3;
  const Vocab tied = VocabBuilder(options).Add("y x").Build();
  EXPECT_EQ(tied.size(), 3);
  EXPECT_EQ(tied.Find("x"), 2);
  EXPECT_EQ(tied.Find("y"), std::nullopt);

  options.max_vocab = 1;
  EXPECT_NE(ErrorOf([&] { VocabBuilder builder(options); }), "");
  options.max_vocab = 0;
  EXPECT_EQ(VocabBuilder(options).Add("a a a b b c d").Build().unknown_id(), -1);
}

TEST(VocabTest, JsonRoundTripIsExact) {
  TokenizerOptions word = Options(Unit::kWord);
  word.max_vocab = 3;
  TokenizerOptions replace = Options(Unit::kCodepoint, false);
  replace.on_invalid = OnInvalid::kReplace;
  for (const TokenizerOptions& options :
       {Options(Unit::kGrapheme), Options(Unit::kByte), word, replace}) {
    const Vocab vocab = VocabBuilder(options).Add(kMixed).Build();
    const std::string text = vocab.ToJson().dump();
    const Vocab back = Vocab::FromJson(nlohmann::json::parse(text));
    ASSERT_EQ(back.size(), vocab.size());
    for (int32_t id = 0; id < vocab.size(); ++id) {
      EXPECT_EQ(back.symbol(id), vocab.symbol(id));
      EXPECT_EQ(back.count(id), vocab.count(id));
    }
    EXPECT_EQ(back.unknown_id(), vocab.unknown_id());
    EXPECT_EQ(back.options().unit, options.unit);
    EXPECT_EQ(back.options().normalize, options.normalize);
    EXPECT_EQ(back.options().max_vocab, options.max_vocab);
    EXPECT_EQ(back.options().on_invalid, options.on_invalid);
    EXPECT_EQ(back.ToJson().dump(), text);
  }
  const nlohmann::json bytes = VocabBuilder(Options(Unit::kByte)).Add("\u00e9").Build().ToJson();
  EXPECT_EQ(bytes["symbols"], nlohmann::json::parse("[169, 195]"));
}

TEST(VocabTest, FromJsonRejectsBadInput) {
  const nlohmann::json good = VocabBuilder(Options(Unit::kGrapheme)).Add("ab").Build().ToJson();
  const auto error = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json bad = good;
    if (value.is_discarded()) {
      bad.erase(key);
    } else {
      bad[key] = value;
    }
    return ErrorOf([&] { Vocab::FromJson(bad, "model.json"); });
  };
  EXPECT_EQ(ErrorOf([&] { Vocab::FromJson(good, "model.json"); }), "");
  EXPECT_EQ(error("symbols", nlohmann::json::array({"a", "a"})),
            "model.json: duplicate symbol \"a\"");
  EXPECT_EQ(error("symbols", nlohmann::json::array({"a", ""})), "model.json: symbol 1 is empty");
  EXPECT_EQ(error("symbols", nlohmann::json::array({"a", 5})),
            "model.json: vocabulary \"symbols[1]\" is not a string");
  EXPECT_EQ(error("symbols", "ab"), "model.json: vocabulary \"symbols\" is not an array");
  EXPECT_EQ(error("symbols", nlohmann::json::array({"a"})), "model.json: 1 symbols but 2 counts");
  EXPECT_EQ(error("counts", nlohmann::json::array({1, -1})),
            "model.json: vocabulary \"counts[1]\" is not a non-negative integer");
  EXPECT_EQ(error("unit", "char"), "model.json: unknown unit \"char\"");
  EXPECT_EQ(error("normalize", 1), "model.json: vocabulary \"normalize\" is not true or false");
  EXPECT_EQ(error("unknown_id", 1),
            "model.json: unknown_id 1 must be \"<unk>\" of a word vocabulary");
  EXPECT_EQ(error("unknown_id", 2), "model.json: unknown_id 2 outside [-1, 2)");
  EXPECT_EQ(error("counts", nlohmann::json(nlohmann::json::value_t::discarded)),
            "model.json: vocabulary has no \"counts\"");
  EXPECT_EQ(ErrorOf([] { Vocab::FromJson(nlohmann::json::array(), "model.json"); }),
            "model.json: vocabulary is not a JSON object");
  // A symbol must be one unit: two code points are not one code point; not UTF-8 at all.
  nlohmann::json codepoint = good;
  codepoint["unit"] = "codepoint";
  codepoint["symbols"] = nlohmann::json::array({"a", "e\u0301"});
  EXPECT_EQ(ErrorOf([&] { Vocab::FromJson(codepoint, "model.json"); }),
            "model.json: symbol 1 \"e\u0301\" is not one codepoint of UTF-8");
  nlohmann::json binary = good;
  binary["symbols"] = nlohmann::json::array({"a", "\xC3"});
  EXPECT_EQ(ErrorOf([&] { Vocab::FromJson(binary, "model.json"); }),
            "model.json: symbol 1 \"\\xc3\" is not one grapheme of UTF-8");
  nlohmann::json byte = good;
  byte["unit"] = "byte";
  byte["symbols"] = nlohmann::json::array({97, 256});
  EXPECT_EQ(ErrorOf([&] { Vocab::FromJson(byte, "model.json"); }),
            "model.json: vocabulary \"symbols[1]\" is not a byte 0-255");
}

TEST(VocabTest, DisplaySymbolEscapesControlsAndLoneBytes) {
  EXPECT_EQ(DisplaySymbol("\n"), "\\n");
  EXPECT_EQ(DisplaySymbol("\r\n"), "\\r\\n");
  EXPECT_EQ(DisplaySymbol("\x1b"), "\\x1b");
  EXPECT_EQ(DisplaySymbol("\xC3"), "\\xc3");
  EXPECT_EQ(DisplaySymbol("a\\"), "a\\\\");
  EXPECT_EQ(DisplaySymbol("\u00e9\U0001F44D"), "\u00e9\U0001F44D");
}

}  // namespace
}  // namespace bptt
