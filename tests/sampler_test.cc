// Sampling: determinism, the equivalences the sampler promises (top-k 1 = argmax, filters that
// keep everything = no filter, temperature -> 0 = argmax), the candidate selection of top-k and
// top-p on hand-made distributions, priming against a direct forward pass, --prime-file, dynamic
// adaptation to the prime, --stop, --num, the option checks, and that no memory is allocated per
// generated symbol.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/options.h"
#include "bptt/sampler.h"
#include "sampler_internal.h"
#include "test_util.h"

// Counts heap allocations (operator new ends in malloc or aligned_alloc, Eigen allocates with
// malloc) while g_counting is set, by interposing glibc's allocation functions. Sanitizer
// builds own malloc, so the count is not taken there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BPTT_SANITIZED_MALLOC
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || __has_feature(thread_sanitizer)
#define BPTT_SANITIZED_MALLOC
#endif
#endif
#ifdef BPTT_SANITIZED_MALLOC
#define BPTT_COUNT_MALLOC 0
#else
#define BPTT_COUNT_MALLOC 1
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace
extern "C" void* __libc_malloc(size_t size);
extern "C" void* __libc_calloc(size_t n, size_t size);
extern "C" void* __libc_realloc(void* p, size_t size);
extern "C" void* malloc(size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}
extern "C" void* calloc(size_t n, size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, size);
}
extern "C" void* realloc(void* p, size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, size);
}
extern "C" void* __libc_memalign(size_t alignment, size_t size);
extern "C" void* aligned_alloc(size_t alignment, size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
extern "C" int posix_memalign(void** p, size_t alignment, size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  *p = __libc_memalign(alignment, size);
  return *p == nullptr && size > 0 ? ENOMEM : 0;
}
#endif

namespace bptt {
namespace {

constexpr char kText[] = "the quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n";

Vocab MakeVocab(const std::string& text) { return VocabBuilder(TokenizerOptions{}).Add(text).Build(); }

Sampler MakeSampler(const char* cell = "lstm", const std::string& text = kText, int layers = 2,
                    int hidden = 24, uint64_t seed = 5) {
  Vocab vocab = MakeVocab(text);
  const ModelConfig config = LanguageModel(*FindCell(cell), vocab.size(), 0, hidden, layers);
  ModelParams<float> params = ModelParams<float>::Zeros(config);
  Rng rng(seed);
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = 0.5;  // large enough that the distributions are far from uniform
  Initialize(config, init, rng, params);
  return Sampler(config, std::move(params), std::move(vocab));
}

std::string Generate(Sampler& sampler, const SampleOptions& options) {
  std::string text;
  sampler.Generate(options, [&text](std::string_view s) { text += s; });
  return text;
}

SampleOptions Options(int64_t length, uint64_t seed) {
  SampleOptions o;
  o.length = length;
  o.seed = seed;
  return o;
}

// Splits at "\n" (for vocabularies without it, where "\n" only separates samples).
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines(1);
  for (char c : text) {
    if (c == '\n') lines.emplace_back(); else lines.back() += c;
  }
  return lines;
}

TEST(SamplerTest, SameSeedGivesSameTextAndOtherSeedsDiffer) {
  Sampler sampler = MakeSampler();
  const std::string a = Generate(sampler, Options(300, 7));
  EXPECT_EQ(a, Generate(sampler, Options(300, 7)));  // nothing carried from the last call
  Sampler other = MakeSampler();
  EXPECT_EQ(a, Generate(other, Options(300, 7)));
  EXPECT_NE(a, Generate(sampler, Options(300, 8)));
  EXPECT_NE(a, Generate(sampler, Options(300, 9)));
}

TEST(SamplerTest, LengthCountsGeneratedSymbols) {
  Sampler sampler = MakeSampler();  // one-byte symbols, "\n" in the vocabulary
  EXPECT_EQ(Generate(sampler, Options(123, 1)).size(), 123u);
  EXPECT_EQ(Generate(sampler, Options(0, 1)), "");
  SampleOptions primed = Options(50, 1);
  primed.prime = "the ";
  const std::string text = Generate(sampler, primed);
  EXPECT_EQ(text.size(), 54u);
  EXPECT_EQ(text.substr(0, 4), "the ");
}

TEST(SamplerTest, TopKOneEqualsArgmax) {
  for (const char* cell : {"lstm", "gru", "rnn-tanh"}) {
    Sampler sampler = MakeSampler(cell);
    for (const char* prime : {"", "jumps"}) {
      SampleOptions argmax = Options(200, 3);
      argmax.prime = prime;
      argmax.argmax = true;
      const std::string expected = Generate(sampler, argmax);
      for (double temperature : {1.0, 0.3, 5.0}) {
        SampleOptions top1 = Options(200, 11);
        top1.prime = prime;
        top1.top_k = 1;
        top1.temperature = temperature;
        EXPECT_EQ(Generate(sampler, top1), expected) << cell << " T=" << temperature;
      }
    }
  }
}

TEST(SamplerTest, FiltersThatKeepEverySymbolChangeNothing) {
  Sampler sampler = MakeSampler();
  const int V = sampler.vocab().size();
  const std::string plain = Generate(sampler, Options(300, 21));
  for (int k : {V, V + 1, 1000}) {
    SampleOptions o = Options(300, 21);
    o.top_k = k;
    EXPECT_EQ(Generate(sampler, o), plain) << "k=" << k;
  }
  SampleOptions o = Options(300, 21);
  o.top_p = 1.0;
  EXPECT_EQ(Generate(sampler, o), plain);
}

TEST(SamplerTest, FiltersRestrictTheSymbols) {
  // With top-k 2 every generated symbol is one of the two highest-scoring ones, so the text
  // differs from unfiltered sampling and (usually) from argmax; check it is not unfiltered.
  Sampler sampler = MakeSampler();
  SampleOptions o = Options(300, 21);
  const std::string plain = Generate(sampler, o);
  o.top_k = 2;
  EXPECT_NE(Generate(sampler, o), plain);
  o.top_k = 0;
  o.top_p = 0.5;
  EXPECT_NE(Generate(sampler, o), plain);
}

TEST(SamplerTest, TemperatureTowardsZeroApproachesArgmax) {
  Sampler sampler = MakeSampler();
  SampleOptions argmax = Options(300, 1);
  argmax.argmax = true;
  SampleOptions cold = Options(300, 1);
  cold.temperature = 1e-6;
  EXPECT_EQ(Generate(sampler, cold), Generate(sampler, argmax));
  cold.temperature = 1.0;
  EXPECT_NE(Generate(sampler, cold), Generate(sampler, argmax));
}

TEST(SamplerTest, PrimedArgmaxFollowsTheModelOnTheWholeText) {
  // Greedy continuation of a prime, checked against one forward pass over prime + output:
  // at every position from the end of the prime on, the next symbol is the argmax.
  for (const char* cell : {"lstm", "gru"}) {
    Sampler sampler = MakeSampler(cell);
    SampleOptions o = Options(60, 1);
    o.prime = "Pack my box";
    o.argmax = true;
    o.precision = Precision::kFloat32;  // the forward pass below is float32
    const std::string text = Generate(sampler, o);
    const std::vector<int32_t> ids = sampler.vocab().Encode(text);
    ASSERT_EQ(ids.size(), 11u + 60u);
    const Eigen::Index T = static_cast<Eigen::Index>(ids.size());
    Batch<float> batch;
    batch.T = T;
    batch.B = 1;
    batch.ids = Eigen::Map<const Ids>(ids.data(), T);
    ModelCache<float> cache;
    State<float> state = State<float>::Zeros(sampler.config(), 1);
    // The sampler's own parameters are private; rebuild the same model.
    ModelConfig config = sampler.config();
    ModelParams<float> params = ModelParams<float>::Zeros(config);
    Rng rng(5);
    InitOptions init;
    init.scheme = InitScheme::kUniform;
    init.scale = 0.5;
    Initialize(config, init, rng, params);
    Forward(config, params, batch, state, cache, 1);
    for (Eigen::Index t = 10; t + 1 < T; ++t) {
      Eigen::Index best;
      cache.outputs.col(t).maxCoeff(&best);
      ASSERT_EQ(best, batch.ids(t + 1)) << cell << " t=" << t;
    }
  }
}

TEST(SamplerTest, PrimeWithSymbolsOutsideTheVocabularyNamesThem) {
  Sampler sampler = MakeSampler();
  SampleOptions o = Options(10, 1);
  o.prime = "the Zebra €";
  try {
    Generate(sampler, o);
    FAIL() << "expected bptt::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--prime"), std::string::npos) << message;
    EXPECT_NE(message.find("\"Z\""), std::string::npos) << message;
    EXPECT_NE(message.find("\"€\""), std::string::npos) << message;
    EXPECT_EQ(message.find("\"e\""), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(SamplerTest, InvalidOptionsNameTheFlag) {
  Sampler sampler = MakeSampler();
  const auto message = [&sampler](SampleOptions o) -> std::string {
    try {
      Generate(sampler, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  SampleOptions o;
  o.temperature = 0;
  EXPECT_NE(message(o).find("--temperature must be positive"), std::string::npos);
  o.temperature = -1;
  EXPECT_NE(message(o).find("--temperature must be positive"), std::string::npos);
  o = {};
  o.top_p = 0;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o.top_p = 1.5;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o = {};
  o.top_k = -1;
  EXPECT_NE(message(o).find("--top-k"), std::string::npos);
  o = {};
  o.num = 0;
  EXPECT_NE(message(o).find("--num"), std::string::npos);
  o = {};
  o.length = -1;
  EXPECT_NE(message(o).find("--length"), std::string::npos);
  EXPECT_NO_THROW(SampleOptions().Validate());
}

TEST(SamplerTest, PrimeFileIsThePrimeReadFromAFile) {
  Sampler sampler = MakeSampler();
  const std::string path = ::testing::TempDir() + "bptt_sampler_prime_" + std::to_string(::getpid()) + ".txt";
  std::ofstream(path) << "the lazy dog. ";
  SampleOptions from_text = Options(80, 3), from_file = Options(80, 3);
  from_text.prime = "the lazy dog. ";
  from_file.prime_file = path;
  EXPECT_EQ(Generate(sampler, from_file), Generate(sampler, from_text));
  std::remove(path.c_str());
  EXPECT_NE(test::ErrorOf([&] { Generate(sampler, from_file); }).find("--prime-file: " + path), std::string::npos);
  const std::string both = test::ErrorOf([&] {
    ApplyGiven(SampleOptionSpecs(), kAnyCommand, {{"prime", "a"}, {"prime-file", "b.txt"}}, SampleOptions());
  });
  EXPECT_NE(both.find("--prime-file cannot be combined with --prime"), std::string::npos) << both;
}

TEST(SamplerTest, DynamicWithLearningRateZeroSamplesAsTheModel) {
  Sampler sampler = MakeSampler();
  SampleOptions plain = Options(200, 4);
  plain.prime = "the quick brown fox jumps";
  const std::string expected = Generate(sampler, plain);
  for (const DynamicRule rule : {DynamicRule::kSgd, DynamicRule::kRms}) {
    SampleOptions dynamic = plain;
    dynamic.dynamic.enabled = true;
    dynamic.dynamic.rule = rule;
    dynamic.dynamic.segment = 7;
    dynamic.dynamic.lr = 0;
    EXPECT_EQ(Generate(sampler, dynamic), expected);
  }
}

// The prime repeats a phrase the random model does not know; adapted to it, the model continues
// it far more often than the model as given, which is kept for the next call.
TEST(SamplerTest, DynamicAdaptsToThePrimeBeforeSampling) {
  Sampler sampler = MakeSampler();
  const std::string phrase = "lazy dog.";
  std::string prime;
  for (int r = 0; r < 50; ++r) prime += phrase;
  SampleOptions plain = Options(2 * phrase.size(), 1);
  plain.argmax = true;
  plain.prime = prime;
  const auto continued = [&](const std::string& text) {
    size_t same = 0;
    for (size_t i = 0; i < 2 * phrase.size(); ++i) same += text[prime.size() + i] == phrase[i % phrase.size()];
    return same;
  };
  const std::string before = Generate(sampler, plain);
  const ModelParams<float> given = sampler.params();
  SampleOptions dynamic = plain;
  dynamic.dynamic.enabled = true;
  dynamic.dynamic.segment = 5;
  EXPECT_LE(continued(before), 4u) << before.substr(prime.size());
  for (const DynamicRule rule : {DynamicRule::kSgd, DynamicRule::kRms}) {
    dynamic.dynamic.rule = rule;
    dynamic.dynamic.lr = rule == DynamicRule::kSgd ? 1 : 0.01;
    const std::string adapted = Generate(sampler, dynamic);
    EXPECT_GE(continued(adapted), 16u) << DynamicRuleName(rule) << ": " << adapted.substr(prime.size());
    EXPECT_NE(sampler.params().decoder_weight, given.decoder_weight);
  }
  EXPECT_EQ(Generate(sampler, plain), before);  // the model as given again
  EXPECT_EQ(sampler.params().decoder_weight, given.decoder_weight);

  SampleOptions unprimed = dynamic;
  unprimed.prime.clear();
  EXPECT_NE(test::ErrorOf([&] { Generate(sampler, unprimed); }).find("give --prime or --prime-file"),
            std::string::npos);
  unprimed.prime = "t";
  EXPECT_NE(test::ErrorOf([&] { Generate(sampler, unprimed); }).find("needs at least 2 symbols; --prime has 1"),
            std::string::npos);
}

TEST(SamplerTest, StopEndsTheSampleAtTheFirstMatch) {
  Sampler sampler = MakeSampler();
  const std::string full = Generate(sampler, Options(400, 13));
  // A two-symbol string that occurs in the text; the stopped sample is the prefix up to and
  // including its first occurrence.
  const std::string stop = full.substr(200, 2);
  const size_t first = full.find(stop);
  SampleOptions o = Options(400, 13);
  o.stop = stop;
  EXPECT_EQ(Generate(sampler, o), full.substr(0, first + stop.size()));
  o.stop = "#";  // never generated: the full length
  EXPECT_EQ(Generate(sampler, o), full);
  o.stop = full.substr(0, 1);  // met by the very first symbol
  EXPECT_EQ(Generate(sampler, o), full.substr(0, 1));
}

TEST(SamplerTest, SeveralSamplesEachRestartFromThePrime) {
  // Without "\n" in the vocabulary, "\n" appears only between samples.
  const std::string text = "abcab cba bca acb";
  Sampler sampler = MakeSampler("lstm", text);
  ASSERT_FALSE(sampler.vocab().Find("\n"));
  SampleOptions o = Options(20, 4);
  o.prime = "ab";
  o.num = 3;
  const std::vector<std::string> samples = Lines(Generate(sampler, o));
  ASSERT_EQ(samples.size(), 3u);
  for (const std::string& s : samples) {
    EXPECT_EQ(s.size(), 22u);
    EXPECT_EQ(s.substr(0, 2), "ab");
  }
  o.num = 1;
  EXPECT_EQ(Generate(sampler, o), samples[0]);
  EXPECT_NE(samples[0], samples[1]);  // the generator runs on
  // Greedy samples are all the same: the state is reset for each.
  o.num = 3;
  o.argmax = true;
  const std::vector<std::string> greedy = Lines(Generate(sampler, o));
  ASSERT_EQ(greedy.size(), 3u);
  EXPECT_EQ(greedy[0], greedy[1]);
  EXPECT_EQ(greedy[1], greedy[2]);
  // Without a prime or "\n", each sample starts from a symbol drawn with the seed, counted in
  // the length.
  o = Options(20, 4);
  o.num = 2;
  const std::vector<std::string> unprimed = Lines(Generate(sampler, o));
  ASSERT_EQ(unprimed.size(), 2u);
  EXPECT_EQ(unprimed[0].size(), 20u);
  EXPECT_EQ(unprimed[1].size(), 20u);
}

TEST(SelectCandidatesTest, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<double> probs = {0.125, 0.5, 0.125, 0.25};
  const std::vector<float> scores(probs.begin(), probs.end());
  std::vector<int32_t> order;
  ASSERT_EQ(SelectCandidates(scores, probs, 0, 0.5, order), 1u);
  EXPECT_EQ(order[0], 1);
  ASSERT_EQ(SelectCandidates(scores, probs, 0, 0.5001, order), 2u);
  EXPECT_EQ(order[1], 3);
  ASSERT_EQ(SelectCandidates(scores, probs, 0, 0.75, order), 2u);
  // Ties in probability: the lower id comes first.
  ASSERT_EQ(SelectCandidates(scores, probs, 0, 0.8, order), 3u);
  EXPECT_EQ(order[2], 0);
  ASSERT_EQ(SelectCandidates(scores, probs, 0, 1.0, order), 4u);
  EXPECT_EQ(std::vector<int32_t>(order.begin(), order.end()), (std::vector<int32_t>{1, 3, 0, 2}));
  // p = 1 leaves out symbols of probability zero, and nothing else.
  const std::vector<double> with_zero = {0.5, 0.0, 0.25, 0.25};
  const std::vector<float> zero_scores = {0.0f, -1e30f, -0.69f, -0.69f};
  ASSERT_EQ(SelectCandidates(zero_scores, with_zero, 0, 1.0, order), 3u);
  EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 3), (std::vector<int32_t>{0, 2, 3}));
  // Unnormalised probabilities: only the ratios matter.
  const std::vector<double> scaled = {1, 4, 1, 2};
  ASSERT_EQ(SelectCandidates(scores, scaled, 0, 0.75, order), 2u);
  // All equal: as many as needed, lowest ids first.
  const std::vector<double> flat(8, 0.125);
  const std::vector<float> flat_scores(8, 0.0f);
  ASSERT_EQ(SelectCandidates(flat_scores, flat, 0, 0.25, order), 2u);
  EXPECT_EQ(order[0], 0);
  EXPECT_EQ(order[1], 1);
  ASSERT_EQ(SelectCandidates(flat_scores, flat, 0, 0.3, order), 3u);
}

TEST(SelectCandidatesTest, TopKKeepsTheKHighestWithTiesToLowerIds) {
  const std::vector<double> probs = {0.25, 0.125, 0.25, 0.125, 0.25};
  const std::vector<float> scores(probs.begin(), probs.end());
  std::vector<int32_t> order;
  ASSERT_EQ(SelectCandidates(scores, probs, 2, 1.0, order), 2u);
  EXPECT_EQ(order[0], 0);
  EXPECT_EQ(order[1], 2);
  ASSERT_EQ(SelectCandidates(scores, probs, 4, 1.0, order), 4u);
  EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 4), (std::vector<int32_t>{0, 2, 4, 1}));
  for (int k : {5, 6, 100}) {
    ASSERT_EQ(SelectCandidates(scores, probs, k, 1.0, order), 5u) << k;
  }
  // Top-p applies to what top-k keeps: {4, 2, 1 | 1} -> total 7 of the top 3.
  const std::vector<double> weights = {1, 4, 1, 2};
  const std::vector<float> weight_scores(weights.begin(), weights.end());
  ASSERT_EQ(SelectCandidates(weight_scores, weights, 3, 0.5, order), 1u);
  ASSERT_EQ(SelectCandidates(weight_scores, weights, 3, 0.6, order), 2u);
  ASSERT_EQ(SelectCandidates(weight_scores, weights, 3, 1.0, order), 3u);
  EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 3), (std::vector<int32_t>{1, 3, 0}));
}

#if BPTT_COUNT_MALLOC
TEST(SamplerTest, NoAllocationPerSymbol) {
  Sampler sampler = MakeSampler("lstm", kText, 2, 64);
  std::string text;
  text.reserve(1 << 16);
  const TextSink sink = [&text](std::string_view s) { text += s; };
  for (bool filtered : {false, true}) {
    SampleOptions o = Options(0, 2);
    o.prime = "the lazy";
    o.stop = "zzzzz";
    if (filtered) {
      o.top_k = 10;
      o.top_p = 0.9;
    }
    const auto allocations = [&](int64_t length) {
      o.length = length;
      text.clear();
      g_allocations = 0;
      g_counting = true;
      sampler.Generate(o, sink);
      g_counting = false;
      return g_allocations.load();
    };
    allocations(100);  // shapes the buffers
    const long short_run = allocations(100);
    const long long_run = allocations(2000);
    EXPECT_GT(short_run, 0);  // the count works: encoding the prime allocates
    EXPECT_EQ(long_run, short_run) << (filtered ? "top-k, top-p" : "plain");
  }
}
#endif

}  // namespace
}  // namespace bptt
