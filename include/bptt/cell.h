// A recurrent cell: one layer's step function h_t = f(x_t, h_{t-1}[, c_{t-1}]), its parameters in
// PyTorch's layout, and every mode in which bptt computes it.
//
// Every cell shares one parameter layout, that of torch.nn.RNN / LSTM / GRU for one layer:
//   weight_ih (G*H, E)   input-to-hidden, gate blocks stacked in PyTorch's order
//   weight_hh (G*H, H)   hidden-to-hidden
//   bias_ih   (G*H, 1)
//   bias_hh   (G*H, 1)
//
// A cell is one file in src/cells/ that holds, under the cell's equations and side by side, its
// four modes, and one row of the registry (src/cells/registry.cc), the only place that knows
// the list of cells. Everything else reads a cell through its Cell entry:
//
//   mode           works on                                used by
//   chunk_forward  T steps of B streams, caching           training, chunked evaluation
//   chunk_backward the cache of chunk_forward, dL/dh       training, gradient checks, decay
//   step           one stream, one step, any precision     sampling, stepwise scoring
//   tangent        a direction dh_0 (dc_0), the cache      the Jacobian norms of `bptt decay`
//
// chunk_forward and step call one pointwise function per cell (the fused pass over a column
// of gate pre-activations), so the two cannot drift; the gradient checks prove chunk_backward,
// and the PyTorch reference proves chunk_forward and step.
//
// Layer normalisation (Ba, Kiros & Hinton 2016; ModelConfig::layer_norm, --layer-norm) is a
// variant of the cells whose row says so (Cell::layer_norm: LSTM and GRU). With it, each LN
//   LN(z; g, b) = g * (z - mean(z)) / sqrt(var(z) + eps) + b,   eps = 1e-5 (PyTorch's default)
// normalises one column, the whole G*H vector at once as in the paper (not each gate block):
// the raw input projection W_ih x_t and the raw recurrent product W_hh h_{t-1} each get their
// own LN, and the LSTM's cell state a third before its tanh (the cell files give the equations).
// b_ih and b_hh are still added after the LNs (the LN biases duplicate them; PyTorch's layout
// is kept). A layer has the variant exactly when its RecurrentParams hold the LN tensors; the
// cells branch on that once per chunk or step, so the plain cells run as they always have.
//
// One chunk of T timesteps runs as follows:
//   1. the caller writes the input projection W_ih x_t for all T steps into cache.gates with
//      one GEMM (or a column gather for one-hot input), and h_0 (c_0) into the first B columns
//      of cache.h (cache.c); the cell adds b_ih and b_hh itself (a variant may normalise the
//      projections before it does);
//   2. chunk_forward runs the time loop: one recurrent product (G*H, H)·(H, B) per step over
//      W_hh packed once per chunk (src/kernels/packed_gemm.h) and one fused pass over the gate
//      elements, leaving every value backward needs in the cache; each thread sweeps its own
//      columns of the batch;
//   3. chunk_backward runs one reverse sweep t = T..1 over the cache, writes the gradient on
//      the input projection for all steps into LayerBackward::dgates (from which the caller
//      forms dW_ih and the input gradient with a few large GEMMs) and accumulates dW_hh (one
//      GEMM), db_ih, db_hh (and the LN gains and biases) after the sweep.
// The caller owns the cache and the backward buffers; they are resized only when T, B or H
// change, so nothing is allocated inside the time loop. The chunk modes compute as `compute`
// says (compute.h): on its threads, and with bfloat16 products the steps' recurrent products
// and dW_hh run in bfloat16 (AMX or AVX-512 BF16); the gate arithmetic stays in float.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/compute.h"
#include "bptt/tensor.h"

