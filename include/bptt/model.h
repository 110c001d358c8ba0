// Model: a character-level language model of L stacked recurrent layers of one cell type.
//
//   input    one-hot over V symbols (layer 0 gathers columns of weight_ih_l0; no product with a
//            one-hot matrix is ever formed) or a learned embedding encoder.weight (V, E)
//   layers   L cells (cell.h), each reading the hidden states of the layer below, with
//            inverted dropout between layers while training
//   output   logits = decoder.weight h_t + decoder.bias (V per position), then the softmax
//            cross-entropy of loss.h, averaged over B*T positions
//
// Parameters carry PyTorch's names (ModelParams::ForEach), so checkpoints load into
// torch.nn.Embedding + torch.nn.LSTM/GRU/RNN + torch.nn.Linear.
// The caller owns the parameters, the gradients (same type), the state and the cache:
//
//   Forward(config, params, inputs, T, B, state, cache, &rng);    // cache.logits (V, T*B)
//   double loss = SoftmaxCrossEntropy(cache.logits, targets, &dlogits);
//   Backward(config, params, inputs, cache, dlogits, nullptr, grads, nullptr);
//   FinalState(config, cache, state);                             // carry to the next chunk
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "bptt/cell.h"
#include "bptt/rng.h"

namespace bptt {

struct ModelConfig {
  CellType cell = CellType::kLstm;
  int vocab_size = 0;     // V
  int embed_size = 0;     // E of layer 0; 0 = one-hot input (E = V)
  int hidden_size = 128;  // H
  int layers = 2;         // L
  double dropout = 0.0;   // probability of dropping a unit between layers (training only)

  int input_size() const { return embed_size > 0 ? embed_size : vocab_size; }
  // Throws bptt::Error naming the offending field ("--hidden must be positive", ...).
  void Validate() const;
};

// All parameters of a model, or their gradients (same type, same shapes).
template <typename S>
struct ModelParams {
  Mat<S> encoder;                          // (V, E) embedding rows; empty for one-hot input
  std::vector<RecurrentParams<S>> layers;  // L
  Mat<S> decoder_weight;                   // (V, H)
  Mat<S> decoder_bias;                     // (V, 1)

  static ModelParams Zeros(const ModelConfig& config);

  // Calls f(name, tensor) for every tensor in a fixed order, with PyTorch's names:
  // encoder.weight, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ...,
  // decoder.weight, decoder.bias.
  template <typename F>
  void ForEach(F&& f) {
    if (encoder.size() > 0) f(std::string("encoder.weight"), encoder);
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::string k = std::to_string(l);
      f("rnn.weight_ih_l" + k, layers[l].weight_ih);
      f("rnn.weight_hh_l" + k, layers[l].weight_hh);
      f("rnn.bias_ih_l" + k, layers[l].bias_ih);
      f("rnn.bias_hh_l" + k, layers[l].bias_hh);
    }
    f(std::string("decoder.weight"), decoder_weight);
    f(std::string("decoder.bias"), decoder_bias);
  }
  template <typename F>
  void ForEach(F&& f) const {
    const_cast<ModelParams*>(this)->ForEach(
        [&f](const std::string& name, Mat<S>& m) { f(name, static_cast<const Mat<S>&>(m)); });
  }

  int64_t Count() const;
  void SetZero();
  template <typename T>
  ModelParams<T> Cast() const;
};

// The recurrent state between chunks: h (and c for LSTM) of every layer, each (H, B).
template <typename S>
struct State {
  std::vector<Mat<S>> h;  // L of (H, B)
  std::vector<Mat<S>> c;  // LSTM: L of (H, B); empty otherwise

  static State Zeros(const ModelConfig& config, Eigen::Index B);
  void SetZero();
};

// Everything one chunk's forward pass records and its backward pass reuses, plus the
// backward buffers. Reused across chunks; reallocated only when T, B or the model change.
template <typename S>
struct ModelCache {
  Eigen::Index T = 0, B = 0;
  Mat<S> embedded;                    // (E, T*B) encoder rows of the inputs; embedding input only
  std::vector<LayerCache<S>> layers;  // L
  std::vector<Mat<S>> dropped;        // L-1 of (H, T*B): layer l's outputs after dropout, feeding l+1
  std::vector<Mat<S>> dropout_mask;   // L-1 of (H, T*B): 0 or 1/(1-p); empty when not dropping
  Mat<S> logits;                      // (V, T*B)

  std::vector<LayerBackward<S>> back;  // L
  Mat<S> dh_out;                       // (H, T*B) dL/dh_t arriving at the layer being swept
  Mat<S> dx;                           // (E_l, T*B) dL/d(input of that layer)
};

// Runs the chunk inputs (T*B ids, column t*B+b = step t of sequence b) from `initial`.
// With a dropout RNG and config.dropout > 0 the between-layer dropout is applied.
template <typename S>
void Forward(const ModelConfig& config, const ModelParams<S>& params, const Ids& inputs,
             Eigen::Index T, Eigen::Index B, const State<S>& initial, ModelCache<S>& cache,
             Rng* dropout_rng = nullptr);

// Copies the state after the last step of the chunk into `state`.
template <typename S>
void FinalState(const ModelConfig& config, const ModelCache<S>& cache, State<S>& state);

// Accumulates into grads the gradient of a loss whose derivative is dlogits (V, T*B) on the
// logits plus, when given, dfinal on the final state. When dinitial is given it receives the
// gradient with respect to the initial state. (nullptr may be passed for either.)
template <typename S>
void Backward(const ModelConfig& config, const ModelParams<S>& params, const Ids& inputs,
              ModelCache<S>& cache, const Mat<S>& dlogits, const std::type_identity_t<State<S>>* dfinal,
              ModelParams<S>& grads, std::type_identity_t<State<S>>* dinitial);

}  // namespace bptt
