// What the model layer counts from the cells' declarations without allocating (model.h): the
// parameters (ParameterCount), and the memory of a training step and of an evaluation pass
// (EstimateTrainingBytes, EstimateEvaluationBytes) against the heap they really hold: every
// buffer of a step lives in caller-owned structs that persist between steps, so after one step
// the heap holds what the estimate counts. Also the casts between float and double, and the
// evaluation memory a task's validation adds to training's (its test set runs 256 sequences at
// a time where training runs --batch).
#include <gtest/gtest.h>
#include <malloc.h>

#include <thread>

#include "bptt/clip.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/trainer.h"
#include "train_data.h"

namespace bptt {
namespace {

// Bytes in use on the heap: small blocks in use + mmapped blocks.
double HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd);
}

bool Sanitized() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#endif
#endif
  return false;
}

// The models the estimates are held to: every cell of the registry, and the options that add
// buffers (layer norm, dropout, residual connections, an embedding, a dense input with a
// regression head, the training regularisers, recurrent dropout and zoneout).
// The model with every training regulariser on.
ModelConfig Regularised(ModelConfig c) {
  c.dropout = 0.3;
  c.input_dropout = 0.2;
  c.output_dropout = 0.3;
  c.variational = true;
  c.weight_drop = 0.4;
  c.ar = 2;
  c.tar = 1;
  return c;
}

std::vector<ModelConfig> Models() {
  std::vector<ModelConfig> models;
  for (const Cell* cell : Cells()) models.push_back(LanguageModel(*cell, 60, 0, 192, 2));
  for (const Cell* cell : Cells()) {
    if (!cell->layer_norm()) continue;
    ModelConfig c = LanguageModel(*cell, 60, 0, 160, 2);
    c.layer_norm = true;
    models.push_back(c);
  }
  ModelConfig c = LanguageModel(*FindCell("gru"), 60, 48, 128, 3, 0.3);
  c.residual = true;
  models.push_back(c);
  c = LanguageModel(*FindCell("lstm"), 0, 0, 128, 2);
  c.input_size = 9;
  c.head = Head::kRegression;
  c.output_size = 2;
  models.push_back(c);
  models.push_back(Regularised(c));
  models.push_back(Regularised(LanguageModel(*FindCell("lstm"), 60, 0, 192, 2)));
  // The regularisers of the time loop: their masks and buffers.
  c = LanguageModel(*FindCell("lstm"), 60, 0, 160, 2, 0.2);
  c.recurrent_dropout = 0.25;
  c.zoneout = 0.1;
  c.zoneout_cell = 0.05;
  models.push_back(c);
  c = LanguageModel(*FindCell("mingru"), 60, 0, 192, 2);
  c.zoneout = 0.1;
  models.push_back(c);
  return models;
}

std::string Describe(const ModelConfig& c) {
  return std::string(c.cell->name) + " H " + std::to_string(c.hidden_size) + (c.layer_norm ? " layer norm" : "") +
         (c.dropout > 0 ? " dropout" : "") + (c.residual ? " residual" : "") + (c.embed_size > 0 ? " embed" : "") +
         (c.dense_input() ? " dense" : "") + (c.weight_drop > 0 ? " regularised" : "") +
         (c.recurrent_dropout > 0 ? " recurrent dropout" : "") + (c.zoneout > 0 || c.zoneout_cell > 0 ? " zoneout" : "");
}

Batch<float> RandomBatch(const ModelConfig& c, int T, int B, Rng& rng) {
  Batch<float> batch;
  batch.T = T;
  batch.B = B;
  if (c.dense_input()) {
    batch.dense = Mat<double>::Random(c.input_size, T * B).cast<float>();
  } else {
    batch.ids.resize(T * B);
    for (Eigen::Index i = 0; i < batch.ids.size(); ++i) batch.ids(i) = static_cast<int32_t>(rng.Below(c.vocab_size));
  }
  if (c.head == Head::kRegression) {
    batch.values = Mat<double>::Random(c.output_size, T * B).cast<float>();
  } else {
    batch.classes.resize(T * B);
    for (Eigen::Index i = 0; i < batch.classes.size(); ++i)
      batch.classes(i) = static_cast<int32_t>(rng.Below(c.output_size));
  }
  return batch;
}

