// Corpus listing, the ids file, splits and the BatchStream layout, each checked against its
// definition in bptt/corpus.h on small known inputs.
#include "bptt/corpus.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

namespace fs = std::filesystem;

class CorpusTest : public test::TempDirTest {
 protected:

  std::vector<int32_t> IdsOf(const EncodedCorpus& corpus) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < corpus.size(); ++i) ids.push_back(corpus[i]);
    return ids;
  }

};

TEST_F(CorpusTest, ListsDirectoriesSortedWithoutHiddenFiles) {
  Write("d/b.txt", "b");
  Write("d/a.txt", "a");
  Write("d/sub/c.txt", "c");
  Write("d/.hidden", "h");
  Write("d/.git/config", "g");
  const fs::path single = Write("z.txt", "z");
  const CorpusFiles listed = ListCorpusFiles({single.string(), (dir_ / "d").string()});
  EXPECT_EQ(listed.files, (std::vector<fs::path>{single, dir_ / "d/a.txt", dir_ / "d/b.txt",
                                                 dir_ / "d/sub/c.txt"}));
  EXPECT_TRUE(listed.skipped.empty());
}

TEST_F(CorpusTest, WalkSkipsEmptyAndNonTextFilesWithTheirReasons) {
  Write("d/a.txt", "plain ASCII text\n");
  Write("d/b.txt", "caf\xC3\xA9 na\xC3\xAFve \xE2\x9C\x93\n");  // well-formed UTF-8
  // Mostly UTF-8 with one damaged byte: text (the tokenizer's OnInvalid decides about the byte).
  Write("d/c.txt", "\xC3\xA9\xC3\xA9\xC3\xA9 \xFF \xE2\x9C\x93\n");
  Write("d/empty.txt", "");
  // A NUL byte past the first 1000 bytes, inside the sample.
  Write("d/sub/binary.bin", std::string(1000, 'x') + '\0' + "yz");
  Write("d/latin1.txt", "caf\xE9, na\xEFve, \xA9 2024\n");  // Latin-1: every non-ASCII byte ill-formed
  // A NUL past the sample is not looked at: the file is listed and the tokenizer reports it.
  Write("d/late_nul.txt", std::string(kTextSampleBytes, 'x') + '\0');
  const CorpusFiles listed = ListCorpusFiles({(dir_ / "d").string()});
  EXPECT_EQ(listed.files, (std::vector<fs::path>{dir_ / "d/a.txt", dir_ / "d/b.txt", dir_ / "d/c.txt",
                                                 dir_ / "d/late_nul.txt"}));
  ASSERT_EQ(listed.skipped.size(), 3u);
  EXPECT_EQ(SkippedLine(listed.skipped[0]), (dir_ / "d/empty.txt").string() + ": empty");
  EXPECT_EQ(listed.skipped[0].reason, SkipReason::kEmpty);
  EXPECT_EQ(SkippedLine(listed.skipped[1]),
            (dir_ / "d/latin1.txt").string() +
                ": not text (3 of the 3 non-ASCII bytes in the first 20 bytes are not UTF-8)");
  EXPECT_EQ(listed.skipped[1].reason, SkipReason::kNotText);
  EXPECT_EQ(SkippedLine(listed.skipped[2]),
            (dir_ / "d/sub/binary.bin").string() + ": not text (NUL byte at byte 1000)");
  EXPECT_EQ(listed.skipped[2].reason, SkipReason::kNotText);
  EXPECT_EQ(SkippedSummary(listed.skipped), "skipped 3 files: 1 empty, 2 not text");

  const fs::path list = dir_ / "skipped-files.txt";
  WriteSkippedList(listed.skipped, list);
  std::ifstream in(list);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_EQ(lines, (std::vector<std::string>{SkippedLine(listed.skipped[0]), SkippedLine(listed.skipped[1]),
                                             SkippedLine(listed.skipped[2])}));
}

