#include "kernels/cpu.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bptt/error.h"

namespace bptt {

namespace {

constexpr const char* kIsaNames[] = {"portable", "avx2", "avx512", "avx512-bf16", "amx"};

// The register state the operating system saves on a context switch (XCR0).
uint64_t SavedState() {
  uint32_t lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// Linux: ask for the AMX tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
bool AskForTiles() {
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

Isa MaxIsa() {
  const char* env = std::getenv("BPTT_MAX_ISA");
  if (env == nullptr || *env == '\0') return Isa::kAmx;
  for (int i = 0; i <= static_cast<int>(Isa::kAmx); ++i)
    if (std::string_view(env) == kIsaNames[i]) return static_cast<Isa>(i);
  throw Error(std::string("BPTT_MAX_ISA must be portable, avx2, avx512, avx512-bf16 or amx, got '") + env + "'");
}

CpuFeatures Detect() {
  CpuFeatures f;
  const Isa cap = MaxIsa();
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1;
  if (!osxsave || !avx) return f;
  const uint64_t state = SavedState();
  const bool ymm = (state & 0x6) == 0x6, zmm = (state & 0xe6) == 0xe6;
  unsigned max_sub = 0;
  if (!__get_cpuid_count(7, 0, &max_sub, &b, &c, &d)) return f;
  const bool avx2 = b >> 5 & 1;
  const bool avx512 = (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1);  // F, DQ, BW, VL
  const bool vnni = c >> 11 & 1;
  const bool amx = (d >> 22 & 1) && (d >> 24 & 1);  // AMX-BF16, AMX-TILE
  bool bf16 = false;
  if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) bf16 = a >> 5 & 1;

  f.avx2 = cap >= Isa::kAvx2 && avx2 && fma && ymm;
  f.avx512 = cap >= Isa::kAvx512 && f.avx2 && avx512 && zmm;
  f.avx512_vnni = f.avx512 && vnni;
  f.avx512_bf16 = cap >= Isa::kAvx512Bf16 && f.avx512 && bf16;
  f.amx = cap >= Isa::kAmx && f.avx512_bf16 && amx && AskForTiles();
  f.level = f.amx ? Isa::kAmx : f.avx512_bf16 ? Isa::kAvx512Bf16 : f.avx512 ? Isa::kAvx512 : f.avx2 ? Isa::kAvx2
                                                                                                   : Isa::kPortable;
  return f;
}

}  // namespace

const CpuFeatures& ThisCpu() {
  static const CpuFeatures features = Detect();
  return features;
}

const char* IsaName(Isa isa) { return kIsaNames[static_cast<int>(isa)]; }

}  // namespace bptt
