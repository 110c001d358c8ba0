// libFuzzer target for Safetensors::Parse: any input must either parse or throw bptt::Error,
// and whatever parses must serialize and parse back to the same bytes.
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     fuzz/safetensors_fuzz.cc src/safetensors.cc -lz -o /tmp/safetensors_fuzz
//   mkdir -p /tmp/corpus
//   /tmp/safetensors_fuzz -max_total_time=60 /tmp/corpus fuzz/corpus/safetensors
// libFuzzer adds the inputs it finds to the first directory, so the seeds here stay as they are.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "bptt/error.h"
#include "bptt/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bptt::Safetensors st;
  try {
    st = bptt::Safetensors::Parse(std::span<const uint8_t>(data, size), "fuzz");
  } catch (const bptt::Error&) {
    return 0;
  }
  const std::vector<uint8_t> bytes = st.Serialize();
  if (bptt::Safetensors::Parse(bytes, "reserialized").Serialize() != bytes) std::abort();
  return 0;
}
