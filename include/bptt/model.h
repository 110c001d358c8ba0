// Model: L stacked recurrent layers of one cell between an input and a head.
//
//   input    symbols: one-hot over V symbols (layer 0 gathers columns of weight_ih_l0; no
//            product with a one-hot matrix is ever formed) or a learned embedding
//            encoder.weight (V, E); or dense: D real features per step
//   layers   L cells (cell.h), each reading the output of the layer below, with inverted
//            dropout between layers while training; with residual connections a layer l >= 1
//            outputs y^l = h^l + x^l, its hidden state plus its input (all of width H)
//   head     outputs = decoder.weight h_t + decoder.bias (O per position): the logits of a
//            softmax over O classes, or O regression predictions (loss.h scores either on the
//            positions a Batch marks)
// Training may also drop units of layer 0's input and of the top layer's output, lock the
// dropout masks over a chunk's steps (variational), drop weights of W_hh (weight drop), and add
// AR/TAR penalties on the top layer's outputs to the gradient (ModelConfig; the equations in
// docs/regularisation.md).
// A language model is the symbol input with a softmax head over the same V symbols.
//
// The backward pass carries the error back through the transposed forward matrices (BPTT), or,
// for the learning rules of the feedback-alignment papers, through fixed random matrices
// (FeedbackMatrices): feedback alignment (Lillicrap et al. 2016) uses a matrix B of W's shape
// wherever backpropagation uses W^T — the recurrent matrix of each layer (of a cell that has
// one), the input matrix of each layer above the first (and of the first with an embedding), the
// decoder; direct feedback alignment (Nøkland 2016) sends the output error e_t of each step
// straight to every layer, dL/dy^l_t = D_l^T e_t with a fixed random D_l (O, H), and nothing back
// through time across a recurrent matrix (a cell's own elementwise paths, the LSTM cell state's,
// stay). The forward pass and the weight gradients' form (dW = error x input^T) are the same for
// every rule. With weight drop, B is not dropped, and the update of W_hh is masked as the
// gradient is.
//
// Parameters carry PyTorch's names (ModelParams::ForEach), so checkpoints load into
// torch.nn.Embedding + torch.nn.LSTM/GRU/RNN + torch.nn.Linear.
// The caller owns the parameters, the gradients (same type), the state and the cache, and says
// how each call computes (compute.h: its threads, and the precision of its large products; a
// thread count alone means float):
//
//   Forward(config, params, batch, state, cache, threads, &rng);   // cache.outputs (O, T*B)
//   double loss = HeadLoss(config, cache.outputs, batch, &doutputs, threads);
//   Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, threads);
//   FinalState(config, cache, state);                             // carry to the next chunk
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "bptt/batch.h"
#include "bptt/cell.h"
#include "bptt/recompute.h"
#include "bptt/rng.h"

