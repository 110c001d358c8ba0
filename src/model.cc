#include "bptt/model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>

#include "bptt/error.h"
#include "bptt/options.h"
#include "kernels/packed_gemm.h"
#include "kernels/threads.h"

namespace bptt {

std::string_view HeadName(Head head) { return head == Head::kRegression ? "regression" : "softmax"; }

Head ParseHead(std::string_view name, std::string_view flag) {
  for (const Head h : {Head::kSoftmax, Head::kRegression})
    if (HeadName(h) == name) return h;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of softmax, regression");
}

std::string_view RegressionLossName(RegressionLoss loss) {
  constexpr std::string_view kNames[] = {"mse", "mae", "huber"};
  return kNames[static_cast<int>(loss)];
}

RegressionLoss ParseRegressionLoss(std::string_view name, std::string_view flag) {
  for (const RegressionLoss l : {RegressionLoss::kSquared, RegressionLoss::kAbsolute, RegressionLoss::kHuber})
    if (RegressionLossName(l) == name) return l;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of mse, mae, huber");
}

std::string_view PoolingName(Pooling pooling) {
  constexpr std::string_view kNames[] = {"none", "last", "mean"};
  return kNames[static_cast<int>(pooling)];
}

Pooling ParsePooling(std::string_view name, std::string_view flag) {
  for (const Pooling p : {Pooling::kNone, Pooling::kLast, Pooling::kMean})
    if (PoolingName(p) == name) return p;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of none, last, mean");
}

void ModelConfig::Validate() const {
  if (cell == nullptr) throw Error("the model has no cell");
  if (vocab_size < 0 || input_size < 0) throw Error("input sizes must not be negative");
  if ((vocab_size > 0) == (input_size > 0))
    throw Error("a model reads either symbols (a vocabulary size) or dense vectors (--input-size), not " +
                std::string(vocab_size > 0 ? "both" : "neither"));
  if (embed_size < 0) throw Error("--embed must be 0 (one-hot) or positive, got " + std::to_string(embed_size));
  if (embed_size > 0 && dense_input()) throw Error("--embed applies to symbol input only");
  if (hidden_size < 1) throw Error("--hidden must be positive, got " + std::to_string(hidden_size));
  if (layers < 1) throw Error("--layers must be positive, got " + std::to_string(layers));
  const auto rate = [](double p, const char* flag) {
    if (!(p >= 0.0 && p < 1.0)) throw Error(std::string(flag) + " must be in [0, 1), got " + std::to_string(p));
  };
  rate(dropout, "--dropout");
  rate(input_dropout, "--input-dropout");
  rate(output_dropout, "--output-dropout");
  rate(weight_drop, "--weight-drop");
  if (variational && dropout == 0 && input_dropout == 0 && output_dropout == 0)
    throw Error("--variational locks the dropout masks over time: it needs --dropout, --input-dropout or --output-dropout");
  if (weight_drop > 0 && !cell->recurrent_matrix())
    throw Error("--weight-drop drops weights of the recurrent matrix W_hh, which " + std::string(cell->name) +
                " does not have");
  if (!(ar >= 0 && std::isfinite(ar))) throw Error("--ar must be zero or positive, got " + std::to_string(ar));
  if (!(tar >= 0 && std::isfinite(tar))) throw Error("--tar must be zero or positive, got " + std::to_string(tar));
  rate(recurrent_dropout, "--recurrent-dropout");
  rate(zoneout, "--zoneout");
  rate(zoneout_cell, "--zoneout-cell");
  const auto cells_with = [](bool (*has)(const Cell&)) {
    std::string names;
    for (const Cell* c : Cells())
      if (has(*c)) names += (names.empty() ? "" : ", ") + std::string(c->name);
    return names;
  };
  if (recurrent_dropout > 0 && !cell->recurrent_matrix())
    throw Error("--recurrent-dropout applies to cells with a recurrent matrix (" +
                cells_with([](const Cell& c) { return c.recurrent_matrix(); }) + "), not to " + std::string(cell->name));
  if (zoneout_cell > 0 && !cell->cell_state)
    throw Error("--zoneout-cell applies to cells with a cell state (" +
                cells_with([](const Cell& c) { return c.cell_state; }) + "), not to " + std::string(cell->name));
  if (output_size < 1) throw Error("the model's head needs at least one output, got " + std::to_string(output_size));
  if (residual && layers < 2) throw Error("--residual connects stacked layers: it needs --layers 2 or more");
  if (layer_norm && !cell->layer_norm())
    throw Error("--layer-norm applies to " + CellNames(true) + ", not to " + std::string(cell->name));
  if (!(huber_delta > 0 && std::isfinite(huber_delta)))
    throw Error("--huber-delta must be positive, got " + std::to_string(huber_delta));
}

std::span<const OptionSpec<ModelConfig>> ModelOptionSpecs() {
  using M = ModelConfig;
  constexpr OnResume kFixed = OnResume::kFixed;
  static const std::string cell_help = "the cell: " + CellNames();
  static const std::string layer_norm_help =
      "layer normalisation of the input and recurrent pre-activations (and the LSTM's cell state), "
      "Ba et al. 2016: " + CellNames(true);
  static const std::vector<OptionSpec<M>> specs = {
      Choice<M>(0, "cell", "cell", "Model", cell_help, kFixed, [](M& m) -> auto& { return m.cell; },
                [](const Cell* c) { return c->name; },
                [](const std::string& v, const std::string& f) { return &ParseCell(v, f); }),
      Field<M>(0, "layers", "layers", "Model", "stacked recurrent layers (L)", kFixed,
               [](M& m) -> auto& { return m.layers; }),
      Field<M>(0, "hidden", "hidden_size", "Model", "hidden units per layer (H)", kFixed,
               [](M& m) -> auto& { return m.hidden_size; }),
      Field<M>(0, "embed", "embed_size", "Model", "embedding width of a symbol input (0 = one-hot)", kFixed,
               [](M& m) -> auto& { return m.embed_size; }),
      Field<M>(0, "dropout", "dropout", "Model", "dropout probability between layers", kFixed,
               [](M& m) -> auto& { return m.dropout; }),
      Field<M>(0, "input-dropout", "input_dropout", "Model",
               "dropout probability on the first layer's input (one-hot input: the whole symbol)", kFixed,
               [](M& m) -> auto& { return m.input_dropout; }),
      Field<M>(0, "output-dropout", "output_dropout", "Model",
               "dropout probability on the top layer's output, before the head", kFixed,
               [](M& m) -> auto& { return m.output_dropout; }),
      Field<M>(0, "variational", "variational", "Model",
               "variational dropout: the input, between-layer and output masks are drawn once per chunk "
               "and sequence and kept at every step (Gal & Ghahramani 2016)",
               kFixed, [](M& m) -> auto& { return m.variational; }),
      Field<M>(0, "weight-drop", "weight_drop", "Model",
               "probability of dropping each weight of the recurrent matrices W_hh, one mask per batch "
               "(DropConnect, Merity et al. 2017)",
               kFixed, [](M& m) -> auto& { return m.weight_drop; }),
      Field<M>(0, "ar", "ar", "Model",
               "activation regularisation: alpha times the mean square of the top layer's (dropped) outputs, "
               "added to the training gradient (Merity et al. 2017)",
               kFixed, [](M& m) -> auto& { return m.ar; }),
      Field<M>(0, "tar", "tar", "Model",
               "temporal activation regularisation: beta times the mean square of the top layer's "
               "step-to-step changes h_t - h_{t-1}, added to the training gradient",
               kFixed, [](M& m) -> auto& { return m.tar; }),
      Field<M>(0, "recurrent-dropout", "recurrent_dropout", "Model",
               "dropout probability on h_{t-1} in the recurrent product, one mask per stream per chunk "
               "(cells with a recurrent matrix)",
               kFixed, [](M& m) -> auto& { return m.recurrent_dropout; }),
      Field<M>(0, "zoneout", "zoneout", "Model",
               "zoneout on h: probability that a unit keeps its previous value at a training step "
               "(Krueger et al. 2017); evaluation takes the expectation",
               kFixed, [](M& m) -> auto& { return m.zoneout; }),
      Field<M>(0, "zoneout-cell", "zoneout_cell", "Model", "zoneout on the cell state c (lstm)", kFixed,
               [](M& m) -> auto& { return m.zoneout_cell; }),
      Field<M>(0, "residual", "residual", "Model", "residual connections: layers above the first output h + their input",
               kFixed, [](M& m) -> auto& { return m.residual; }),
      Field<M>(0, "layer-norm", "layer_norm", "Model", layer_norm_help, kFixed,
               [](M& m) -> auto& { return m.layer_norm; }),
  };
  return specs;
}

namespace {
// The keys of the stored configuration that the data sets rather than an option.
constexpr std::string_view kDataKeys[] = {"vocab_size", "input_size", "output_size", "head",
                                          "pooling", "loss", "huber_delta"};

// A size the data sets: a JSON integer in [0, INT_MAX], or `fallback` when the key is absent.
int DataSize(const nlohmann::json& j, const char* key, int fallback, const std::string& source) {
  if (!j.contains(key)) return fallback;
  const nlohmann::json& v = j.at(key);
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  const bool fits = v.is_number_integer() && (v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t{kMax}
                                                                     : v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMax);
  if (!fits)
    throw Error(source + ": model configuration '" + key + "' must be a non-negative integer, got " + v.dump());
  return v.get<int>();
}
}  // namespace

nlohmann::json ConfigToJson(const ModelConfig& c) {
  nlohmann::json j = ToJson(ModelOptionSpecs(), c);
  j["vocab_size"] = c.vocab_size;
  j["input_size"] = c.input_size;
  j["output_size"] = c.output_size;
  j["head"] = std::string(HeadName(c.head));
  // Written only when they differ from a text model's, whose configuration they leave alone.
  if (c.pooling != Pooling::kNone) j["pooling"] = std::string(PoolingName(c.pooling));
  if (c.regression_loss != RegressionLoss::kSquared) j["loss"] = std::string(RegressionLossName(c.regression_loss));
  if (c.regression_loss == RegressionLoss::kHuber) j["huber_delta"] = c.huber_delta;
  return j;
}

ModelConfig ConfigFromJson(const nlohmann::json& j, const std::string& source) {
  ModelConfig c = FromJson(ModelOptionSpecs(), j, ModelConfig(), source, kDataKeys);
  c.vocab_size = DataSize(j, "vocab_size", 0, source);
  c.input_size = DataSize(j, "input_size", 0, source);
  c.output_size = DataSize(j, "output_size", c.vocab_size, source);
  try {
    c.head = ParseHead(j.value("head", std::string("softmax")), "model head");
    c.pooling = ParsePooling(j.value("pooling", std::string("none")), "model pooling");
    c.regression_loss = ParseRegressionLoss(j.value("loss", std::string("mse")), "model loss");
    c.huber_delta = j.value("huber_delta", 1.0);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": model configuration is malformed: " + e.what());
  } catch (const Error& e) {
    throw Error(source + ": model configuration is malformed: " + e.what());
  }
  try {
    c.Validate();
  } catch (const Error& e) {
    throw Error(source + ": model configuration is invalid: " + e.what());
  }
  return c;
}

