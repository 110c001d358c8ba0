#include "bptt/version.h"

#include <string>

#include "bptt/compute.h"
#include "distributed.h"

namespace bptt {

const char* Version() { return BPTT_VERSION; }

std::string VersionText() {
  std::string kernels;
#if defined(__AVX512F__)
  kernels = "AVX-512";
#if defined(__AVX512BF16__) && defined(__AVX512VNNI__)
  kernels += " (bf16 dot products, int8 VNNI)";
#elif defined(__AVX512VNNI__)
  kernels += " (int8 VNNI; bf16 in portable C++)";
#elif defined(__AVX512BF16__)
  kernels += " (bf16 dot products; int8 in portable C++)";
#else
  kernels += " (bf16 and int8 in portable C++)";
#endif
#else
  kernels = "portable C++ (built without AVX-512)";
#endif
  std::string text = std::string("bptt ") + Version() + "\n";
  text += "kernels: " + kernels + "\n";
#if defined(EIGEN_USE_BLAS)
  text += "large products: OpenBLAS\n";
#else
  text += "large products: Eigen\n";
#endif
  text += Bf16ProductsAvailable() ? "bf16 training: AMX (train --precision bf16)\n"
                                  : "bf16 training: no (this CPU has no AMX)\n";
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
