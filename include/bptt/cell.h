// A recurrent cell: one layer's step function h_t = f(x_t, h_{t-1}[, c_{t-1}]), the tensors it
// owns, and every mode in which bptt computes it.
//
// A cell is one file in src/cells/ and one line of the registry (src/cells/registry.cc), the
// only place that knows the list of cells. The file declares, in order:
//
//   params    its parameter tensors (ParamDecl): the name PyTorch gives them (the checkpoint's
//             rnn.<name>_l{k}), the shape in the letters of tensor.h, the role, and when the
//             tensor exists (always, or only with layer normalisation)
//   cache     the buffers its chunk forward fills and its chunk backward reads (LayerCache)
//   backward  the buffers of its chunk backward (LayerBackward)
//
// and, under the cell's equations and side by side, its four modes:
//
//   mode           works on                                used by
//   chunk_forward  T steps of B streams, caching           training, chunked evaluation
//   chunk_backward the cache of chunk_forward, dL/dh       training, gradient checks, decay
//   step           one stream, one step, any precision     sampling, stepwise scoring
//   tangent        a direction dh_0 (dc_0), the cache      the Jacobian norms of `bptt decay`
//
// Everything else iterates the declarations: allocating and zeroing the tensors
// (RecurrentParams, LayerCache and LayerBackward below), counting them, casting between float
// and double, the checkpoint's tensor names and the optimizer's state (model.h), the memory a
// run needs (model.h EstimateTrainingBytes), initialisation (init.h) and the cache slices of
// the decay analysis. Adding a cell, with whatever buffers it needs, is its file and its line.
//
// Every cell declares first what the model reads and writes (tests/cell_test.cc checks each row):
//   params    weight_ih (G*H, E) the input projection, then, for a cell with a recurrent matrix,
//             weight_hh (G*H, H): the time loops pack it, feedback alignment replaces it, the
//             step mode multiplies through it (StepProduct), `bptt decay` reports its spectrum
//   cache     gates (G*H, T*B), h (H, (T+1)*B), and with a cell state c (H, (T+1)*B)
//   backward  dgates (G*H, T*B), dh (H, B), dh_steps (H, T*B; record), and with a cell state
//             dc (H, B), dc_steps (H, T*B; record)
// The recurrent cells of PyTorch (nn.RNN / LSTM / GRU) share the layout weight_ih, weight_hh,
// bias_ih (G*H), bias_hh (G*H); a cell without a recurrent matrix declares no weight_hh.
//
// chunk_forward and step call one pointwise function per cell (the fused pass over a column
// of gate pre-activations), so the two cannot drift; the gradient checks prove chunk_backward,
// and the PyTorch reference proves chunk_forward and step.
//
// Layer normalisation (Ba, Kiros & Hinton 2016; ModelConfig::layer_norm, --layer-norm) is a
// variant of the cells that declare tensors for it (Cell::layer_norm(): LSTM and GRU). With it,
// each LN
//   LN(z; g, b) = g * (z - mean(z)) / sqrt(var(z) + eps) + b,   eps = 1e-5 (PyTorch's default)
// normalises one column, the whole G*H vector at once as in the paper (not each gate block):
// the raw input projection W_ih x_t and the raw recurrent product W_hh h_{t-1} each get their
// own LN, and the LSTM's cell state a third before its tanh (the cell files give the equations).
// b_ih and b_hh are still added after the LNs (the LN biases duplicate them; PyTorch's layout
// is kept). A layer has the variant exactly when its RecurrentParams hold the LN tensors; the
// cells branch on that once per chunk or step, so the plain cells run as they always have.
//
// Two regularisers act inside the time loops, the same way in every cell (LoopRegularisers
// below; ModelConfig::recurrent_dropout, zoneout, zoneout_cell). With h̃_t (c̃_t) the state the
// cell's equations give from h_{t-1} (c_{t-1}):
//   recurrent dropout  the recurrent product reads m ⊙ h_{t-1}: W_hh h_{t-1} -> W_hh (m ⊙ h_{t-1}),
//                      m (H, B) 0 or 1/(1-p), one mask per stream for the whole chunk
//                      (variational, inverted: E[m] = 1, so evaluation leaves it out); h_{t-1}'s
//                      other uses (the GRU's z_t ⊙ h_{t-1}) read it whole. Cells with a recurrent
//                      matrix only.
//   zoneout            (Krueger et al. 2017) h_t = d_t ⊙ h_{t-1} + (1 - d_t) ⊙ h̃_t, and on the
//                      cell state c_t = d^c_t ⊙ c_{t-1} + (1 - d^c_t) ⊙ c̃_t (the LSTM's h̃_t
//                      reads c̃_t, as in the paper); in training d_t (H, B) is drawn afresh each
//                      step, 1 with probability z; everywhere else d_t = z, its expectation.
// The caller sets LayerCache::loop before chunk_forward; every mode over that cache reads it,
// and step leaves zoneout's expectation to its caller (stepper.cc, through Zoneout::Forward).
// Each cell has one variant of its chunk modes with them and keeps its plain one, choosing once
// per chunk as it does for layer normalisation.
//
// One chunk of T timesteps runs as follows:
//   1. the caller writes the input projection W_ih x_t for all T steps into cache.gates() with
//      one GEMM (or a column gather for one-hot input), and h_0 (c_0) into the first B columns
//      of cache.h() (cache.c()); the cell adds its biases itself (a variant may normalise the
//      projections before it does);
//   2. chunk_forward runs the time loop, leaving every value backward needs in the cache: for a
//      cell with a recurrent matrix, one product (G*H, H)·(H, B) per step over W_hh packed once
//      per chunk (src/kernels/packed_gemm.h) and one fused pass over the gate elements; each
//      thread sweeps its own columns of the batch;
//   3. chunk_backward runs one reverse sweep t = T..1 over the cache, writes the gradient on
//      the input projection for all steps into dgates() (from which the caller forms dW_ih and
//      the input gradient with a few large GEMMs) and accumulates the gradients of the cell's
//      other tensors (dW_hh with one GEMM, the biases, the LN gains and biases).
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

