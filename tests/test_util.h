// What the test suites share: the message of an expected bptt::Error, a fresh directory for
// each test that writes files, a file's bytes, and a small training run.
//
//   EXPECT_NE(ErrorOf([&] { LoadCheckpoint(path); }).find("checksum"), std::string::npos);
//   class CorpusTest : public TempDirTest {};   // dir_, Write("a.txt", "text")
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "bptt/init.h"
#include "bptt/model.h"
#include "bptt/rng.h"
#include "bptt/train_options.h"

namespace bptt::test {

// The message of the bptt::Error that f throws, or "" when it throws none.
template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A directory of its own for each test (under the system's temporary directory, named after the
// process and the test, so that parallel test processes never share one), removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& ch : name)
      if (ch == '/') ch = '_';
    dir_ = std::filesystem::temp_directory_path() / ("bptt_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `text` to dir_/name (creating its directories) and returns the path.
  std::filesystem::path Write(const std::string& name, const std::string& text) const {
    const std::filesystem::path path = dir_ / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  std::filesystem::path dir_;
};

// The bytes of a file ("" when it cannot be read).
inline std::string FileBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// A run of 24 steps of a 2-layer LSTM of 24 units on one thread, on a corpus of three sentences
// repeated (written to dir/corpus.txt), validating every 5 steps into dir/run.
inline TrainOptions SmallRun(const std::filesystem::path& dir, const std::string& run) {
  const std::filesystem::path corpus = dir / "corpus.txt";
  std::string text;
  for (int k = 0; k < 60; ++k) text += k % 3 == 0 ? "the cat sees the moon.\n" : k % 3 == 1 ? "a dog likes fish.\n" : "my aunt paints.\n";
  std::ofstream(corpus) << text;
  TrainOptions o;
  o.corpus = {corpus.string()};
  o.out = (dir / run).string();
  o.model.hidden_size = 24;
  o.model.layers = 2;
  o.batch = 4;
  o.seq_len = 16;
  o.threads = 1;
  o.val_frac = 0.1;
  o.eval_every = 5;
  o.max_steps = 24;
  return o;
}

// A float model's parameters drawn uniformly in [-scale, scale] from `seed`.
inline ModelParams<float> RandomParams(const ModelConfig& config, uint64_t seed, double scale) {
  ModelParams<float> params = ModelParams<float>::Zeros(config);
  Rng rng(seed);
  InitOptions init;
  init.scheme = InitScheme::kUniform;
  init.scale = scale;
  Initialize(config, init, rng, params);
  return params;
}

// n symbol ids below V drawn from `seed`.
inline std::vector<int32_t> RandomIds(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng.Below(static_cast<uint64_t>(V)));
  return ids;
}

}  // namespace bptt::test
