// Block pruning: training that leaves the matrices of the recurrent layers block-sparse, so that
// sampling reads a fraction of their bytes (Narang et al. 2017; LPCNet, Valin & Skoglund 2019).
//
// A block is 16 rows by 4 columns of a weight matrix (G*H, K): 16 outputs of one step's product
// by 4 of its inputs, the unit the int8 step kernel skips (kernels/gemv.h: one AVX-512 VNNI
// instruction per block). The pruned matrices are every W_ih and W_hh of the recurrent layers
// that a step multiplies: all but a one-hot first layer's W_ih (a column gather) and the cells
// without a recurrent matrix's W_hh; the decoder and biases stay dense. Each matrix is pruned to
// the same fraction of its blocks (the last row or column of blocks may be partial).
//
// Gradual magnitude pruning (Zhu & Gupta 2017): after every optimizer step the fraction of
// blocks held at zero is
//
//   s(f) = S (1 - (1 - (f - start) / (end - start))^3)   for start <= f < end,
//
// 0 before start and S from end on, where f is the fraction of the run done (the limit of
// --lr-anneal's: steps, epochs, sequences or time). The blocks pruned so far stay pruned; when
// s(f) asks for more, the remaining blocks of least L2 norm join them (ties to the lower index).
// Pruning is a projection after each update, not a term of the loss: the gradients are those of
// the dense model at the pruned weights, and the optimizer's moments of a pruned block go on
// accumulating while its weights stay zero.
//
// A checkpoint needs nothing beside the weights: the pruned blocks are the blocks that are zero
// (a block of 64 trained weights that are all exactly zero without being pruned does not
// occur), so a resumed run rebuilds the pruner from them and continues exactly.
//
//   BlockPruner pruner(config, params);                    // the zero blocks of params
//   pruner.Step(params, PruneTarget(options.prune, f));    // after each optimizer step
//   double s = BlockSparsity(params.layers[0].weight_hh());
#pragma once

#include <cstdint>
#include <vector>

#include "bptt/model.h"

namespace bptt {

inline constexpr Eigen::Index kPruneBlockRows = 16;
inline constexpr Eigen::Index kPruneBlockCols = 4;

struct PruneOptions {
  double sparsity = 0;  // S, the final fraction of each pruned matrix's blocks at zero; 0 = off
  double start = 0.1;   // fraction of the run at which pruning begins...
  double end = 0.6;     // ...and at which it reaches S

  bool on() const { return sparsity > 0; }
  // Throws bptt::Error naming the flag (--prune, --prune-start, --prune-end) of a bad value.
  void Validate() const;
};

// s(f) above.
double PruneTarget(const PruneOptions& options, double run_fraction);

// The fraction of m's 16x4 blocks (partial ones at the edges included) that are all zero.
double BlockSparsity(const Mat<float>& m);

// The matrices pruning applies to, in ModelParams' order (above).
std::vector<Mat<float>*> PrunedMatrices(const ModelConfig& config, ModelParams<float>& params);
std::vector<const Mat<float>*> PrunedMatrices(const ModelConfig& config, const ModelParams<float>& params);

class BlockPruner {
 public:
  BlockPruner() = default;
  // The pruned blocks: those of params' pruned matrices that are zero.
  BlockPruner(const ModelConfig& config, const ModelParams<float>& params);

  // Zeroes the pruned blocks of params (an update has moved them), then prunes each matrix's
  // blocks of least norm until `sparsity` of its blocks are pruned (never fewer than before).
  void Step(ModelParams<float>& params, double sparsity);
  // Zeroes the pruned blocks of other weights of the same model (the weight average).
  void Apply(ModelParams<float>& params) const;

  // The fraction of all pruned matrices' blocks that are pruned (of a model's weights: that are
  // zero; `bptt inspect` shows it).
  double sparsity() const;

 private:
  struct Matrix {
    Eigen::Index block_rows = 0, block_cols = 0;
    std::vector<uint8_t> pruned;  // (block_rows * block_cols), block (i, j) at i + block_rows j
    int64_t count = 0;            // pruned blocks
  };
  ModelConfig config_;
  std::vector<Matrix> matrices_;
};

}  // namespace bptt