namespace bptt {

template <typename Options>
struct OptionSpec;  // options.h

// What the head's outputs are scored as (loss.h).
enum class Head {
  kSoftmax,     // O classes: softmax cross-entropy, in nats
  kRegression,  // O values: mean squared error
};
std::string_view HeadName(Head head);  // "softmax", "regression"
Head ParseHead(std::string_view name, std::string_view flag);  // throws bptt::Error

// How a regression head's errors are scored (loss.h): squared, absolute, or Huber's (squared
// within huber_delta of the target, absolute beyond).
enum class RegressionLoss { kSquared, kAbsolute, kHuber };
std::string_view RegressionLossName(RegressionLoss loss);  // "mse", "mae", "huber"
RegressionLoss ParseRegressionLoss(std::string_view name, std::string_view flag);  // throws bptt::Error

// How the outputs of a sequence's positions make its prediction: each scored position its own
// (kNone: a language model, per-step labels, a task), the last step of the sequence (kLast: its
// data scores that step alone), or the mean over the sequence's scored positions (kMean, loss.h
// PoolOutputs). The decoder being affine, the mean of the outputs is the decoder applied to
// the mean of the top layer's outputs: mean pooling of the hidden states.
enum class Pooling { kNone, kLast, kMean };
std::string_view PoolingName(Pooling pooling);  // "none", "last", "mean"
Pooling ParsePooling(std::string_view name, std::string_view flag);  // throws bptt::Error

struct ModelConfig {
  const Cell* cell = &DefaultCell();
  int vocab_size = 0;     // V: symbols of a symbol input; 0 with a dense input
  int input_size = 0;     // D: features per step of a dense input; 0 with a symbol input
  int embed_size = 0;     // symbol input: E of layer 0; 0 = one-hot (E = V)
  int hidden_size = 128;  // H
  int layers = 2;         // L
  double dropout = 0.0;   // probability of dropping a unit between layers (training only)
  // The regularisers of training (docs/regularisation.md); evaluation, sampling and analysis
  // use none of them but zoneout's expectation. Inverted dropout: a kept value is scaled by
  // 1/(1-p), so nothing changes at evaluation.
  double input_dropout = 0.0;   // probability of dropping a unit of layer 0's input
  double output_dropout = 0.0;  // probability of dropping a unit of the top layer's output
  bool variational = false;     // the input, between-layer and output masks are locked over the
                                //   chunk's steps: one mask per stream (Gal & Ghahramani 2016)
  double weight_drop = 0.0;     // probability of dropping a weight of each layer's W_hh, one mask
                                //   per batch (DropConnect, Merity et al. 2017)
  double ar = 0.0;              // alpha of activation regularisation, AR
  double tar = 0.0;             // beta of temporal activation regularisation, TAR
  double recurrent_dropout = 0.0;  // p of the variational mask on h_{t-1} in W_hh h_{t-1} (cell.h)
  double zoneout = 0.0;         // z: probability that a unit of h keeps its previous value (cell.h);
                                //   evaluation: the expectation
  double zoneout_cell = 0.0;    // the same on the cell state c (cells with one)
  Head head = Head::kSoftmax;
  int output_size = 0;    // O: classes (softmax) or values (regression) per step
  bool residual = false;  // layers l >= 1 output h^l + x^l
  bool layer_norm = false;  // layer normalisation inside the cell (cell.h): cells with Cell::layer_norm
  Pooling pooling = Pooling::kNone;  // how a sequence's outputs make its prediction (set by the data)
  RegressionLoss regression_loss = RegressionLoss::kSquared;  // a regression head's training loss
  double huber_delta = 1.0;  // RegressionLoss::kHuber: where the loss turns from squared to absolute

  bool dense_input() const { return input_size > 0; }
  // E_0, the input width of layer 0.
  int layer0_input_size() const { return dense_input() ? input_size : embed_size > 0 ? embed_size : vocab_size; }
  // A symbol input with a softmax over the same symbols.
  bool language_model() const { return !dense_input() && head == Head::kSoftmax && output_size == vocab_size; }
  // Throws bptt::Error naming the offending field ("--hidden must be positive", ...).
  void Validate() const;
};

// The options that choose a model (--cell, --layers, --hidden, --embed, --dropout,
// --input-dropout, --output-dropout, --variational, --weight-drop, --ar, --tar,
// --recurrent-dropout, --zoneout, --zoneout-cell, --residual, --layer-norm), declared
// once (options.h) for every command that builds one. The sizes that the data dictates (V, D,
// O, the head, its pooling and loss) are not options.
std::span<const OptionSpec<ModelConfig>> ModelOptionSpecs();

// The configuration as stored in checkpoints ("config" and the training options' "model"), and
// back; a key missing from an older file keeps its default (O = V, softmax, symbol input).
// ConfigFromJson validates; errors name `source`.
nlohmann::json ConfigToJson(const ModelConfig& config);
ModelConfig ConfigFromJson(const nlohmann::json& json, const std::string& source);

// Values in the parameters of a model of this configuration, counted from the cells'
// declarations (cell.h) without allocating them: V*E with an embedding, every layer's tensors,
// O*H + O. A double, which no configuration's count overflows.
double ParameterCount(const ModelConfig& config);

// The regularisers of training that are on in `config`, as (flag without "--", value), in the
// order dropout, input-dropout, output-dropout, weight-drop, ar, tar, recurrent-dropout, zoneout,
// zoneout-cell (--variational only shapes the dropout masks, and is not one of them).
std::vector<std::pair<std::string_view, double>> TrainingRegularisers(const ModelConfig& config);

// The memory a model holds, counted without allocating from the declarations the model
// allocates from (cell.h) and from the kernels' packing sizes:
//   EstimateTrainingBytes    one training step of a (T, B) chunk: the parameters, their gradients
//                            and `optimizer_slots` buffers of each (optimizer.h OptimizerSlots);
//                            every layer's cache and backward buffers with the packed copies of
//                            its recurrent matrix; the model's own buffers (ModelCache: embedding
//                            rows, dropout, residual sums, outputs and their gradient); the carried
//                            state and the batch; the operands of the large products as the
//                            kernels read them (src/kernels/bf16_gemm.h, sgemm.h), which the
//                            calling thread keeps between calls.
//   EstimateEvaluationBytes  a forward pass over a (T, B) chunk as evaluation runs it (float
//                            products, no dropout, no gradients): every layer's cache with its
//                            packings, the embedding rows, residual sums and outputs, the state
//                            and the batch, and the forward products' operands.
// Not the corpus, which is memory-mapped, nor the program itself.
// With checkpoint_steps (ModelCache::checkpoint_steps) the caches count one segment's steps,
// plus the states saved at the segments' starts.
// With checkpoint_slots m (recompute.h), m of those states, the scratch state a recomputation
// runs through, and the schedule's tables.
uint64_t EstimateTrainingBytes(const ModelConfig& config, int T, int B, int optimizer_slots,
                               Precision products = Precision::kFloat32, int checkpoint_steps = 0,
                               int checkpoint_slots = 0);
uint64_t EstimateEvaluationBytes(const ModelConfig& config, int T, int B);

// A language model: symbols in (one-hot, or an embedding of embed_size), a softmax over the same
// V symbols out.
ModelConfig LanguageModel(const Cell& cell, int vocab_size, int embed_size, int hidden_size, int layers,
                          double dropout = 0.0);

// A parameter tensor of a model: its name in checkpoints and what it is for (cell.h TensorRole).
struct TensorInfo {
  std::string name;
  TensorRole role;
};

// All parameters of a model, or their gradients (same type, same shapes).
template <typename S>
struct ModelParams {
  Mat<S> encoder;                          // (V, E) embedding rows; empty otherwise
  std::vector<RecurrentParams<S>> layers;  // L
  Mat<S> decoder_weight;                   // (O, H)
  Mat<S> decoder_bias;                     // (O, 1)