std::vector<std::pair<std::string_view, double>> TrainingRegularisers(const ModelConfig& c) {
  const std::pair<std::string_view, double> all[] = {
      {"dropout", c.dropout}, {"input-dropout", c.input_dropout},         {"output-dropout", c.output_dropout},
      {"weight-drop", c.weight_drop}, {"ar", c.ar},                       {"tar", c.tar},
      {"recurrent-dropout", c.recurrent_dropout}, {"zoneout", c.zoneout}, {"zoneout-cell", c.zoneout_cell}};
  std::vector<std::pair<std::string_view, double>> on;
  for (const auto& r : all)
    if (r.second != 0) on.push_back(r);
  return on;
}

double ParameterCount(const ModelConfig& c) {
  const double V = c.vocab_size, H = c.hidden_size, O = c.output_size;
  // The values of a layer whose input is E wide; every layer above the first is alike.
  const auto layer = [&c](int E) {
    const Sizes sizes{c.cell->gates, c.hidden_size, E};
    double n = 0;
    for (const ParamDecl& d : c.cell->params)
      if (Present(d.when, c.layer_norm)) n += d.rows.Count(sizes) * d.cols.Count(sizes);
    return n;
  };
  return (c.embed_size > 0 ? V * c.embed_size : 0) + layer(c.layer0_input_size()) +
         (c.layers - 1.0) * layer(c.hidden_size) + O * H + O;
}

namespace {

// The sizes of layer l of a chunk of (T, B).
Sizes LayerSizes(const ModelConfig& c, int l, double T, double B) {
  return {c.cell->gates, c.hidden_size, l == 0 ? c.layer0_input_size() : c.hidden_size, static_cast<Eigen::Index>(T),
          static_cast<Eigen::Index>(B)};
}

// Values in the declared buffers that a layer of these sizes holds (cell.h Present).
double DeclaredValues(std::span<const BufferDecl> decls, const Sizes& sizes, bool layer_norm) {
  double n = 0;
  for (const BufferDecl& d : decls)
    if (Present(d.when, layer_norm)) n += d.rows.Count(sizes) * d.cols.Count(sizes);
  return n;
}

// Bytes of the buffers of one chunk's forward pass over segments of Ts steps, in training or
// evaluation: every layer's cache over a segment and the packing of its recurrent matrix
// (LayerCache), and ModelCache's embedding rows and residual sums over a segment, the outputs of
// the chunk, the states at the segments' boundaries (with `slots` below the segments, the kept
// starts of recompute.h); the carried state and the batch.
double ForwardBytes(const ModelConfig& c, double T, double Ts, double B, Precision products, int slots = 0) {
  const double H = c.hidden_size, O = c.output_size, L = c.layers, TB = T * B, TsB = Ts * B;
  const double segments = std::ceil(T / Ts), state = L * H * B * (c.cell->cell_state ? 2 : 1);
  // With fewer slots than segments: m starts, b_S, the scratch state and the schedule's tables.
  const bool scheduled = slots > 0 && slots < segments;
  const double states = scheduled ? slots + 2 : segments + 1;
  // Layer 0, then the layers above it, which are alike.
  double floats = DeclaredValues(c.cell->cache, LayerSizes(c, 0, Ts, B), c.layer_norm) +
                  (L - 1) * DeclaredValues(c.cell->cache, LayerSizes(c, 1, Ts, B), c.layer_norm);
  double bytes = 0;
  if (c.cell->recurrent_matrix())
    bytes += L * static_cast<double>(PackedBytes(c.cell->gates * c.hidden_size, c.hidden_size, products));
  if (c.embed_size > 0) floats += c.embed_size * TsB;  // ModelCache::embedded
  if (c.residual) floats += (L - 1) * H * TsB;        // ModelCache::summed
  floats += O * TB;                                   // ModelCache::outputs
  floats += (states + 1) * state;                     // ModelCache::boundary (advanced); the carried State
  if (scheduled) bytes += static_cast<double>(RecomputeSchedule::Bytes(static_cast<int>(segments), slots));
  // The batch: ids or dense inputs, classes or regression values.
  bytes += c.dense_input() ? c.input_size * TB * sizeof(float) : TB * sizeof(int32_t);
  bytes += c.head == Head::kRegression ? O * TB * sizeof(float) : TB * sizeof(int32_t);
  return floats * sizeof(float) + bytes + TB * sizeof(double);  // the loss's per-position sums
}

// The bytes the large products keep for their operands as the kernels read them (rounded to
// bfloat16: bf16_gemm.h; packed float panels: sgemm.h), each of the two operand buffers grown to
// its largest over the products of a forward pass (model.cc Forward) and, in training, of the
// backward sweep (Backward and the cells' dW_hh). Zero where the products run in Eigen.
double ProductOperandBytes(const ModelConfig& c, double T, double B, Precision products, bool training) {
  const bool bf16 = products == Precision::kBfloat16;
  if (!bf16 && !LargeFloatProductsHere()) return 0;
  const Eigen::Index H = c.hidden_size, GH = c.cell->gates * H, O = c.output_size;
  const auto TB = static_cast<Eigen::Index>(T * B);
  std::vector<std::array<Eigen::Index, 3>> shapes = {{O, TB, H}};  // (M, N, K): the decoder
  if (training) shapes.insert(shapes.end(), {{O, H, TB}, {H, TB, O}});
  for (int l = 0; l < std::min(c.layers, 2); ++l) {  // the layers above the first are alike
    const Eigen::Index E = l == 0 ? c.layer0_input_size() : H;
    const bool gather = l == 0 && !c.dense_input() && c.embed_size == 0;  // one-hot: no product
    if (!gather) shapes.push_back({GH, TB, E});                            // W_ih x
    if (!training) continue;
    if (!gather) shapes.push_back({GH, E, TB});                              // dW_ih
    if (l > 0 || c.embed_size > 0) shapes.push_back({E, TB, GH});            // W_ih^T dgates
    if (c.cell->recurrent_matrix()) shapes.push_back({GH, H, TB});           // dW_hh
  }
  size_t lhs = 0, rhs = 0;
  for (const auto& [M, N, K] : shapes) {
    const OperandBytes b = bf16 ? Bf16ProductOperandBytes(M, N, K) : FloatProductOperandBytes(M, N, K);
    lhs = std::max(lhs, b.lhs);
    rhs = std::max(rhs, b.rhs);
  }
  return static_cast<double>(lhs + rhs);
}

}  // namespace

