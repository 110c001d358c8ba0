// A main for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once on each file
// of the directories (or files) given, after LLVMFuzzerInitialize when the target has one. The
// regular build links each target with it and ctest replays the committed seeds (fuzz/corpus/),
// so every target compiles with the rest and its seeds and regression inputs pass in every
// build, the checked one included. A target aborts on a finding; this main returns 1 when there
// was nothing to replay.
//   safetensors_replay fuzz/corpus/safetensors
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

// Only libFuzzer's mutation calls it, and replaying never mutates.
extern "C" size_t LLVMFuzzerMutate(uint8_t*, size_t, size_t) { std::abort(); }

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> inputs;
  for (int k = 1; k < argc; ++k) {
    if (fs::is_directory(argv[k])) {
      for (const fs::directory_entry& entry : fs::directory_iterator(argv[k]))
        if (entry.is_regular_file()) inputs.push_back(entry.path());
    } else {
      inputs.emplace_back(argv[k]);
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "%s: no inputs to replay\n", argv[0]);
    return 1;
  }
  for (const fs::path& input : inputs) {
    std::ifstream in(input, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], input.c_str());
      return 1;
    }
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::fprintf(stderr, "%s: %s (%zu bytes)\n", argv[0], input.filename().c_str(), bytes.size());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::fprintf(stderr, "%s: %zu inputs replayed\n", argv[0], inputs.size());
  return 0;
}
