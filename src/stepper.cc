#include "bptt/stepper.h"

#include "bptt/error.h"
#include "kernels/gemv.h"

namespace bptt {

namespace {
constexpr Precision kPrecisions[] = {Precision::kFloat32, Precision::kBfloat16, Precision::kInt8};
}  // namespace

const char* PrecisionName(Precision precision) {
  constexpr const char* kNames[] = {"fp32", "bf16", "int8"};
  return kNames[static_cast<int>(precision)];
}

Precision ParsePrecision(std::string_view name, std::string_view flag) {
  for (const Precision p : kPrecisions)
    if (name == PrecisionName(p)) return p;
  throw Error(std::string(flag) + " must be fp32, bf16 or int8, got '" + std::string(name) + "'");
}

Stepper::Stepper(const ModelConfig& config, ModelParams<float> params)
    : config_(config), params_(std::make_unique<ModelParams<float>>(std::move(params))) {
  config_.Validate();
  const ModelParams<float> expected = ModelParams<float>::Zeros(config_);
  bool fits = params_->layers.size() == expected.layers.size();
  if (fits) {
    std::vector<std::pair<Eigen::Index, Eigen::Index>> shapes;
    expected.ForEach([&](const std::string&, const Mat<float>& m) { shapes.emplace_back(m.rows(), m.cols()); });
    size_t k = 0;
    params_->ForEach([&](const std::string&, const Mat<float>& m) {
      fits = fits && k < shapes.size() && shapes[k] == std::make_pair(m.rows(), m.cols());
      ++k;
    });
    fits = fits && k == shapes.size();
  }
  if (!fits) throw Error("the parameters do not match the model configuration");
  state_ = State<float>::Zeros(config_, 1);
  const Eigen::Index GH = config_.cell->gates * static_cast<Eigen::Index>(config_.hidden_size);
  gates_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(GH));
  recurrent_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(GH));
  embedded_ = Eigen::VectorXf::Zero(config_.embed_size);
  outputs_ = Eigen::VectorXf::Zero(config_.output_size);
  if (config_.residual) summed_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(config_.hidden_size));
  weights_.resize(std::size(kPrecisions));
}

Stepper::~Stepper() = default;
Stepper::Stepper(Stepper&&) noexcept = default;
Stepper& Stepper::operator=(Stepper&&) noexcept = default;

void Stepper::Configure(Precision precision, int threads) {
  if (threads < 1) throw Error("--threads must be positive, got " + std::to_string(threads));
  precision_ = precision;
  WeightsOf(precision);
  for (auto& w : weights_)
    if (w) w->threads = threads;
}

Stepper::Weights& Stepper::WeightsOf(Precision precision) {
  std::unique_ptr<Weights>& w = weights_[static_cast<size_t>(precision)];
  if (!w) {
    w = std::make_unique<Weights>();
    for (size_t l = 0; l < params_->layers.size(); ++l) {
      const bool gather = l == 0 && !config_.dense_input() && config_.embed_size == 0;  // one-hot
      w->ih.push_back(gather ? nullptr : std::make_unique<StepMatrix>(params_->layers[l].weight_ih, precision));
      w->hh.push_back(std::make_unique<StepMatrix>(params_->layers[l].weight_hh, precision));
      w->hh_product.push_back([ws = w.get(), hh = w->hh.back().get()](const float* v, float* y, bool accumulate) {
        hh->Multiply(v, y, accumulate, ws->threads);
      });
    }
    w->decoder = std::make_unique<StepMatrix>(params_->decoder_weight, precision);
  }
  return *w;
}

void Stepper::Reset() { state_.SetZero(); }

std::span<const float> Stepper::Prime(std::span<const int32_t> ids) {
  if (config_.dense_input()) throw Error("Stepper::Prime takes symbols; this model reads dense vectors");
  if (ids.empty()) throw Error("Stepper::Prime needs at least one symbol");
  const auto T = static_cast<Eigen::Index>(ids.size());
  prime_batch_.T = T;
  prime_batch_.B = 1;
  prime_batch_.ids = Eigen::Map<const Ids>(ids.data(), T);
  state_.SetZero();
  Forward(config_, *params_, prime_batch_, state_, prime_cache_, /*threads=*/1);
  FinalState(config_, prime_cache_, state_);
  return {prime_cache_.outputs.col(T - 1).data(), static_cast<size_t>(config_.output_size)};
}

std::span<const float> Stepper::Step(int32_t id) {
  if (config_.dense_input()) throw Error("Stepper::Step takes a vector; this model reads dense vectors");
  if (id < 0 || id >= config_.vocab_size)
    throw Error("symbol id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(config_.vocab_size));
  if (config_.embed_size > 0) {
    embedded_ = params_->encoder.row(id).transpose();
    return Layers(embedded_.data());
  }
  gates_[0] = params_->layers[0].weight_ih.col(id);  // one-hot: a column
  return Layers(nullptr);
}

std::span<const float> Stepper::Step(const float* x) {
  if (!config_.dense_input()) throw Error("Stepper::Step takes a symbol; this model reads symbols");
  return Layers(x);
}

// One step of Forward (model.h) for a single stream: a = W_ih x for each layer, the cell's step
// from the state (which adds the biases), and outputs = W_dec h + b_dec.
std::span<const float> Stepper::Layers(const float* input) {
  Weights& w = WeightsOf(precision_);
  const Cell& cell = *config_.cell;
  const auto output = [this](size_t l) {  // y^l: h^l, plus the layer's input with a residual connection
    return config_.residual && l > 0 ? summed_[l].data() : state_.h[l].data();
  };
  for (size_t l = 0; l < params_->layers.size(); ++l) {
    const RecurrentParams<float>& p = params_->layers[l];
    Eigen::VectorXf& a = gates_[l];
    const float* x = l > 0 ? output(l - 1) : input;
    if (x != nullptr) w.ih[l]->Multiply(x, a.data(), false, w.threads);
    cell.step(p, w.hh_product[l], a.data(), recurrent_[l].data(), state_.h[l].data(),
              cell.cell_state ? state_.c[l].data() : nullptr);
    if (config_.residual && l > 0)
      summed_[l] = state_.h[l] + Eigen::Map<const Eigen::VectorXf>(x, config_.hidden_size);
  }
  w.decoder->Multiply(output(params_->layers.size() - 1), outputs_.data(), false, w.threads);
  outputs_ += params_->decoder_bias;
  return {outputs_.data(), static_cast<size_t>(config_.output_size)};
}

}  // namespace bptt
