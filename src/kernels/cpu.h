// What the processor bptt runs on can do, asked once per process, and which kernels follow.
//
// Every kernel with instructions beyond the build's baseline (-march) is compiled for its
// instruction set through target attributes and chosen here at run time, so one binary built
// for any x86-64 level runs the fastest kernels the processor has (a Debian package cannot
// assume AVX-512). The levels, each including the ones before it:
//   portable     plain C++ (and Eigen, at the build's -march)
//   avx2         AVX2 and FMA (x86-64-v3: Haswell, Zen 1-3, most laptops)
//   avx512       AVX-512 F, BW, DQ and VL, with VNNI where the processor has it
//   avx512-bf16  AVX-512 BF16 dot products (VDPBF16PS): Zen 4/5, Cooper Lake, Sapphire Rapids
//   amx          AMX-BF16 tiles (Sapphire Rapids and later), when the kernel grants them
// The environment variable BPTT_MAX_ISA set to one of these names caps the level, so that one
// machine can measure the kernels of a lesser one (bench/README.md: the AVX2 rows), as
// oneDNN's ONEDNN_MAX_CPU_ISA does. `bptt --version` names the level in force.
//
//   if (ThisCpu().avx512_bf16) ...   // the AVX-512 BF16 kernels may run
#pragma once

namespace bptt {

enum class Isa { kPortable, kAvx2, kAvx512, kAvx512Bf16, kAmx };

struct CpuFeatures {
  Isa level = Isa::kPortable;  // the highest level in force (after BPTT_MAX_ISA)
  bool avx2 = false;           // AVX2 and FMA, with the operating system saving the ymm registers
  bool avx512 = false;         // AVX-512 F, BW, DQ, VL, with the zmm registers saved
  bool avx512_vnni = false;    // AVX-512 VNNI (int8 dot products), on an avx512 level
  bool avx512_bf16 = false;    // AVX-512 BF16 (VDPBF16PS, VCVTNE2PS2BF16)
  bool amx = false;            // AMX-BF16 and AMX-TILE, the tile data granted by the kernel
};

// The features in force; the first call asks the processor (and Linux, for AMX's tiles) and
// reads BPTT_MAX_ISA, throwing bptt::Error naming it when its value is none of the names above.
const CpuFeatures& ThisCpu();

// "portable", "avx2", "avx512", "avx512-bf16", "amx".
const char* IsaName(Isa isa);

}  // namespace bptt
