// bptt tokenize: builds the vocabulary of a corpus, shows its most frequent symbols and
// coverage, and checks that decoding the encoded corpus gives back the normalised text.
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/vocab.h"
#include "commands.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace bptt::cli {

namespace {

// Removes a temporary file when it goes out of scope.
struct TemporaryFile {
  fs::path path;
  ~TemporaryFile() {
    std::error_code ignored;
    fs::remove(path, ignored);
  }
};

// Feeds the file to `feed` in pieces of 1 MiB.
template <typename Feed>
void ReadFile(const fs::path& path, Feed&& feed) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open");
  std::string piece(size_t{1} << 20, '\0');
  while (in) {
    in.read(piece.data(), static_cast<std::streamsize>(piece.size()));
    if (in.gcount() > 0) feed(std::string_view(piece.data(), static_cast<size_t>(in.gcount())));
  }
  if (in.bad()) throw Error(path.string() + ": read error");
}

std::string Percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100 * fraction << "%";
  return out.str();
}

}  // namespace

int Tokenize(int argc, char** argv) {
  std::vector<std::string> corpus;
  std::string unit = "grapheme", on_invalid = "error", out;
  bool no_normalize = false;
  TokenizerOptions o;
  size_t top = 20;
  po::options_description options("bptt tokenize --corpus PATH [--corpus PATH ...] [options]");
  options.add_options()
      ("corpus", po::value(&corpus)->multitoken(), "text file or directory of text files (repeatable)")
      ("unit", po::value(&unit)->default_value(unit), "symbol unit: grapheme, codepoint, byte or word")
      ("no-normalize", po::bool_switch(&no_normalize), "do not NFC-normalise the text")
      ("max-vocab", po::value(&o.max_vocab)->default_value(o.max_vocab), "word unit: keep the most frequent words (0 = all)")
      ("on-invalid", po::value(&on_invalid)->default_value(on_invalid), "invalid UTF-8: error or replace (with U+FFFD)")
      ("top", po::value(&top)->default_value(top), "most frequent symbols to list")
      ("out", po::value(&out), "write the vocabulary as JSON to this file")
      ("help", "show this help");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  if (corpus.empty()) throw Error("missing --corpus (see bptt tokenize --help)");
  const std::optional<Unit> parsed_unit = ParseUnit(unit);
  if (!parsed_unit) throw Error("--unit '" + unit + "' is not one of grapheme, codepoint, byte, word");
  if (on_invalid != "error" && on_invalid != "replace") throw Error("--on-invalid must be error or replace");
  o.unit = *parsed_unit;
  o.normalize = !no_normalize;
  o.on_invalid = on_invalid == "replace" ? OnInvalid::kReplace : OnInvalid::kError;

  // Encode the corpus as training does (ids file, memory-mapped), then check it symbol by
  // symbol against a fresh segmentation of the text.
  const CorpusFiles listed = ListCorpusFiles(corpus);
  const std::vector<fs::path>& files = listed.files;
  const TemporaryFile ids{fs::temp_directory_path() / ("bptt-tokenize-" + std::to_string(::getpid()) + ".ids")};
  const EncodedCorpus encoded = EncodedCorpus::Build(files, o, ids.path);
  const Vocab& vocab = encoded.vocab();

  uint64_t raw_bytes = 0, text_bytes = 0, position = 0, as_unknown = 0, wrong = 0;
  std::string first_wrong;
  Segmenter segmenter(vocab.options());
  const SymbolSink check = [&](std::string_view symbol) {
    text_bytes += symbol.size();
    const size_t i = position++;
    if (i >= encoded.size()) return;
    const std::string& decoded = vocab.symbol(encoded[i]);
    if (decoded == symbol) return;
    if (encoded[i] == vocab.unknown_id() && !vocab.Find(symbol)) {
      ++as_unknown;
    } else if (wrong++ == 0) {
      first_wrong = "symbol " + std::to_string(i) + " is \"" + DisplaySymbol(symbol) + "\" but decodes as \"" +
                    DisplaySymbol(decoded) + "\"";
    }
  };
  for (const fs::path& file : files) {
    segmenter.Restart(file.string());
    ReadFile(file, [&](std::string_view piece) {
      raw_bytes += piece.size();
      segmenter.Feed(piece, check);
    });
    segmenter.Finish(check);
  }
  if (position != encoded.size() && wrong++ == 0)
    first_wrong = "the text has " + std::to_string(position) + " symbols but the encoding " + std::to_string(encoded.size());

  // Symbol counts.
  const size_t V = static_cast<size_t>(vocab.size());
  uint64_t total = 0;
  for (int32_t id = 0; id < vocab.size(); ++id) total += vocab.count(id);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  top = std::min(top, V);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(), [&vocab](int32_t a, int32_t b) {
    return vocab.count(a) > vocab.count(b) || (vocab.count(a) == vocab.count(b) && a < b);
  });
  uint64_t top_total = 0;
  for (size_t k = 0; k < top; ++k) top_total += vocab.count(order[k]);
  const uint64_t unknown_total = vocab.unknown_id() >= 0 ? vocab.count(vocab.unknown_id()) : 0;
  const auto fraction = [total](uint64_t n) { return total > 0 ? static_cast<double>(n) / static_cast<double>(total) : 0.0; };

  std::cout << "files        " << files.size() << " (" << raw_bytes << " bytes)\n"
            << "unit         " << UnitName(vocab.options().unit)
            << (vocab.options().normalize && vocab.options().unit != Unit::kByte ? ", NFC" : ", not normalised") << "\n"
            << "vocabulary   " << V << " symbols" << (vocab.unknown_id() >= 0 ? " (with <unk>)" : "") << "\n"
            << "symbols      " << total << " (" << text_bytes << " bytes of normalised text)\n";
  if (!listed.skipped.empty()) {
    std::cout << SkippedSummary(listed.skipped) << ":\n";
    for (const SkippedFile& file : listed.skipped) std::cout << "  " << SkippedLine(file) << "\n";
  }
  if (encoded.replacements() > 0) std::cout << "invalid      " << encoded.replacements() << " ill-formed UTF-8 sequences replaced by U+FFFD\n";
  std::cout << "top " << top << " symbols:\n";
  for (size_t k = 0; k < top; ++k) {
    const int32_t id = order[k];
    std::cout << "  " << std::setw(6) << k + 1 << "  " << std::left << std::setw(12)
              << ('"' + DisplaySymbol(vocab.symbol(id)) + '"') << std::right << std::setw(12) << vocab.count(id)
              << "  " << Percent(fraction(vocab.count(id))) << "\n";
  }
  std::cout << "coverage     top " << top << ": " << Percent(fraction(top_total))
            << " of symbols; vocabulary: " << Percent(fraction(total - unknown_total)) << "\n";
  if (wrong > 0) {
    std::cout << "round trip   FAILED: decoding the encoded corpus does not give back the normalised text ("
              << first_wrong << ")\n";
  } else {
    std::cout << "round trip   ok: decoding the encoded corpus gives back the normalised text exactly";
    if (as_unknown > 0) std::cout << ", except " << as_unknown << " words outside the vocabulary, decoded as <unk>";
    std::cout << "\n";
  }

  if (!out.empty()) {
    std::ofstream file(out);
    file << vocab.ToJson().dump() << "\n";
    if (!file) throw Error(out + ": cannot write");
    std::cout << "wrote        " << out << "\n";
  }
  return wrong > 0 ? 1 : 0;
}

}  // namespace bptt::cli
