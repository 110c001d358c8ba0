// A recurrent cell: its type, its parameters in PyTorch's layout, and the per-chunk buffers
// that its forward pass fills and its backward pass reads.
//
// Every cell type shares one parameter layout, that of torch.nn.RNN / LSTM / GRU for one layer:
//   weight_ih (G*H, E)   input-to-hidden, gate blocks stacked in PyTorch's order
//   weight_hh (G*H, H)   hidden-to-hidden
//   bias_ih   (G*H, 1)
//   bias_hh   (G*H, 1)
// with G = 1 (RNN), 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n).
//
// One chunk of T timesteps is processed as follows (see rnn.h, lstm.h, gru.h):
//   1. the caller writes the input projection W_ih x_t + b_ih for all T steps into
//      cache.gates with one GEMM (or a column gather for one-hot input), and h_0 (c_0)
//      into the first B columns of cache.h (cache.c);
//   2. <Cell>Forward runs the time loop: one recurrent GEMM (G*H, H)·(H, B) per step and
//      one fused pass over the gate elements, leaving every value backward needs in the cache
//      (W_hh is packed once per chunk for the step products, and each thread sweeps its own
//      columns of the batch: src/packed_gemm.h);
//   3. <Cell>Backward runs one reverse sweep t = T..1 over the cache, writes the gradient
//      on the gate pre-activations for all steps into LayerBackward::dgates (from which the
//      caller forms dW_ih, db_ih and the input gradient with a few large GEMMs) and
//      accumulates dW_hh, db_hh with one GEMM after the sweep.
// The caller owns the cache and the backward buffers; they are resized only when T, B or
// H change, so nothing is allocated inside the time loop.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "bptt/tensor.h"

namespace bptt {

enum class CellType { kRnnTanh, kRnnSigmoid, kRnnRelu, kLstm, kGru };

// "rnn-tanh", "rnn-sigmoid", "rnn-relu", "lstm", "gru".
std::string_view CellName(CellType cell);
std::optional<CellType> ParseCell(std::string_view name);

// G: gate blocks per cell (1, 4 or 3).
int GateCount(CellType cell);

inline bool IsRnn(CellType cell) {
  return cell == CellType::kRnnTanh || cell == CellType::kRnnSigmoid || cell == CellType::kRnnRelu;
}

// One layer's parameters, or their gradients (same type, same shapes).
template <typename S>
struct RecurrentParams {
  Mat<S> weight_ih;  // (G*H, E)
  Mat<S> weight_hh;  // (G*H, H)
  Mat<S> bias_ih;    // (G*H, 1)
  Mat<S> bias_hh;    // (G*H, 1)

  static RecurrentParams Zeros(CellType cell, Eigen::Index E, Eigen::Index H) {
    const Eigen::Index GH = GateCount(cell) * H;
    return {Mat<S>::Zero(GH, E), Mat<S>::Zero(GH, H), Mat<S>::Zero(GH, 1), Mat<S>::Zero(GH, 1)};
  }
  Eigen::Index hidden_size() const { return weight_hh.cols(); }
};

// Values recorded by one layer's forward pass over a chunk; read by its backward pass.
template <typename S>
struct LayerCache {
  Eigen::Index T = 0, B = 0;
  Mat<S> gates;         // (G*H, T*B) in: W_ih x_t + b_ih; out: gate activations
                        //   RNN: h_t (unused by backward); LSTM: i, f, g, o; GRU: r, z, n
  Mat<S> h;             // (H, (T+1)*B) h_0 in columns [0, B), then h_1 .. h_T
  Mat<S> c;             // LSTM only: (H, (T+1)*B) c_0, then c_1 .. c_T
  Mat<S> tanh_c;        // LSTM only: (H, T*B) tanh(c_t)
  Mat<S> hidden_gates;  // GRU only: (3H, T*B) W_hh h_{t-1} + b_hh
  Mat<S> packed_hh;     // (32, H*ceil(G*H/32)) workspace: W_hh in the kernel's panels, packed
                        //   once per chunk (src/packed_gemm.h)

  // Shapes the buffers for a chunk; reallocates only when a dimension changes.
  void Resize(CellType cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_);

  // Column block of timestep t (0-based) in a (., T*B) buffer, and of h_t / c_t.
  auto Step(Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
  auto Step(const Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
};

// Caller-owned buffers for one layer's backward pass over a chunk.
template <typename S>
struct LayerBackward {
  Mat<S> dgates;    // (G*H, T*B) out: dL/d(W_ih x_t + b_ih), the gate pre-activation gradient
  Mat<S> dgates_h;  // GRU only: (3H, T*B) dL/d(W_hh h_{t-1} + b_hh)
  Mat<S> dh;        // (H, B) in: dL/dh_T from beyond the chunk; out: dL/dh_0
  Mat<S> dc;        // LSTM only: (H, B) in: dL/dc_T; out: dL/dc_0
  Mat<S> scratch;   // (H, B) workspace
  Mat<S> packed_hh_t;  // (32, G*H*ceil(H/32)) workspace: W_hh^T in the kernel's panels

  // With record set, the sweep also keeps the total gradient on every step's state, for
  // gradient-decay analysis (decay.h); training leaves it off.
  bool record = false;
  Mat<S> dh_steps;  // record: (H, T*B) dL/dh_t for t = 1..T
  Mat<S> dc_steps;  // record, LSTM only: (H, T*B) dL/dc_t for t = 1..T

  void Resize(CellType cell, Eigen::Index H, Eigen::Index T, Eigen::Index B);
};

// Dispatch on the cell type to RnnForward/LstmForward/GruForward (and Backward).
// dh_out (H, T*B) is dL/dh_t for t = 1..T arriving from above (the next layer or the decoder).
template <typename S>
void CellForward(CellType cell, const RecurrentParams<S>& p, LayerCache<S>& cache);
template <typename S>
void CellBackward(CellType cell, const RecurrentParams<S>& p, const LayerCache<S>& cache,
                  const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad);

}  // namespace bptt
