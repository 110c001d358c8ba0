// Tensor types and the shape letters used everywhere in bptt.
//
// Every matrix in bptt is an Eigen column-major matrix whose columns are the batch:
// a hidden state is (H, B), a chunk of T timesteps is (X, T*B) with column t*B + b holding
// timestep t of sequence b. Vectors (biases) are (N, 1) matrices so that parameters,
// gradients and optimizer state are all one type.
//
//   B  batch: independent sequences processed side by side
//   T  timesteps in one chunk of truncated BPTT
//   E  input width of a layer (V for one-hot input, the embedding width, D, or H below)
//   D  features per step of a dense input
//   H  hidden units per layer
//   G  gate blocks per cell (Cell::gates): 1 for RNN, 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n);
//      docs/cells.md lists every cell
//   V  vocabulary size: the symbols of a symbol input
//   O  outputs per step: classes of a softmax head (V for a language model) or regression targets
//   L  stacked recurrent layers
//
// Numeric code is templated on the scalar S and instantiated for float (training) and
// double (gradient checks).
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace bptt {

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;  // column-major

template <typename S>
using MatRef = Eigen::Ref<Mat<S>>;

template <typename S>
using ConstMatRef = Eigen::Ref<const Mat<S>>;

// Symbol ids of a chunk, (T*B) in the column order above.
using Ids = Eigen::Matrix<int32_t, Eigen::Dynamic, 1>;

// One flag per position of a chunk, (T*B) in the column order above.
using Mask = Eigen::Matrix<uint8_t, Eigen::Dynamic, 1>;

// Resizes m to (rows, cols) only when its shape differs, so that buffers reused from
// one chunk to the next are never reallocated.
template <typename S>
inline void EnsureShape(Mat<S>& m, Eigen::Index rows, Eigen::Index cols) {
  if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
}

}  // namespace bptt