// ---- Declarations --------------------------------------------------------------------------

// The sizes a declared shape is made of (tensor.h's letters).
struct Sizes {
  Eigen::Index G = 1, H = 0, E = 0, T = 0, B = 0;
};

// One dimension of a declared shape: a constant factor times some of the letters, T1 standing
// for T + 1 (the state before the chunk and after each of its steps).
struct Extent {
  enum Letter : uint8_t { kG = 1, kH = 2, kE = 4, kT = 8, kT1 = 16, kB = 32 };
  int64_t factor = 1;
  uint8_t letters = 0;

  constexpr bool operator==(const Extent&) const = default;
  // The dimension for these sizes, as an index (for allocating) and as a double (for counting
  // sizes that need not fit an index: a checkpoint's configuration before it is trusted).
  Eigen::Index Of(const Sizes& s) const { return static_cast<Eigen::Index>(Count(s)); }
  double Count(const Sizes& s) const {
    double n = static_cast<double>(factor);
    if (letters & kG) n *= static_cast<double>(s.G);
    if (letters & kH) n *= static_cast<double>(s.H);
    if (letters & kE) n *= static_cast<double>(s.E);
    if (letters & kT) n *= static_cast<double>(s.T);
    if (letters & kT1) n *= static_cast<double>(s.T + 1);
    if (letters & kB) n *= static_cast<double>(s.B);
    return n;
  }
};

// The extents the cells use; any other is Extent{factor, letters}.
namespace extent {
inline constexpr Extent k1{1, 0};
inline constexpr Extent kH{1, Extent::kH};
inline constexpr Extent kGH{1, Extent::kG | Extent::kH};
inline constexpr Extent kE{1, Extent::kE};
inline constexpr Extent kB{1, Extent::kB};
inline constexpr Extent kTB{1, Extent::kT | Extent::kB};    // the T steps of a chunk
inline constexpr Extent kT1B{1, Extent::kT1 | Extent::kB};  // the state before the chunk, then after each step
}  // namespace extent

