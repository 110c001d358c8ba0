// libFuzzer target for Safetensors::Parse: any input must either parse or throw bptt::Error,
// and whatever parses must serialize and parse back to the same bytes.
//
//   fuzz/run 60 safetensors     (builds it with clang and libFuzzer and runs it for 60 s)
// libFuzzer adds the inputs it finds to build-fuzz/corpus/, so the seeds here stay as they are;
// ctest replays them (safetensors_fuzz_seeds, fuzz/replay.cc).
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