TEST_F(CorpusTest, ListingErrors) {
  const std::string missing = (dir_ / "missing").string();
  EXPECT_EQ(ErrorOf([&] { ListCorpusFiles({missing}); }), missing + ": no such file or directory");
  Write("hidden_only/.x", "x");
  const std::string hidden_only = (dir_ / "hidden_only").string();
  EXPECT_EQ(ErrorOf([&] { ListCorpusFiles({hidden_only}); }),
            hidden_only + ": directory has no text files");
  Write("skipped_only/empty.txt", "");
  Write("skipped_only/zeros.bin", std::string(8, '\0'));
  const std::string skipped_only = (dir_ / "skipped_only").string();
  EXPECT_EQ(ErrorOf([&] { ListCorpusFiles({skipped_only}); }),
            skipped_only + ": directory has no text files");
}

TEST_F(CorpusTest, NamedEmptyOrBinaryFileIsAnError) {
  const std::string empty = Write("empty.txt", "").string();
  EXPECT_EQ(ErrorOf([&] { ListCorpusFiles({empty}); }), empty + ": empty file");
  const std::string binary = Write("binary.bin", std::string("ab\0cd", 5)).string();
  EXPECT_EQ(ErrorOf([&] { ListCorpusFiles({binary}); }), binary + ": not text (NUL byte at byte 2)");
  // Named, a file in another encoding is listed: the tokenizer reports (or replaces) its bytes.
  const fs::path latin1 = Write("latin1.txt", "caf\xE9\n");
  EXPECT_EQ(ListCorpusFiles({latin1.string()}).files, std::vector<fs::path>{latin1});
}

TEST_F(CorpusTest, CheckTextFileNamesWhatIsNotOne) {
  const std::string missing = (dir_ / "missing.txt").string();
  EXPECT_EQ(ErrorOf([&] { CheckTextFile(missing); }), missing + ": no such file or directory");
  EXPECT_EQ(ErrorOf([&] { CheckTextFile(dir_); }), dir_.string() + ": is a directory, not a text file");
  EXPECT_EQ(ErrorOf([&] { CheckTextFile("/dev/null"); }), "/dev/null: not a regular file");
  const std::string empty = Write("empty.txt", "").string();
  EXPECT_EQ(ErrorOf([&] { CheckTextFile(empty); }), empty + ": empty file");
  EXPECT_EQ(ErrorOf([&] { CheckTextFile(Write("text.txt", "text\n")); }), "");
}

TEST_F(CorpusTest, SummaryCountsTheCorpusAndChecksItsEncoding) {
  Write("c/a.txt", "the cat\n");
  Write("c/b.txt", "the dog\n");
  Write("c/empty.txt", "");
  TokenizerOptions words;
  words.unit = Unit::kWord;
  words.max_vocab = 4;  // <unk>, "the", " ", "\n": cat and dog become <unk>
  const CorpusSummary s = SummarizeCorpus({(dir_ / "c").string()}, words);
  EXPECT_EQ(s.files.files.size(), 2u);
  ASSERT_EQ(s.files.skipped.size(), 1u);
  EXPECT_EQ(s.file_bytes, 16u);
  EXPECT_EQ(s.text_bytes, 16u);
  EXPECT_EQ(s.symbols, 8u);  // the, " ", cat, "\n" twice
  EXPECT_EQ(s.vocab.size(), 4);
  EXPECT_EQ(s.as_unknown, 2u);
  EXPECT_EQ(s.mismatch, "");
  const CorpusSummary graphemes = SummarizeCorpus({(dir_ / "c").string()}, TokenizerOptions());
  EXPECT_EQ(graphemes.symbols, 16u);
  EXPECT_EQ(graphemes.as_unknown, 0u);
  EXPECT_EQ(graphemes.mismatch, "");
}

