#include "bptt/stepper.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "bptt/error.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"

namespace bptt {

Precision DefaultSamplePrecision() {
  return ThisCpu().avx512_vnni || ThisCpu().avx2 ? Precision::kInt8 : Precision::kFloat32;
}

Stepper::Stepper(const ModelConfig& config, ModelParams<float> params)
    : config_(config), params_(std::make_unique<ModelParams<float>>(std::move(params))) {
  config_.Validate();
  const ModelParams<float> expected = ModelParams<float>::Shaped(config_);
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
  if (config_.zoneout > 0 || config_.zoneout_cell > 0) previous_ = Eigen::VectorXf::Zero(2 * config_.hidden_size);
  embedded_ = Eigen::VectorXf::Zero(config_.embed_size);
  outputs_ = Eigen::VectorXf::Zero(config_.output_size);
  if (config_.residual) summed_.assign(static_cast<size_t>(config_.layers), Eigen::VectorXf::Zero(config_.hidden_size));
  weights_.resize(3);  // one per Precision
}

Stepper::~Stepper() = default;
Stepper::Stepper(Stepper&&) noexcept = default;
Stepper& Stepper::operator=(Stepper&&) noexcept = default;

void Stepper::Configure(Precision precision, int threads) {
  if (threads < 0) throw Error("--threads must be non-negative (0 = chosen as it runs), got " + std::to_string(threads));
  threads_ = ThreadChoice{};
  threads_.automatic = threads == 0;
  threads_.current = std::max(threads, 1);
  WeightsOf(precision);  // may refuse (non-finite weights have no reduced copy): the precision stays
  precision_ = precision;
  if (threads_.automatic) ChooseThreads();
}

namespace {
constexpr int kTimedBlock = 16;            // steps timed per measurement
constexpr int64_t kFirstProbe = 256;       // steps before the other choice is tried again...
constexpr int64_t kLastProbe = 16384;      // ...doubling up to this while it keeps losing
constexpr double kTrialGiveUp = 3;         // a tried step this many times the kept one's ends the trial
}  // namespace

void Stepper::ChooseThreads() {
  const Weights& w = WeightsOf(precision_);
  size_t bytes = w.decoder->Bytes();
  for (size_t l = 0; l < w.hh.size(); ++l) bytes += (w.hh[l] ? w.hh[l]->Bytes() : 0) + (w.ih[l] ? w.ih[l]->Bytes() : 0);
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);  // per core; 0 or -1 when the system does not say
  const auto cores = static_cast<size_t>(std::max(1, omp_get_num_procs()));
  if (cores == 1 || (l2 > 0 && bytes <= static_cast<size_t>(l2) / 2)) return;  // one core holds them
  // As many cores as it takes for each share to fit in three quarters of a core's L2, at least two.
  const size_t share = l2 > 0 ? static_cast<size_t>(l2) * 3 / 4 : bytes;
  threads_.split = static_cast<int>(std::min(cores, std::max<size_t>(2, (bytes + share - 1) / share)));
  threads_.until_probe = kTimedBlock;
  threads_.probe_every = kFirstProbe;
}

void Stepper::StepTimed(double seconds) {
  ThreadChoice& c = threads_;
  const int mode = c.current == 1 ? 0 : 1;
  const auto run = [&c](int m) {
    c.current = m == 0 ? 1 : c.split;
    c.block = 0;
    c.block_seconds = 0;
  };
  if (mode == c.kept) {
    // A kept step far slower than the other choice was: another process may hold a core.
    if (c.seconds[1 - mode] > 0 && seconds > kTrialGiveUp * c.seconds[1 - mode]) c.until_probe = 0;
    c.block_seconds += seconds;
    if (++c.block == kTimedBlock) {
      c.seconds[mode] = c.block_seconds / kTimedBlock;
      c.block = 0;
      c.block_seconds = 0;
    }
    if (c.seconds[mode] > 0 && --c.until_probe <= 0) run(1 - mode);
    return;
  }
  // A trial of the other choice: a block of steps, or one step far slower than the kept choice.
  const bool hopeless = seconds > kTrialGiveUp * c.seconds[c.kept];
  c.block_seconds += seconds;
  if (!hopeless && ++c.block < kTimedBlock) return;
  c.seconds[mode] = hopeless ? seconds : c.block_seconds / kTimedBlock;
  if (c.seconds[mode] < c.seconds[c.kept]) {
    c.kept = mode;
    c.probe_every = kFirstProbe;
  } else {
    c.probe_every = std::min(2 * c.probe_every, kLastProbe);
  }
  c.until_probe = c.probe_every;
  run(c.kept);
}

