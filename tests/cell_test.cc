// The registry's rows and the tensors they declare (cell.h): every cell declares first what the
// model reads and writes, at its place and shape; names are unique; a layer's parameters, cache
// and backward buffers are shaped from the declarations, with the layer-normalised variant's
// tensors and the recorded steps' buffers present exactly when asked for.
#include <gtest/gtest.h>

#include <cctype>
#include <set>

#include "bptt/cell.h"
#include "bptt/error.h"
#include "gradient_check.h"
#include "test_util.h"

namespace bptt {
namespace {

using namespace extent;
using test::CellTestName;
using test::ErrorOf;

class CellDeclarations : public ::testing::TestWithParam<const Cell*> {};

template <typename Decl>
void ExpectDecl(std::span<const Decl> decls, size_t slot, std::string_view name, Extent rows, Extent cols,
                When when = When::kAlways) {
  ASSERT_LT(slot, decls.size()) << name;
  EXPECT_EQ(decls[slot].name, name);
  EXPECT_TRUE(decls[slot].rows == rows) << name;
  EXPECT_TRUE(decls[slot].cols == cols) << name;
  EXPECT_EQ(decls[slot].when, when) << name;
}

TEST_P(CellDeclarations, BeginWithWhatTheModelReadsAndWrites) {
  const Cell& cell = *GetParam();
  ExpectDecl(cell.params, kWeightIhSlot, "weight_ih", kGH, kE);
  EXPECT_EQ(cell.params[kWeightIhSlot].role, TensorRole::kWeight);
  if (cell.recurrent_matrix()) {
    ExpectDecl(cell.params, kWeightHhSlot, "weight_hh", kGH, kH);
    EXPECT_EQ(cell.params[kWeightHhSlot].role, TensorRole::kWeight);
  }
  ExpectDecl(cell.cache, kGatesSlot, "gates", kGH, kTB);
  ExpectDecl(cell.cache, kHSlot, "h", kH, kT1B);
  ExpectDecl(cell.backward, kDgatesSlot, "dgates", kGH, kTB);
  ExpectDecl(cell.backward, kDhSlot, "dh", kH, kB);
  ExpectDecl(cell.backward, kDhStepsSlot, "dh_steps", kH, kTB, When::kRecord);
  if (cell.cell_state) {
    ExpectDecl(cell.cache, kCSlot, "c", kH, kT1B);
    ExpectDecl(cell.backward, kDcSlot, "dc", kH, kB);
    ExpectDecl(cell.backward, kDcStepsSlot, "dc_steps", kH, kTB, When::kRecord);
  } else {
    for (const BufferDecl& d : cell.cache) EXPECT_NE(d.name, "c");
    for (const BufferDecl& d : cell.backward) EXPECT_TRUE(d.name != "dc" && d.name != "dc_steps") << d.name;
  }
  // Only the backward sweep records; only the parameters' roles say what an optimizer decays.
  for (const BufferDecl& d : cell.cache) EXPECT_NE(d.when, When::kRecord) << d.name;
  for (const ParamDecl& d : cell.params) EXPECT_NE(d.when, When::kRecord) << d.name;
  // One gate letter per gate block (none for a single block).
  EXPECT_TRUE(cell.gate_names.empty() ? cell.gates == 1 : cell.gate_names.size() == static_cast<size_t>(cell.gates));
}

TEST_P(CellDeclarations, NamesAreUniqueAndThePyTorchKind) {
  const Cell& cell = *GetParam();
  std::set<std::string_view> params, cache, backward;
  for (const ParamDecl& d : cell.params) {
    EXPECT_TRUE(params.insert(d.name).second) << d.name;
    // A vector is (N, 1), and only weights are matrices: what checkpoints store 1-D.
    EXPECT_EQ(d.cols == k1, d.role != TensorRole::kWeight) << d.name;
    for (const char ch : d.name) EXPECT_TRUE(std::islower(static_cast<unsigned char>(ch)) || ch == '_') << d.name;
  }
  for (const BufferDecl& d : cell.cache) EXPECT_TRUE(cache.insert(d.name).second) << d.name;
  for (const BufferDecl& d : cell.backward) EXPECT_TRUE(backward.insert(d.name).second) << d.name;
}

TEST_P(CellDeclarations, ShapeTheLayersTensors) {
  const Cell& cell = *GetParam();
  const Eigen::Index E = 7, H = 5, T = 4, B = 3;
  const Sizes sizes{cell.gates, H, E, T, B};
  for (const bool layer_norm : {false, true}) {
    if (layer_norm && !cell.layer_norm()) continue;
    const RecurrentParams<float> p = RecurrentParams<float>::Zeros(cell, E, H, layer_norm);
    ASSERT_EQ(p.tensors.size(), cell.params.size());
    size_t visited = 0;
    p.ForEach([&](const ParamDecl& d, const Mat<float>& m) {
      EXPECT_EQ(m.rows(), d.rows.Of(sizes)) << d.name;
      EXPECT_EQ(m.cols(), d.cols.Of(sizes)) << d.name;
      EXPECT_TRUE(m.isZero(0)) << d.name;
      EXPECT_EQ(&m, &p.tensor(d.name));
      ++visited;
    });
    size_t present = 0;
    for (const ParamDecl& d : cell.params) present += Present(d.when, layer_norm);
    EXPECT_EQ(visited, present);
    EXPECT_EQ(p.weight_ih().rows(), cell.gates * H);
    EXPECT_EQ(p.weight_hh().size(), cell.recurrent_matrix() ? cell.gates * H * H : 0);

    for (const bool record : {false, true}) {
      LayerCache<float> cache;
      cache.Resize(cell, H, T, B, layer_norm);
      LayerBackward<float> back;
      back.record = record;
      back.Resize(cell, H, T, B, layer_norm);
      const auto check = [&](std::span<const BufferDecl> decls, const std::vector<Mat<float>>& buffers) {
        ASSERT_EQ(buffers.size(), decls.size());
        for (size_t k = 0; k < decls.size(); ++k) {
          const bool present = Present(decls[k].when, layer_norm, record);
          EXPECT_EQ(buffers[k].rows(), present ? decls[k].rows.Of(sizes) : 0) << decls[k].name;
          EXPECT_EQ(buffers[k].cols(), present ? decls[k].cols.Of(sizes) : 0) << decls[k].name;
        }
      };
      check(cell.cache, cache.buffers);
      check(cell.backward, back.buffers);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, CellDeclarations, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

TEST(RecurrentParams, NamesTheTensorsALayerLacks) {
  const RecurrentParams<float> plain = RecurrentParams<float>::Zeros(*FindCell("lstm"), 3, 2, false);
  EXPECT_EQ(ErrorOf([&] { plain.tensor("ln_c_weight"); }),
            "this lstm layer has no 'ln_c_weight' (it is a tensor of the layer-normalised variant)");
  EXPECT_EQ(ErrorOf([&] { plain.tensor("weight_xx"); }), "the lstm cell has no tensor 'weight_xx'");
  EXPECT_EQ(plain.tensor("weight_hh").rows(), 8);
}

TEST(Registry, NamesEveryCellOnceAndTheLayerNormalisedOnes) {
  std::set<std::string_view> names;
  for (const Cell* cell : Cells()) {
    EXPECT_TRUE(names.insert(cell->name).second) << cell->name;
    EXPECT_EQ(FindCell(cell->name), cell);
    EXPECT_EQ(&ParseCell(cell->name), cell);
  }
  EXPECT_EQ(FindCell("nope"), nullptr);
  EXPECT_EQ(ErrorOf([] { ParseCell("nope", "--cell"); }), "--cell 'nope' is not one of " + CellNames());
  EXPECT_EQ(CellNames(true), "lstm, gru");
  EXPECT_EQ(&DefaultCell(), FindCell("lstm"));
}

}  // namespace
}  // namespace bptt