TEST_F(CorpusTest, BuildWritesOneBytePerSymbolAndReopens) {
  const fs::path a = Write("a.txt", "ab\n");
  const fs::path b = Write("b.txt", "ba");
  const fs::path ids_path = dir_ / "ids.bin";
  const EncodedCorpus corpus = EncodedCorpus::Build({a, b}, TokenizerOptions(), ids_path);
  ASSERT_EQ(corpus.vocab().size(), 3);
  EXPECT_EQ(corpus.vocab().symbol(0), "\n");
  EXPECT_EQ(corpus.vocab().symbol(1), "a");
  EXPECT_EQ(corpus.vocab().symbol(2), "b");
  EXPECT_EQ(IdsOf(corpus), (std::vector<int32_t>{1, 2, 0, 2, 1}));
  EXPECT_EQ(corpus.bytes_per_symbol(), 1);
  EXPECT_EQ(fs::file_size(ids_path), 32u + 5u);

  const EncodedCorpus reopened = EncodedCorpus::Open(ids_path, corpus.vocab());
  EXPECT_EQ(IdsOf(reopened), IdsOf(corpus));
  const Vocab other = VocabBuilder(TokenizerOptions()).Add("abc").Build();
  EXPECT_EQ(ErrorOf([&] { EncodedCorpus::Open(ids_path, other); }),
            ids_path.string() + ": written with another vocabulary");
  // Nothing but the ids file is left in the directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 3);
}

TEST_F(CorpusTest, WiderIdsForLargerVocabularies) {
  TokenizerOptions options;
  options.unit = Unit::kCodepoint;
  options.normalize = false;
  // Code points U+10000 .. U+10000+n-1, each four bytes of UTF-8.
  const auto text_of = [](int n) {
    std::string text;
    for (int i = 0; i < n; ++i) {
      const int c = 0x10000 + i;
      text += static_cast<char>(0xF0 | (c >> 18));
      text += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      text += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (c & 0x3F));
    }
    return text;
  };
  for (const auto& [n, width] :
       {std::pair{256, 1}, std::pair{257, 2}, std::pair{65536, 2}, std::pair{65537, 4}}) {
    const fs::path file = Write("wide.txt", text_of(n) + text_of(3));
    const fs::path ids_path = dir_ / "wide.bin";
    const EncodedCorpus corpus = EncodedCorpus::Build({file}, options, ids_path);
    EXPECT_EQ(corpus.vocab().size(), n);
    EXPECT_EQ(corpus.bytes_per_symbol(), width) << "V = " << n;
    ASSERT_EQ(corpus.size(), static_cast<size_t>(n + 3));
    EXPECT_EQ(fs::file_size(ids_path), 32u + static_cast<size_t>(width * (n + 3)));
    EXPECT_EQ(corpus[0], 0);
    EXPECT_EQ(corpus[static_cast<size_t>(n - 1)], n - 1);
    EXPECT_EQ(corpus[static_cast<size_t>(n + 2)], 2);
  }
}