uint64_t EstimateTrainingBytes(const ModelConfig& c, int T_, int B_, int optimizer_slots, Precision products,
                               int checkpoint_steps, int checkpoint_slots) {
  const double T = T_, Ts = SegmentSteps(checkpoint_steps, T_), B = B_, TB = T * B, TsB = Ts * B,
               H = c.hidden_size, L = c.layers, O = c.output_size;
  double floats = ParameterCount(c) * (2 + optimizer_slots);  // parameters, gradients, optimizer state
  floats += DeclaredValues(c.cell->backward, LayerSizes(c, 0, Ts, B), c.layer_norm) +
            (L - 1) * DeclaredValues(c.cell->backward, LayerSizes(c, 1, Ts, B), c.layer_norm);
  if (c.cell->recurrent_matrix())  // W_hh^T packed for the backward sweeps
    floats += L * static_cast<double>(PackedBytes(c.hidden_size, c.cell->gates * c.hidden_size, products)) / sizeof(float);
  if (c.dropout > 0) floats += (L - 1) * H * (TsB + TB);  // ModelCache::dropped (a segment), dropout_mask (the chunk)
  if (c.input_dropout > 0) {
    const bool one_hot = !c.dense_input() && c.embed_size == 0;
    floats += (one_hot ? 1 : c.layer0_input_size()) * TB;  // ModelCache::input_mask
    if (one_hot && c.variational) floats += c.vocab_size * B;  // ModelCache::locked_symbols
    if (c.dense_input()) floats += c.input_size * TsB;      // ModelCache::dropped_input
  }
  if (c.output_dropout > 0) floats += H * (TB + TsB);  // ModelCache::output_mask, dropped_output
  if (c.weight_drop > 0) floats += 3 * L * c.cell->gates * H * H;  // weight_mask, dropped_hh, dweight_hh
  if (c.ar > 0 || c.tar > 0) floats += H * (TB + B);  // ModelCache::dactivation, previous_top
  // The regularisers of the time loops: ModelCache's masks (the chunk), each layer's
  // LayerCache::h_dropped (a segment) and LayerBackward's dh_dropped, dh_kept, dc_kept.
  if (c.recurrent_dropout > 0) floats += L * H * (B + TsB + B);
  if (c.zoneout > 0) floats += L * H * (TB + B);
  if (c.zoneout_cell > 0) floats += L * H * (TB + B);
  floats += L * H * B * (c.cell->cell_state ? 2 : 1);     // ModelCache::dcarried
  floats += H * TsB + O * TB;                             // ModelCache::dh_out; the outputs' gradient
  if (c.embed_size > 0) floats += c.embed_size * TsB;     // ModelCache::dx
  double bytes = ForwardBytes(c, T, Ts, B, products, checkpoint_slots) + floats * sizeof(float);
  return static_cast<uint64_t>(bytes + ProductOperandBytes(c, Ts, B, products, true));
}

uint64_t EstimateEvaluationBytes(const ModelConfig& c, int T, int B) {
  return static_cast<uint64_t>(ForwardBytes(c, T, T, B, Precision::kFloat32) +
                               ProductOperandBytes(c, T, B, Precision::kFloat32, false));
}

ModelConfig LanguageModel(const Cell& cell, int vocab_size, int embed_size, int hidden_size, int layers,
                          double dropout) {
  ModelConfig config;
  config.cell = &cell;
  config.vocab_size = vocab_size;
  config.embed_size = embed_size;
  config.hidden_size = hidden_size;
  config.layers = layers;
  config.dropout = dropout;
  config.output_size = vocab_size;
  return config;
}

std::string_view FeedbackName(Feedback rule) {
  constexpr std::string_view kNames[] = {"bptt", "fa", "dfa"};
  return kNames[static_cast<int>(rule)];
}

Feedback ParseFeedback(std::string_view name, std::string_view flag) {
  for (const Feedback rule : {Feedback::kBptt, Feedback::kFa, Feedback::kDfa})
    if (FeedbackName(rule) == name) return rule;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of bptt, fa, dfa");
}

namespace {

template <typename S>
Mat<S> Uniform(Eigen::Index rows, Eigen::Index cols, double bound, Rng& rng) {
  Mat<S> m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j)
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = static_cast<S>(rng.Uniform(-bound, bound));
  return m;
}

double XavierBound(Eigen::Index fan_in, Eigen::Index fan_out) {
  return std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
}

}  // namespace

template <typename S>
FeedbackMatrices<S> FeedbackMatrices<S>::Draw(Feedback rule, const ModelConfig& c, Rng& rng) {
  FeedbackMatrices<S> f;
  f.rule = rule;
  if (rule == Feedback::kBptt) return f;
  const Eigen::Index H = c.hidden_size, G = c.cell->gates, O = c.output_size;
  // The input matrices an error passes through: every layer's above the first, and the first's
  // when an embedding lies below it.
  for (int l = 0; l < c.layers; ++l) {
    const Eigen::Index E = l == 0 ? c.layer0_input_size() : H;
    const bool used = l > 0 ? rule == Feedback::kFa : c.embed_size > 0;
    f.input.push_back(used ? Uniform<S>(G * H, E, XavierBound(E, H), rng) : Mat<S>());
  }
  if (rule == Feedback::kFa) {
    if (c.cell->recurrent_matrix())
      for (int l = 0; l < c.layers; ++l) f.recurrent.push_back(Uniform<S>(G * H, H, XavierBound(H, H), rng));
    f.decoder = Uniform<S>(O, H, XavierBound(H, O), rng);
  } else {
    for (int l = 0; l < c.layers; ++l) f.direct.push_back(Uniform<S>(O, H, XavierBound(H, O), rng));
  }
  return f;
}

