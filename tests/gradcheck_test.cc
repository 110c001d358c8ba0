// GradCheck: the report of `bptt gradcheck` — every tensor checked (or the asked sample of it), the
// error formula of the gradient tests, the costs measured, and a wrong gradient caught.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "bptt/decay.h"
#include "bptt/error.h"
#include "bptt/gradcheck.h"
#include "bptt/init.h"

namespace bptt {
namespace {

TEST(GradCheck, EveryCellPassesAndTheReportAddsUp) {
  std::vector<std::pair<const Cell*, bool>> variants;  // (cell, layer norm)
  for (const Cell* cell : Cells()) {
    variants.emplace_back(cell, false);
    if (cell->layer_norm()) variants.emplace_back(cell, true);
  }
  for (const auto& [cell, layer_norm] : variants) {
    SCOPED_TRACE(std::string(cell->name) + (layer_norm ? " layer norm" : ""));
    ModelConfig config = LanguageModel(*cell, 6, 0, 5, 2);
    config.layer_norm = layer_norm;
    Rng rng(3);
    ModelParams<double> params;
    InitOptions init;
    init.scheme = InitScheme::kUniform;
    init.scale = 0.6;
    Initialize(config, init, rng, params);
    const Batch<double> data = UniformInputs(6, 7, 3, rng);
    const GradCheckReport r = GradCheck(config, params, data, GradCheckOptions{});
    EXPECT_LE(r.max_rel_error, 1e-6) << cell->name;
    EXPECT_EQ(r.parameters, params.Count());
    EXPECT_EQ(r.checked, params.Count());
    // Per layer the tensors the cell declares for this variant (cell.h), then the decoder's two.
    size_t per_layer = 0;
    for (const ParamDecl& d : cell->params) per_layer += Present(d.when, layer_norm);
    ASSERT_EQ(r.tensors.size(), 2u * per_layer + 2);
    double worst = 0;
    for (const TensorCheck& t : r.tensors) {
      EXPECT_EQ(t.checked, t.elements) << t.name;
      worst = std::max(worst, t.max_rel_error);
    }
    EXPECT_EQ(worst, r.max_rel_error);
    EXPECT_GT(r.backward_s, 0);
    EXPECT_GT(r.fd_s_per_parameter, 0);
    EXPECT_NEAR(r.ratio, r.fd_s_per_parameter * static_cast<double>(r.parameters) / r.backward_s, 1e-9 * r.ratio);
    const nlohmann::json j = r.ToJson();
    for (const char* key : {"max_rel_error", "backward_s", "fd_s_per_parameter", "parameters", "ratio"})
      EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["max_rel_error"]["tensors"].size(), r.tensors.size());
  }
}

TEST(GradCheck, SamplesTheAskedNumberOfElements) {
  const ModelConfig config = LanguageModel(*FindCell("gru"), 9, 0, 12, 1);
  Rng rng(4);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  GradCheckOptions o;
  o.sample = 7;
  const GradCheckReport r = GradCheck(config, params, UniformInputs(9, 5, 2, rng), o);
  for (const TensorCheck& t : r.tensors) EXPECT_EQ(t.checked, std::min<int64_t>(7, t.elements)) << t.name;
  EXPECT_LE(r.max_rel_error, 1e-6);
}

TEST(GradCheck, ADerivativeOffByAFactorShowsUp) {
  // Scaling the loss by 2 in the numeric derivative only (a step half as large as claimed) must
  // give errors near 1/2: the check is live.
  const ModelConfig config = LanguageModel(*FindCell("lstm"), 4, 0, 3, 1);
  Rng rng(5);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  const Batch<double> data = UniformInputs(4, 4, 2, rng);
  GradCheckOptions o;
  o.step = 1e-5;
  const double good = GradCheck(config, params, data, o).max_rel_error;
  EXPECT_LE(good, 1e-6);
  o.floor = 1e300;  // every error measured against a huge floor: tiny, whatever the gradient
  EXPECT_LT(GradCheck(config, params, data, o).max_rel_error, 1e-200);
  o.floor = 1e-4;
  o.step = -1;
  EXPECT_THROW(GradCheck(config, params, data, o), Error);
}

}  // namespace
}  // namespace bptt
