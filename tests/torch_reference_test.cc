// bptt against an independent reference: tests/reference/torch_reference.json holds, for fixed
// weights and inputs, the float64 forward values and every gradient of models built in PyTorch
// from nn.RNN / nn.LSTM / nn.GRU (rnn-sigmoid: a loop over torch.sigmoid; the layer-normalised LSTM
// and GRU: a loop over F.layer_norm, matrix products, torch.sigmoid and torch.tanh; minGRU and
// minLSTM: a loop over torch.sigmoid and elementwise arithmetic) + nn.Linear + a softmax or
// regression head (tests/reference/make_torch_reference.py and its README say how):
//   small cases  H = 5, every cell: one-hot, embedding and dense inputs; language models,
//                classifiers scored at the last step only, regression scored on a mask of
//                positions. Every tensor is stored.
//   layer norm   the LSTM and GRU with --layer-norm: small (one-hot, embedding, dense regression)
//                and big cases, their LN gains and biases loaded by name like every tensor.
//   big cases    H = 70, B = 11, T = 5, L = 2, every cell: each recurrent matrix spans several
//                32-row panels of the packed kernel (src/kernels/packed_gemm.h) forward and, as
//                W_hh^T, backward, and each product runs the 8-column loop and a 3-column tail.
//                Weights, states and inputs come from an integer LCG that this file repeats
//                exactly; results are stored as 64 sampled elements (every panel boundary among
//                them) with the tensor's sum, sum of magnitudes, norm and largest magnitude.
// The weights load into bptt through the PyTorch names. Loss, head outputs, top-layer states,
// final state and all gradients must agree to 1e-10 in double and 1e-4 in float (relative to each
// tensor's largest magnitude, sums relative to the sum of magnitudes), on 1 and 2 threads.
// Step mode: every sequence of every case run through a Stepper (float32, from the zero state)
// gives the fixture's zero-state head outputs step by step, and their score the chunk's, to 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <ios>
#include <numeric>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/stepper.h"