template <typename S>
std::map<std::string, double> AlignmentDegrees(const ModelParams<S>& a, const ModelParams<S>& b) {
  std::vector<const Mat<S>*> bs;
  b.ForEach([&bs](const std::string&, const Mat<S>& m) { bs.push_back(&m); });
  std::map<std::string, double> angles;
  size_t k = 0;
  a.ForEachTensor([&](const TensorInfo& tensor, const Mat<S>& m) {
    const Mat<S>& other = *bs[k++];
    if (tensor.role != TensorRole::kWeight) return;
    const double norms = m.template cast<double>().norm() * other.template cast<double>().norm();
    if (!(norms > 0)) return;
    const double cosine = m.template cast<double>().cwiseProduct(other.template cast<double>()).sum() / norms;
    angles[tensor.name] = std::acos(std::clamp(cosine, -1.0, 1.0)) * 180.0 / std::numbers::pi;
  });
  return angles;
}

template <typename S>
ModelParams<S> ModelParams<S>::Shaped(const ModelConfig& config) {
  ModelParams p;
  const Eigen::Index V = config.vocab_size, H = config.hidden_size, O = config.output_size;
  if (config.embed_size > 0) p.encoder.resize(V, config.embed_size);
  for (int l = 0; l < config.layers; ++l)
    p.layers.push_back(
        RecurrentParams<S>::Shaped(*config.cell, l == 0 ? config.layer0_input_size() : H, H, config.layer_norm));
  p.decoder_weight.resize(O, H);
  p.decoder_bias.resize(O, 1);
  return p;
}

template <typename S>
ModelParams<S> ModelParams<S>::Zeros(const ModelConfig& config) {
  ModelParams p = Shaped(config);
  p.SetZero();
  return p;
}

template <typename S>
int64_t ModelParams<S>::Count() const {
  int64_t n = 0;
  ForEach([&n](const std::string&, const Mat<S>& m) { n += m.size(); });
  return n;
}

template <typename S>
void ModelParams<S>::SetZero() {
  ForEach([](const std::string&, Mat<S>& m) { m.setZero(); });
}

template <typename S>
bool ModelParams<S>::AllFinite() const {
  bool finite = true;
  ForEach([&finite](const std::string&, const Mat<S>& m) { finite = finite && m.allFinite(); });
  return finite;
}

template <typename S>
template <typename T>
ModelParams<T> ModelParams<S>::Cast() const {
  ModelParams<T> out;
  out.encoder = encoder.template cast<T>();
  for (const RecurrentParams<S>& l : layers) {
    RecurrentParams<T>& o = out.layers.emplace_back();
    o.cell = l.cell;
    o.E = l.E;
    o.H = l.H;
    o.with_layer_norm = l.with_layer_norm;
    for (const Mat<S>& m : l.tensors) o.tensors.push_back(m.template cast<T>());
  }
  out.decoder_weight = decoder_weight.template cast<T>();
  out.decoder_bias = decoder_bias.template cast<T>();
  return out;
}

template <typename S>
State<S> State<S>::Zeros(const ModelConfig& config, Eigen::Index B) {
  State s;
  s.h.assign(config.layers, Mat<S>::Zero(config.hidden_size, B));
  if (config.cell->cell_state) s.c.assign(config.layers, Mat<S>::Zero(config.hidden_size, B));
  return s;
}

template <typename S>
void State<S>::SetZero() {
  for (auto& m : h) m.setZero();
  for (auto& m : c) m.setZero();
}

int SegmentSteps(int checkpoint_steps, int T) {
  if (T < 1) return 1;
  if (checkpoint_steps == kAutoCheckpointSteps)
    return std::clamp(static_cast<int>(std::lround(std::sqrt(static_cast<double>(T)))), 1, T);
  if (checkpoint_steps < 0) throw Error("--checkpoint-steps must be auto, 0 (off) or positive");
  return checkpoint_steps == 0 ? T : std::min(checkpoint_steps, T);
}