// When a declared tensor exists.
enum class When : uint8_t {
  kAlways,
  kLayerNorm,  // in the layer-normalised variant only (ModelConfig::layer_norm)
  kRecord,     // backward buffers: only when the sweep records every step (LayerBackward::record)
};

// What a parameter tensor is for. Optimizers decay weights only; initialisers draw weights,
// draw biases only under the uniform schemes (zero otherwise), and start a normalisation's gain
// at 1 and its bias at 0 (decay would pull a gain towards 0, not towards its starting 1).
enum class TensorRole { kWeight, kBias, kNormGain, kNormBias };
inline bool IsNorm(TensorRole role) { return role == TensorRole::kNormGain || role == TensorRole::kNormBias; }

struct ParamDecl {
  std::string_view name;  // PyTorch's: the checkpoint's rnn.<name>_l{k}
  Extent rows, cols;      // a vector is (N, 1)
  TensorRole role;
  When when = When::kAlways;
};

struct BufferDecl {
  std::string_view name;
  Extent rows, cols;
  When when = When::kAlways;
};

// Whether a declaration's tensor exists in a layer with or without layer normalisation, and
// in a backward sweep that records every step or not.
inline bool Present(When when, bool layer_norm, bool record = false) {
  return when == When::kAlways || (when == When::kLayerNorm && layer_norm) || (when == When::kRecord && record);
}

// The index of the declaration of that name in a cell's list, at compile time (a name not in the
// list does not compile): a cell's slot constants, kBiasIh = Slot(kParams, "bias_ih").
template <typename Decl, size_t N>
consteval size_t Slot(const Decl (&decls)[N], std::string_view name) {
  for (size_t k = 0; k < N; ++k)
    if (decls[k].name == name) return k;
  throw "no declaration of that name";
}

// The slots every cell declares first (see the top of this file).
inline constexpr size_t kWeightIhSlot = 0, kWeightHhSlot = 1;
inline constexpr size_t kGatesSlot = 0, kHSlot = 1, kCSlot = 2;
inline constexpr size_t kDgatesSlot = 0, kDhSlot = 1, kDhStepsSlot = 2, kDcSlot = 3, kDcStepsSlot = 4;

// ---- The tensors of one layer --------------------------------------------------------------

// One layer's parameters, or their gradients (same type, same shapes): one tensor per
// declaration of the cell, in its order; a tensor of the layer-normalised variant is empty
// in a layer without it.
template <typename S>
struct RecurrentParams {
  const Cell* cell = nullptr;
  Eigen::Index E = 0, H = 0;
  bool with_layer_norm = false;
  std::vector<Mat<S>> tensors;

  // All zeros (the LN gains too: Initialize sets them to 1).
  static RecurrentParams Zeros(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm);
  // Every tensor at its shape, the values unset: for tensors about to be written whole, or only
  // looked at (a large tensor's memory is then not even touched).
  static RecurrentParams Shaped(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm);

  Eigen::Index hidden_size() const { return H; }
  bool layer_norm() const { return with_layer_norm; }
  Mat<S>& operator[](size_t slot) { return tensors[slot]; }
  const Mat<S>& operator[](size_t slot) const { return tensors[slot]; }
  // The input projection W_ih (G*H, E), and the recurrent matrix W_hh (G*H, H) of a cell that
  // has one (an empty matrix otherwise).
  Mat<S>& weight_ih() { return tensors[kWeightIhSlot]; }
  const Mat<S>& weight_ih() const { return tensors[kWeightIhSlot]; }
  const Mat<S>& weight_hh() const;
  // The tensor of that declared name; throws bptt::Error when the cell declares none or this
  // layer leaves it out.
  Mat<S>& tensor(std::string_view name);
  const Mat<S>& tensor(std::string_view name) const;
  // f(const ParamDecl&, Mat<S>&) for each tensor the layer has, in the cell's order.
  template <typename F>
  void ForEach(F&& f);
  template <typename F>
  void ForEach(F&& f) const;
};

// Zoneout of one state (cell.h, top): the d_t of the cache's steps, or their expectation z.
template <typename S>
struct Zoneout {
  const S* mask = nullptr;  // (H, T*B) d_t in {0, 1} of the cache's steps, leading dimension H; null: d_t = rate
  S rate = 0;               // z, the expectation of d_t

