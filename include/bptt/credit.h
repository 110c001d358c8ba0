// Credit assignment through time without BPTT's stored past: the online gradient algorithms,
// and their gradient measured against exact BPTT's.
//
// A one-layer recurrent model carries the state S_t = [h_t; c_t] (N = H, or 2H for a cell with a
// cell state) from step to step, S_t = F(S_{t-1}, W_ih x_t; θ), where θ is the layer's P
// parameters (weight_ih included: the input projection's gradient flows through time too). The
// gradient of the chunk's loss is
//   dL/dθ = Σ_t c_t · dS_t/dθ,   c_t = dL_t/dS_t (the loss at step t only: W_dec^T e_t on h)
// and the sensitivity M_t = dS_t/dθ (N, P) obeys the forward recurrence
//   M_t = J_t M_{t-1} + I_t,     J_t = ∂S_t/∂S_{t-1} (N, N),  I_t = ∂S_t/∂θ (N, P) (one step)
// from M_0 = 0 at the start of the truncation. The algorithms differ in how much of M they keep:
//
//   bptt   the reverse sweep over the chunk's stored caches (model.h Backward): exact
//   rtrl   M itself (Williams & Zipser 1989): exact; O(N P) memory, O(N^2 P) time per step
//   uoro   a rank-one M ≈ s̃ θ̃^T, unbiased (Tallec & Ollivier 2017): one JVP and one VJP per step
//            with random signs ν: s̃ ← ρ0 J s̃ + ρ1 ν,  θ̃ ← θ̃/ρ0 + ν^T I / ρ1,
//            ρ0 = sqrt(|θ̃| / |J s̃|),  ρ1 = sqrt(|ν^T I| / |ν|)
//   snap1  SnAp-1 (Menick et al. 2021): M on the pattern of I, each parameter's sensitivity kept
//            for the state entries of the unit its row belongs to, J reduced to its unit-diagonal
//            blocks (h_u, c_u): O(P) memory
//   snap2  SnAp-2: M on the pattern of J I + I, each parameter's sensitivity kept for the state
//            entries of its unit and of the units whose rows of weight_hh read it (nonzero); J
//            whole on that pattern. With a dense weight_hh that is every entry, and SnAp-2 is RTRL;
//            it approximates where weight_hh is sparse (bptt prune). M is stored whole here (RTRL's
//            memory), its product taken on the pattern alone: O(d^2 N^2 P) at density d instead of
//            N^2 P, beside the N VJPs and O(N P) copies per step it shares with RTRL
//   rflo   random-feedback-free local online learning (Murray 2019) for cells whose state leaks
//            (a path from h_{t-1} to h_t outside weight_hh: GRU, minGRU, minLSTM): the trace of
//            SnAp-1 with J without the recurrent matrix, only the leak
//   eprop  e-prop's eligibility traces (Bellec et al. 2020) for cells with a cell state (LSTM):
//            the same trace, J without the recurrent matrix: the cell state's own diagonal path
//            (f_t); the learning signal is c_t, the loss at step t only
//
// Every algorithm is built from the modes every cell has (cell.h), so one code serves the whole
// registry: a one-step chunk_backward from a cotangent v on S_t gives v^T J_t (the new dh, dc)
// and v^T I_t (the parameter gradient, weight_ih's from dgates), and the tangent mode gives J_t u.
// RTRL and SnAp-2 take N such VJPs (the rows of J_t and I_t). SnAp-1, RFLO and e-prop take one
// VJP per part of the state (h, and c) with v = all ones on that part: a parameter's row reaches
// one unit in one step, so the sum over the part is that unit's entry (the "colouring" of the
// SnAp paper); the recurrent matrix the VJP crosses back is weight_hh with each row kept only in
// its own unit's column (SnAp-1) or none (RFLO, e-prop), so the same VJP gives the diagonal
// blocks of J. Layer normalisation couples the units within a step, and such a model is refused
// by these three and by SnAp-2. tests/credit_test.cc proves RTRL equal to BPTT to 1e-10 for every
// cell, UORO unbiased, and SnAp-1, SnAp-2, RFLO and e-prop exact where their approximation drops
// nothing.
//
// The approximate algorithms are defined here for one recurrent layer with a symbol (one-hot) or
// dense input. RTRL also follows a stack whole (more than one layer, or an embedding): S_t is then
// every layer's state and θ every parameter but the head's, and the step's Jacobians come from
// the model's own one-step backward pass (model.h Backward, from a unit cotangent on the final
// state), N + 1 of them per step. The head is trained exactly (its gradient does not flow through
// time). The loss's
// gradient on a chunk's outputs comes from an ordinary forward pass over the chunk (for training,
// the steps between two updates); the algorithm then runs the chunk step by step, carrying only
// its own state (OnlineCredit) from step to step and from chunk to chunk.
//
//   OnlineCredit<float> online(Credit::kRtrl, config, B, seed);
//   double loss = OnlineGradient(config, params, batch, state, cache, online, grads, compute);
//   FinalState(config, cache, state);                 // carry to the next chunk, as online does
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bptt/batch.h"
#include "bptt/init.h"
#include "bptt/model.h"
#include "bptt/rng.h"