namespace {

// Output y^l of layer l over the segment in the cache: h_1..h_n, plus its input with a residual
// connection.
template <typename S>
ConstMatRef<S> LayerOutput(const ModelCache<S>& cache, size_t l) {
  if (l > 0 && !cache.summed.empty()) return cache.summed[l];
  const LayerCache<S>& lc = cache.layers[l];
  return lc.h().rightCols(lc.T * lc.B);
}

// Input x^l of layer l (l >= 1) over the segment: the output of layer l-1, after dropout when active.
template <typename S>
ConstMatRef<S> LayerInput(const ModelCache<S>& cache, size_t l) {
  if (!cache.dropout_mask.empty()) return cache.dropped[l - 1];
  return LayerOutput(cache, l - 1);
}

// What the decoder reads over the segment: the top layer's output, after dropout when active.
template <typename S>
ConstMatRef<S> DecoderInput(const ModelCache<S>& cache) {
  if (cache.output_mask.size() > 0) return cache.dropped_output;
  return LayerOutput(cache, cache.layers.size() - 1);
}

// Bernoulli units of probability p for the batch's B streams, into out[0, rows*B): `hit` where
// the draw falls under p, `miss` elsewhere. The whole batch's (rows, whole_B) are drawn in
// column order, of which a slice keeps its own columns and skips the others' draws, so that each
// slice has the whole batch's values.
template <typename S>
void DrawUnits(Rng& rng, double p, S hit, S miss, const Batch<S>& batch, Eigen::Index rows, S* out) {
  rng.Discard(static_cast<uint64_t>(rows * batch.first));
  for (Eigen::Index k = 0; k < rows * batch.B; ++k) out[k] = rng.Uniform() < p ? hit : miss;
  rng.Discard(static_cast<uint64_t>(rows * (batch.whole_B() - batch.first - batch.B)));
}

// Inverted-dropout values of rate p: 0 or 1/(1-p).
template <typename S>
void DrawDropout(Rng& rng, double p, const Batch<S>& batch, Eigen::Index rows, S* out) {
  DrawUnits(rng, p, S(0), S(1) / S(1 - p), batch, rows, out);
}

// A dropout mask (rows, T*B) of rate p over the chunk: drawn afresh at every step, or, locked,
// at the first and repeated at every step (variational dropout).
template <typename S>
void DrawMask(Rng& rng, double p, bool locked, const Batch<S>& batch, Eigen::Index rows, Mat<S>& mask) {
  const Eigen::Index B = batch.B;
  EnsureShape(mask, rows, batch.T * B);
  for (Eigen::Index t = 0; t < batch.T; ++t) {
    if (locked && t > 0) mask.middleCols(t * B, B) = mask.leftCols(B);
    else DrawDropout(rng, p, batch, rows, mask.col(t * B).data());
  }
}

template <typename S>
void CheckBatch(const ModelConfig& config, const Batch<S>& batch) {
  const Eigen::Index TB = batch.T * batch.B;
  if (config.dense_input() ? batch.dense.rows() != config.input_size || batch.dense.cols() != TB
                           : batch.ids.size() != TB)
    throw Error("the batch's inputs do not match the model's input (" +
                std::string(config.dense_input() ? "dense" : "symbols") + ", " + std::to_string(TB) + " positions)");
  if (batch.first < 0 || batch.first + batch.B > batch.whole_B())
    throw Error("the batch's sequences [" + std::to_string(batch.first) + ", " + std::to_string(batch.first + batch.B) +
                ") are not a slice of its whole batch of " + std::to_string(batch.whole_B()));
  if (!config.dense_input())
    for (Eigen::Index j = 0; j < TB; ++j)
      if (batch.ids(j) < 0 || batch.ids(j) >= config.vocab_size)
        throw Error("symbol id " + std::to_string(batch.ids(j)) + " is outside the vocabulary of " +
                    std::to_string(config.vocab_size));
}

// The steps [t0, t0 + n) of segment s of the chunk in the cache.
struct Segment {
  Eigen::Index t0, n;
};
template <typename S>
Segment SegmentOf(const ModelCache<S>& cache, Eigen::Index s) {
  const Eigen::Index t0 = s * cache.segment_steps;
  return {t0, std::min(cache.segment_steps, cache.T - t0)};
}

// AR and TAR (Merity et al. 2017) over segment s, whose caches the buffers hold, of the top
// layer's outputs y_t (H, B) and their dropped values m * y_t (m = 1 without output dropout),
// means over every position of the whole batch (batch.h whole_B: the slices' terms sum to it):
//   AR  = alpha / (H T B) sum_t |m * y_t|^2           dAR/dy_t  = 2 alpha / (H T B) m * m * y_t
//   TAR = beta / (H (T-1) B) sum_{t>=1} |y_t - y_{t-1}|^2
//                                 dTAR/dy_t = 2 beta / (H (T-1) B) ((y_t - y_{t-1}) - (y_{t+1} - y_t))
// into cache.activation_penalty and cache.dactivation (the latter term of a segment's first step
// lands on the segment before it). The segments run in order, each keeping its last step's y
// for the next.
template <typename S>
void ActivationPenalty(const ModelConfig& config, const Batch<S>& batch, ModelCache<S>& cache, Eigen::Index s) {
  const Eigen::Index H = config.hidden_size, B = cache.B, T = cache.T;
  const auto [t0, n] = SegmentOf(cache, s);
  const ConstMatRef<S> y = LayerOutput(cache, cache.layers.size() - 1);
  auto dy = cache.dactivation.middleCols(t0 * B, n * B);
  const double positions = static_cast<double>(H) * static_cast<double>(batch.whole_B());
  if (config.ar > 0) {
    const double scale = config.ar / (positions * static_cast<double>(T));
    const ConstMatRef<S> dropped = DecoderInput(cache);
    cache.activation_penalty += scale * dropped.template cast<double>().squaredNorm();
    if (cache.output_mask.size() == 0) dy.array() += S(2 * scale) * y.array();
    else dy.array() += S(2 * scale) * dropped.array() * cache.output_mask.middleCols(t0 * B, n * B).array();
  }
  if (config.tar > 0 && T > 1) {
    const double scale = config.tar / (positions * static_cast<double>(T - 1));
    for (Eigen::Index t = t0 == 0 ? 1 : 0; t < n; ++t) {
      const ConstMatRef<S> before = t == 0 ? ConstMatRef<S>(cache.previous_top) : ConstMatRef<S>(y.middleCols((t - 1) * B, B));
      const Mat<S> change = y.middleCols(t * B, B) - before;
      cache.activation_penalty += scale * change.template cast<double>().squaredNorm();
      cache.dactivation.middleCols((t0 + t) * B, B) += S(2 * scale) * change;
      cache.dactivation.middleCols((t0 + t - 1) * B, B) -= S(2 * scale) * change;
    }
    cache.previous_top = y.rightCols(B);
  }
}

// The forward pass over segment s from the state at its start, layer after layer, into the
// per-segment buffers, and with_outputs its columns of the outputs.
template <typename S>
void SegmentForward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                    ModelCache<S>& cache, Eigen::Index s, const State<S>& initial, Compute compute,
                    bool with_outputs) {
  const int threads = compute.threads;
  const Eigen::Index L = config.layers, H = config.hidden_size, B = cache.B;
  const auto [t0, n] = SegmentOf(cache, s);
  const Eigen::Index c0 = t0 * B, nB = n * B;  // the segment's columns of the chunk's (., T*B)
  const Cell& cell = *config.cell;
  const bool drop = !cache.dropout_mask.empty();
  for (Eigen::Index l = 0; l < L; ++l) {
    const RecurrentParams<S>& p = params.layers[l];
    LayerCache<S>& lc = cache.layers[l];
    lc.Resize(cell, H, n, B, config.layer_norm);
    // Input projection for the segment's steps: gates = W_ih x (the cell adds the biases).
    // With input dropout, x^0 = mask * input.
    const bool drop_input = l == 0 && cache.input_mask.size() > 0;
    const auto input_mask = cache.input_mask.middleCols(drop_input ? c0 : 0, drop_input ? nB : 0);
    if (l > 0) {
      ParallelProduct(lc.gates(), p.weight_ih(), LayerInput(cache, l), false, compute);
    } else if (config.dense_input()) {
      if (drop_input) cache.dropped_input = (batch.dense.middleCols(c0, nB).array() * input_mask.array()).matrix();
      ParallelProduct(lc.gates(), p.weight_ih(),
                      drop_input ? ConstMatRef<S>(cache.dropped_input) : ConstMatRef<S>(batch.dense.middleCols(c0, nB)),
                      false, compute);
    } else if (config.embed_size > 0) {
      EnsureShape(cache.embedded, config.embed_size, nB);
      for (Eigen::Index j = 0; j < nB; ++j) cache.embedded.col(j) = params.encoder.row(batch.ids(c0 + j)).transpose();
      if (drop_input) cache.embedded.array() *= input_mask.array();
      ParallelProduct(lc.gates(), p.weight_ih(), cache.embedded, false, compute);
    } else {
      Mat<S>& gates = lc.gates();
#pragma omp parallel for schedule(static) num_threads(threads)
      for (Eigen::Index j = 0; j < nB; ++j) {  // one-hot gather
        if (drop_input) gates.col(j) = p.weight_ih().col(batch.ids(c0 + j)) * input_mask(0, j);
        else gates.col(j) = p.weight_ih().col(batch.ids(c0 + j));
      }
    }
    lc.h().leftCols(B) = initial.h[l];
    if (cell.cell_state) lc.c().leftCols(B) = initial.c[l];
    // Weight drop: the layer runs with mask * W_hh, packed here once per pass; the cell's own
    // packing of W_hh then keeps it (PackedMatrix::current).
    if (!cache.weight_mask.empty() && !lc.packed_hh.current) {
      Pack(cache.dropped_hh[l], false, compute.products, lc.packed_hh);
      lc.packed_hh.current = true;
    }

    // The regularisers of the time loop: the chunk's masks at the segment's columns in training,
    // zoneout's expectation otherwise.
    LoopRegularisers<S>& loop = lc.loop;
    loop = {};
    if (!cache.recurrent_mask.empty()) loop.recurrent_mask = cache.recurrent_mask[l].data();
    if (!cache.zoneout_mask.empty()) loop.h.mask = cache.zoneout_mask[l].data() + c0 * H;
    else loop.h.rate = static_cast<S>(config.zoneout);
    if (!cache.zoneout_cell_mask.empty()) loop.c.mask = cache.zoneout_cell_mask[l].data() + c0 * H;
    else loop.c.rate = static_cast<S>(config.zoneout_cell);
    cell.modes<S>().chunk_forward(p, lc, compute);
    lc.packed_hh.current = true;  // the pass's later segments keep W_hh's packing
    if (config.residual && l > 0) cache.summed[l] = lc.h().rightCols(nB) + LayerInput(cache, l);
    if (drop && l < L - 1)
      cache.dropped[l] = (LayerOutput(cache, l).array() * cache.dropout_mask[l].middleCols(c0, nB).array()).matrix();
  }
  if (cache.output_mask.size() > 0)
    cache.dropped_output = (LayerOutput(cache, L - 1).array() * cache.output_mask.middleCols(c0, nB).array()).matrix();
  cache.resident = s;
  if (!with_outputs) return;  // a recomputation: the outputs are there
  auto outputs = cache.outputs.middleCols(c0, nB);
  ParallelProduct(outputs, params.decoder_weight, DecoderInput(cache), false, compute);
  outputs.colwise() += params.decoder_bias.col(0);
  if (cache.dactivation.size() > 0) ActivationPenalty(config, batch, cache, s);
}