TEST(ParameterCount, IsWhatTheModelAllocates) {
  for (ModelConfig c : Models()) {
    EXPECT_EQ(ParameterCount(c), static_cast<double>(ModelParams<float>::Shaped(c).Count())) << Describe(c);
    c.embed_size = 0;
    EXPECT_EQ(ParameterCount(c), static_cast<double>(ModelParams<float>::Shaped(c).Count())) << Describe(c);
  }
}

TEST(ModelParams, CastsToDoubleAndBackBitForBit) {
  for (const ModelConfig& c : Models()) {
    Rng rng(3);
    ModelParams<float> params;
    Initialize(c, InitOptions{}, rng, params);
    const ModelParams<double> wide = params.Cast<double>();
    const ModelParams<float> back = wide.Cast<float>();
    std::vector<const Mat<float>*> before;
    params.ForEach([&](const std::string&, const Mat<float>& m) { before.push_back(&m); });
    size_t k = 0;
    back.ForEach([&](const std::string& name, const Mat<float>& m) {
      ASSERT_LT(k, before.size()) << name;
      EXPECT_TRUE(m == *before[k++]) << Describe(c) << " " << name;
    });
    EXPECT_EQ(k, before.size());
    EXPECT_EQ(wide.layers[0].cell, c.cell);
    EXPECT_EQ(wide.layers[0].layer_norm(), c.layer_norm);
  }
}

const int kAdamSlots = OptimizerSlots(OptimizerOptions{});

// The heap one training step (forward with dropout, loss, backward, clipping, an Adam step) holds
// at its end, on a thread of its own.
double TrainingStepHeap(const ModelConfig& config, int T, int B, Precision precision, int checkpoint_steps,
                        int checkpoint_slots = 0) {
  double held = 0;
  std::thread([&] {
    const double before = HeapBytes();
    ModelParams<float> params = ModelParams<float>::Zeros(config), grads = params;
    Rng rng(5);
    Initialize(config, InitOptions{}, rng, params);
    OptimizerOptions adam;
    OptimizerState<float> slots;
    ModelCache<float> cache;
    cache.checkpoint_steps = checkpoint_steps;
    cache.checkpoint_slots = checkpoint_slots;
    const Batch<float> batch = RandomBatch(config, T, B, rng);
    State<float> state = State<float>::Zeros(config, B);
    Mat<float> doutputs;
    Rng dropout(6);
    Forward(config, params, batch, state, cache, Compute{2, precision}, &dropout);
    HeadLoss(config, cache.outputs, batch, &doutputs, 2);
    Backward(config, params, batch, cache, doutputs, nullptr, grads, nullptr, Compute{2, precision});
    ClipGradNorm(grads, 5.0);
    OptimizerStep(adam, 2e-3, params, grads, slots, 2);
    FinalState(config, cache, state);
    held = HeapBytes() - before;
  }).join();
  return held;
}

TEST(EstimateTrainingBytes, MatchesTheHeapATrainingStepHolds) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer owns the heap";
  // The operands of the large products, packed or rounded for the kernels, are scratch that the
  // calling thread keeps for its next call (the estimate counts them): each run is a thread of
  // its own, which starts without them.
  // Each model with every step's cache kept, and with memory-bounded BPTT (checkpoint_steps): a K
  // that divides T, one that does not, and auto; and with fewer kept segment starts than
  // segments (checkpoint_slots, recompute.h).
  struct TrainingRun {
    ModelConfig config;
    Precision precision;
    int checkpoint_steps, checkpoint_slots = 0;
  };
  std::vector<TrainingRun> runs;
  for (const ModelConfig& c : Models()) {
    for (const int K : {0, 8, 7, kAutoCheckpointSteps}) runs.push_back({c, Precision::kFloat32, K});
    runs.push_back({c, Precision::kFloat32, 1, 3});
    runs.push_back({c, Precision::kFloat32, 5, 2});
  }
  if (Bf16ProductsAvailable()) runs.push_back({LanguageModel(*FindCell("lstm"), 60, 0, 192, 2), Precision::kBfloat16, 0});
  for (const auto& [config, precision, checkpoint_steps, checkpoint_slots] : runs) {
    const int T = 48, B = 16;
    const double held = TrainingStepHeap(config, T, B, precision, checkpoint_steps, checkpoint_slots);
    const double estimate = static_cast<double>(
        EstimateTrainingBytes(config, T, B, kAdamSlots, precision, checkpoint_steps, checkpoint_slots));
    EXPECT_NEAR(held / estimate, 1.0, 0.1) << Describe(config) << " " << PrecisionName(precision)
                                           << " checkpoint steps " << checkpoint_steps << ", slots "
                                           << checkpoint_slots << ": heap " << held << " bytes, estimate " << estimate;
    if (checkpoint_slots > 0) {  // fewer starts kept than segments take less than all of them
      EXPECT_LT(estimate, static_cast<double>(EstimateTrainingBytes(config, T, B, kAdamSlots, precision, checkpoint_steps)));
    }
    if (checkpoint_steps != 0) {  // the segments' caches take less than the whole chunk's
      EXPECT_LT(estimate, static_cast<double>(EstimateTrainingBytes(config, T, B, kAdamSlots, precision)));
    }
  }
}