Stepper::Weights& Stepper::WeightsOf(Precision precision) {
  std::unique_ptr<Weights>& slot = weights_[static_cast<size_t>(precision)];
  if (slot) return *slot;
  // Built whole before it is kept: a refusal (non-finite weights have no reduced copy) leaves
  // nothing half-built for a later call to find.
  auto w = std::make_unique<Weights>();
  for (size_t l = 0; l < params_->layers.size(); ++l) {
    const bool gather = l == 0 && !config_.dense_input() && config_.embed_size == 0;  // one-hot
    w->ih.push_back(gather ? nullptr : std::make_unique<StepMatrix>(params_->layers[l].weight_ih(), precision));
    if (!config_.cell->recurrent_matrix()) {
      w->hh.push_back(nullptr);
      w->hh_product.emplace_back();
      continue;
    }
    w->hh.push_back(std::make_unique<StepMatrix>(params_->layers[l][kWeightHhSlot], precision));
    w->hh_product.push_back([ws = w.get(), hh = w->hh.back().get()](const float* v, float* y, bool accumulate) {
      hh->Multiply(v, y, accumulate, ws->threads);
    });
  }
  w->decoder = std::make_unique<StepMatrix>(params_->decoder_weight, precision);
  slot = std::move(w);
  return *slot;
}

void Stepper::Reset() { state_.SetZero(); }

std::span<const float> Stepper::Prime(std::span<const int32_t> ids) {
  if (config_.dense_input()) throw Error("Stepper::Prime takes symbols; this model reads dense vectors");
  if (ids.empty()) throw Error("Stepper::Prime needs at least one symbol");
  const auto T = static_cast<Eigen::Index>(ids.size());
  state_.SetZero();
  if (T <= kStepPrime) {
    Weights& w = WeightsOf(Precision::kFloat32);
    w.threads = 1;
    std::span<const float> out;
    for (const int32_t id : ids) out = Layers(w, Input(id));
    return out;
  }
  prime_batch_.T = T;
  prime_batch_.B = 1;
  prime_batch_.ids = Eigen::Map<const Ids>(ids.data(), T);
  Forward(config_, *params_, prime_batch_, state_, prime_cache_, /*threads=*/1);
  FinalState(config_, prime_cache_, state_);
  return {prime_cache_.outputs.col(T - 1).data(), static_cast<size_t>(config_.output_size)};
}

const float* Stepper::Input(int32_t id) {
  if (id < 0 || id >= config_.vocab_size)
    throw Error("symbol id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(config_.vocab_size));
  if (config_.embed_size > 0) {
    embedded_ = params_->encoder.row(id).transpose();
    return embedded_.data();
  }
  gates_[0] = params_->layers[0].weight_ih().col(id);  // one-hot: a column
  return nullptr;
}

std::span<const float> Stepper::Step(int32_t id) {
  if (config_.dense_input()) throw Error("Stepper::Step takes a vector; this model reads dense vectors");
  return TimedStep(Input(id));
}

std::span<const float> Stepper::Step(const float* x) {
  if (!config_.dense_input()) throw Error("Stepper::Step takes a symbol; this model reads symbols");
  return TimedStep(x);
}

std::span<const float> Stepper::TimedStep(const float* input) {
  Weights& w = WeightsOf(precision_);
  w.threads = threads_.current;
  const bool timed = threads_.automatic && threads_.split > 1;
  const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  const std::span<const float> out = Layers(w, input);
  if (timed) StepTimed(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return out;
}

// One step of Forward (model.h) for a single stream: a = W_ih x for each layer, the cell's step
// from the state (which adds the biases), zoneout's expectation h_t = z h_{t-1} + (1 - z) h̃_t
// (c_t likewise; cell.h), and outputs = W_dec h + b_dec.
std::span<const float> Stepper::Layers(Weights& w, const float* input) {
  const Cell& cell = *config_.cell;
  const auto output = [this](size_t l) {  // y^l: h^l, plus the layer's input with a residual connection
    return config_.residual && l > 0 ? summed_[l].data() : state_.h[l].data();
  };
  for (size_t l = 0; l < params_->layers.size(); ++l) {
    const RecurrentParams<float>& p = params_->layers[l];
    Eigen::VectorXf& a = gates_[l];
    const float* x = l > 0 ? output(l - 1) : input;
    if (x != nullptr) w.ih[l]->Multiply(x, a.data(), false, w.threads);
    const Eigen::Index H = config_.hidden_size;
    const Zoneout<float> zoneout_h{nullptr, static_cast<float>(config_.zoneout)},
        zoneout_c{nullptr, static_cast<float>(config_.zoneout_cell)};
    if (zoneout_h.on()) previous_.head(H) = state_.h[l];
    if (zoneout_c.on()) previous_.tail(H) = state_.c[l];
    cell.step(p, w.hh_product[l], a.data(), recurrent_[l].data(), state_.h[l].data(),
              cell.cell_state ? state_.c[l].data() : nullptr);
    if (zoneout_h.on()) zoneout_h.Forward(H, 0, 0, previous_.head(H).array(), state_.h[l].array());
    if (zoneout_c.on()) zoneout_c.Forward(H, 0, 0, previous_.tail(H).array(), state_.c[l].array());
    if (config_.residual && l > 0)
      summed_[l] = state_.h[l] + Eigen::Map<const Eigen::VectorXf>(x, config_.hidden_size);
  }
  w.decoder->Multiply(output(params_->layers.size() - 1), outputs_.data(), false, w.threads);
  outputs_ += params_->decoder_bias;
  return {outputs_.data(), static_cast<size_t>(config_.output_size)};
}

}  // namespace bptt