// Whether the schedule keeps only some segment starts (recompute.h), and whether b_s is kept.
template <typename S>
bool Scheduled(const ModelCache<S>& cache) {
  return cache.schedule.segments() > 0;
}
template <typename S>
bool Kept(const ModelCache<S>& cache, Eigen::Index s) {
  return !cache.boundary[s].h.empty();
}

// The state after the segment whose caches the buffers hold, into `state`.
template <typename S>
void EndState(const ModelConfig& config, const ModelCache<S>& cache, State<S>& state) {
  const Eigen::Index L = config.layers, B = cache.B;
  state.h.resize(L);
  state.c.resize(config.cell->cell_state ? L : 0);
  for (Eigen::Index l = 0; l < L; ++l) {
    const LayerCache<S>& lc = cache.layers[l];
    state.h[l] = lc.h().rightCols(B);
    if (config.cell->cell_state) state.c[l] = lc.c().rightCols(B);
  }
}

// Keeps b_s, the state after segment s - 1, whose caches the buffers hold.
template <typename S>
void Keep(const ModelConfig& config, ModelCache<S>& cache, Eigen::Index s) {
  EndState(config, cache, cache.boundary[s]);
  if (s + 1 < static_cast<Eigen::Index>(cache.boundary.size())) {
    ++cache.kept_starts;
    cache.most_kept_starts = std::max(cache.most_kept_starts, cache.kept_starts);
  }
}

// Releases b_s (0 < s < S) when the schedule keeps only some starts.
template <typename S>
void Release(ModelCache<S>& cache, Eigen::Index s) {
  if (!Scheduled(cache) || s == 0 || !Kept(cache, s)) return;
  cache.boundary[s].h.clear();
  cache.boundary[s].c.clear();
  --cache.kept_starts;
}

// The segment starts the chunk's forward pass keeps: every one, or with a schedule the spine of
// the first sweep (recompute.h).
template <typename S>
std::vector<char> SpineStarts(const ModelCache<S>& cache, Eigen::Index segments) {
  std::vector<char> keep(segments + 1, Scheduled(cache) ? 0 : 1);
  keep[0] = keep[segments] = 1;
  if (!Scheduled(cache)) return keep;
  int a = 0, n = static_cast<int>(segments), m = cache.schedule.slots();
  while (n > 1 && m > 1 && m < n) {
    const int y = cache.schedule.Split(n, m, true);
    keep[a + y] = 1;
    a += y;
    n -= y;
    --m;
  }
  if (n > 1 && m >= n)
    for (int s = a + 1; s < a + n; ++s) keep[s] = 1;
  return keep;
}

// Every segment of the chunk forward again from b_0, outputs aside, keeping the starts in `keep`
// that are not kept: what a second Backward over the same cache needs after the first has
// released the spine's starts.
template <typename S>
void RecomputeSpine(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                    ModelCache<S>& cache, const std::vector<char>& keep, Compute compute) {
  const Eigen::Index segments = static_cast<Eigen::Index>(cache.boundary.size()) - 1;
  const State<S>* from = &cache.boundary[0];
  for (Eigen::Index s = 0; s < segments; ++s) {
    SegmentForward(config, params, batch, cache, s, *from, compute, false);
    ++cache.recomputed_segments;
    if (s + 1 == segments) break;
    if (keep[s + 1] && !Kept(cache, s + 1)) Keep(config, cache, s + 1);
    if (Kept(cache, s + 1)) {
      from = &cache.boundary[s + 1];
    } else {
      EndState(config, cache, cache.advanced);
      from = &cache.advanced;
    }
  }
}

}  // namespace

template <typename S>
void Forward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
             const State<S>& initial, ModelCache<S>& cache, Compute compute, Rng* dropout_rng) {
  CheckBatch(config, batch);
  const Eigen::Index L = config.layers, H = config.hidden_size, T = batch.T, B = batch.B, TB = T * B;
  cache.T = T;
  cache.B = B;
  cache.segment_steps = SegmentSteps(cache.checkpoint_steps, static_cast<int>(T));
  const Eigen::Index segments = (T + cache.segment_steps - 1) / cache.segment_steps;
  cache.layers.resize(L);
  for (LayerCache<S>& lc : cache.layers) lc.packed_hh.current = false;  // after a pass that threw
  const bool training = dropout_rng != nullptr;
  const bool drop = training && config.dropout > 0 && L > 1;
  if (drop) {
    cache.dropped.resize(L - 1);
    cache.dropout_mask.resize(L - 1);
  } else {
    cache.dropout_mask.clear();
  }
  if (config.residual) cache.summed.resize(L);
  else cache.summed.clear();

  // The masks of the whole chunk, drawn once (a recomputed segment reuses them): layer 0's
  // input, between the layers (layer after layer), the top layer's output, then W_hh's.
  const bool locked = config.variational;
  if (training && config.input_dropout > 0) {
    if (config.dense_input() || config.embed_size > 0) {
      DrawMask(*dropout_rng, config.input_dropout, locked, batch, config.layer0_input_size(), cache.input_mask);
    } else if (!locked) {
      // One-hot: x_t * m keeps only m's value at the symbol, one value per position.
      DrawMask(*dropout_rng, config.input_dropout, false, batch, 1, cache.input_mask);
    } else {
      // One-hot, variational: a mask over the V symbols per stream, so that a symbol dropped
      // from a sequence is dropped wherever it occurs in the chunk.
      EnsureShape(cache.locked_symbols, config.vocab_size, B);
      DrawDropout(*dropout_rng, config.input_dropout, batch, config.vocab_size, cache.locked_symbols.data());
      EnsureShape(cache.input_mask, 1, TB);
      for (Eigen::Index j = 0; j < TB; ++j) cache.input_mask(0, j) = cache.locked_symbols(batch.ids(j), j % B);
    }
  } else {
    cache.input_mask.resize(0, 0);
  }
  if (drop)
    for (Eigen::Index l = 0; l < L - 1; ++l) DrawMask(*dropout_rng, config.dropout, locked, batch, H, cache.dropout_mask[l]);
  if (training && config.output_dropout > 0) DrawMask(*dropout_rng, config.output_dropout, locked, batch, H, cache.output_mask);
  else cache.output_mask.resize(0, 0);
  // Weight drop: one mask of each layer's W_hh for the whole batch, every slice drawing it whole.
  if (training && config.weight_drop > 0) {
    cache.weight_mask.resize(L);
    cache.dropped_hh.resize(L);
    const S keep = S(1) / S(1 - config.weight_drop);
    for (Eigen::Index l = 0; l < L; ++l) {
      const Mat<S>& w = params.layers[l].weight_hh();
      Mat<S>& mask = cache.weight_mask[l];
      EnsureShape(mask, w.rows(), w.cols());
      for (Eigen::Index k = 0; k < mask.size(); ++k) mask(k) = dropout_rng->Uniform() < config.weight_drop ? S(0) : keep;
      cache.dropped_hh[l] = (w.array() * mask.array()).matrix();
    }
  } else {
    cache.weight_mask.clear();
    cache.dropped_hh.clear();
  }
  cache.activation_penalty = 0;
  if (training && (config.ar > 0 || config.tar > 0)) {
    EnsureShape(cache.dactivation, H, TB);
    cache.dactivation.setZero();
  } else {
    cache.dactivation.resize(0, 0);
  }

  // Then the masks of the cells' time loops (cell.h LoopRegularisers), by the same rule: recurrent
  // dropout's m (H, whole_B) of every layer, then zoneout's d_t on h (H, T*whole_B) of every
  // layer, then on c. A unit is drawn (probability `rate`) as `hit`, else as `miss`.
  const auto draw = [&](std::vector<Mat<S>>& masks, double rate, Eigen::Index steps, S hit, S miss) {
    if (dropout_rng == nullptr || rate <= 0) {
      masks.clear();
      return;
    }
    masks.resize(L);
    for (Mat<S>& mask : masks) EnsureShape(mask, H, steps * B);
    for (Eigen::Index l = 0; l < L; ++l)
      for (Eigen::Index t = 0; t < steps; ++t) DrawUnits(*dropout_rng, rate, hit, miss, batch, H, masks[l].col(t * B).data());
  };
  draw(cache.recurrent_mask, config.recurrent_dropout, 1, S(0), S(1) / S(1 - config.recurrent_dropout));
  draw(cache.zoneout_mask, config.zoneout, T, S(1), S(0));
  draw(cache.zoneout_cell_mask, config.zoneout_cell, T, S(1), S(0));

  // The segment starts: every one, or with fewer slots than segments those of the schedule's
  // spine (recompute.h); the others run through the scratch state.
  const int slots = cache.checkpoint_slots;
  if (slots < 0) throw Error("the checkpoint slots must be 0 (every segment start) or positive");
  if (slots > 0 && slots < segments) {
    if (cache.schedule.segments() != segments || cache.schedule.slots() != slots)
      cache.schedule = RecomputeSchedule(static_cast<int>(segments), slots);
  } else {
    cache.schedule = RecomputeSchedule();
  }
  const std::vector<char> keep = SpineStarts(cache, segments);
  cache.boundary.resize(segments + 1);
  if (Scheduled(cache))
    for (State<S>& b : cache.boundary) {
      b.h.clear();
      b.c.clear();
    }
  cache.boundary[0] = initial;
  cache.kept_starts = cache.most_kept_starts = 1;
  cache.recomputed_segments = 0;
  EnsureShape(cache.outputs, config.output_size, TB);
  const State<S>* from = &cache.boundary[0];
  for (Eigen::Index s = 0; s < segments; ++s) {
    SegmentForward(config, params, batch, cache, s, *from, compute, true);
    if (keep[s + 1]) {
      Keep(config, cache, s + 1);
      from = &cache.boundary[s + 1];
    } else {
      EndState(config, cache, cache.advanced);
      from = &cache.advanced;
    }
  }
  for (LayerCache<S>& lc : cache.layers) lc.packed_hh.current = false;
}

