// bptt against an independent reference: tests/reference/torch_reference.json holds, for fixed
// weights and inputs, PyTorch's nn.RNN / nn.LSTM / nn.GRU + Linear + cross-entropy forward values
// and every gradient (float64; see tests/reference/make_torch_reference.py). The weights are
// loaded into bptt through the PyTorch names, and the loss, outputs, final state and all
// gradients must agree: to 1e-10 in double and 1e-4 (relative to each tensor's largest value) in float.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "bptt/loss.h"
#include "bptt/model.h"

namespace bptt {
namespace {

using nlohmann::json;

const json& Fixture() {
  static const json fixture = [] {
    std::ifstream in(std::string(BPTT_TEST_DATA_DIR) + "/reference/torch_reference.json");
    return json::parse(in);
  }();
  return fixture;
}

// A PyTorch tensor (row-major) of shape (rows, cols), or (N) as (N, 1), as a bptt matrix.
template <typename S>
Mat<S> ToMat(const json& t) {
  const auto shape = t["shape"].get<std::vector<Eigen::Index>>();
  const auto data = t["data"].get<std::vector<double>>();
  const Eigen::Index rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  EXPECT_EQ(static_cast<Eigen::Index>(data.size()), rows * cols);
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(data.data(), rows, cols);
  return m.cast<S>();
}

// A (L, B, H) state tensor as L matrices (H, B).
template <typename S>
std::vector<Mat<S>> ToState(const json& t) {
  const auto shape = t["shape"].get<std::vector<Eigen::Index>>();
  const auto data = t["data"].get<std::vector<double>>();
  std::vector<Mat<S>> out;
  const Eigen::Index B = shape[1], H = shape[2];
  for (Eigen::Index l = 0; l < shape[0]; ++l)
    out.push_back(Eigen::Map<const Mat<double>>(data.data() + l * B * H, H, B).cast<S>());
  return out;
}

// max |a - b| / max |b|: the error relative to the tensor's scale.
template <typename S>
double TensorError(const Mat<S>& a, const Mat<double>& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  if (a.rows() != b.rows() || a.cols() != b.cols()) return 1e300;
  return (a.template cast<double>() - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

template <typename S>
void CheckCase(const json& c, double tol) {
  SCOPED_TRACE(c["name"].get<std::string>());
  ModelConfig config;
  config.cell = *ParseCell(c["cell"].get<std::string>());
  config.vocab_size = c["V"];
  config.embed_size = c["E"];
  config.hidden_size = c["H"];
  config.layers = c["L"];
  const Eigen::Index B = c["B"], T = c["T"];
  const bool lstm = config.cell == CellType::kLstm;
  const json& tensors = c["tensors"];
  const json& grads_ref = c["grads"];

  auto params = ModelParams<S>::Zeros(config);
  int loaded = 0;
  params.ForEach([&](const std::string& name, Mat<S>& m) {
    ASSERT_TRUE(tensors.contains(name)) << name;
    const Mat<S> v = ToMat<S>(tensors[name]);
    ASSERT_EQ(v.rows(), m.rows()) << name;
    ASSERT_EQ(v.cols(), m.cols()) << name;
    m = v;
    ++loaded;
  });
  // Every parameter gradient in the fixture (all but h0, c0) names a bptt tensor.
  EXPECT_EQ(static_cast<size_t>(loaded) + 1 + lstm, grads_ref.size());

  Ids inputs(T * B), targets(T * B);
  for (Eigen::Index j = 0; j < T * B; ++j) {
    inputs(j) = c["inputs"][j];
    targets(j) = c["targets"][j];
  }
  State<S> initial, wfinal;
  initial.h = ToState<S>(tensors["h0"]);
  wfinal.h = ToState<S>(tensors["wh"]);
  if (lstm) {
    initial.c = ToState<S>(tensors["c0"]);
    wfinal.c = ToState<S>(tensors["wc"]);
  }
  // loss_total = CE + 0.5 sum(h_T * wh) + 0.5 sum(c_T * wc): dL/dh_T = 0.5 wh.
  State<S> dfinal = wfinal;
  for (auto& m : dfinal.h) m *= S(0.5);
  for (auto& m : dfinal.c) m *= S(0.5);

  ModelCache<S> cache;
  Forward(config, params, inputs, T, B, initial, cache);
  State<S> final_state = State<S>::Zeros(config, B);
  FinalState(config, cache, final_state);
  Mat<S> dlogits;
  const double ce = SoftmaxCrossEntropy(cache.logits, targets, &dlogits);
  double total = ce;
  for (int l = 0; l < config.layers; ++l) {
    total += 0.5 * (final_state.h[l].array() * wfinal.h[l].array()).template cast<double>().sum();
    if (lstm) total += 0.5 * (final_state.c[l].array() * wfinal.c[l].array()).template cast<double>().sum();
  }
  EXPECT_NEAR(ce, c["loss_ce"].get<double>(), tol * std::abs(c["loss_ce"].get<double>()));
  EXPECT_NEAR(total, c["loss_total"].get<double>(), tol * std::abs(c["loss_total"].get<double>()));

  // Forward values: outputs (T, B, H) and logits (T, B, V) have bptt's column layout t*B + b.
  const Eigen::Index H = config.hidden_size, V = config.vocab_size;
  const auto outputs = tensors["outputs"]["data"].get<std::vector<double>>();
  const auto logits = tensors["logits"]["data"].get<std::vector<double>>();
  EXPECT_LE(TensorError<S>(cache.layers.back().h.rightCols(T * B), Eigen::Map<const Mat<double>>(outputs.data(), H, T * B)), tol);
  EXPECT_LE(TensorError<S>(cache.logits, Eigen::Map<const Mat<double>>(logits.data(), V, T * B)), tol);
  const auto hT = ToState<double>(tensors["hT"]);
  for (int l = 0; l < config.layers; ++l) EXPECT_LE(TensorError<S>(final_state.h[l], hT[l]), tol);
  if (lstm) {
    const auto cT = ToState<double>(tensors["cT"]);
    for (int l = 0; l < config.layers; ++l) EXPECT_LE(TensorError<S>(final_state.c[l], cT[l]), tol);
  }

  auto grads = ModelParams<S>::Zeros(config);
  State<S> dinitial = State<S>::Zeros(config, B);
  Backward(config, params, inputs, cache, dlogits, &dfinal, grads, &dinitial);
  grads.ForEach([&](const std::string& name, const Mat<S>& g) {
    ASSERT_TRUE(grads_ref.contains(name)) << name;
    const double err = TensorError<S>(g, ToMat<double>(grads_ref[name]));
    EXPECT_LE(err, tol) << name;
  });
  const auto dh0 = ToState<double>(grads_ref["h0"]);
  for (int l = 0; l < config.layers; ++l) EXPECT_LE(TensorError<S>(dinitial.h[l], dh0[l]), tol) << "h0";
  if (lstm) {
    const auto dc0 = ToState<double>(grads_ref["c0"]);
    for (int l = 0; l < config.layers; ++l) EXPECT_LE(TensorError<S>(dinitial.c[l], dc0[l]), tol) << "c0";
  }
}

TEST(TorchReference, FixtureHoldsEveryCell) {
  std::set<std::string> cells;
  for (const auto& c : Fixture()["cases"]) cells.insert(c["cell"].get<std::string>());
  EXPECT_EQ(cells, (std::set<std::string>{"rnn-tanh", "rnn-relu", "lstm", "gru"}));
}

TEST(TorchReference, DoubleAgreesTo1e10) {
  for (const auto& c : Fixture()["cases"]) CheckCase<double>(c, 1e-10);
}

TEST(TorchReference, FloatAgreesTo1e4) {
  for (const auto& c : Fixture()["cases"]) CheckCase<float>(c, 1e-4);
}

}  // namespace
}  // namespace bptt