namespace bptt {

struct Cell;

// One layer's parameters, or their gradients (same type, same shapes).
template <typename S>
struct RecurrentParams {
  Mat<S> weight_ih;  // (G*H, E)
  Mat<S> weight_hh;  // (G*H, H)
  Mat<S> bias_ih;    // (G*H, 1)
  Mat<S> bias_hh;    // (G*H, 1)
  // Layer normalisation only (empty otherwise): the gain g and bias b of each LN.
  Mat<S> ln_ih_weight;  // (G*H, 1) LN(W_ih x_t)
  Mat<S> ln_ih_bias;    // (G*H, 1)
  Mat<S> ln_hh_weight;  // (G*H, 1) LN(W_hh h_{t-1})
  Mat<S> ln_hh_bias;    // (G*H, 1)
  Mat<S> ln_c_weight;   // cells with a cell state: (H, 1) LN(c_t)
  Mat<S> ln_c_bias;     // cells with a cell state: (H, 1)

  // All zeros (the LN gains too: Initialize sets them to 1).
  static RecurrentParams Zeros(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm);
  // Every tensor at its shape, the values unset: for tensors about to be written whole, or only
  // looked at (a large tensor's memory is then not even touched).
  static RecurrentParams Shaped(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm);
  Eigen::Index hidden_size() const { return weight_hh.cols(); }
  bool layer_norm() const { return ln_ih_weight.size() > 0; }
};

// Values recorded by one layer's forward pass over a chunk; read by its backward pass.
template <typename S>
struct LayerCache {
  Eigen::Index T = 0, B = 0;
  Mat<S> gates;      // (G*H, T*B) in: W_ih x_t; out: the gate activations
                     //   (RNN: h_t; LSTM: i, f, g, o; GRU: r, z, n)
  Mat<S> h;          // (H, (T+1)*B) h_0 in columns [0, B), then h_1 .. h_T
  Mat<S> c;          // cells with a cell state: (H, (T+1)*B) c_0, then c_1 .. c_T
  Mat<S> tanh_c;     // cells with a cell state: (H, T*B) tanh(c_t); with layer norm tanh(LN(c_t))
  Mat<S> recurrent;  // cells that keep the recurrent pre-activation apart: (G*H, T*B)
                     //   W_hh h_{t-1} + b_hh (GRU; with layer norm LN(W_hh h_{t-1}) + b_hh)
  // Layer normalisation only: each LN's normalised input (z - mean) / sqrt(var + eps), and the
  // per-column 1 / sqrt(var + eps).
  Mat<S> ln_ih;      // (G*H, T*B) of W_ih x_t
  Mat<S> ln_hh;      // (G*H, T*B) of W_hh h_{t-1}
  Mat<S> ln_c;       // cells with a cell state: (H, T*B) of c_t
  Mat<S> ln_rstd;    // (2, T*B), cells with a cell state (3, T*B): rows ih, hh, c
  PackedMatrix<S> packed_hh;    // workspace: W_hh packed once per chunk for the steps' products

  // Shapes the buffers for a chunk; reallocates only when a dimension changes.
  void Resize(const Cell& cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_, bool layer_norm);