  static ModelParams Zeros(const ModelConfig& config);
  static ModelParams Shaped(const ModelConfig& config);  // values unset, as RecurrentParams::Shaped

  // Calls f(tensor, m) for every tensor in a fixed order, with PyTorch's names: encoder.weight,
  // then each layer's tensors as its cell declares them (cell.h), rnn.<name>_l{k}
  // (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, ..., with layer norm
  // rnn.ln_ih_weight_l0, ...), then decoder.weight, decoder.bias.
  template <typename F>
  void ForEachTensor(F&& f) {
    if (encoder.size() > 0) f(TensorInfo{"encoder.weight", TensorRole::kWeight}, encoder);
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::string suffix = "_l" + std::to_string(l);
      layers[l].ForEach([&](const ParamDecl& d, Mat<S>& m) {
        f(TensorInfo{"rnn." + std::string(d.name) + suffix, d.role}, m);
      });
    }
    f(TensorInfo{"decoder.weight", TensorRole::kWeight}, decoder_weight);
    f(TensorInfo{"decoder.bias", TensorRole::kBias}, decoder_bias);
  }
  template <typename F>
  void ForEachTensor(F&& f) const {
    const_cast<ModelParams*>(this)->ForEachTensor(
        [&f](const TensorInfo& t, Mat<S>& m) { f(t, static_cast<const Mat<S>&>(m)); });
  }
  // The same with the name alone: f(name, m).
  template <typename F>
  void ForEach(F&& f) {
    ForEachTensor([&f](const TensorInfo& t, Mat<S>& m) { f(t.name, m); });
  }
  template <typename F>
  void ForEach(F&& f) const {
    ForEachTensor([&f](const TensorInfo& t, const Mat<S>& m) { f(t.name, m); });
  }

  int64_t Count() const;
  void SetZero();
  bool AllFinite() const;
  template <typename T>
  ModelParams<T> Cast() const;
};

// The learning rule: what carries the error backwards (see the top of this file).
enum class Feedback { kBptt, kFa, kDfa };
std::string_view FeedbackName(Feedback rule);  // "bptt", "fa", "dfa"
Feedback ParseFeedback(std::string_view name, std::string_view flag);  // throws bptt::Error

// The fixed random matrices of feedback alignment, drawn once for a run and kept with it.
template <typename S>
struct FeedbackMatrices {
  Feedback rule = Feedback::kBptt;
  std::vector<Mat<S>> input;      // FA: L of (G*H, E_l) in place of weight_ih_l (layer 0: with an
                                  //   embedding only; empty otherwise)
  std::vector<Mat<S>> recurrent;  // FA, cells with a recurrent matrix: L of (G*H, H) in place of weight_hh_l
  Mat<S> decoder;                 // FA: (O, H) in place of decoder.weight
  std::vector<Mat<S>> direct;     // DFA: L of (O, H), D_l