TEST_F(CorpusTest, GivenVocabulary) {
  const fs::path file = Write("a.txt", "abc\nxbz");
  const fs::path ids_path = dir_ / "ids.bin";
  const Vocab vocab = VocabBuilder(TokenizerOptions()).Add("abc\n").Build();
  EXPECT_EQ(ErrorOf([&] { EncodedCorpus::Build({file}, TokenizerOptions(), ids_path, &vocab); }),
            file.string() + ": 2 symbols not in the vocabulary, e.g. \"x\", \"z\"");
  EXPECT_FALSE(fs::exists(ids_path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);

  TokenizerOptions words;
  words.unit = Unit::kWord;
  words.max_vocab = 3;
  const Vocab word_vocab = VocabBuilder(words).Add("a a b").Build();  // <unk>, " ", "a"
  const fs::path text = Write("w.txt", "a b c");
  const EncodedCorpus corpus =
      EncodedCorpus::Build({text}, TokenizerOptions(), ids_path, &word_vocab);
  EXPECT_EQ(corpus.vocab().options().unit, Unit::kWord);
  EXPECT_EQ(IdsOf(corpus), (std::vector<int32_t>{2, 1, 0, 1, 0}));
}

TEST_F(CorpusTest, InvalidUtf8NamesTheFileAndAbsoluteOffset) {
  // Past the first read piece of 1 MiB.
  std::string text(1500000, 'a');
  for (size_t i = 99; i < text.size(); i += 100) text[i] = '\n';
  text[1234567] = '\xFF';
  const fs::path file = Write("bad.txt", text);
  EXPECT_EQ(ErrorOf([&] { EncodedCorpus::Build({file}, TokenizerOptions(), dir_ / "ids.bin"); }),
            file.string() + ": invalid UTF-8 at byte 1234567");
  TokenizerOptions replace;
  replace.on_invalid = OnInvalid::kReplace;
  const EncodedCorpus corpus = EncodedCorpus::Build({file}, replace, dir_ / "ids.bin");
  EXPECT_EQ(corpus.replacements(), 1u);
  EXPECT_EQ(corpus.size(), text.size());
  EXPECT_EQ(corpus.vocab().symbol(corpus[1234567]), "\uFFFD");
}

TEST(SplitCorpusTest, TrainThenValidationThenTest) {
  const CorpusSplits splits = SplitCorpus(1000, 0.1, 0.05);
  EXPECT_EQ(splits.train.begin, 0u);
  EXPECT_EQ(splits.train.end, 850u);
  EXPECT_EQ(splits.validation.begin, 850u);
  EXPECT_EQ(splits.validation.end, 950u);
  EXPECT_EQ(splits.test.begin, 950u);
  EXPECT_EQ(splits.test.end, 1000u);
  const CorpusSplits all_train = SplitCorpus(7, 0, 0);
  EXPECT_EQ(all_train.train.size(), 7u);
  EXPECT_EQ(all_train.validation.size(), 0u);
  EXPECT_EQ(all_train.test.size(), 0u);
  EXPECT_NE(ErrorOf([] { SplitCorpus(10, 0.5, 0.5); }), "");
  EXPECT_NE(ErrorOf([] { SplitCorpus(10, -0.1, 0); }), "");
}

// A corpus whose symbol at position i is i, so each id names its own position.
EncodedCorpus Positions(int n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i;
  return EncodedCorpus(std::move(ids));
}

TEST(BatchStreamTest, LayoutMatchesTheDefinition) {
  const EncodedCorpus corpus = Positions(40);
  const SymbolRange range{5, 28};  // n = 23
  const int B = 3, T = 2;
  BatchStream stream(corpus, range, B, T);
  const size_t Ls = (23 - 1) / 3;  // 7
  EXPECT_EQ(stream.stream_length(), Ls);
  EXPECT_EQ(stream.chunks_per_epoch(), Ls / T);  // 3 full chunks
  Ids inputs, targets;
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(stream.chunk(), k);
    ASSERT_EQ(stream.Next(inputs, targets), T);
    ASSERT_EQ(inputs.size(), T * B);
    ASSERT_EQ(targets.size(), T * B);
    for (int t = 0; t < T; ++t) {
      for (int b = 0; b < B; ++b) {
        const auto expected = static_cast<int32_t>(range.begin + b * Ls + k * T + t);
        EXPECT_EQ(inputs[t * B + b], expected) << "k=" << k << " t=" << t << " b=" << b;
        EXPECT_EQ(targets[t * B + b], expected + 1) << "k=" << k << " t=" << t << " b=" << b;
      }
    }
  }
  EXPECT_EQ(stream.Next(inputs, targets), 0);
  EXPECT_EQ(stream.Next(inputs, targets), 0);
  // The first chunk, written out: streams start at 5, 12, 19.
  stream.Rewind();
  ASSERT_EQ(stream.Next(inputs, targets), T);
  EXPECT_EQ(std::vector<int32_t>(inputs.begin(), inputs.end()),
            (std::vector<int32_t>{5, 12, 19, 6, 13, 20}));
  EXPECT_EQ(std::vector<int32_t>(targets.begin(), targets.end()),
            (std::vector<int32_t>{6, 13, 20, 7, 14, 21}));
}

