// How the chunk modes compute, proven: every thread count gives the one-thread numbers bit for
// bit, however the steps are split; and the products in bfloat16 (--precision bf16, where the
// CPU has AMX or AVX-512 BF16) keep a float model's outputs and gradients within bfloat16's rounding of
// float's, for every cell and input; a double model refuses them. (The gradients themselves:
// cell_gradient_test.cc and its neighbours.)
#include <gtest/gtest.h>

#include "bptt/error.h"
#include "gradient_check.h"

namespace bptt {
namespace {

using namespace test;

// The time loops share each step between the threads by columns of the batch, or by rows of
// the recurrent product when there are fewer columns than threads (StepShare, packed_gemm.h);
// every sum of the sweeps runs in the same order either way, so one layer's forward cache and
// backward outputs are bit for bit those of one thread. (The large products around the sweeps
// are Eigen's, whose kernels may round differently at different split sizes: a whole model is
// held to its central differences instead, with B = 1 on 2 threads.) In float at H = 70 (the
// products' 70, 210 and 280 rows make 3, 7 and 9 panels of 32, shared unevenly), B = 1 on 2 and
// 3 threads and B = 2 on 3 (split by rows), B = 2 on 2 and B = 3 (by columns); every cell, with
// and without layer norm, with and without recurrent dropout and zoneout (fixed masks), every
// buffer its cache and backward sweep declare (cell.h); in float,
// and with bfloat16 products where the CPU has them (the steps' products then run on
// 16-row tiles: 70, 210 and 280 rows end in partial tiles).
class ThreadSplit : public ::testing::TestWithParam<const Cell*> {};

TEST_P(ThreadSplit, AnyThreadCountGivesTheOneThreadNumbers) {
  const Cell& cell = *GetParam();
  const Eigen::Index H = 70, T = 5, G = cell.gates;
  std::vector<Precision> precisions = {Precision::kFloat32};
  if (Bf16ProductsAvailable()) precisions.push_back(Precision::kBfloat16);
  for (const Precision precision : precisions)
  for (const bool regularised : {false, true})
  for (const bool layer_norm : {false, true}) {
    if (layer_norm && !cell.layer_norm()) continue;
    for (const Eigen::Index B : {1, 2, 3}) {
      ModelConfig config = LanguageModel(cell, 6, 0, H, 1);
      config.layer_norm = layer_norm;
      config.Validate();
      Rng rng(31 + B);
      ModelParams<float> params;
      Initialize(config, InitOptions{}, rng, params);
      const RecurrentParams<float>& p = params.layers[0];
      const Mat<float> input = RandomMat(G * H, T * B, rng, 1.0).cast<float>();  // W_ih x_t
      const Mat<float> h0 = RandomMat(H, B, rng).cast<float>(), c0 = RandomMat(H, B, rng).cast<float>();
      const Mat<float> dh_out = RandomMat(H, T * B, rng).cast<float>();
      const Mat<float> dh_T = RandomMat(H, B, rng).cast<float>(), dc_T = RandomMat(H, B, rng).cast<float>();
      // The loop's regularisers (cell.h), their masks fixed: recurrent dropout's m (0 or 2),
      // zoneout's d_t on h and c.
      Mat<float> recurrent_mask, zoneout_h, zoneout_c;
      if (regularised) {
        if (cell.recurrent_matrix()) recurrent_mask = (RandomMat(H, B, rng).array() > 0).cast<float>().matrix() * 2.0f;
        zoneout_h = (RandomMat(H, T * B, rng).array() > 0.1).cast<float>().matrix();
        if (cell.cell_state) zoneout_c = (RandomMat(H, T * B, rng).array() > 0.2).cast<float>().matrix();
      }

      struct Sweeps {
        LayerCache<float> cache;
        LayerBackward<float> back;
        RecurrentParams<float> grad;
      };
      const auto run = [&](int threads) {
        Sweeps s;
        s.cache.Resize(cell, H, T, B, layer_norm);
        if (recurrent_mask.size() > 0) s.cache.loop.recurrent_mask = recurrent_mask.data();
        if (zoneout_h.size() > 0) s.cache.loop.h.mask = zoneout_h.data();
        if (zoneout_c.size() > 0) s.cache.loop.c.mask = zoneout_c.data();
        s.cache.gates() = input;
        s.cache.h().leftCols(B) = h0;
        if (cell.cell_state) s.cache.c().leftCols(B) = c0;
        cell.modes<float>().chunk_forward(p, s.cache, Compute{threads, precision});
        s.back.record = true;
        s.back.Resize(cell, H, T, B, layer_norm);
        s.back.dh() = dh_T;
        if (cell.cell_state) s.back.dc() = dc_T;
        s.grad = RecurrentParams<float>::Zeros(cell, 6, H, layer_norm);
        cell.modes<float>().chunk_backward(p, p.weight_hh(), s.cache, dh_out, s.back, s.grad,
                                           Compute{threads, precision});
        return s;
      };
      const Sweeps one = run(1);
      for (const int threads : {2, 3}) {
        const Sweeps many = run(threads);
        const std::string where = std::string(cell.name) + " " + PrecisionName(precision) +
                                  (layer_norm ? " layer norm" : "") +
                                  (regularised ? " recurrent dropout, zoneout" : "") + " B " +
                                  std::to_string(B) + " on " + std::to_string(threads) + " threads: ";
        const auto same = [&](std::string_view name, const Mat<float>& a, const Mat<float>& b) {
          ASSERT_EQ(a.rows(), b.rows()) << where << name;
          ASSERT_EQ(a.cols(), b.cols()) << where << name;
          EXPECT_TRUE((a.array() == b.array()).all()) << where << name;
        };
        for (size_t k = 0; k < cell.cache.size(); ++k) same(cell.cache[k].name, many.cache[k], one.cache[k]);
        same("h_dropped", many.cache.h_dropped, one.cache.h_dropped);
        for (size_t k = 0; k < cell.backward.size(); ++k) same(cell.backward[k].name, many.back[k], one.back[k]);
        many.grad.ForEach([&](const ParamDecl& d, const Mat<float>& m) {
          if (d.name != "weight_ih" && d.name != "weight_hh") same(d.name, m, one.grad.tensor(d.name));
        });
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCells, ThreadSplit, ::testing::ValuesIn(Cells().begin(), Cells().end()),
                         CellTestName);

// bfloat16 products (compute.h): the kernels are proven in kernels_test; here, that the model
// sends its large products and its steps' recurrent products there, and what that costs.
// Operands rounded to 8 bits of significand move a float model's outputs and gradients by a few
// parts in a thousand: each is asserted within 3% (relative L2) of the float run's and different
// from it (the products did run in bfloat16); the ReLU RNN's gradient is the exception said
// below. One-hot input with 2 layers (the upper layer's input projection), an embedding and a
// dense input, every cell, 2 threads, with B = 5 and B = 1.
class Bf16Products : public ::testing::TestWithParam<const Cell*> {};

TEST_P(Bf16Products, StayWithinBfloat16RoundingOfFloat) {
  if (!Bf16ProductsAvailable()) GTEST_SKIP() << "this CPU has neither AMX-BF16 nor AVX-512 BF16";
  for (const Input input : {Input::kOneHot, Input::kEmbed, Input::kDense})
  for (const Eigen::Index B : {5, 1}) {  // the steps split by columns, and by rows (one stream)
    constexpr int V = 30, H = 40, T = 6;
    ModelConfig config = LanguageModel(*GetParam(), V, input == Input::kEmbed ? 12 : 0, H, 2);
    if (input == Input::kDense) {
      config.vocab_size = 0;
      config.input_size = 9;
    }
    config.Validate();
    Rng rng(21);
    ModelParams<float> params;
    Initialize(config, InitOptions{}, rng, params);
    Batch<float> batch;
    batch.T = T;
    batch.B = B;
    if (input == Input::kDense) batch.dense = Mat<double>::Random(9, T * B).cast<float>();
    else batch.ids = RandomIds(T * B, V, rng);
    batch.classes = RandomIds(T * B, V, rng);
    const auto run = [&](Precision products, Mat<float>& outputs) {
      ModelCache<float> cache;
      Forward(config, params, batch, State<float>::Zeros(config, B), cache, Compute{2, products});
      outputs = cache.outputs;
      Mat<float> d;
      HeadLoss<float>(config, cache.outputs, batch, &d, 1);
      ModelParams<float> grads = ModelParams<float>::Zeros(config);
      Backward(config, params, batch, cache, d, nullptr, grads, nullptr, Compute{2, products});
      return grads;
    };
    Mat<float> out32, out16;
    const ModelParams<float> g32 = run(Precision::kFloat32, out32), g16 = run(Precision::kBfloat16, out16);
    const std::string what = std::string(GetParam()->name) + " input " + std::to_string(static_cast<int>(input)) +
                             " B " + std::to_string(B);
    EXPECT_LE((out16 - out32).norm(), 0.03 * out32.norm()) << what;
    EXPECT_GT((out16 - out32).norm(), 0.0) << what;
    std::vector<const Mat<float>*> f;
    g32.ForEach([&f](const std::string&, const Mat<float>& m) { f.push_back(&m); });
    // A ReLU's derivative jumps at 0: the few units whose pre-activation the rounding moves
    // across 0 change the ReLU RNN's gradient by more than the rounding itself (4-14% here),
    // so for it only the gradient's finiteness is asserted.
    const bool smooth = GetParam()->name != "rnn-relu";
    size_t k = 0;
    double moved = 0;
    g16.ForEach([&](const std::string& name, const Mat<float>& m) {
      const Mat<float>& ref = *f[k++];
      if (smooth) EXPECT_LE((m - ref).norm(), 0.03 * ref.norm() + 1e-7) << what << " " << name;
      else EXPECT_TRUE(m.allFinite()) << what << " " << name;
      moved += (m - ref).norm();
    });
    EXPECT_GT(moved, 0.0) << what;
  }
}

TEST(Bf16ProductsRefused, ForDoubleModels) {
  const ModelConfig config = LanguageModel(*Cells()[0], 6, 0, 5, 2);
  Rng rng(1);
  ModelParams<double> params;
  Initialize(config, InitOptions{}, rng, params);
  Batch<double> batch;
  batch.T = 2;
  batch.B = 1;
  batch.ids = RandomIds(2, 6, rng);
  ModelCache<double> cache;
  EXPECT_THROW(Forward(config, params, batch, State<double>::Zeros(config, 1), cache, Compute{1, Precision::kBfloat16}),
               Error);
}

INSTANTIATE_TEST_SUITE_P(AllCells, Bf16Products, ::testing::ValuesIn(Cells().begin(), Cells().end()), CellTestName);

}  // namespace
}  // namespace bptt
