#include "bptt/prune.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "bptt/error.h"

namespace bptt {

namespace {

Eigen::Index BlocksOf(Eigen::Index n, Eigen::Index block) { return (n + block - 1) / block; }

// The block (i, j) of m: rows [16 i, 16 i + 16) by columns [4 j, 4 j + 4), cut at the edges.
template <typename M>
auto Block(M& m, Eigen::Index i, Eigen::Index j) {
  const Eigen::Index r = i * kPruneBlockRows, k = j * kPruneBlockCols;
  return m.block(r, k, std::min(kPruneBlockRows, m.rows() - r), std::min(kPruneBlockCols, m.cols() - k));
}

}  // namespace

void PruneOptions::Validate() const {
  if (!(sparsity >= 0 && sparsity < 1)) throw Error("--prune must be in [0, 1) (0 = off), got " + std::to_string(sparsity));
  if (!(start >= 0 && start <= 1)) throw Error("--prune-start must be in [0, 1], got " + std::to_string(start));
  if (!(end >= start && end <= 1))
    throw Error("--prune-end must be in [--prune-start, 1], got " + std::to_string(end) + " with --prune-start " +
                std::to_string(start));
}

double PruneTarget(const PruneOptions& options, double run_fraction) {
  if (!options.on() || run_fraction < options.start) return 0;
  if (run_fraction >= options.end) return options.sparsity;
  const double left = 1 - (run_fraction - options.start) / (options.end - options.start);
  return options.sparsity * (1 - left * left * left);
}

double BlockSparsity(const Mat<float>& m) {
  const Eigen::Index rows = BlocksOf(m.rows(), kPruneBlockRows), cols = BlocksOf(m.cols(), kPruneBlockCols);
  if (rows * cols == 0) return 0;
  int64_t zero = 0;
  for (Eigen::Index j = 0; j < cols; ++j)
    for (Eigen::Index i = 0; i < rows; ++i) zero += (Block(m, i, j).array() == 0).all() ? 1 : 0;
  return static_cast<double>(zero) / static_cast<double>(rows * cols);
}

std::vector<Mat<float>*> PrunedMatrices(const ModelConfig& config, ModelParams<float>& params) {
  std::vector<Mat<float>*> out;
  for (size_t l = 0; l < params.layers.size(); ++l) {
    const bool gather = l == 0 && !config.dense_input() && config.embed_size == 0;  // one-hot input
    if (!gather) out.push_back(&params.layers[l].weight_ih());
    if (config.cell->recurrent_matrix()) out.push_back(&params.layers[l][kWeightHhSlot]);
  }
  return out;
}

std::vector<const Mat<float>*> PrunedMatrices(const ModelConfig& config, const ModelParams<float>& params) {
  const std::vector<Mat<float>*> ms = PrunedMatrices(config, const_cast<ModelParams<float>&>(params));
  return {ms.begin(), ms.end()};
}

BlockPruner::BlockPruner(const ModelConfig& config, const ModelParams<float>& params) : config_(config) {
  for (const Mat<float>* m : PrunedMatrices(config_, params)) {
    Matrix p;
    p.block_rows = BlocksOf(m->rows(), kPruneBlockRows);
    p.block_cols = BlocksOf(m->cols(), kPruneBlockCols);
    p.pruned.assign(static_cast<size_t>(p.block_rows * p.block_cols), 0);
    for (Eigen::Index j = 0; j < p.block_cols; ++j)
      for (Eigen::Index i = 0; i < p.block_rows; ++i)
        if ((Block(*m, i, j).array() == 0).all()) {
          p.pruned[static_cast<size_t>(i + p.block_rows * j)] = 1;
          ++p.count;
        }
    matrices_.push_back(std::move(p));
  }
}

void BlockPruner::Apply(ModelParams<float>& params) const {
  const std::vector<Mat<float>*> ms = PrunedMatrices(config_, params);
  for (size_t n = 0; n < ms.size(); ++n) {
    const Matrix& p = matrices_[n];
    if (p.count == 0) continue;
    for (Eigen::Index j = 0; j < p.block_cols; ++j)
      for (Eigen::Index i = 0; i < p.block_rows; ++i)
        if (p.pruned[static_cast<size_t>(i + p.block_rows * j)]) Block(*ms[n], i, j).setZero();
  }
}

void BlockPruner::Step(ModelParams<float>& params, double sparsity) {
  Apply(params);
  const std::vector<Mat<float>*> ms = PrunedMatrices(config_, params);
  std::vector<std::pair<float, int64_t>> live;  // (block's squared norm, index)
  for (size_t n = 0; n < ms.size(); ++n) {
    Matrix& p = matrices_[n];
    const int64_t blocks = p.block_rows * p.block_cols;
    const auto wanted = std::min(blocks, static_cast<int64_t>(std::floor(sparsity * static_cast<double>(blocks))));
    if (wanted <= p.count) continue;
    live.clear();
    for (Eigen::Index j = 0; j < p.block_cols; ++j)
      for (Eigen::Index i = 0; i < p.block_rows; ++i) {
        const int64_t index = i + p.block_rows * j;
        if (!p.pruned[static_cast<size_t>(index)]) live.emplace_back(Block(*ms[n], i, j).squaredNorm(), index);
      }
    const auto more = static_cast<ptrdiff_t>(wanted - p.count);
    std::nth_element(live.begin(), live.begin() + (more - 1), live.end());  // (norm, index): ties to the lower index
    for (ptrdiff_t k = 0; k < more; ++k) {
      const int64_t index = live[static_cast<size_t>(k)].second;
      p.pruned[static_cast<size_t>(index)] = 1;
      Block(*ms[n], index % p.block_rows, index / p.block_rows).setZero();
    }
    p.count = wanted;
  }
}

double BlockPruner::sparsity() const {
  int64_t pruned = 0, blocks = 0;
  for (const Matrix& p : matrices_) {
    pruned += p.count;
    blocks += p.block_rows * p.block_cols;
  }
  return blocks > 0 ? static_cast<double>(pruned) / static_cast<double>(blocks) : 0;
}

}  // namespace bptt