template <typename S>
void FinalState(const ModelConfig& config, const ModelCache<S>& cache, State<S>& state) {
  const State<S>& last = cache.boundary.back();
  for (int l = 0; l < config.layers; ++l) {
    state.h[l] = last.h[l];
    if (config.cell->cell_state) state.c[l] = last.c[l];
  }
}

namespace {

// The backward pass over segment s, whose caches the buffers hold: the head's gradients on its
// columns, then each layer from the top, carrying dL/dh (dL/dc) in cache.dcarried from the
// segment after it to the one before. Every sum over the segment's steps runs newest first
// (threads.h SumProductOverTime), so the segments, taken newest first, sum as one.
template <typename S>
void SegmentBackward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                     ModelCache<S>& cache, Eigen::Index s, const Mat<S>& doutputs, ModelParams<S>& grads,
                     Compute compute, const FeedbackMatrices<S>* feedback) {
  const Eigen::Index L = config.layers, H = config.hidden_size, B = cache.B;
  const auto [t0, n] = SegmentOf(cache, s);
  const Eigen::Index c0 = t0 * B, nB = n * B;
  const Cell& cell = *config.cell;
  const Feedback rule = feedback ? feedback->rule : Feedback::kBptt;
  const bool fa = rule == Feedback::kFa, dfa = rule == Feedback::kDfa;
  static const Mat<S> kNoRecurrence;
  const auto dout = doutputs.middleCols(c0, nB);
  const bool drop_input = cache.input_mask.size() > 0;

  // Decoder: outputs = W_dec y + b_dec; the error reaching the top layer's output, dL/dy^{L-1}.
  SumProductOverTime(grads.decoder_weight, dout, DecoderInput(cache), compute);
  SumColumnsOverTime(grads.decoder_bias, dout);
  EnsureShape(cache.dh_out, H, nB);
  const Mat<S>& decoder_back = fa ? feedback->decoder : dfa ? feedback->direct[L - 1] : params.decoder_weight;
  ParallelProduct(cache.dh_out, decoder_back.transpose(), dout, false, compute);  // (H, n*B)
  if (cache.output_mask.size() > 0) cache.dh_out.array() *= cache.output_mask.middleCols(c0, nB).array();
  if (cache.dactivation.size() > 0) cache.dh_out += cache.dactivation.middleCols(c0, nB);  // AR, TAR

  for (Eigen::Index l = L - 1; l >= 0; --l) {
    const RecurrentParams<S>& p = params.layers[l];
    RecurrentParams<S>& g = grads.layers[l];
    LayerBackward<S>& lb = cache.back[l];
    lb.Resize(cell, H, n, B, config.layer_norm);
    lb.dh() = cache.dcarried.h[l];
    if (cell.cell_state) lb.dc() = cache.dcarried.c[l];

    // The matrix the error crosses a step by (none for a cell without a recurrent matrix).
    // With weight drop, backpropagation's is the dropped matrix the layer ran with; feedback
    // alignment's B is not dropped.
    const Mat<S>& back_hh = !cell.recurrent_matrix() || dfa ? kNoRecurrence
                            : fa                            ? feedback->recurrent[l]
                            : cache.weight_mask.empty()     ? p.weight_hh()
                                                            : cache.dropped_hh[l];
    cell.modes<S>().chunk_backward(p, back_hh, cache.layers[l], cache.dh_out, lb, g, compute);
    lb.packed_hh_t.current = true;  // the pass's later segments keep the packing of back_hh^T

    cache.dcarried.h[l] = lb.dh();
    if (cell.cell_state) cache.dcarried.c[l] = lb.dc();
    // Input projection (the cell has added its input biases): dW_ih += dgates x^T, dx = W_ih^T dgates.
    const Mat<S>& dgates = lb.dgates();
    if (l > 0) {
      SumProductOverTime(g.weight_ih(), dgates, LayerInput(cache, l), compute);
      if (dfa) {
        // The output error straight to the layer below.
        ParallelProduct(cache.dh_out, feedback->direct[l - 1].transpose(), dout, false, compute);
        continue;
      }
      // dL/dx^l = W_ih^T dgates (+ dL/dy^l through a residual connection), then through dropout.
      const Mat<S>& input_back = fa ? feedback->input[l] : p.weight_ih();
      ParallelProduct(cache.dh_out, input_back.transpose(), dgates, config.residual, compute);
      if (!cache.dropout_mask.empty()) cache.dh_out.array() *= cache.dropout_mask[l - 1].middleCols(c0, nB).array();
    } else if (config.dense_input()) {
      SumProductOverTime(g.weight_ih(), dgates,
                         drop_input ? ConstMatRef<S>(cache.dropped_input) : ConstMatRef<S>(batch.dense.middleCols(c0, nB)),
                         compute);
    } else if (config.embed_size > 0) {
      SumProductOverTime(g.weight_ih(), dgates, cache.embedded, compute);  // the rows after dropout
      EnsureShape(cache.dx, p.weight_ih().cols(), nB);
      const Mat<S>& input_back = feedback && rule != Feedback::kBptt ? feedback->input[0] : p.weight_ih();
      ParallelProduct(cache.dx, input_back.transpose(), dgates, false, compute);  // (E, n*B)
      if (drop_input) cache.dx.array() *= cache.input_mask.middleCols(c0, nB).array();
      for (Eigen::Index j = nB - 1; j >= 0; --j) grads.encoder.row(batch.ids(c0 + j)) += cache.dx.col(j).transpose();
    } else if (drop_input) {
      for (Eigen::Index j = nB - 1; j >= 0; --j) g.weight_ih().col(batch.ids(c0 + j)) += dgates.col(j) * cache.input_mask(0, c0 + j);
    } else {
      for (Eigen::Index j = nB - 1; j >= 0; --j) g.weight_ih().col(batch.ids(c0 + j)) += dgates.col(j);  // scatter
    }
  }
}