  // Column block of timestep t (0-based) in a (., T*B) buffer, and of h_t / c_t.
  auto Step(Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
  auto Step(const Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
};

// Caller-owned buffers for one layer's backward pass over a chunk.
template <typename S>
struct LayerBackward {
  Mat<S> dgates;       // (G*H, T*B) out: dL/d(W_ih x_t), the input projection's gradient
  Mat<S> drecurrent;   // cells that keep the recurrent pre-activation apart, and any cell with
                       //   layer norm: (G*H, T*B) dL/d(W_hh h_{t-1})
  // Layer normalisation only: the gradient on each LN's output, for the gains and biases.
  Mat<S> dln_ih;       // (G*H, T*B) dL/dLN(W_ih x_t) (also b_ih's; without a separate recurrent
                       //   pre-activation both LNs are summed into one, and this is dL/dLN(W_hh h) too)
  Mat<S> dln_hh;       // cells that keep the recurrent pre-activation apart: (G*H, T*B) dL/dLN(W_hh h_{t-1})
  Mat<S> dln_c;        // cells with a cell state: (H, T*B) dL/dLN(c_t)
  Mat<S> dh;           // (H, B) in: dL/dh_T from beyond the chunk; out: dL/dh_0
  Mat<S> dc;           // cells with a cell state: (H, B) in: dL/dc_T; out: dL/dc_0
  PackedMatrix<S> packed_hh_t;  // workspace: W_hh^T packed once per chunk for the steps' products

  // With record set, the sweep also keeps the total gradient on every step's state, for
  // gradient-decay analysis (decay.h); training leaves it off.
  bool record = false;
  Mat<S> dh_steps;  // record: (H, T*B) dL/dh_t for t = 1..T
  Mat<S> dc_steps;  // record, cells with a cell state: (H, T*B) dL/dc_t for t = 1..T

  void Resize(const Cell& cell, Eigen::Index H, Eigen::Index T, Eigen::Index B, bool layer_norm);
};

// The step mode's recurrent product for one stream, in whatever precision the caller holds
// W_hh: y (G*H) = W_hh x (x: H), or y += W_hh x when accumulate.
using StepProduct = std::function<void(const float* x, float* y, bool accumulate)>;

// The chunk and tangent modes, for one scalar type (float for training, double for the
// gradient checks and decay analysis).
template <typename S>
struct CellModes {
  // In: cache.gates = W_ih x (G*H, T*B); h_0 (c_0) in the first B columns of cache.h
  // (cache.c). Out: the rest of the cache.
  void (*chunk_forward)(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute);
  // In: dh_out (H, T*B) = dL/dh_t arriving from above; back.dh (back.dc) = dL/dh_T (dL/dc_T).
  // Out: back.dgates (and back.drecurrent, back.dln_*); back.dh (back.dc) = dL/dh_0 (dL/dc_0);
  // grad.weight_hh, grad.bias_ih, grad.bias_hh (and grad.ln_*) += their gradients; the caller
  // forms grad.weight_ih from back.dgates. The error goes back a step through
  // back_hh^T: p.weight_hh for backpropagation, a fixed random matrix of its shape for feedback
  // alignment, or none (empty) for direct feedback alignment (model.h Feedback).
  void (*chunk_backward)(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                         const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad,
                         Compute compute);
  // The tangent-linear pass over the cached chunk with the input held fixed: dh (H, B) in: a
  // direction at h_0, out: the directional derivative of h_T, ∂h_T/∂h_0 · dh. For cells with a
  // cell state, dc likewise (in: the direction at c_0, usually 0; out: that of c_T).
  void (*tangent)(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>& dc);
};

// One row of the registry: what a cell is, and its modes.
struct Cell {
  std::string_view name;         // "lstm": the --cell value and the checkpoint's "cell"
  int gates;                     // G
  std::string_view gate_names;   // one letter per gate block in PyTorch's order ("ifgo"); "" for G = 1
  bool cell_state;               // keeps c_t besides h_t
  bool separate_recurrent;       // keeps W_hh h_{t-1} + b_hh apart from the input projection
  bool layer_norm;               // has the layer-normalised variant (--layer-norm)
  double pascanu_gamma;          // bound on the activation's derivative in the Pascanu bound
                                 //   γ·σ_max(W_hh) (decay.h); NaN for gated cells (no such bound)
  std::string_view torch;        // the PyTorch module its parameters load into
  CellModes<float> f32;
  CellModes<double> f64;
  // One step of one stream: a (G*H) in: W_ih x_t; h, c (H) in: h_{t-1}, c_{t-1}; out:
  // h_t, c_t; recurrent (G*H): workspace. The recurrent product comes from `w_hh`. Layer
  // normalisation when p holds its tensors.
  void (*step)(const RecurrentParams<float>& p, const StepProduct& w_hh, float* a, float* recurrent, float* h,
               float* c);

  template <typename S>
  const CellModes<S>& modes() const {
    if constexpr (std::is_same_v<S, float>) return f32;
    else return f64;
  }
};

// The registry, in a fixed order (the order of --help and of the tests).
std::span<const Cell* const> Cells();
// The cell of that name, or nullptr.
const Cell* FindCell(std::string_view name);
// The cell of that name; throws bptt::Error "<flag> '<name>' is not one of rnn-tanh, ...".
const Cell& ParseCell(std::string_view name, std::string_view flag = "--cell");
// "rnn-tanh, rnn-sigmoid, rnn-relu, lstm, gru"; with layer_norm only those with the variant.
std::string CellNames(bool layer_norm = false);
// The default cell of a new model (LSTM).
const Cell& DefaultCell();

}  // namespace bptt