TEST(EstimateTrainingBytes, CountsTheRegularisersBuffers) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer owns the heap";
  // What the regularisers add, alone: the masks, the dropped values and the gradients held aside
  // are a small part of a whole step's heap, so the difference is held to the estimate's.
  for (ModelConfig plain : {LanguageModel(*FindCell("lstm"), 60, 0, 192, 2), LanguageModel(*FindCell("gru"), 60, 32, 128, 3)}) {
    for (const int K : {0, 7}) {
      const int T = 48, B = 16;
      const ModelConfig regularised = Regularised(plain);
      const double held = TrainingStepHeap(regularised, T, B, Precision::kFloat32, K) -
                          TrainingStepHeap(plain, T, B, Precision::kFloat32, K);
      const double estimate =
          static_cast<double>(EstimateTrainingBytes(regularised, T, B, kAdamSlots, Precision::kFloat32, K)) -
          static_cast<double>(EstimateTrainingBytes(plain, T, B, kAdamSlots, Precision::kFloat32, K));
      EXPECT_GT(estimate, 0);
      EXPECT_NEAR(held / estimate, 1.0, 0.1) << Describe(plain) << " checkpoint steps " << K << ": heap " << held
                                             << " bytes more, estimate " << estimate;
    }
  }
}

TEST(EstimateEvaluationBytes, MatchesTheHeapAForwardPassHolds) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer owns the heap";
  for (const ModelConfig& config : Models()) std::thread([&, config = config] {
    const int T = 40, B = 24;
    Rng rng(7);
    ModelParams<float> params;
    Initialize(config, InitOptions{}, rng, params);
    const double before = HeapBytes();
    {
      const Batch<float> batch = RandomBatch(config, T, B, rng);
      State<float> state = State<float>::Zeros(config, B);
      ModelCache<float> cache;
      Forward(config, params, batch, state, cache, 2);
      HeadLoss<float>(config, cache.outputs, batch, nullptr, 2);
      FinalState(config, cache, state);
      const double held = HeapBytes() - before;
      const double estimate = static_cast<double>(EstimateEvaluationBytes(config, T, B));
      EXPECT_NEAR(held / estimate, 1.0, 0.1) << Describe(config) << ": heap " << held << " bytes, estimate " << estimate;
    }
  }).join();
}

// A task validates on its test set 256 sequences at a time, and keeps that batch and cache
// between validations: what the trainer must count beside training's own step before it starts
// (a --T 50000 copy task trained at --batch 32 once passed the check and ran out of memory at its
// first validation).
TEST(TaskData, CountsTheTestBatchItValidatesWith) {
  if (Sanitized()) GTEST_SKIP() << "the sanitizer owns the heap";
  TrainOptions o = TaskDefaults();
  o.task = "copy";
  o.task_length = 30;
  o.test_size = 512;  // two runs of 256 (a shorter last run would leave a smaller cache behind)
  o.batch = 8;
  const std::unique_ptr<TrainData> data = MakeTaskData(o);
  ModelConfig config = o.model;
  data->Shape(config);
  config.Validate();
  Rng rng(8);
  ModelParams<float> params;
  Initialize(config, InitOptions{}, rng, params);
  const double before = HeapBytes();
  data->Validate(config, params, 2);
  const double held = HeapBytes() - before;
  const double counted = static_cast<double>(data->EvaluationBytes(config));
  EXPECT_NEAR(held / counted, 1.0, 0.1) << "heap " << held << " bytes, counted " << counted;
  // Far more than a training step's cache at --batch 8 would suggest: 256 sequences at once.
  EXPECT_GE(counted, static_cast<double>(EstimateEvaluationBytes(config, data->timesteps(), 256)));
  EXPECT_GT(counted, 8.0 * static_cast<double>(EstimateEvaluationBytes(config, data->timesteps(), o.batch)));
}

}  // namespace
}  // namespace bptt