  bool on() const { return mask != nullptr || rate != 0; }
  // f(d) with d the (rows, cols) array of d_t at rows [r, r + rows) of the cache's columns
  // [j, j + cols) (the constant z without a mask).
  template <typename F>
  void With(Eigen::Index H, Eigen::Index r, Eigen::Index j, Eigen::Index rows, Eigen::Index cols, F&& f) const {
    using Array = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic>;
    if (mask) f(Eigen::Map<const Array, 0, Eigen::OuterStride<>>(mask + j * H + r, rows, cols, Eigen::OuterStride<>(H)));
    else f(Array::Constant(rows, cols, rate));
  }
  // The forward step (and its tangent): x (rows, cols; an array expression) in: x̃_t; out:
  // x_t = d_t x_{t-1} + (1 - d_t) x̃_t, with prev = x_{t-1}.
  template <typename P, typename X>
  void Forward(Eigen::Index H, Eigen::Index r, Eigen::Index j, const P& prev, X&& x) const {
    With(H, r, j, x.rows(), x.cols(), [&](const auto& d) { x = d * prev + (S(1) - d) * x; });
  }
  // The backward step: dx in: dL/dx_t; out: dL/dx̃_t = (1 - d_t) dL/dx_t. kept out: d_t dL/dx_t,
  // the part of dL/dx_{t-1} that bypasses the cell.
  template <typename D, typename K>
  void Backward(Eigen::Index H, Eigen::Index r, Eigen::Index j, D&& dx, K&& kept) const {
    With(H, r, j, dx.rows(), dx.cols(), [&](const auto& d) {
      kept = d * dx;
      dx *= S(1) - d;
    });
  }
};

// The regularisers of one layer's time loop over a chunk (cell.h, top).
template <typename S>
struct LoopRegularisers {
  const S* recurrent_mask = nullptr;  // (H, B) m, 0 or 1/(1-p); null: no recurrent dropout
  Zoneout<S> h, c;                    // on h_t, and on c_t (cells with a cell state)

  bool any() const { return recurrent_mask != nullptr || h.on() || c.on(); }
};

// Values recorded by one layer's forward pass over a chunk; read by its backward pass. One
// buffer per declaration of the cell's cache (its file gives each shape and meaning).
template <typename S>
struct LayerCache {
  Eigen::Index T = 0, B = 0;
  std::vector<Mat<S>> buffers;
  PackedMatrix<S> packed_hh;  // workspace of a cell with a recurrent matrix: W_hh packed once per chunk
  LoopRegularisers<S> loop;   // set by the caller before chunk_forward (none by default)
  Mat<S> h_dropped;           // with recurrent dropout: (H, T*B) m ⊙ h_{t-1} of each step, the
                              // recurrent product's operand (shaped by chunk_forward)

  // Shapes the buffers for a chunk; reallocates only when a dimension changes.
  void Resize(const Cell& cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_, bool layer_norm);

  Mat<S>& operator[](size_t slot) { return buffers[slot]; }
  const Mat<S>& operator[](size_t slot) const { return buffers[slot]; }
  Mat<S>& gates() { return buffers[kGatesSlot]; }  // (G*H, T*B) in: W_ih x_t; out: the cell's
  const Mat<S>& gates() const { return buffers[kGatesSlot]; }
  Mat<S>& h() { return buffers[kHSlot]; }  // (H, (T+1)*B) h_0 in columns [0, B), then h_1 .. h_T
  const Mat<S>& h() const { return buffers[kHSlot]; }
  Mat<S>& c() { return buffers[kCSlot]; }  // cells with a cell state: (H, (T+1)*B) c_0, then c_1 .. c_T
  const Mat<S>& c() const { return buffers[kCSlot]; }
  // The recurrent product's operand of step t: h_{t-1} (column block t of h), or with recurrent
  // dropout that of h_dropped.
  const S* ProductInput(Eigen::Index t) const {
    return (loop.recurrent_mask ? h_dropped : buffers[kHSlot]).data() + t * B * buffers[kHSlot].rows();
  }
  // With recurrent dropout, columns [j0, j1) of step t's operand: h_dropped = m ⊙ h_{t-1}.
  void DropProductInput(Eigen::Index t, Eigen::Index j0, Eigen::Index j1) {
    const Eigen::Index H = buffers[kHSlot].rows();
    h_dropped.middleCols(t * B + j0, j1 - j0) =
        (Eigen::Map<const Mat<S>>(loop.recurrent_mask + j0 * H, H, j1 - j0).array() *
         buffers[kHSlot].middleCols(t * B + j0, j1 - j0).array())
            .matrix();
  }

