// Stepper: a model run as one stream, one step per call — the cells' step mode (cell.h) — for
// sampling (sampler.h) and stepwise scoring (evaluate.h).
//
// A step costs the matrix-vector products of each layer and the head's, into buffers the
// Stepper owns, so nothing is allocated per step. The products run in one of three precisions
// (src/kernels/gemv.h):
//   kFloat32   float weights, float sums.
//   kBfloat16  bfloat16 copies of the weights and of the vector, float sums: half the bytes read
//              per step; outputs move by about 1% of their spread.
//   kInt8      int8 weights with a float scale per row and the vector rounded to 8 bits per
//              product, int32 sums: a quarter of the bytes.
// A prime runs in float32 on one thread: up to kStepPrime symbols as steps (the float steps read
// the weights as they are, so the first symbol of a sample waits for no packing), a longer one as
// one chunk through the model's chunk forward.
// tests/stepper_test.cc bounds what the reduced precisions cost in nats on a trained
// model; `bptt eval --precision` measures it on any text.
//
//   Stepper stepper(config, params);  stepper.Configure(Precision::kInt8, /*threads=*/0);
//   std::span<const float> logits = stepper.Prime(prime_ids);
//   logits = stepper.Step(next_id);
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "bptt/compute.h"
#include "bptt/model.h"

namespace bptt {

// What sampling uses unless told: int8 where the CPU has the AVX-512 VNNI or the AVX2 kernel
// (kernels/gemv.h; both give the same sums; on one thread a step of a 2x512 LSTM about 3.4
// times as fast as fp32 with VNNI, for 0.0003 nats per symbol: README), else fp32.
Precision DefaultSamplePrecision();

class StepMatrix;

class Stepper {
 public:
  // Takes its own copy of the parameters. Throws bptt::Error if they do not fit the configuration.
  Stepper(const ModelConfig& config, ModelParams<float> params);
  ~Stepper();
  Stepper(Stepper&&) noexcept;
  Stepper& operator=(Stepper&&) noexcept;

  // The precision of the step's products (its weight copies are built on first use) and the
  // threads that split each product by rows (>= 1), or 0: chosen as the steps run (below).
  // The outputs do not depend on the threads.
  void Configure(Precision precision, int threads);
  // The threads the last step ran on.
  int threads() const { return threads_.current; }

  // The zero state.
  void Reset();
  // Runs symbols (at least one) from the zero state in float32 on one thread: up to
  // kStepPrime as steps, more as one chunk; returns the outputs (O) of the last. Symbol input only.
  static constexpr Eigen::Index kStepPrime = 8;
  std::span<const float> Prime(std::span<const int32_t> ids);
  // One step from the current state; returns its outputs (O): a symbol (symbol input) or a
  // vector of D features (dense input).
  std::span<const float> Step(int32_t id);
  std::span<const float> Step(const float* x);

  const ModelConfig& config() const { return config_; }
  const ModelParams<float>& params() const { return *params_; }
  const State<float>& state() const { return state_; }

 private:
  // The products of one precision: per layer weight_ih (none for one-hot input) and weight_hh
  // (with the cell's view of it; none for a cell without a recurrent matrix), and the decoder.
  struct Weights {
    int threads = 1;  // splitting each product by rows: the step's choice
    std::vector<std::unique_ptr<StepMatrix>> ih, hh;
    std::vector<StepProduct> hh_product;
    std::unique_ptr<StepMatrix> decoder;
  };
  Weights& WeightsOf(Precision precision);

  // Threads chosen while stepping (Configure with 0). One step reads every weight once: when
  // the weights outgrow a core's L2 cache but fit in the L2 caches of `split` cores, splitting
  // the rows between them makes the step cache-resident (a 2x512 LSTM in int8, 3.2 MB, on cores
  // with 2 MB each: 3.7 times as fast), but each product then waits for the slowest thread, and
  // a core another process holds can make a split step a hundred times slower (20,000 symbols:
  // 403 s split, 2.8 s on one thread, with another job on the machine). So the steps
  // time themselves: one thread and `split` threads each run a block of steps, the faster is
  // kept, and the other is tried again after `probe_every` steps (doubling each time it loses);
  // a tried step slower than three times the kept one's ends the trial at once.
  struct ThreadChoice {
    bool automatic = false;
    int split = 1;               // the threads tried against one
    int current = 1;             // the threads the next step runs on
    int kept = 0;                // 0: one thread, 1: split
    double seconds[2] = {0, 0};  // per step, last measured: [0] one thread, [1] split
    int block = 0;               // steps of the current block
    double block_seconds = 0;
    int64_t until_probe = 0;     // steps on the kept choice before trying the other
    int64_t probe_every = 0;
  };
  void ChooseThreads();                   // sets up threads_ for the configured precision
  void StepTimed(double seconds);         // records a step's time, may change threads_.current
  // A step through every layer with the products of `w`; `input`: the layer-0 input vector, or
  // null for one-hot (Input has put the column in gates_[0]).
  std::span<const float> Layers(Weights& w, const float* input);
  std::span<const float> TimedStep(const float* input);  // Layers in the configured precision, timed
  const float* Input(int32_t id);  // a symbol's layer-0 input: its embedding, or null (one-hot)

  ModelConfig config_;
  std::unique_ptr<ModelParams<float>> params_;  // where the float32 StepMatrix point: fixed across moves
  Precision precision_ = Precision::kFloat32;
  ThreadChoice threads_;
  std::vector<std::unique_ptr<Weights>> weights_;  // indexed by Precision, built on first use
  State<float> state_;                      // (H, 1) per layer
  std::vector<Eigen::VectorXf> gates_;      // L of (G*H): a step's gate pre-activations
  std::vector<Eigen::VectorXf> recurrent_;  // L of (G*H): the cell's step workspace
  Eigen::VectorXf previous_;                // with zoneout: (2H) h_{t-1}, c_{t-1} of the layer stepping
  std::vector<Eigen::VectorXf> summed_;     // residual connections: L of (H), y^l = h^l + x^l
  Eigen::VectorXf embedded_;                // (E) embedding input: the symbol's encoder row
  Eigen::VectorXf outputs_;                 // (O)
  Batch<float> prime_batch_;                // T = prime length, B = 1
  ModelCache<float> prime_cache_;
};

}  // namespace bptt
