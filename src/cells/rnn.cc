// The Elman RNN cell, in PyTorch's nn.RNN form, with a choice of activation:
//   a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
//   h_t = act(a_t),   act in {tanh, sigmoid, relu}
// (PyTorch offers tanh and relu; sigmoid is here to show its derivative bound of 1/4 per step.)
// Three registry rows, one per activation, share the tensors and the four modes below, in the
// order of cell.h: the declarations, the pointwise pass, chunk forward, step, chunk backward and
// tangent.
#include "bptt/cell.h"
#include "kernels/activation.h"
#include "kernels/packed_gemm.h"
#include "kernels/threads.h"

namespace bptt::cells {

namespace {

using namespace extent;

// Parameters, in PyTorch's nn.RNN layout (G = 1).
constexpr ParamDecl kParams[] = {
    {"weight_ih", kGH, kE, TensorRole::kWeight},  // W_ih
    {"weight_hh", kGH, kH, TensorRole::kWeight},  // W_hh
    {"bias_ih", kGH, k1, TensorRole::kBias},      // b_ih
    {"bias_hh", kGH, k1, TensorRole::kBias},      // b_hh
};
constexpr size_t kWeightHh = Slot(kParams, "weight_hh"), kBiasIh = Slot(kParams, "bias_ih"),
                 kBiasHh = Slot(kParams, "bias_hh");

// The cache: the activations are h_t itself, kept in gates.
constexpr BufferDecl kCache[] = {
    {"gates", kGH, kTB},  // in: W_ih x_t; out: h_t
    {"h", kH, kT1B},      // h_0 .. h_T
};

constexpr BufferDecl kBackward[] = {
    {"dgates", kGH, kTB},                  // dL/da_t
    {"dh", kH, kB},                        // dL/dh_t as the sweep reaches step t
    {"dh_steps", kH, kTB, When::kRecord},  // dL/dh_t of every step
};

template <typename S>
using Vec = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <typename S>
using ConstVec = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

// An activation: its value and its derivative from its output y (activation.h).
struct TanhAct {
  template <typename X> static auto Value(const X& x) { return Tanh(x); }
  template <typename Y> static auto Grad(const Y& y) { return TanhGradFromOutput(y); }
};
struct SigmoidAct {
  template <typename X> static auto Value(const X& x) { return Sigmoid(x); }
  template <typename Y> static auto Grad(const Y& y) { return SigmoidGradFromOutput(y); }
};
struct ReluAct {
  template <typename X> static auto Value(const X& x) { return Relu(x); }
  template <typename Y> static auto Grad(const Y& y) { return ReluGradFromOutput(y); }
};

// One stream's step after the recurrent product. a (H) in: W_ih x_t + W_hh h_{t-1}; out: h_t,
// which is also written to h (H).
template <typename Act, typename S>
void Pointwise(Eigen::Index H, S* a, const RecurrentParams<S>& p, S* h) {
  Vec<S> v(a, H);
  v += ConstVec<S>(p[kBiasIh].data(), H);
  v += ConstVec<S>(p[kBiasHh].data(), H);
  v = Act::Value(v);
  Vec<S>(h, H) = v;
}

// Per step t, shared between the threads as StepShare (packed_gemm.h) says:
//   a_t = gates_t + W_hh h_{t-1}            (H, B)  one product over the packed W_hh
//   then Pointwise on each column.
// With the loop's regularisers (cell.h) the product reads m ⊙ h_{t-1}, and zoneout blends
// h_t = d_t h_{t-1} + (1 - d_t) h̃_t after Pointwise (gates keeps h̃_t).
template <bool kLoop, typename Act, typename S>
void ChunkForwardOf(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute) {
  const int threads = compute.threads;
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const LoopRegularisers<S>& loop = cache.loop;
  const bool drop = kLoop && loop.recurrent_mask;
  if (drop) EnsureShape(cache.h_dropped, H, T * B);
  Pack(p.weight_hh(), false, compute.products, cache.packed_hh);
#pragma omp parallel num_threads(threads)
  {
    const StepShare share(H, B);
    const Eigen::Index j0 = share.j0, nb = share.j1 - share.j0;
    if (drop) {
      cache.DropProductInput(0, j0, share.j1);
      share.Join();
    }
    for (Eigen::Index t = 0; t < T && share.active(); ++t) {
      auto a = cache.Step(cache.gates(), t);
      share.Product(cache.packed_hh, kLoop ? cache.ProductInput(t) : cache.Step(cache.h(), t).data(), H, a.data(), H,
                    true);
      share.Join();
      for (Eigen::Index b = share.j0; b < share.j1; ++b)
        Pointwise<Act>(H, a.col(b).data(), p, cache.Step(cache.h(), t + 1).col(b).data());
      if constexpr (kLoop) {
        if (loop.h.on())
          loop.h.Forward(H, 0, t * B + j0, cache.Step(cache.h(), t).middleCols(j0, nb).array(),
                         cache.Step(cache.h(), t + 1).middleCols(j0, nb).array());
        if (drop && t + 1 < T) cache.DropProductInput(t + 1, j0, share.j1);
      }
      share.Join();
    }
  }
}

template <typename Act, typename S>
void ChunkForward(const RecurrentParams<S>& p, LayerCache<S>& cache, Compute compute) {
  if (cache.loop.any()) ChunkForwardOf<true, Act>(p, cache, compute);
  else ChunkForwardOf<false, Act>(p, cache, compute);
}

// One stream: a += W_hh h_{t-1}, then Pointwise.
template <typename Act>
void Step(const RecurrentParams<float>& p, const StepProduct& w_hh, float* a, float*, float* h, float*) {
  w_hh(h, a, true);
  Pointwise<Act>(p.hidden_size(), a, p, h);
}

// Per step t = T..1 (shared between the threads as StepShare says), with
// dh = dh_out_t + (dL/dh_t through step t+1):
//   da = dh * act'(a_t)      from the output h̃_t (kept in gates): 1 - h^2, h (1 - h), or [h > 0]
//   dh_{t-1} = W_hh^T da     one product over the packed W_hh^T (back_hh^T: cell.h)
// After the sweep: dW_hh += da · [h_0 .. h_{T-1}]^T and db_ih, db_hh += sum over columns of da.
// With the loop's regularisers: zoneout first splits dh into (1 - d_t) dh, on to da, and
// d_t dh, added to dh_{t-1}; recurrent dropout masks the product, dh_{t-1} = m ⊙ W_hh^T da
// (+ d_t dh), and dW_hh += da · [m ⊙ h_0 .. m ⊙ h_{T-1}]^T.
template <bool kLoop, typename Act, typename S>
void ChunkBackwardOf(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                     const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  const int threads = compute.threads;
  const Eigen::Index H = p.hidden_size(), B = cache.B, T = cache.T;
  const bool recur = back_hh.size() > 0;
  const LoopRegularisers<S>& loop = cache.loop;
  const bool drop = kLoop && loop.recurrent_mask && recur, zone = kLoop && loop.h.on();
  if (drop) EnsureShape(back.dh_dropped, H, B);
  if (zone) EnsureShape(back.dh_kept, H, B);
  if (recur) Pack(back_hh, true, compute.products, back.packed_hh_t);
#pragma omp parallel num_threads(threads)
  {
    const StepShare share(H, B);
    const Eigen::Index j0 = share.j0, nb = share.j1 - share.j0;
    auto dh = back.dh().middleCols(j0, nb);
    for (Eigen::Index t = T - 1; t >= 0 && share.active(); --t) {
      dh += dh_out.middleCols(t * B + j0, nb);
      if (back.record) back.dh_steps().middleCols(t * B + j0, nb) = dh;
      if (zone) loop.h.Backward(H, 0, t * B + j0, dh.array(), back.dh_kept.middleCols(j0, nb).array());
      auto da = back.dgates().middleCols(t * B + j0, nb);
      da = (dh.array() * Act::Grad(cache.Step(cache.gates(), t).middleCols(j0, nb))).matrix();
      share.Join();
      if (recur)
        share.Product(back.packed_hh_t, back.dgates().col(t * B).data(), H,
                      (drop ? back.dh_dropped : back.dh()).data(), H, false);
      else dh.setZero();
      share.Join();
      if (drop) back.DropProductGradient(loop.recurrent_mask, j0, share.j1, false);
      if (zone) dh += back.dh_kept.middleCols(j0, nb);
    }
  }
  if (kLoop && loop.recurrent_mask) SumProductOverTime(grad[kWeightHh], back.dgates(), cache.h_dropped, compute);
  else SumProductOverTime(grad[kWeightHh], back.dgates(), cache.h().leftCols(T * B), compute);
  SumColumnsOverTime(grad[kBiasIh], back.dgates());
  SumColumnsOverTime(grad[kBiasHh], back.dgates());
}

template <typename Act, typename S>
void ChunkBackward(const RecurrentParams<S>& p, const Mat<S>& back_hh, const LayerCache<S>& cache,
                   const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad, Compute compute) {
  if (cache.loop.any()) ChunkBackwardOf<true, Act>(p, back_hh, cache, dh_out, back, grad, compute);
  else ChunkBackwardOf<false, Act>(p, back_hh, cache, dh_out, back, grad, compute);
}

// The tangent of the forward pass, per step: dh_t = act'(a_t) * (W_hh dh_{t-1}); with the loop's
// regularisers W_hh (m ⊙ dh_{t-1}), then dh_t = d_t dh_{t-1} + (1 - d_t) dh̃_t.
template <typename Act, typename S>
void Tangent(const RecurrentParams<S>& p, const LayerCache<S>& cache, Mat<S>& dh, Mat<S>&) {
  const LoopRegularisers<S>& loop = cache.loop;
  const Eigen::Index H = p.hidden_size(), B = cache.B;
  Mat<S> da, next;
  for (Eigen::Index t = 0; t < cache.T; ++t) {
    if (loop.recurrent_mask)
      da.noalias() = p.weight_hh() * (Eigen::Map<const Mat<S>>(loop.recurrent_mask, H, B).array() * dh.array()).matrix();
    else da.noalias() = p.weight_hh() * dh;
    next = (Act::Grad(cache.Step(cache.gates(), t)) * da.array()).matrix();
    if (loop.h.on()) loop.h.Forward(H, 0, t * B, dh.array(), next.array());
    dh.swap(next);
  }
}

template <typename Act>
constexpr Cell Rnn(std::string_view name, double gamma, std::string_view torch) {
  return {
      .name = name,
      .gates = 1,
      .gate_names = "",
      .cell_state = false,
      .pascanu_gamma = gamma,
      .torch = torch,
      .params = kParams,
      .cache = kCache,
      .backward = kBackward,
      .f32 = {&ChunkForward<Act, float>, &ChunkBackward<Act, float>, &Tangent<Act, float>},
      .f64 = {&ChunkForward<Act, double>, &ChunkBackward<Act, double>, &Tangent<Act, double>},
      .step = &Step<Act>,
  };
}

}  // namespace

extern constinit const Cell kRnnTanh, kRnnSigmoid, kRnnRelu;
constinit const Cell kRnnTanh = Rnn<TanhAct>("rnn-tanh", 1.0, "nn.RNN(nonlinearity='tanh')");
constinit const Cell kRnnSigmoid = Rnn<SigmoidAct>("rnn-sigmoid", 0.25, "");
constinit const Cell kRnnRelu = Rnn<ReluAct>("rnn-relu", 1.0, "nn.RNN(nonlinearity='relu')");

}  // namespace bptt::cells
