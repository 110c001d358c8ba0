#include "bptt/version.h"

#include <string>

#include "bptt/compute.h"
#include "distributed.h"
#include "kernels/cpu.h"

namespace bptt {

const char* Version() { return BPTT_VERSION; }

std::string VersionText() {
  const CpuFeatures& cpu = ThisCpu();
  std::string text = std::string("bptt ") + Version() + "\n";
  // The kernels in force, chosen at run time (kernels/cpu.h), and the build's own baseline.
  text += std::string("kernels: ") + IsaName(cpu.level) + " (chosen at run time; BPTT_MAX_ISA caps it)";
#if defined(__AVX512F__)
  text += ", built for AVX-512\n";
#elif defined(__AVX2__)
  text += ", built for AVX2\n";
#else
  text += ", built for baseline x86-64\n";
#endif
#if defined(EIGEN_USE_BLAS)
  text += "large products: OpenBLAS\n";
#else
  text += cpu.avx512 ? "large products: bptt's packed kernels (AVX-512)\n"
          : cpu.avx2 ? "large products: bptt's packed kernels (AVX2)\n"
                     : "large products: Eigen\n";
#endif
  text += cpu.amx           ? "bf16 training: AMX (train --precision bf16)\n"
          : cpu.avx512_bf16 ? "bf16 training: AVX-512 BF16 (train --precision bf16)\n"
                            : "bf16 training: no (this CPU has neither AMX nor AVX-512 BF16)\n";
  text += "threads: OpenMP\n";
  text += HaveMpi() ? "distributed: MPI (bptt train under mpirun)\n" : "distributed: no (built without MPI)\n";
#if defined(BPTT_PYTHON_MODULE)
  text += "python module: built (import bptt)\n";
#else
  text += "python module: not built\n";
#endif
#if defined(__clang__)
  text += "compiler: clang " __clang_version__ "\n";
#elif defined(__GNUC__)
  text += "compiler: GCC " __VERSION__ "\n";
#endif
#if defined(__SANITIZE_ADDRESS__)
  text += "sanitizers: address, undefined\n";
#endif
#if !defined(NDEBUG)
  text += "assertions: on\n";
#endif
  return text;
}

}  // namespace bptt
