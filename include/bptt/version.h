// Version: which bptt this is and what its build contains, for `bptt --version` and bug reports.
//
//   std::cout << VersionText();   // "bptt 0.2.0\nkernels: AVX-512 (BF16, VNNI) ..."
#pragma once

#include <string>

namespace bptt {

// "0.2.0": the project version of CMakeLists.txt.
const char* Version();

// The version and, one per line, what the build contains: the kernels compiled in (AVX-512 with
// BF16 and VNNI, or the portable fallbacks), whether Eigen's products go to OpenBLAS, the
// compiler, and whether the build has sanitizers or assertions.
std::string VersionText();

}  // namespace bptt