TEST(BatchStreamTest, PartialLastChunkCoversTheRange) {
  const EncodedCorpus corpus = Positions(23);
  const int B = 2, T = 4;
  BatchStream stream(corpus, {0, 23}, B, T, /*allow_partial=*/true);
  const size_t Ls = 11;                      // (23 - 1) / 2
  EXPECT_EQ(stream.chunks_per_epoch(), 3u);  // 4 + 4 + 3 timesteps
  Ids inputs, targets;
  std::vector<int> steps;
  std::vector<bool> seen(23, false);
  for (int n; (n = stream.Next(inputs, targets)) > 0;) {
    steps.push_back(n);
    ASSERT_EQ(inputs.size(), n * B);
    for (int t = 0; t < n; ++t) {
      for (int b = 0; b < B; ++b) {
        const size_t k = steps.size() - 1;
        const auto expected = static_cast<int32_t>(b * Ls + k * T + t);
        EXPECT_EQ(inputs[t * B + b], expected);
        EXPECT_EQ(targets[t * B + b], expected + 1);
        seen[static_cast<size_t>(targets[t * B + b])] = true;
      }
    }
  }
  EXPECT_EQ(steps, (std::vector<int>{4, 4, 3}));
  // Every symbol after the first is a target exactly once, up to B*Ls.
  for (size_t i = 1; i <= B * Ls; ++i) EXPECT_TRUE(seen[i]) << i;
}

TEST(BatchStreamTest, SeekResumesExactly) {
  const EncodedCorpus corpus = Positions(200);
  BatchStream first(corpus, {0, 200}, 4, 5);
  std::vector<std::vector<int32_t>> chunks;
  Ids inputs, targets;
  while (first.Next(inputs, targets) > 0) chunks.emplace_back(inputs.begin(), inputs.end());
  ASSERT_EQ(chunks.size(), first.chunks_per_epoch());
  ASSERT_EQ(chunks.size(), 9u);  // Ls = 49, 9 chunks of 5

  BatchStream resumed(corpus, {0, 200}, 4, 5);
  resumed.Seek(6);
  for (size_t k = 6; k < chunks.size(); ++k) {
    ASSERT_EQ(resumed.Next(inputs, targets), 5);
    EXPECT_EQ(std::vector<int32_t>(inputs.begin(), inputs.end()), chunks[k]) << k;
  }
  EXPECT_EQ(resumed.Next(inputs, targets), 0);
  resumed.Seek(resumed.chunks_per_epoch());
  EXPECT_EQ(resumed.Next(inputs, targets), 0);
  EXPECT_EQ(ErrorOf([&] { resumed.Seek(10); }), "chunk 10 is beyond the epoch of 9 chunks");
  resumed.Rewind();
  ASSERT_EQ(resumed.Next(inputs, targets), 5);
  EXPECT_EQ(std::vector<int32_t>(inputs.begin(), inputs.end()), chunks[0]);
}

TEST(BatchStreamTest, TooShortRangeSaysWhatIsNeeded) {
  const EncodedCorpus corpus = Positions(20);
  EXPECT_EQ(ErrorOf([&] {
              BatchStream(corpus, {0, 12}, 3, 4);
            }),
            "range of 12 symbols is too short: B=3, T=4 needs at least 13");
  EXPECT_EQ(ErrorOf([&] { BatchStream(corpus, {0, 13}, 3, 4); }), "");
  EXPECT_EQ(ErrorOf([&] {
              BatchStream(corpus, {5, 8}, 3, 4, true);
            }),
            "range of 3 symbols is too short: B=3 needs at least 4");
  EXPECT_EQ(ErrorOf([&] {
              BatchStream(corpus, {0, 21}, 1, 1);
            }),
            "symbol range [0, 21) is outside the corpus of 20 symbols");
  EXPECT_NE(ErrorOf([&] { BatchStream(corpus, {0, 20}, 0, 4); }), "");
}

}  // namespace
}  // namespace bptt
