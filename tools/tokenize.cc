// bptt tokenize: builds the vocabulary of a corpus (corpus.h SummarizeCorpus), shows its most
// frequent symbols and coverage, and whether decoding the encoded corpus gives back the
// normalised text. Its options are the tokenizer's (TokenizerOptionSpecs) and what to show.
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bptt/corpus.h"
#include "bptt/error.h"
#include "bptt/vocab.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

namespace {

struct TokenizeCommand {
  std::vector<std::string> corpus;
  TokenizerOptions tokenizer;
  size_t top = 20;
  std::string out;
};

std::vector<OptionSpec<TokenizeCommand>> Specs() {
  using T = TokenizeCommand;
  constexpr OnResume kNone = OnResume::kNone;
  std::vector<OptionSpec<T>> specs = {Field<T>(kAnyCommand, "corpus", "", "Data",
                                               "text file or directory of text files (repeatable)", kNone,
                                               [](T& t) -> auto& { return t.corpus; })};
  const auto tokenizer = Nest<T>(TokenizerOptionSpecs(), kAnyCommand, "", [](T& t) -> auto& { return t.tokenizer; });
  specs.insert(specs.end(), tokenizer.begin(), tokenizer.end());
  specs.push_back(Field<T>(kAnyCommand, "top", "", "Output", "most frequent symbols to list", kNone,
                           [](T& t) -> auto& { return t.top; }));
  specs.push_back(Field<T>(kAnyCommand, "out", "", "Output", "write the vocabulary as JSON to this file", kNone,
                           [](T& t) -> auto& { return t.out; }));
  return specs;
}

std::string Percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100 * fraction << "%";
  return out.str();
}

}  // namespace

int Tokenize(int argc, char** argv) {
  static const std::vector<OptionSpec<TokenizeCommand>> specs = Specs();
  CommandLine<TokenizeCommand> cli("bptt tokenize --corpus PATH [--corpus PATH ...] [options]", specs, kAnyCommand,
                                   TokenizeCommand());
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const TokenizeCommand o = cli.Apply(TokenizeCommand());
  if (o.corpus.empty()) throw Error("missing --corpus (see bptt tokenize --help)");

  const CorpusSummary s = SummarizeCorpus(o.corpus, o.tokenizer);
  const Vocab& vocab = s.vocab;
  const std::vector<int32_t> order = vocab.MostFrequent(o.top);
  const size_t top = order.size();
  uint64_t top_total = 0;
  for (const int32_t id : order) top_total += vocab.count(id);
  const uint64_t unknown_total = vocab.unknown_id() >= 0 ? vocab.count(vocab.unknown_id()) : 0;
  const auto fraction = [&s](uint64_t n) {
    return s.symbols > 0 ? static_cast<double>(n) / static_cast<double>(s.symbols) : 0.0;
  };

  std::cout << "files        " << s.files.files.size() << " (" << s.file_bytes << " bytes)\n"
            << "unit         " << UnitName(vocab.options().unit)
            << (vocab.options().normalize && vocab.options().unit != Unit::kByte ? ", NFC" : ", not normalised") << "\n"
            << "vocabulary   " << vocab.size() << " symbols" << (vocab.unknown_id() >= 0 ? " (with <unk>)" : "") << "\n"
            << "symbols      " << s.symbols << " (" << s.text_bytes << " bytes of normalised text)\n";
  if (!s.files.skipped.empty()) {
    std::cout << SkippedSummary(s.files.skipped) << ":\n";
    for (const SkippedFile& file : s.files.skipped) std::cout << "  " << SkippedLine(file) << "\n";
  }
  if (s.replacements > 0) std::cout << "invalid      " << s.replacements << " ill-formed UTF-8 sequences replaced by U+FFFD\n";
  std::cout << "top " << top << " symbols:\n";
  for (size_t k = 0; k < top; ++k) {
    const int32_t id = order[k];
    std::cout << "  " << std::setw(6) << k + 1 << "  " << std::left << std::setw(12)
              << ('"' + DisplaySymbol(vocab.symbol(id)) + '"') << std::right << std::setw(12) << vocab.count(id)
              << "  " << Percent(fraction(vocab.count(id))) << "\n";
  }
  std::cout << "coverage     top " << top << ": " << Percent(fraction(top_total))
            << " of symbols; vocabulary: " << Percent(fraction(s.symbols - unknown_total)) << "\n";
  if (!s.mismatch.empty()) {
    std::cout << "round trip   FAILED: decoding the encoded corpus does not give back the normalised text ("
              << s.mismatch << ")\n";
  } else {
    std::cout << "round trip   ok: decoding the encoded corpus gives back the normalised text exactly";
    if (s.as_unknown > 0) std::cout << ", except " << s.as_unknown << " words outside the vocabulary, decoded as <unk>";
    std::cout << "\n";
  }

  if (!o.out.empty()) {
    std::ofstream file(o.out);
    file << vocab.ToJson().dump() << "\n";
    if (!file) throw Error(o.out + ": cannot write");
    std::cout << "wrote        " << o.out << "\n";
  }
  return s.mismatch.empty() ? 0 : 1;
}

}  // namespace bptt::cli
