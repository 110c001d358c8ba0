// Gradient decay: how the gradient of a loss at one timestep shrinks (vanishes) or grows
// (explodes) as backpropagation through time carries it back over the lags k = 0, 1, 2, ...,
// measured on one model and one batch of sequences, and summarised so that cells and
// initialisations can be compared. This file measures; decay_files.h writes the measurements
// (decay.csv, summary.json, decay.svg, and a training run's decay_train.csv and heatmap.svg), and
// decay_study.h is `bptt decay`: it builds or loads the models, measures them and writes the files.
//
// Setting. B sequences of s steps run from a zero initial state; s is the loss step
// (DecayOptions::loss_step, the last step T by default; steps after s cannot affect the
// gradient at or before s and are not run). The loss of sequence b is the head's loss (loss.h)
// on its output at step s alone: for a language model the cross-entropy of its prediction,
// L_b = -log softmax(z_{s,b})[y_{s,b}]; for a regression head the squared error. Lags count
// back from s: lag k is step s - k. For each layer l (h^l_t its hidden state, c^l_t its LSTM cell state):
//
//   h         ‖∂L_b/∂h^l_{s-k}‖₂   the total gradient on the state through every path (the
//                                  recurrence and the layers above), from one BPTT sweep
//   c         ‖∂L_b/∂c^l_{s-k}‖₂   LSTM only, the gradient on the cell state
//   jacobian  ‖∂h^l_s/∂h^l_{s-k}‖₂ the largest singular value of layer l's own state-to-state
//                                  Jacobian, with layer l's input sequence (the layer below)
//                                  held fixed and, for LSTM, c^l_{s-k} held fixed
//
// Each is reported per lag as the median and quartiles (linear interpolation between order
// statistics) over the B sequences, and as `relative`, the median divided by the median at
// k = 0. The Jacobian is never formed: its largest singular value comes from power iteration
// on J^T J, each iteration one tangent-linear (forward-mode) pass J v over the k steps and one
// vector-Jacobian product J^T w by the cell's own backward sweep over the same k steps
// (cell.h). The estimate ‖J v‖ with ‖v‖ = 1 rises to σ_max from below, at the rate
// (σ_2/σ_1)^(2n); iteration stops when every sequence's estimate moves by less than
// power_tolerance (relative) or after power_iterations. Because each iteration costs 2k steps,
// it is done at jacobian_lags lags at most, spaced evenly on a log scale from 1 to s - 1
// (every lag when s - 1 <= jacobian_lags), plus k = 0 where J = I, and for the first
// jacobian_batch sequences only (its quartiles are over those). The defaults (20 iterations,
// tolerance 1e-3) give the figure's accuracy, a few per cent at worst when σ_1 ≈ σ_2 (e.g.
// orthogonal U), in seconds for H = 128, T = 1000; the tests use thousands of iterations.
//
// Everything is computed in double precision on a copy of the parameters
// (ModelParams<float>::Cast<double>()), and norms are taken with Eigen's stableNorm(), so
// gradients down to about 1e-300 are represented and meaningful (in float they would flush to
// zero below 1e-38 and lose digits long before); below that they are reported as 0.
//
// Summary per model and layer:
//   decay_factor     exp of the least-squares slope of ln(median) against lag, over the lags
//                    whose median is above 1e-300: the per-step factor of a geometric fit
//   half_life        ln 2 / -ln(decay_factor) steps; infinite (JSON null) unless decaying
//   lag_below        first lag whose relative norm is below vanish_threshold (1e-6); -1 = none
//   explodes         decay_factor > 1
//   sigma_max, spectral_radius   of each H×H recurrent block U of weight_hh (RNN: U itself;
//                    LSTM i, f, g, o; GRU r, z, n); the layer's value is the largest block's
//   pascanu_bound    γ·σ_max(U) (Pascanu, Mikolov & Bengio 2013), γ the bound on the
//                    activation's derivative: 1 for tanh and ReLU, 1/4 for sigmoid. Each step
//                    multiplies the gradient by diag(act')·U^T, of norm at most γ·σ_max, so a
//                    bound below 1 guarantees vanishing at least as fast as bound^k. No such
//                    bound exists for LSTM and GRU (the additive paths): NaN (JSON null).
// and per model the global gradient norm of the training loss of the whole chunk (the head's
// loss over its scored positions, as `bptt train` computes it) and clip_fraction, the
// fraction of that gradient's norm that global-norm clipping at clip_norm removes,
// max(0, 1 - clip_norm/‖g‖).
//
//   Batch<double> data = CorpusInputs(ids, T, B);
//   DecayReport r = MeasureDecay("lstm", config, params.Cast<double>(), data, DecayOptions());
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "bptt/batch.h"
#include "bptt/model.h"
#include "bptt/rng.h"
#include "bptt/vocab.h"