namespace bptt {
namespace {

using nlohmann::json;
using Flat = std::vector<double>;  // a tensor flattened row-major in PyTorch's shape
using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr double kDoubleTolerance = 1e-10;
constexpr double kFloatTolerance = 1e-4;
constexpr double kStepTolerance = 1e-5;

const json& Fixture() {
  static const json fixture = [] {
    std::ifstream in(std::string(BPTT_TEST_DATA_DIR) + "/reference/torch_reference.json");
    return json::parse(in);
  }();
  return fixture;
}

const json& FindCase(const std::string& name) {
  for (const json& c : Fixture()["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no case " + name);
}

bool IsBig(const json& c) { return c["name"].get<std::string>().starts_with("big-"); }

// The fixture's generator (make_torch_reference.py): x_{n+1} = A x_n + C mod 2^64 from the seed,
// a real element scale * ((x >> 11) 2^-53 - 0.5), a symbol (x >> 33) mod n. Every step is exact
// in IEEE double, so both languages produce the same bits.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : x_(seed) {}
  uint64_t Next() { return x_ = 6364136223846793005ull * x_ + 1442695040888963407ull; }
  double Real(double scale) { return scale * (static_cast<double>(Next() >> 11) * 0x1p-53 - 0.5); }
  int32_t Below(uint64_t n) { return static_cast<int32_t>((Next() >> 33) % n); }

 private:
  uint64_t x_;
};

std::vector<Eigen::Index> Shape(const json& t) { return t["shape"].get<std::vector<Eigen::Index>>(); }

Eigen::Index Count(const std::vector<Eigen::Index>& shape) {
  Eigen::Index n = 1;
  for (const Eigen::Index d : shape) n *= d;
  return n;
}

// A stored tensor's elements: {"data"} as stored, {"lcg"} generated (and checked against the
// generator's record of its sum, first and last element, which must match bit for bit).
Flat Values(const json& t) {
  if (t.contains("data")) return t["data"].get<Flat>();
  const Eigen::Index n = Count(Shape(t));
  Lcg lcg(t["lcg"]["seed"].get<uint64_t>());
  const double scale = t["lcg"]["scale"];
  Flat v(static_cast<size_t>(n));
  double sum = 0;
  for (double& x : v) {
    x = lcg.Real(scale);
    sum += x;
  }
  const json& check = t["check"];
  EXPECT_EQ(sum, check["sum"].get<double>()) << "the LCG's sum differs: " << std::hexfloat << sum;
  EXPECT_EQ(v.front(), check["first"].get<double>()) << "the LCG's first element: " << std::hexfloat << v.front();
  EXPECT_EQ(v.back(), check["last"].get<double>()) << "the LCG's last element: " << std::hexfloat << v.back();
  return v;
}

// Symbol ids, (T*B) in column order t*B + b: stored as a list or generated.
Ids IdsOf(const json& t) {
  if (t.is_array()) {
    const auto v = t.get<std::vector<int32_t>>();
    return Eigen::Map<const Ids>(v.data(), static_cast<Eigen::Index>(v.size()));
  }
  Ids ids(t["count"].get<Eigen::Index>());
  Lcg lcg(t["lcg"]["seed"].get<uint64_t>());
  for (Eigen::Index j = 0; j < ids.size(); ++j) ids(j) = lcg.Below(t["lcg"]["below"].get<uint64_t>());
  return ids;
}

// A parameter (rows, cols), or (N) as (N, 1).
template <typename S>
Mat<S> ParamOf(const json& t) {
  const auto shape = Shape(t);
  const Flat v = Values(t);
  const Eigen::Index rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  return Eigen::Map<const RowMajor>(v.data(), rows, cols).cast<S>();
}

// A (L, B, H) state as L matrices (H, B).
template <typename S>
std::vector<Mat<S>> StateOf(const json& t) {
  const auto shape = Shape(t);
  const Flat v = Values(t);
  const Eigen::Index B = shape[1], H = shape[2];
  std::vector<Mat<S>> out;
  for (Eigen::Index l = 0; l < shape[0]; ++l)
    out.push_back(Eigen::Map<const Mat<double>>(v.data() + l * B * H, H, B).cast<S>());
  return out;
}

// A (T, B, X) tensor as (X, T*B): the column order of tensor.h.
template <typename S>
Mat<S> StepsOf(const json& t) {
  const auto shape = Shape(t);
  const Flat v = Values(t);
  return Eigen::Map<const Mat<double>>(v.data(), shape[2], shape[0] * shape[1]).cast<S>();
}

// bptt's tensors flattened in PyTorch's layout, the inverses of the three above.
template <typename Derived>
Flat FlatParam(const Eigen::MatrixBase<Derived>& m) {
  const RowMajor r = m.template cast<double>();
  return Flat(r.data(), r.data() + r.size());
}
template <typename S>
Flat FlatState(const std::vector<Mat<S>>& state) {
  Flat out;
  for (const Mat<S>& m : state)
    for (Eigen::Index k = 0; k < m.size(); ++k) out.push_back(static_cast<double>(m(k)));
  return out;
}
template <typename Derived>
Flat FlatSteps(const Eigen::MatrixBase<Derived>& m) {
  const Mat<double> d = m.template cast<double>();  // (X, T*B) column-major is (T, B, X) row-major
  return Flat(d.data(), d.data() + d.size());
}

// max(a, b) that keeps a NaN.
double Max(double a, double b) { return std::isnan(a) ? a : std::isnan(b) || b > a ? b : a; }

// The largest relative error seen (NaN once any was NaN), and where.
struct Worst {
  double error = 0;
  std::string where;
  void Add(double e, const std::string& what) {
    if (!std::isnan(error) && (std::isnan(e) || e > error)) {
      error = e;
      where = what;
    }
  }
};

// Compares `got` with a stored tensor and expects every error <= tol: a full tensor elementwise
// relative to its largest magnitude; a sampled one at its samples (same scale), and its sum
// (relative to the sum of magnitudes), norm and largest magnitude (relative to themselves).
void Compare(const Flat& got, const json& ref, double tol, const std::string& what, Worst& worst) {
  const auto n = static_cast<size_t>(Count(Shape(ref)));
  ASSERT_EQ(got.size(), n) << what;
  const auto rel = [](double a, double b, double scale) { return std::abs(a - b) / std::max(scale, 1e-300); };
  if (ref.contains("data")) {
    const Flat want = ref["data"].get<Flat>();
    double scale = 0, err = 0;
    for (const double w : want) scale = std::max(scale, std::abs(w));
    for (size_t k = 0; k < n; ++k) err = Max(err, rel(got[k], want[k], scale));
    EXPECT_LE(err, tol) << what;
    worst.Add(err, what);
    return;
  }
  const double max_abs = ref["max_abs"];
  double sum = 0, abs_sum = 0, sq = 0, top = 0;
  for (const double g : got) {
    sum += g;
    abs_sum += std::abs(g);
    sq += g * g;
    top = std::max(top, std::abs(g));
  }
  const auto index = ref["index"].get<std::vector<size_t>>();
  const Flat value = ref["value"].get<Flat>();
  double err = 0;
  for (size_t s = 0; s < index.size(); ++s) {
    const double e = rel(got[index[s]], value[s], max_abs);
    EXPECT_LE(e, tol) << what << " element " << index[s];
    err = Max(err, e);
  }
  const double e_sum = rel(sum, ref["sum"], ref["abs_sum"]);
  const double e_norm = rel(std::sqrt(sq), ref["norm"], ref["norm"]);
  const double e_max = rel(top, max_abs, max_abs);
  EXPECT_LE(e_sum, tol) << what << " sum";
  EXPECT_LE(e_norm, tol) << what << " norm";
  EXPECT_LE(e_max, tol) << what << " largest magnitude";
  worst.Add(Max(Max(err, e_sum), Max(e_norm, e_max)), what);
}

void CompareScalar(double got, double want, double tol, const std::string& what, Worst& worst) {
  const double err = std::abs(got - want) / std::max(std::abs(want), 1e-300);
  EXPECT_LE(err, tol) << what << ": " << got << " vs " << want;
  worst.Add(err, what);
}

ModelConfig ConfigOf(const json& c) {
  ModelConfig config;
  config.cell = &ParseCell(c["cell"].get<std::string>(), "cell");
  config.vocab_size = c["V"];
  config.input_size = c["D"];
  config.embed_size = c["E"];
  config.hidden_size = c["H"];
  config.layers = c["L"];
  config.head = ParseHead(c["head"].get<std::string>(), "head");
  config.output_size = c["O"];
  config.layer_norm = c.value("layer_norm", false);
  return config;
}

template <typename S>
Batch<S> BatchOf(const json& c) {
  Batch<S> batch;
  batch.T = c["T"];
  batch.B = c["B"];
  if (c.contains("dense")) batch.dense = StepsOf<S>(c["dense"]);
  else batch.ids = IdsOf(c["inputs"]);
  if (c.contains("values")) batch.values = StepsOf<S>(c["values"]);
  else batch.classes = IdsOf(c["targets"]);
  if (c.contains("scored")) {
    const auto v = c["scored"].get<std::vector<uint8_t>>();
    batch.scored = Eigen::Map<const Mask>(v.data(), static_cast<Eigen::Index>(v.size()));
  }
  return batch;
}

template <typename S>
ModelParams<S> ParamsOf(const json& c, const ModelConfig& config) {
  auto params = ModelParams<S>::Zeros(config);
  params.ForEach([&](const std::string& name, Mat<S>& m) {
    ASSERT_TRUE(c["tensors"].contains(name)) << name;
    const Mat<S> v = ParamOf<S>(c["tensors"][name]);
    ASSERT_EQ(v.rows(), m.rows()) << name;
    ASSERT_EQ(v.cols(), m.cols()) << name;
    m = v;
  });
  return params;
}

// The chunk modes: Forward, HeadLoss and Backward from the fixture's initial state with
// loss_total = head loss + 0.5 sum(h_T * wh) [+ 0.5 sum(c_T * wc)], so that dL/dh_T = 0.5 wh;
// then Forward from the zero state. Returns the largest relative error.
template <typename S>
Worst CheckChunk(const json& c, double tol, int threads) {
  Worst worst;
  const ModelConfig config = ConfigOf(c);
  EXPECT_NO_THROW(config.Validate());
  const bool cell_state = config.cell->cell_state;
  const json& tensors = c["tensors"];
  const json& results = c["results"];
  const json& grads_ref = c["grads"];
  const Eigen::Index TB = c["T"].get<Eigen::Index>() * c["B"].get<Eigen::Index>();

  const ModelParams<S> params = ParamsOf<S>(c, config);
  // Every gradient in the fixture but h0, c0 names a bptt tensor.
  size_t tensor_count = 0;
  params.ForEach([&](const std::string&, const Mat<S>&) { ++tensor_count; });
  EXPECT_EQ(tensor_count + 1 + cell_state, grads_ref.size());

  const Batch<S> batch = BatchOf<S>(c);
  State<S> initial, wfinal;
  initial.h = StateOf<S>(tensors["h0"]);
  wfinal.h = StateOf<S>(tensors["wh"]);
  if (cell_state) {
    initial.c = StateOf<S>(tensors["c0"]);
    wfinal.c = StateOf<S>(tensors["wc"]);
  }
  State<S> dfinal = wfinal;
  for (auto& m : dfinal.h) m *= S(0.5);
  for (auto& m : dfinal.c) m *= S(0.5);

  ModelCache<S> cache;
  Forward(config, params, batch, initial, cache, threads);
  State<S> final_state = State<S>::Zeros(config, batch.B);
  FinalState(config, cache, final_state);
  Mat<S> doutputs;
  const double head = HeadLoss(config, cache.outputs, batch, &doutputs, threads);
  double total = head;
  for (int l = 0; l < config.layers; ++l) {
    total += 0.5 * (final_state.h[l].array() * wfinal.h[l].array()).template cast<double>().sum();
    if (cell_state) total += 0.5 * (final_state.c[l].array() * wfinal.c[l].array()).template cast<double>().sum();
  }
  CompareScalar(head, c["loss_head"], tol, "loss_head", worst);
  CompareScalar(total, c["loss_total"], tol, "loss_total", worst);

  Compare(FlatSteps(cache.layers.back().h().rightCols(TB)), results["top_hidden"], tol, "top_hidden", worst);
  Compare(FlatSteps(cache.outputs), results["outputs"], tol, "outputs", worst);
  Compare(FlatState(final_state.h), results["hT"], tol, "hT", worst);
  if (cell_state) Compare(FlatState(final_state.c), results["cT"], tol, "cT", worst);

  auto grads = ModelParams<S>::Zeros(config);
  State<S> dinitial = State<S>::Zeros(config, batch.B);
  Backward(config, params, batch, cache, doutputs, &dfinal, grads, &dinitial, threads);
  grads.ForEach([&](const std::string& name, const Mat<S>& g) {
    ASSERT_TRUE(grads_ref.contains(name)) << name;
    Compare(FlatParam(g), grads_ref[name], tol, "d " + name, worst);
  });
  Compare(FlatState(dinitial.h), grads_ref["h0"], tol, "d h0", worst);
  if (cell_state) Compare(FlatState(dinitial.c), grads_ref["c0"], tol, "d c0", worst);

  // The zero state, as the Stepper starts.
  Forward(config, params, batch, State<S>::Zeros(config, batch.B), cache, threads);
  Compare(FlatSteps(cache.outputs), c["zero_state"]["outputs"], tol, "zero-state outputs", worst);
  CompareScalar(HeadLoss<S>(config, cache.outputs, batch, nullptr, threads), c["zero_state"]["loss_head"], tol,
                "zero-state loss_head", worst);
  return worst;
}

// The step mode: each of the B sequences through a float32 Stepper, the first symbol by Prime
// (a one-step chunk), the rest by Step; dense inputs by Step(x) from Reset.
Worst CheckSteps(const json& c, int threads) {
  Worst worst;
  const ModelConfig config = ConfigOf(c);
  const Batch<float> batch = BatchOf<float>(c);
  const Eigen::Index T = batch.T, B = batch.B, O = config.output_size;
  Stepper stepper(config, ParamsOf<float>(c, config));
  stepper.Configure(Precision::kFloat32, threads);
  Mat<float> outputs(O, T * B);
  for (Eigen::Index b = 0; b < B; ++b) {
    stepper.Reset();
    for (Eigen::Index t = 0; t < T; ++t) {
      const Eigen::Index j = t * B + b;
      std::span<const float> out;
      if (config.dense_input()) out = stepper.Step(batch.dense.col(j).data());
      else if (t == 0) out = stepper.Prime(std::span<const int32_t>(&batch.ids(j), 1));
      else out = stepper.Step(batch.ids(j));
      EXPECT_EQ(out.size(), static_cast<size_t>(O));
      outputs.col(j) = Eigen::Map<const Eigen::VectorXf>(out.data(), O);
    }
  }
  Compare(FlatSteps(outputs), c["zero_state"]["outputs"], kStepTolerance, "step outputs", worst);
  CompareScalar(HeadLoss<float>(config, outputs, batch, nullptr, 1), c["zero_state"]["loss_head"], kStepTolerance,
                "step score", worst);
  return worst;
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const json& c : Fixture()["cases"]) names.push_back(c["name"]);
  return names;
}

void Report(const std::string& name, const char* mode, int threads, const Worst& worst) {
  std::printf("[  error   ] %-26s %-6s threads=%d max %.3g (%s)\n", name.c_str(), mode, threads, worst.error,
              worst.where.c_str());
}

class TorchReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchReference, DoubleAgreesTo1e10) {
  for (const int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    Report(GetParam(), "double", threads, CheckChunk<double>(FindCase(GetParam()), kDoubleTolerance, threads));
  }
}