  // Column block of timestep t (0-based) in a (., T*B) buffer, and of h_t / c_t.
  auto Step(Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
  auto Step(const Mat<S>& m, Eigen::Index t) const { return m.middleCols(t * B, B); }
};

// Caller-owned buffers for one layer's backward pass over a chunk: one per declaration of the
// cell's backward buffers.
template <typename S>
struct LayerBackward {
  std::vector<Mat<S>> buffers;
  PackedMatrix<S> packed_hh_t;  // workspace of a cell with a recurrent matrix: W_hh^T packed once per chunk
  // With the loop's regularisers (LayerCache::loop), shaped by chunk_backward:
  Mat<S> dh_kept, dc_kept;  // zoneout: (H, B) d_t ⊙ dL/dh_t (dL/dc_t), which bypasses the step
  Mat<S> dh_dropped;        // recurrent dropout: (H, B) back_hh^T δ_t before the mask m

  // Through recurrent dropout's mask m (H, B), columns [j0, j1): dh (+)= m ⊙ dh_dropped.
  void DropProductGradient(const S* m, Eigen::Index j0, Eigen::Index j1, bool accumulate) {
    const Eigen::Index H = dh_dropped.rows(), n = j1 - j0;
    const auto dropped = Eigen::Map<const Mat<S>>(m + j0 * H, H, n).array() * dh_dropped.middleCols(j0, n).array();
    if (accumulate) buffers[kDhSlot].middleCols(j0, n).array() += dropped;
    else buffers[kDhSlot].middleCols(j0, n).array() = dropped;
  }

  // With record set, the sweep also keeps the total gradient on every step's state, for
  // gradient-decay analysis (decay.h); training leaves it off.
  bool record = false;

  void Resize(const Cell& cell, Eigen::Index H, Eigen::Index T, Eigen::Index B, bool layer_norm);

