// libFuzzer target for the tokenizer: any bytes, cut into pieces at fuzzer-chosen points and fed
// to a Segmenter of every unit, either segment or throw bptt::Error (invalid UTF-8, NUL); text
// that segments must build a vocabulary whose encoding decodes back to the segmented text, and
// the symbols must not depend on where the pieces were cut.
//
//   fuzz/run 60        (builds with clang and runs every target for 60 seconds)
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/error.h"
#include "bptt/vocab.h"

namespace {

// Symbols of `text` fed in pieces of `piece` bytes (the whole text when piece == 0).
std::vector<std::string> Segment(const bptt::TokenizerOptions& options, std::string_view text, size_t piece) {
  std::vector<std::string> symbols;
  const auto emit = [&symbols](std::string_view s) { symbols.emplace_back(s); };
  bptt::Segmenter segmenter(options, "fuzz");
  if (piece == 0) piece = text.size() + 1;
  for (size_t at = 0; at < text.size(); at += piece) segmenter.Feed(text.substr(at, piece), emit);
  segmenter.Finish(emit);
  return symbols;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // First byte: unit, normalisation, invalid-UTF-8 policy and piece size.
  const uint8_t control = data[0];
  bptt::TokenizerOptions options;
  options.unit = static_cast<bptt::Unit>(control % 4);
  options.normalize = (control >> 2) & 1;
  options.on_invalid = (control >> 3) & 1 ? bptt::OnInvalid::kReplace : bptt::OnInvalid::kError;
  const size_t piece = (control >> 4) + 1;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  std::vector<std::string> whole, pieces;
  try {
    whole = Segment(options, text, 0);
  } catch (const bptt::Error&) {
    // Invalid input must be invalid however it is cut.
    try {
      Segment(options, text, piece);
    } catch (const bptt::Error&) {
      return 0;
    }
    std::abort();
  }
  pieces = Segment(options, text, piece);
  if (pieces != whole) std::abort();

  std::string joined;
  for (const auto& s : whole) joined += s;
  if (joined.empty()) return 0;
  const bptt::Vocab vocab = bptt::VocabBuilder(options).Add(joined, "fuzz").Build();
  if (vocab.Decode(vocab.Encode(joined)) != joined) std::abort();
  return 0;
}