TEST_P(TorchReference, FloatAgreesTo1e4) {
  for (const int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    Report(GetParam(), "float", threads, CheckChunk<float>(FindCase(GetParam()), kFloatTolerance, threads));
  }
}

TEST_P(TorchReference, StepperAgreesWithChunkTo1e5) {
  // Two threads split the step's products by rows when a matrix has >= 256 rows (big-lstm, big-gru).
  for (const int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    Report(GetParam(), "step", threads, CheckSteps(FindCase(GetParam()), threads));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixture, TorchReference, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

// What the fixture must hold for the tests above to mean what the header says.
TEST(TorchReferenceFixture, CoversEveryCellHeadAndSize) {
  std::set<std::string> all, small, big, regress, classify, normalised, small_ln, big_ln;
  for (const Cell* cell : Cells()) all.insert(std::string(cell->name));
  for (const Cell* cell : Cells())
    if (cell->layer_norm()) normalised.insert(std::string(cell->name));
  for (const json& c : Fixture()["cases"]) {
    const std::string cell = c["cell"];
    if (c.value("layer_norm", false)) {
      (IsBig(c) ? big_ln : small_ln).insert(cell);
      EXPECT_TRUE(c["tensors"].contains("rnn.ln_hh_weight_l1")) << c["name"];
    }
    if (IsBig(c)) {
      big.insert(cell);
      EXPECT_EQ(c["H"], 70);
      EXPECT_EQ(c["B"], 11);
      EXPECT_EQ(c["T"], 5);
      EXPECT_EQ(c["L"], 2);
      for (const auto& [name, tensor] : c["tensors"].items()) EXPECT_TRUE(tensor.contains("lcg")) << name;
    } else {
      small.insert(cell);
    }
    if (c["task"] == "regress") {
      regress.insert(cell);
      EXPECT_GT(c["D"], 0);
      EXPECT_EQ(c["head"], "regression");
      const auto scored = c["scored"].get<std::vector<int>>();
      const int n = std::accumulate(scored.begin(), scored.end(), 0);
      EXPECT_GT(n, 0);
      EXPECT_LT(n, static_cast<int>(scored.size()));
    }
    if (c["task"] == "classify") {
      classify.insert(cell);
      const auto scored = c["scored"].get<std::vector<int>>();
      const int T = c["T"], B = c["B"];
      for (int j = 0; j < T * B; ++j) EXPECT_EQ(scored[j], j >= (T - 1) * B ? 1 : 0);
    }
  }
  EXPECT_EQ(small, all);
  EXPECT_EQ(big, all);
  EXPECT_EQ(small_ln, normalised);
  EXPECT_EQ(big_ln, normalised);
  for (const char* cell : {"lstm", "gru"}) {
    EXPECT_TRUE(regress.count(cell)) << cell;
    EXPECT_TRUE(classify.count(cell)) << cell;
  }
}

}  // namespace
}  // namespace bptt
