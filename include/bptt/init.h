// Initialisers: how a fresh model's weights are drawn. Good initialisation decides whether the
// gradient survives the first hundred timesteps, so each scheme is named for what it is:
//
//   uniform     every weight and bias U(-scale, scale); char-rnn's default with scale 0.08
//   pytorch     PyTorch's default for RNN layers: U(-1/sqrt(H), 1/sqrt(H)) everywhere
//   xavier      Glorot & Bengio 2010: each gate block U(-a, a), a = sqrt(6 / (fan_in + fan_out))
//   he          He et al. 2015: each gate block N(0, 2 / fan_in), for ReLU units
//   orthogonal  Saxe et al. 2014: recurrent gate blocks orthogonal (times scale),
//               input blocks Xavier; the default
//   identity    Le et al. 2015 (IRNN): recurrent matrix = scale * I, input weights N(0, 0.001^2)
//
// The schemes draw each gate block of weight_ih, and of weight_hh for a cell with a recurrent
// matrix, in turn. Biases start at zero (except for `uniform` and `pytorch`); the forget gate's
// bias (the gate block a cell names 'f', cell.h) is then set to forget_bias (Jozefowicz et al.
// 2015), split as bias_ih = forget_bias, bias_hh = 0 (with layer norm too: bias_ih is added
// after the LNs). Layer norms start with gain 1 and bias 0 under every scheme and take no draws,
// so a model with --layer-norm starts with the other tensors of the same model without it.
// The decoder is Xavier (zero bias) and the embedding N(0, 1), except under `uniform` and `pytorch`.
// All draws come from one Rng in ModelParams::ForEach order: the same seed gives the same
// model bit for bit.
//
//   InitOptions init;  init.scheme = InitScheme::kOrthogonal;  Initialize(config, init, rng, params);
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "bptt/model.h"
#include "bptt/rng.h"

namespace bptt {

template <typename Options>
struct OptionSpec;  // options.h

enum class InitScheme { kUniform, kPytorch, kXavier, kHe, kOrthogonal, kIdentity };

std::string_view InitName(InitScheme scheme);
std::optional<InitScheme> ParseInit(std::string_view name);

struct InitOptions {
  InitScheme scheme = InitScheme::kOrthogonal;
  double scale = 0.0;         // uniform: bound (0 = 0.08); orthogonal, identity: gain (0 = 1)
  double forget_bias = 1.0;   // bias of the forget gate (a cell's gate block 'f')
};

// --init, --init-scale and --forget-bias, declared once (options.h).
std::span<const OptionSpec<InitOptions>> InitOptionSpecs();

template <typename S>
void Initialize(const ModelConfig& config, const InitOptions& options, Rng& rng, ModelParams<S>& params);

// A matrix with orthonormal columns (rows >= cols) or rows (rows < cols), from the QR
// decomposition of a Gaussian matrix with the signs of R's diagonal folded in (Mezzadri 2007).
template <typename S>
Mat<S> RandomOrthogonal(Eigen::Index rows, Eigen::Index cols, Rng& rng);

}  // namespace bptt
