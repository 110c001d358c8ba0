#include "bptt/compute.h"

#include <string>

#include "bptt/error.h"
#include "kernels/bf16_gemm.h"

namespace bptt {

namespace {
constexpr Precision kPrecisions[] = {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8};
}  // namespace

const char* PrecisionName(Precision precision) {
  constexpr const char* kNames[] = {"fp32", "bf16", "int8"};
  return kNames[static_cast<int>(precision)];
}

Precision ParsePrecision(std::string_view name, std::string_view flag) {
  for (const Precision p : kPrecisions)
    if (name == PrecisionName(p)) return p;
  throw Error(std::string(flag) + " must be fp32, bf16 or int8, got '" + std::string(name) + "'");
}

bool Bf16ProductsAvailable() { return Bf16ProductsHere(); }

}  // namespace bptt