  // Draws the matrices of `rule` for the model (empty for kBptt): each like the forward matrix it
  // stands for is initialised (Xavier-uniform per gate block), D_l uniform in +-sqrt(6/(O+H)).
  static FeedbackMatrices Draw(Feedback rule, const ModelConfig& config, Rng& rng);
  // Calls f(name, matrix) for each, named "feedback.rnn.weight_hh_l0", ..., "feedback.direct_l0".
  template <typename F>
  void ForEach(F&& f) const {
    for (size_t l = 0; l < input.size(); ++l)
      if (input[l].size() > 0) f("feedback.rnn.weight_ih_l" + std::to_string(l), input[l]);
    for (size_t l = 0; l < recurrent.size(); ++l) f("feedback.rnn.weight_hh_l" + std::to_string(l), recurrent[l]);
    if (decoder.size() > 0) f(std::string("feedback.decoder.weight"), decoder);
    for (size_t l = 0; l < direct.size(); ++l) f("feedback.direct_l" + std::to_string(l), direct[l]);
  }
  template <typename F>
  void ForEach(F&& f) {
    const_cast<const FeedbackMatrices*>(this)->ForEach(
        [&f](const std::string& name, const Mat<S>& m) { f(name, const_cast<Mat<S>&>(m)); });
  }
};

// Lillicrap et al.'s measure of how well a rule's update follows backpropagation: per weight
// tensor (not the biases), the angle in degrees between the two updates, acos(<a, b> / |a||b|);
// tensors where either is zero are left out.
template <typename S>
std::map<std::string, double> AlignmentDegrees(const ModelParams<S>& a, const ModelParams<S>& b);

// The recurrent state between chunks: h (and c for cells with a cell state) of every layer.
template <typename S>
struct State {
  std::vector<Mat<S>> h;  // L of (H, B)
  std::vector<Mat<S>> c;  // cells with a cell state: L of (H, B); empty otherwise

  static State Zeros(const ModelConfig& config, Eigen::Index B);
  void SetZero();
};

// Memory-bounded exact BPTT (Chen et al. 2016, "Training deep nets with sublinear memory
// cost"): a chunk of T steps runs in segments of K steps, [0, K), [K, 2K), ..., the last one
// shorter when K does not divide T. The forward pass keeps every layer's state at each
// segment's start, and the per-step caches of the segment it is on; the backward pass takes the
// segments newest first, recomputes each one's caches from its saved states (the last one's are
// still there), and sweeps it with the cell's chunk backward, carrying dL/dh (dL/dc) from the
// segment after it. The caches then take K steps instead of T, for one more forward pass over
// the first T - K steps. The dropout masks are drawn once, for the whole chunk, so a
// recomputation drops the same units; the sums over the steps run newest step first everywhere
// (cell.h chunk_backward), so the gradient is the same, bit for bit in fp32, at any K as with
// every step kept (tests/checkpoint_steps_test.cc).
//
// ModelCache::checkpoint_steps: 0 keeps every step (one segment of T); K > 0 segments of K;
// kAutoCheckpointSteps about sqrt(T), the segment length that minimises the states plus one
// segment's caches. ModelCache::checkpoint_slots m > 0 keeps at most m of the segments' starts
// and recomputes the others as the schedule of recompute.h says (the same gradient again).
inline constexpr int kAutoCheckpointSteps = -1;
// The steps of a segment for a chunk of T steps (at least 1, at most T).
int SegmentSteps(int checkpoint_steps, int T);

// Everything one chunk's forward pass records and its backward pass reuses, plus the backward
// buffers. Reused across chunks; reallocated only when T, B, the segment length or the model
// change. Ts below is the segment length (T when every step is kept).
template <typename S>
struct ModelCache {
  int checkpoint_steps = 0;  // set by the caller: 0, K or kAutoCheckpointSteps (above)
  int checkpoint_slots = 0;  // set by the caller: 0 keeps every segment's start, m > 0 at most m