namespace bptt {

// Norms at or below this are treated as 0 (they are subnormal, or about to be): left out of the
// fit, and of the heatmap's colours.
inline constexpr double kSmallestDecayNorm = 1e-300;

struct DecayOptions {
  int loss_step = 0;              // s, 1-based step of the loss; 0 = the last step T
  int jacobian_lags = 16;         // lags (besides 0) at which ‖∂h_s/∂h_{s-k}‖₂ is computed; 0 = none
  int jacobian_batch = 4;         // sequences (the first of the B) whose Jacobian is computed; 0 = all
  int power_iterations = 20;      // at most, per lag
  double power_tolerance = 1e-3;  // stop when every estimate changes by less than this (relative)
  double clip_norm = 5.0;         // global-norm clipping threshold for clip_fraction
  double vanish_threshold = 1e-6; // lag_below: the first lag whose relative norm is below this
  uint64_t seed = 1;              // start vectors of the power iteration
  int threads = 1;                // for the model's products (the sweeps here are small: 1 is usually fastest)

  // Throws bptt::Error naming the flag of the first value out of range.
  void Validate() const;
};

// The inputs of a measurement are a Batch (batch.h) of B sequences of T steps. For a language
// model: the symbols (ids) and the symbol that follows each (classes), every position scored,
// as BatchStream gives them:
// Symbols drawn uniformly from [0, V).
Batch<double> UniformInputs(int vocab_size, int T, int B, Rng& rng);
// Symbols drawn independently with the frequencies of the vocabulary's counts.
Batch<double> UnigramInputs(const Vocab& vocab, int T, int B, Rng& rng);
// B windows of T + 1 consecutive symbols at evenly spaced offsets of `ids` (first at 0, last
// ending at the end). Throws bptt::Error if `ids` has fewer than T + 1 symbols.
Batch<double> CorpusInputs(std::span<const int32_t> ids, int T, int B);

// A batch of sequences of different lengths, each scored at its own end (a task's), made
// measurable at one loss step s: the first s steps, with every sequence scored at step s
// against the target of its own last scored step (for the tasks, the answer the sequence asks
// for, which every input up to s already determines when s is at most the shortest length).
// Sequences scored at s already keep their own target. Throws bptt::Error when some sequence
// has no scored step, or s is outside [1, T]; s = 0 chooses the end of the shortest sequence.
Batch<double> ScoredAt(const Batch<double>& data, int s);

// One quantity of one layer, per lag.
struct DecayCurve {
  int layer = 0;
  std::string quantity;          // "h", "c" or "jacobian"
  std::vector<int> lags;         // k, ascending from 0
  std::vector<double> median;    // over the B sequences
  std::vector<double> q1, q3;    // quartiles over the B sequences
  std::vector<double> relative;  // median / median at k = 0
};

// The geometric fit of one curve (see the top of this file).
struct DecayFit {
  double decay_factor = std::numeric_limits<double>::quiet_NaN();
  double half_life = std::numeric_limits<double>::infinity();
  int lag_below = -1;
  bool explodes = false;
};

DecayFit FitDecay(const DecayCurve& curve, double vanish_threshold);

// Largest singular value and spectral radius of one square recurrent block.
struct RecurrentSpectrum {
  std::string gate;  // "" for an RNN; "i", "f", "g", "o" (LSTM); "r", "z", "n" (GRU)
  double sigma_max = 0;
  double spectral_radius = 0;
};

// Of each gate block of weight_hh (named by the cell's gate letters).
std::vector<RecurrentSpectrum> RecurrentSpectra(const Cell& cell, const Mat<double>& weight_hh);

struct LayerDecay {
  int layer = 0;
  DecayFit h;                      // from the "h" curve; the layer's headline numbers
  DecayFit c;                      // LSTM only
  DecayFit jacobian;               // when jacobian_lags > 0
  std::vector<RecurrentSpectrum> spectra;
  double sigma_max = 0;            // largest over the blocks
  double spectral_radius = 0;      // largest over the blocks
  double pascanu_bound = std::numeric_limits<double>::quiet_NaN();
};

struct DecayReport {
  std::string model;  // label in the CSV, JSON and legend
  ModelConfig config;
  int T = 0, B = 0;
  int loss_step = 0;  // s actually used
  std::vector<DecayCurve> curves;  // per layer: h, then c (LSTM), then jacobian (if computed)
  std::vector<LayerDecay> layers;  // L
  double grad_norm = 0;            // ‖g‖ of the chunk's training loss
  double clip_norm = 0;
  double clip_fraction = 0;        // max(0, 1 - clip_norm/‖g‖)

  const DecayCurve* Find(int layer, const std::string& quantity) const;
};

// The whole measurement. Throws bptt::Error when the inputs do not fit the model (shape, an
// id outside [0, V)), the loss step is outside [0, T], or some sequence is not scored there.
// `between_chunks` is called between its pieces of work (a lag of the power iteration, a
// layer): it may throw to abandon the measurement (the Python module's Ctrl-C).
DecayReport MeasureDecay(const std::string& model, const ModelConfig& config,
                         const ModelParams<double>& params, const Batch<double>& data,
                         const DecayOptions& options, const std::function<void()>& between_chunks = {});

}  // namespace bptt