  Mat<S>& operator[](size_t slot) { return buffers[slot]; }
  const Mat<S>& operator[](size_t slot) const { return buffers[slot]; }
  Mat<S>& dgates() { return buffers[kDgatesSlot]; }  // (G*H, T*B) out: dL/d(W_ih x_t)
  const Mat<S>& dgates() const { return buffers[kDgatesSlot]; }
  Mat<S>& dh() { return buffers[kDhSlot]; }  // (H, B) in: dL/dh_T from beyond the chunk; out: dL/dh_0
  const Mat<S>& dh() const { return buffers[kDhSlot]; }
  Mat<S>& dh_steps() { return buffers[kDhStepsSlot]; }  // record: (H, T*B) dL/dh_t for t = 1..T
  const Mat<S>& dh_steps() const { return buffers[kDhStepsSlot]; }
  Mat<S>& dc() { return buffers[kDcSlot]; }  // cells with a cell state: (H, B) in: dL/dc_T; out: dL/dc_0
  const Mat<S>& dc() const { return buffers[kDcSlot]; }
  Mat<S>& dc_steps() { return buffers[kDcStepsSlot]; }  // record, with a cell state: (H, T*B) dL/dc_t
  const Mat<S>& dc_steps() const { return buffers[kDcStepsSlot]; }
};

// ---- The modes -----------------------------------------------------------------------------

// The step mode's recurrent product for one stream, in whatever precision the caller holds
// W_hh: y (G*H) = W_hh x (x: H), or y += W_hh x when accumulate. Empty for a cell without a
// recurrent matrix.
using StepProduct = std::function<void(const float* x, float* y, bool accumulate)>;

// The chunk and tangent modes, for one scalar type (float for training, double for the
// gradient checks and decay analysis).
template <typename S>
struct CellModes {
  // In: gates = W_ih x (G*H, T*B); h_0 (c_0) in the first B columns of h (c). Out: the rest of
  // the cache.
  void (*chunk_forward)(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute);
  // In: dh_out (H, T*B) = dL/dh_t arriving from above; dh (dc) = dL/dh_T (dL/dc_T).
  // Out: dgates and the cell's other backward buffers; dh (dc) = dL/dh_0 (dL/dc_0), and with
  // record dh_steps (dc_steps); grad's tensors but weight_ih += their gradients (the caller
  // forms grad.weight_ih() from dgates). The error goes back a step through back_hh^T:
  // p.weight_hh() for backpropagation, a fixed random matrix of its shape for feedback
  // alignment, or none (empty) for direct feedback alignment (model.h Feedback); a cell
  // without a recurrent matrix has none to replace and ignores it. Its sums over the steps (dW_hh,
  // the biases, the LN gains) run newest step first from grad's value (src/kernels/threads.h
  // SumProductOverTime), so a chunk swept in consecutive parts, newest first, each part's
  // gradients added to grad, sums as the chunk swept whole (model.h ModelCache::checkpoint_steps).
  void (*chunk_backward)(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                         const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad,
                         Compute compute);
  // The tangent-linear pass over the cached chunk with the input held fixed: dh (H, B) in: a
  // direction at h_0, out: the directional derivative of h_T, ∂h_T/∂h_0 · dh. For cells with a
  // cell state, dc likewise (in: the direction at c_0, usually 0; out: that of c_T).
  void (*tangent)(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>& dc);
};

// One row of the registry: what a cell is, its tensors and its modes.
struct Cell {
  std::string_view name;         // "lstm": the --cell value and the checkpoint's "cell"
  int gates;                     // G
  std::string_view gate_names;   // one letter per gate block in PyTorch's order ("ifgo"); "" for G = 1
  bool cell_state;               // keeps c_t besides h_t
  double pascanu_gamma;          // bound on the activation's derivative in the Pascanu bound
                                 //   γ·σ_max(W_hh) (decay.h); NaN where no such bound applies
  std::string_view torch;        // the PyTorch module its parameters load into ("" when none)
  std::span<const ParamDecl> params;
  std::span<const BufferDecl> cache;
  std::span<const BufferDecl> backward;
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
  // Whether the cell has the layer-normalised variant (--layer-norm): it declares tensors for it.
  bool layer_norm() const {
    for (const ParamDecl& d : params)
      if (d.when == When::kLayerNorm) return true;
    return false;
  }
  // Whether it has a recurrent matrix weight_hh (G*H, H).
  bool recurrent_matrix() const { return params.size() > kWeightHhSlot && params[kWeightHhSlot].name == "weight_hh"; }
};

template <typename S>
template <typename F>
void RecurrentParams<S>::ForEach(F&& f) {
  for (size_t k = 0; k < cell->params.size(); ++k)
    if (Present(cell->params[k].when, with_layer_norm)) f(cell->params[k], tensors[k]);
}

template <typename S>
template <typename F>
void RecurrentParams<S>::ForEach(F&& f) const {
  for (size_t k = 0; k < cell->params.size(); ++k)
    if (Present(cell->params[k].when, with_layer_norm)) f(cell->params[k], static_cast<const Mat<S>&>(tensors[k]));
}

// The registry, in a fixed order (the order of --help and of the tests).
std::span<const Cell* const> Cells();
// The cell of that name, or nullptr.
const Cell* FindCell(std::string_view name);
// The cell of that name; throws bptt::Error "<flag> '<name>' is not one of rnn-tanh, ...".
const Cell& ParseCell(std::string_view name, std::string_view flag = "--cell");
// The registry's names, comma-separated ("rnn-tanh, rnn-sigmoid, ..."); with layer_norm only
// those with the layer-normalised variant.
std::string CellNames(bool layer_norm = false);
// The default cell of a new model (LSTM).
const Cell& DefaultCell();

}  // namespace bptt