namespace bptt {

enum class Credit { kBptt, kRtrl, kUoro, kSnap1, kSnap2, kRflo, kEprop };
std::string_view CreditName(Credit credit);  // "bptt", "rtrl", "uoro", "snap1", "snap2", "rflo", "eprop"
Credit ParseCredit(std::string_view name, std::string_view flag);  // throws bptt::Error
std::span<const Credit> Credits();  // every algorithm, bptt first
std::string CreditNames();          // "bptt, rtrl, uoro, snap1, snap2, rflo, eprop"

// Why `credit` is not defined for this model, or "" when it is.
std::string CreditRefusal(Credit credit, const ModelConfig& config);

// The bytes an algorithm keeps for B streams, in scalars of `scalar_bytes`: for an online one, what
// it carries from step to step (RTRL's sensitivities B N P, UORO's B (N + P), the traces B K P of
// SnAp-1, RFLO and e-prop, K the parts of the state) and one step's Jacobians (RTRL: N (N + P));
// for bptt, the layer's caches and backward buffers over T steps (cell.h declarations).
double CreditBytes(Credit credit, const ModelConfig& config, int T, int B, size_t scalar_bytes);

// Throws bptt::Error when `credit` is not defined for the model (CreditRefusal), or when its
// memory (CreditBytes) is above available_bytes (0: not checked), saying how much it would need.
void CheckCredit(Credit credit, const ModelConfig& config, int B, size_t scalar_bytes, uint64_t available_bytes);

// The tensors an online algorithm carries for B streams, as a checkpoint stores them (by name,
// with their shapes): uoro's "state_factor" (N, B) and "param_factor" (P, B), the others'
// "sensitivity" (B, R, P), R = N for rtrl and snap2, K for the traces (OnlineCredit below).
std::vector<std::pair<std::string, std::vector<int64_t>>> CarriedCreditShapes(Credit credit, const ModelConfig& config,
                                                                             int64_t B);

// The state an online algorithm carries between steps, for B streams. Reset() starts a new
// truncation (M = 0); the state of the network itself is the caller's (model.h State).
template <typename S>
struct OnlineCredit {
  Credit credit = Credit::kRtrl;
  Eigen::Index B = 0, N = 0, P = 0;
  Eigen::Index K = 1;               // parts of the state: h, and c for a cell with a cell state
  std::vector<Mat<S>> sensitivity;  // rtrl, snap2: B of (N, P) M; snap1, rflo, eprop: B of (K, P), row k the
                                    //   sensitivity of part k of the state of each parameter's unit
  Mat<S> state_factor;              // uoro: (N, B) s̃
  Mat<S> param_factor;              // uoro: (P, B) θ̃
  Rng rng;                          // uoro: the signs ν

