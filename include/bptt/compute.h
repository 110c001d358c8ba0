// Compute: how a model's products run — on how many threads, and in which number format.
//
// Every compute call takes one (model.h Forward and Backward, the cells' chunk modes), so the
// choice travels with the call and nothing is set process-wide. A thread count converts to one
// with float products.
//
// Precision names the number format of products:
//   kFloat32   float operands, float sums (everywhere, and the default).
//   kBfloat16  bfloat16 operands, float sums. For training, every matrix product of a chunk runs
//              on Intel's AMX tile unit or with AVX-512 BF16 dot products, whichever the CPU has
//              (src/kernels/bf16_gemm.h): the large products over all T*B columns (input
//              projections, weight gradients, the decoder) and each step's recurrent product;
//              the gate arithmetic, the sums over time, the loss and the optimizer stay float.
//              For sampling, the Stepper's per-step products (stepper.h), with the AVX-512 BF16
//              dot products.
//   kInt8      int8 weights with float row scales: sampling and stepwise scoring only.
//
//   Forward(config, params, batch, state, cache, Compute{threads, Precision::kBfloat16}, &rng);
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "bptt/tensor.h"

namespace bptt {

enum class Precision { kFloat32, kBfloat16, kInt8 };

// "fp32", "bf16", "int8" and back; ParsePrecision throws bptt::Error naming `flag` for anything else.
const char* PrecisionName(Precision precision);
Precision ParsePrecision(std::string_view name, std::string_view flag);

// True when training's products can run in bfloat16 here: the CPU has AVX-512 BF16, or AMX-BF16
// with the operating system letting the process use its tiles (and BPTT_MAX_ISA does not cap
// them: src/kernels/cpu.h).
bool Bf16ProductsAvailable();

struct Compute {
  int threads = 1;                            // >= 1
  Precision products = Precision::kFloat32;   // of the matrix products: kFloat32 or kBfloat16
  Compute(int threads = 1, Precision products = Precision::kFloat32) : threads(threads), products(products) {}
};

// A matrix packed once for many products with it (src/kernels/packed_gemm.h Pack): the time
// loops pack W_hh (or its transpose) once per chunk and every step's product reads the packing.
// Float panels of 32 rows, or, when the products are bfloat16, bfloat16 tiles
// (src/kernels/bf16_gemm.h).
template <typename S>
struct PackedMatrix {
  Eigen::Index M = 0, K = 0;   // the packed matrix's shape
  bool bf16 = false;           // which of the two below holds it
  Mat<S> panels;               // (32, K*ceil(M/32)) float panels
  std::vector<uint16_t> tiles; // ceil(M/16)*ceil(K/32) tiles of 16x32 bfloat16
};

}  // namespace bptt