  Eigen::Index T = 0, B = 0;
  Eigen::Index segment_steps = 0;     // Ts, the steps of every segment but perhaps the last
  Eigen::Index resident = 0;          // the segment whose caches the per-segment buffers hold
  std::vector<State<S>> boundary;     // the states at t = 0, Ts, 2 Ts, ..., T (segments + 1); with
                                      //   checkpoint_slots, those not kept are empty
  RecomputeSchedule schedule;         // with checkpoint_slots below the segments: the sweep's splits
  State<S> advanced;                  // with checkpoint_slots: the state a recomputation runs through
  // What the last Forward and Backward did, for tests and benchmarks: the segments the backward
  // sweeps recomputed, and the most segment starts (b_0 .. b_{S-1}) kept at once.
  int64_t recomputed_segments = 0;
  int kept_starts = 0, most_kept_starts = 0;
  Mat<S> embedded;                    // (E, Ts*B) encoder rows of the inputs; embedding input only
  std::vector<LayerCache<S>> layers;  // L, each over Ts steps
  std::vector<Mat<S>> dropped;        // L-1 of (H, Ts*B): layer l's outputs after dropout, feeding l+1
  std::vector<Mat<S>> dropout_mask;   // L-1 of (H, T*B): 0 or 1/(1-p); empty when not dropping
  // The masks of the regularisers in the cells' time loops (cell.h LoopRegularisers), drawn in
  // training; empty otherwise (evaluation takes zoneout's expectation).
  std::vector<Mat<S>> recurrent_mask;  // L of (H, B): 0 or 1/(1-p), recurrent dropout's m
  std::vector<Mat<S>> zoneout_mask;    // L of (H, T*B): zoneout's d_t on h, 1 keeps h_{t-1}
  std::vector<Mat<S>> zoneout_cell_mask;  // L of (H, T*B): d^c_t on c
  std::vector<Mat<S>> summed;         // residual connections: L of (H, Ts*B), y^l = h^l + x^l for l >= 1
  Mat<S> outputs;                     // (O, T*B) the head's logits or predictions

  // The regularisers of training (ModelConfig), each empty when it is off. A mask holds 0 or
  // 1/(1-p); a variational one repeats its first step's B columns at every step.
  Mat<S> input_mask;                  // (E_0, T*B) on layer 0's input; one-hot input: (1, T*B), the
                                      //   mask's value at each position's symbol
  Mat<S> locked_symbols;              // one-hot input, variational: (V, B) the locked mask of the symbols
  Mat<S> dropped_input;               // dense input: (D, Ts*B) the input after dropout
  Mat<S> output_mask;                 // (H, T*B) on the top layer's output
  Mat<S> dropped_output;              // (H, Ts*B) the top layer's output after dropout, into the decoder
  std::vector<Mat<S>> weight_mask;    // weight drop: L of (G*H, H), one per chunk
  std::vector<Mat<S>> dropped_hh;     // weight drop: L of (G*H, H) mask * W_hh, what the layer runs with
  std::vector<Mat<S>> dweight_hh;     // weight drop: L of (G*H, H) the gradients of W_hh held aside
                                      //   while Backward masks the chunk's own
  double activation_penalty = 0;      // AR + TAR of the chunk (0 without them): not part of outputs'
                                      //   loss; Backward adds its gradient
  Mat<S> dactivation;                 // AR, TAR: (H, T*B) d(AR + TAR)/dy of the top layer's outputs
  Mat<S> previous_top;                // TAR: (H, B) the top layer's output at the step before the segment

  std::vector<LayerBackward<S>> back;  // L, each over Ts steps
  State<S> dcarried;                   // dL/dh (dL/dc) of every layer at the start of the segment swept last
  Mat<S> dh_out;                       // (H, Ts*B) dL/dh_t arriving at the layer being swept
  Mat<S> dx;                           // (E_l, Ts*B) dL/d(input of that layer)
};

// Runs the chunk's inputs (batch.ids or batch.dense, T*B columns) from `initial` as `compute`
// says. With a dropout RNG the training regularisers of config are applied (dropout on the
// input, between the layers and on the output, weight drop, and AR/TAR into
// cache.activation_penalty and cache.dactivation; then recurrent dropout and zoneout inside the
// cells' time loops); without one, none, and zoneout takes its expectation. The masks are drawn
// once per chunk, before the first step, in that order, each for the whole batch, of which a
// slice (batch.h) keeps its own columns; the weight-drop masks, one per layer for the whole batch.
template <typename S>
void Forward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
             const State<S>& initial, ModelCache<S>& cache, Compute compute, Rng* dropout_rng = nullptr);

// Copies the state after the last step of the chunk into `state`.
template <typename S>
void FinalState(const ModelConfig& config, const ModelCache<S>& cache, State<S>& state);

// Accumulates into grads the gradient of a loss whose derivative is doutputs (O, T*B) on the
// outputs plus, when given, dfinal on the final state, plus cache.activation_penalty's (AR,
// TAR) when the forward pass had one. When dinitial is given it receives the
// gradient with respect to the initial state. (nullptr may be passed for either.) With feedback
// matrices of FA or DFA, grads receives that rule's update direction instead.
template <typename S>
void Backward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
              ModelCache<S>& cache, const Mat<S>& doutputs, const std::type_identity_t<State<S>>* dfinal,
              ModelParams<S>& grads, std::type_identity_t<State<S>>* dinitial, Compute compute,
              const std::type_identity_t<FeedbackMatrices<S>>* feedback = nullptr);

}  // namespace bptt