  // Throws bptt::Error as CheckCredit (memory unchecked) for bptt or an undefined combination.
  OnlineCredit(Credit credit, const ModelConfig& config, Eigen::Index B, uint64_t seed);
  void Reset();
};

// One chunk from the state `initial`: the forward pass over the batch into `cache` (from which
// FinalState takes the state to carry, as after Forward), the head's loss (returned) and
// gradient, and the algorithm's estimate of the layer's gradient, all added to grads (the
// decoder's exact). `online` carries its own state from the previous chunk.
template <typename S>
double OnlineGradient(const ModelConfig& config, const ModelParams<S>& params, const Batch<S>& batch,
                      const State<S>& initial, ModelCache<S>& cache, OnlineCredit<S>& online, ModelParams<S>& grads,
                      Compute compute);

// ---- Measurement: `bptt credit` -------------------------------------------------------------
// On one model and one batch, from the zero state: each algorithm's gradient of the layer against
// BPTT's, per tensor and for the layer, its time per step and memory, and its lag profile.

struct CreditOptions {
  std::vector<Credit> algorithms;  // empty: every one defined for the model
  int uoro_draws = 100;            // UORO: the mean over this many draws is measured too
  int lags = 16;                   // the lag profile up to this lag (0 = none)
  uint64_t seed = 1;               // UORO's signs
  int threads = 1;
};

// An algorithm's gradient against BPTT's on one tensor (or a whole layer): the cosine of the
// angle between them and |g - g_bptt| / |g_bptt|.
struct Alignment {
  std::string name;
  double cosine = 0, rel_error = 0;
};

struct CreditRow {
  std::string algorithm;         // "uoro x100" for the mean over draws
  std::vector<Alignment> tensors;  // the recurrent layer's tensors, then "layer 0" over all of them
  double seconds_per_step = 0;   // wall time of the gradient over the chunk / T
  double bytes = 0;              // CreditBytes in double
  // The lag profile, τ = 0, 1, ...: the gradient of the last step's loss through the parameters'
  // use at step T-1-τ alone (I_t of that step only), against exact (RTRL's, which is BPTT's):
  // how well the algorithm carries credit over τ steps. Empty for bptt.
  std::vector<double> lag_cosine, lag_rel_error;
};

struct CreditReport {
  std::string model;  // "lstm 1x32, one-hot 65"
  int T = 0, B = 0;
  int64_t parameters = 0;  // of the recurrent layer (P)
  double loss = 0;
  std::vector<CreditRow> rows;  // bptt first
  std::vector<std::string> refused;  // "rflo: ..." for the algorithms not defined for the model

  nlohmann::json ToJson() const;
};

// What an algorithm costs at one hidden size: wall time per step and memory (CreditBytes).
struct CreditCost {
  int hidden_size = 0;
  std::string algorithm;
  double seconds_per_step = 0, bytes = 0;
};

// Every algorithm's gradient of the loss on the batch from the zero state, against BPTT's, in
// double. Throws bptt::Error when an asked algorithm is not defined for the model.
CreditReport CompareCredit(const ModelConfig& config, const ModelParams<double>& params, const Batch<double>& batch,
                           const CreditOptions& options);

// The cost against the hidden size: for each H of hidden_sizes, a fresh model of `config` at that
// size (initialised by `init` from options.seed) on T steps of B sequences of uniform symbols,
// every algorithm of options.algorithms (empty: every one defined) timed over the chunk, the
// fastest of three runs, in double: the O(n^2) per step of UORO, SnAp-1, RFLO, e-prop (and of
// BPTT), RTRL's O(n^4) (its N VJPs and the product J M) and O(n^3) memory, as measured.
std::vector<CreditCost> MeasureCreditCost(const ModelConfig& config, const InitOptions& init,
                                          std::span<const int> hidden_sizes, int T, int B,
                                          const CreditOptions& options);

// The figure of `bptt credit --svg`: the lag profile of the report (cosine and relative error
// against the lag, one line per algorithm), and, when `cost` is not empty, time and memory per
// step against the hidden size on log-log axes.
std::string RenderCreditFigure(const CreditReport& report, std::span<const CreditCost> cost);

}  // namespace bptt