// One Backward's sweep over the segments (recompute.h): each segment's caches recomputed from
// a kept start as the schedule says, then swept newest first.
template <typename S>
struct Sweep {
  const ModelConfig& config;
  const ModelParams<S>& params;
  const Batch<S>& batch;
  ModelCache<S>& cache;
  const Mat<S>& doutputs;
  ModelParams<S>& grads;
  Compute compute;
  const FeedbackMatrices<S>* feedback;

  // Puts the caches of segment s in the buffers, running forward from the kept b_a (a <= s).
  void Recompute(Eigen::Index a, Eigen::Index s) {
    const State<S>* from = &cache.boundary[a];
    for (Eigen::Index t = a; t <= s; ++t) {
      SegmentForward(config, params, batch, cache, t, *from, compute, false);
      ++cache.recomputed_segments;
      if (t < s) {
        EndState(config, cache, cache.advanced);
        from = &cache.advanced;
      }
    }
  }

  void Backward(Eigen::Index s) {
    if (cache.resident != s) Recompute(s, s);
    SegmentBackward(config, params, batch, cache, s, doutputs, grads, compute, feedback);
  }

  // Sweeps segments [a, a + n) newest first from the kept b_a with m slots (b_a's among them).
  void Segments(Eigen::Index a, int n, int m, bool spine) {
    if (n == 1) {
      Backward(a);
    } else if (m >= n) {
      for (Eigen::Index s = a; s + 1 < a + n; ++s)
        if (!Kept(cache, s + 1)) {
          if (cache.resident != s) Recompute(s, s);
          Keep(config, cache, s + 1);
        }
      for (Eigen::Index s = a + n - 1; s >= a; --s) {
        Backward(s);
        if (s > a) Release(cache, s);
      }
    } else if (m == 1) {
      for (Eigen::Index s = a + n - 1; s >= a; --s) {
        if (cache.resident != s) Recompute(a, s);
        SegmentBackward(config, params, batch, cache, s, doutputs, grads, compute, feedback);
      }
    } else {
      const int y = cache.schedule.Split(n, m, spine);
      if (!Kept(cache, a + y)) {
        Recompute(a, a + y - 1);
        Keep(config, cache, a + y);
      }
      Segments(a + y, n - y, m - 1, spine);
      Release(cache, a + y);
      Segments(a, y, m, false);
    }
  }
};

}  // namespace

template <typename S>
void Backward(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
              ModelCache<S>& cache, const Mat<S>& doutputs, const std::type_identity_t<State<S>>* dfinal,
              ModelParams<S>& grads, std::type_identity_t<State<S>>* dinitial, Compute compute,
              const std::type_identity_t<FeedbackMatrices<S>>* feedback) {
  const Eigen::Index L = config.layers, segments = static_cast<Eigen::Index>(cache.boundary.size()) - 1;
  if (segments < 1) throw Error("Backward needs the cache of a Forward pass");
  cache.back.resize(L);
  for (LayerCache<S>& lc : cache.layers) lc.packed_hh.current = false;
  for (LayerBackward<S>& lb : cache.back) lb.packed_hh_t.current = false;
  cache.dcarried = dfinal ? *dfinal : State<S>::Zeros(config, cache.B);
  // Weight drop: the layers ran with mask * W_hh, so dL/dW_hh = mask * dL/d(mask * W_hh). The
  // sweep sums the chunk's gradient from zero while grads' own is held aside, then adds it masked.
  const bool weight_drop = !cache.weight_mask.empty();
  if (weight_drop) {
    cache.dweight_hh.resize(L);
    for (Eigen::Index l = 0; l < L; ++l) {
      Mat<S>& g = grads.layers[l][kWeightHhSlot];
      EnsureShape(cache.dweight_hh[l], g.rows(), g.cols());
      cache.dweight_hh[l].setZero();
      g.swap(cache.dweight_hh[l]);
    }
  }
  cache.recomputed_segments = 0;
  if (Scheduled(cache)) {
    // A second Backward over the same cache (feedback alignment's measurement) finds the
    // spine's starts released by the first: the forward pass keeps them again.
    const std::vector<char> keep = SpineStarts(cache, segments);
    for (Eigen::Index s = 1; s < segments; ++s)
      if (keep[s] && !Kept(cache, s)) {
        RecomputeSpine(config, params, batch, cache, keep, compute);
        break;
      }
  }
  Sweep<S> sweep{config, params, batch, cache, doutputs, grads, compute, feedback};
  const int slots = Scheduled(cache) ? cache.schedule.slots() : static_cast<int>(segments);
  sweep.Segments(0, static_cast<int>(segments), slots, true);
  if (weight_drop) {
    for (Eigen::Index l = 0; l < L; ++l) {
      Mat<S>& g = grads.layers[l][kWeightHhSlot];
      cache.dweight_hh[l].array() += g.array() * cache.weight_mask[l].array();
      g.swap(cache.dweight_hh[l]);
    }
  }
  for (LayerCache<S>& lc : cache.layers) lc.packed_hh.current = false;
  for (LayerBackward<S>& lb : cache.back) lb.packed_hh_t.current = false;
  if (dinitial) {
    for (Eigen::Index l = 0; l < L; ++l) {
      dinitial->h[l] = cache.dcarried.h[l];
      if (config.cell->cell_state) dinitial->c[l] = cache.dcarried.c[l];
    }
  }
}

#define BPTT_INSTANTIATE(S)                                                                            \
  template struct ModelParams<S>;                                                                      \
  template struct State<S>;                                                                            \
  template void Forward<S>(const ModelConfig&, const ModelParams<S>&, const Batch<S>&, const State<S>&, \
                           ModelCache<S>&, Compute, Rng*);                                             \
  template void FinalState<S>(const ModelConfig&, const ModelCache<S>&, State<S>&);                    \
  template struct FeedbackMatrices<S>;                                                                 \
  template std::map<std::string, double> AlignmentDegrees<S>(const ModelParams<S>&, const ModelParams<S>&); \
  template void Backward<S>(const ModelConfig&, const ModelParams<S>&, const Batch<S>&, ModelCache<S>&, \
                            const Mat<S>&, const std::type_identity_t<State<S>>*, ModelParams<S>&,     \
                            std::type_identity_t<State<S>>*, Compute,                                  \
                            const std::type_identity_t<FeedbackMatrices<S>>*);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE
template ModelParams<double> ModelParams<float>::Cast<double>() const;
template ModelParams<float> ModelParams<double>::Cast<float>() const;
template ModelParams<float> ModelParams<float>::Cast<float>() const;
template ModelParams<double> ModelParams<double>::Cast<double>() const;

}  // namespace bptt
