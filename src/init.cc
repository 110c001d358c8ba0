#include "bptt/init.h"

#include <Eigen/QR>
#include <cmath>

#include "bptt/error.h"
#include "bptt/options.h"

namespace bptt {

namespace {
constexpr std::pair<InitScheme, std::string_view> kInitNames[] = {
    {InitScheme::kUniform, "uniform"},       {InitScheme::kPytorch, "pytorch"},
    {InitScheme::kXavier, "xavier"},         {InitScheme::kHe, "he"},
    {InitScheme::kOrthogonal, "orthogonal"}, {InitScheme::kIdentity, "identity"}};

template <typename S, typename M>
void FillUniform(M&& m, double bound, Rng& rng) {
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i) m(i, j) = static_cast<S>(rng.Uniform(-bound, bound));
}

template <typename S, typename M>
void FillNormal(M&& m, double stddev, Rng& rng) {
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i) m(i, j) = static_cast<S>(stddev * rng.Normal());
}

double XavierBound(Eigen::Index fan_in, Eigen::Index fan_out) {
  return std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
}

}  // namespace

std::string_view InitName(InitScheme scheme) {
  for (const auto& [s, name] : kInitNames)
    if (s == scheme) return name;
  return "?";
}

std::optional<InitScheme> ParseInit(std::string_view name) {
  for (const auto& [s, n] : kInitNames)
    if (n == name) return s;
  return std::nullopt;
}

std::span<const OptionSpec<InitOptions>> InitOptionSpecs() {
  using I = InitOptions;
  constexpr OnResume kFixed = OnResume::kFixed;
  static const std::string forget_help = [] {
    std::string cells;
    for (const Cell* cell : Cells())
      if (cell->gate_names.find('f') != std::string_view::npos) cells += (cells.empty() ? "" : ", ") + std::string(cell->name);
    return "bias of the forget gate: " + cells;
  }();
  static const std::vector<OptionSpec<I>> specs = {
      Choice<I>(0, "init", "scheme", "Model", "uniform, pytorch, xavier, he, orthogonal or identity", kFixed,
                [](I& i) -> auto& { return i.scheme; }, InitName,
                [](const std::string& v, const std::string& f) {
                  const std::optional<InitScheme> s = ParseInit(v);
                  if (!s) throw Error(f + " '" + v + "' is not one of uniform, pytorch, xavier, he, orthogonal, identity");
                  return *s;
                }),
      Field<I>(0, "init-scale", "scale", "Model", "uniform bound or orthogonal/identity gain (0 = the scheme's default)",
               kFixed, [](I& i) -> auto& { return i.scale; }),
      Field<I>(0, "forget-bias", "forget_bias", "Model", forget_help, kFixed,
               [](I& i) -> auto& { return i.forget_bias; }),
  };
  return specs;
}

template <typename S>
Mat<S> RandomOrthogonal(Eigen::Index rows, Eigen::Index cols, Rng& rng) {
  const bool tall = rows >= cols;
  Mat<double> a(tall ? rows : cols, tall ? cols : rows);
  FillNormal<double>(a, 1.0, rng);
  Eigen::HouseholderQR<Mat<double>> qr(a);
  Mat<double> q = qr.householderQ() * Mat<double>::Identity(a.rows(), a.cols());
  const Mat<double> r = qr.matrixQR().topRows(a.cols()).template triangularView<Eigen::Upper>();
  for (Eigen::Index k = 0; k < a.cols(); ++k)
    if (r(k, k) < 0) q.col(k) = -q.col(k);
  if (tall) return q.template cast<S>();
  return q.transpose().template cast<S>();
}

template <typename S>
void Initialize(const ModelConfig& config, const InitOptions& o, Rng& rng, ModelParams<S>& params) {
  params = ModelParams<S>::Zeros(config);
  const Eigen::Index H = config.hidden_size;
  const int G = config.cell->gates;
  const double gain = o.scale > 0 ? o.scale : 1.0;

  if (o.scheme == InitScheme::kUniform || o.scheme == InitScheme::kPytorch) {
    const double bound = o.scheme == InitScheme::kPytorch ? 1.0 / std::sqrt(static_cast<double>(H))
                                                          : (o.scale > 0 ? o.scale : 0.08);
    params.ForEachTensor([&](const TensorInfo& tensor, Mat<S>& m) {
      if (!IsNorm(tensor.role)) FillUniform<S>(m, bound, rng);
    });
  } else {
    if (params.encoder.size() > 0) FillNormal<S>(params.encoder, 1.0, rng);
    // Gate block by gate block: the input projection's, then the recurrent matrix's (a cell
    // without one: the input projection's alone).
    for (auto& layer : params.layers) {
      const Eigen::Index E = layer.weight_ih().cols();
      const auto draw_input = [&](auto w) {
        switch (o.scheme) {
          case InitScheme::kXavier: FillUniform<S>(w, XavierBound(E, H), rng); break;
          case InitScheme::kHe: FillNormal<S>(w, std::sqrt(2.0 / static_cast<double>(E)), rng); break;
          case InitScheme::kOrthogonal: FillUniform<S>(w, XavierBound(E, H), rng); break;
          default: FillNormal<S>(w, 0.001, rng); break;  // identity
        }
      };
      const auto draw_recurrent = [&](auto w) {
        switch (o.scheme) {
          case InitScheme::kXavier: FillUniform<S>(w, XavierBound(H, H), rng); break;
          case InitScheme::kHe: FillNormal<S>(w, std::sqrt(2.0 / static_cast<double>(H)), rng); break;
          case InitScheme::kOrthogonal: w = static_cast<S>(gain) * RandomOrthogonal<S>(H, H, rng); break;
          default: w = static_cast<S>(gain) * Mat<S>::Identity(H, H); break;  // identity
        }
      };
      for (int k = 0; k < G; ++k) {
        draw_input(layer.weight_ih().middleRows(k * H, H));
        if (layer.cell->recurrent_matrix()) draw_recurrent(layer[kWeightHhSlot].middleRows(k * H, H));
      }
    }
    FillUniform<S>(params.decoder_weight, XavierBound(H, config.vocab_size), rng);
  }
  // Layer norm: each LN starts as the identity normalisation (no draws, so that the other tensors
  // are those of the same model without layer norm).
  for (auto& layer : params.layers)
    layer.ForEach([](const ParamDecl& d, Mat<S>& m) {
      if (d.role == TensorRole::kNormGain) m.setOnes();
    });
  // The forget gate: the block named 'f', its bias in bias_ih (and none in bias_hh).
  if (const size_t f = config.cell->gate_names.find('f'); f != std::string_view::npos) {
    const Eigen::Index row = static_cast<Eigen::Index>(f) * H;
    for (auto& layer : params.layers)
      layer.ForEach([&](const ParamDecl& d, Mat<S>& m) {
        if (d.name == "bias_ih") m.middleRows(row, H).setConstant(static_cast<S>(o.forget_bias));
        if (d.name == "bias_hh") m.middleRows(row, H).setZero();
      });
  }
}

template Mat<float> RandomOrthogonal<float>(Eigen::Index, Eigen::Index, Rng&);
template Mat<double> RandomOrthogonal<double>(Eigen::Index, Eigen::Index, Rng&);
template void Initialize<float>(const ModelConfig&, const InitOptions&, Rng&, ModelParams<float>&);
template void Initialize<double>(const ModelConfig&, const InitOptions&, Rng&, ModelParams<double>&);

}  // namespace bptt
