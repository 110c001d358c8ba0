// bptt_onednn: the oneDNN anchor of bench/run. The same character-level language model and the
// same training step as bptt_bench train and the PyTorch anchor (../shared/anchors/torch_charlstm.py,
// bench/torch_cells.py), built from oneDNN's RNN primitives; prints one JSON line with the
// PyTorch anchor's keys.
//
//   bptt_onednn --corpus FILE --cell lstm|gru|rnn-tanh --layers L --hidden H --seq T --batch B
//               --steps N --warmup W --threads N [--sample LEN --sample-repeats R] [--lr 2e-3]
//   bptt_onednn --sample-only --corpus FILE --cell lstm --layers L --hidden H --sample LEN
//               --sample-repeats R --threads N
//
// Model: vocabulary = the corpus's distinct bytes, last 10% held out; one-hot input; L layers of
// H units; linear decoder; softmax cross-entropy averaged over all B*T outputs. Training: B
// streams at evenly spaced offsets of the training text, truncated BPTT over chunks of T with the
// state carried (detached) between chunks and reset to zero when the streams wrap; global-norm
// gradient clipping at 5; Adam (lr 2e-3, betas 0.9/0.999, eps 1e-8). train_chars_per_s =
// B*T*steps / seconds over --steps steps after --warmup untimed steps.
//
// oneDNN 2.6 builds a multi-layer RNN primitive only when the input width equals the hidden
// width, so every layer is its own single-layer primitive: layer 0 reads the one-hot input as a
// dense T x B x V tensor, the layers above read the T x B x H output of the layer below. LSTM runs
// lstm_forward/lstm_backward, GRU lbr_gru_forward/lbr_gru_backward (linear-before-reset, PyTorch's
// GRU), the tanh RNN vanilla_rnn_forward/vanilla_rnn_backward with eltwise_tanh. The decoder is
// dnnl_sgemm (forward and both backward products) with the bias, softmax and cross-entropy in
// plain loops. One bias per gate (oneDNN's cells have no second, recurrent bias; the
// linear-before-reset GRU has the fourth bias of its reset-gated recurrent term).
//
// Layouts: the parameters, their gradients and Adam's moments are kept in the plain layouts
// (weights ldigo, biases ldgo). The primitives are created with format_tag::any for the weights
// and their gradients; where a primitive picks another layout, the weights are reordered into
// it before every execution and the gradients reordered out of it after backward (the JSON names
// the layouts chosen). oneDNN accumulates into the gradients, so the buffers backward writes are
// zeroed before every backward.
//
// Sampling (--sample LEN, and alone with --sample-only): batch 1, forward_inference primitives
// with T = 1 created once (weights reordered once into their layout), the state carried from
// symbol to symbol, the decoder, softmax at temperature 1 and a multinomial draw (std::mt19937,
// seed 0); the drawn symbol is the next input. One untimed sample, then the best of
// --sample-repeats samples of LEN symbols, as bench/torch_cells.py --sample-only.
//
// "impl" names the oneDNN implementations that ran (primitive_desc::impl_info_str(); the same
// names ONEDNN_VERBOSE=1 prints).
#include <omp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Clock = std::chrono::steady_clock;
using Args = std::unordered_map<int, memory>;

enum class Cell { kLstm, kGru, kRnnTanh };

struct Options {
  std::string corpus, cell = "lstm";
  int layers = 2, hidden = 512, seq = 64, batch = 32, steps = 30, warmup = 3, threads = 2;
  int sample = 2000, sample_repeats = 5;
  double lr = 2e-3;
  bool sample_only = false;
};

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Parses the command line; throws std::invalid_argument with a one-line message on an unknown
// flag, a missing value or a value out of range.
Options Parse(int argc, char** argv) {
  Options o;
  const std::map<std::string, std::pair<int*, int>> ints = {
      {"--layers", {&o.layers, 1}},   {"--hidden", {&o.hidden, 1}},        {"--seq", {&o.seq, 1}},
      {"--batch", {&o.batch, 1}},     {"--steps", {&o.steps, 1}},          {"--warmup", {&o.warmup, 0}},
      {"--threads", {&o.threads, 1}}, {"--sample", {&o.sample, 0}},        {"--sample-repeats", {&o.sample_repeats, 1}}};
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--sample-only") {
      o.sample_only = true;
      continue;
    }
    if (flag != "--corpus" && flag != "--cell" && flag != "--lr" && !ints.count(flag))
      throw std::invalid_argument("unknown flag " + flag);
    if (i + 1 == argc) throw std::invalid_argument(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--corpus") {
      o.corpus = value;
    } else if (flag == "--cell") {
      if (value != "lstm" && value != "gru" && value != "rnn-tanh")
        throw std::invalid_argument("--cell " + value + ": expected lstm, gru or rnn-tanh");
      o.cell = value;
    } else if (flag == "--lr") {
      size_t used = 0;
      try {
        o.lr = std::stod(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != value.size() || !(o.lr > 0)) throw std::invalid_argument("--lr " + value + ": expected a positive number");
    } else {
      const auto [target, minimum] = ints.at(flag);
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), *target);
      if (error != std::errc() || end != value.data() + value.size() || *target < minimum)
        throw std::invalid_argument(flag + " " + value + ": expected an integer >= " + std::to_string(minimum));
    }
  }
  if (o.corpus.empty()) throw std::invalid_argument("--corpus is required");
  if (o.sample_only && o.sample == 0) throw std::invalid_argument("--sample-only needs --sample >= 1");
  return o;
}

Cell ParseCell(const std::string& name) {
  if (name == "lstm") return Cell::kLstm;
  if (name == "gru") return Cell::kGru;
  return Cell::kRnnTanh;
}

int Gates(Cell c) { return c == Cell::kLstm ? 4 : c == Cell::kGru ? 3 : 1; }
int BiasGates(Cell c) { return c == Cell::kRnnTanh ? 1 : 4; }  // lbr-GRU: 3 gates + 1

// The corpus as symbol ids (vocabulary = its distinct bytes, in byte order) and the vocabulary size.
std::pair<std::vector<int>, int> LoadCorpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::array<int, 256> id;
  id.fill(-1);
  for (unsigned char c : text) id[c] = 0;
  int vocab = 0;
  for (int& i : id) {
    if (i == 0) i = vocab++;
  }
  std::vector<int> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = id[static_cast<unsigned char>(text[i])];
  return {std::move(ids), vocab};
}

// A memory descriptor's layout in oneDNN's notation: the dimensions as letters (a, b, ... in
// the order of the dims; for RNN weights a..e = l, d, i, g, o) from the outermost stride to the
// innermost, then any inner blocks (e.g. "abcde" = ldigo, "abdec" = ldgoi, "abcde4c16e");
// "rnn_packed" for the packed inference layout.
std::string Layout(const memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind == dnnl_format_kind_rnn_packed) return "rnn_packed";
  if (d.format_kind != dnnl_blocked) return "other";
  const dnnl_blocking_desc_t& blocking = d.format_desc.blocking;
  std::vector<int> order(d.ndims);
  for (int i = 0; i < d.ndims; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return blocking.strides[a] > blocking.strides[b]; });
  std::string text;
  for (int i : order) text += static_cast<char>('a' + i);
  for (int i = 0; i < blocking.inner_nblks; ++i)
    text += std::to_string(blocking.inner_blks[i]) + static_cast<char>('a' + blocking.inner_idxs[i]);
  return text;
}

memory::desc Md(const dnnl::primitive_desc& pd, int arg) { return pd.query_md(dnnl::query::exec_arg_md, arg); }

// A reorder executed with its two memories.
struct Copy {
  dnnl::reorder reorder;
  memory from, to;
  void Run(dnnl::stream& s) { reorder.execute(s, from, to); }
};

// The memory a primitive reads in layout `wanted` for `plain`: `plain` itself when the layouts
// agree, else a buffer in `wanted` that a reorder in `copies` fills from `plain`.
memory In(const memory::desc& wanted, const memory& plain, std::vector<Copy>& copies) {
  if (wanted == plain.get_desc()) return plain;
  memory m(wanted, plain.get_engine());
  copies.push_back({dnnl::reorder(plain, m), plain, m});
  return m;
}

// The memory a primitive writes in layout `wanted` for `plain`: `plain` itself when the layouts
// agree, else a buffer in `wanted` that a reorder in `copies` copies into `plain`.
memory Out(const memory::desc& wanted, const memory& plain, std::vector<Copy>& copies) {
  if (wanted == plain.get_desc()) return plain;
  memory m(wanted, plain.get_engine());
  copies.push_back({dnnl::reorder(m, plain), m, plain});
  return m;
}

void Zero(const memory& m) { std::memset(m.get_data_handle(), 0, m.get_desc().get_size()); }

// One parameter tensor: value, gradient and Adam's two moments, in the plain layout `md`.
struct Param {
  memory::desc md;
  std::vector<float> w, g, m, v;
  Param(const memory::desc& plain, std::mt19937& rng, float bound) : md(plain) {
    const size_t n = md.get_size() / sizeof(float);
    std::uniform_real_distribution<float> u(-bound, bound);
    w.resize(n);
    for (float& x : w) x = u(rng);
    g.assign(n, 0.0f);
    m.assign(n, 0.0f);
    v.assign(n, 0.0f);
  }
  memory Value(const dnnl::engine& e) { return memory(md, e, w.data()); }
  memory Grad(const dnnl::engine& e) { return memory(md, e, g.data()); }
};

// The parameters of the model: per layer the input weights (ldigo, I x G x H), the recurrent
// weights (ldigo, H x G x H) and the bias (ldgo); the decoder's H x V weight and V bias.
struct Model {
  Cell cell;
  int layers, hidden, vocab;
  std::vector<Param> weights_layer, weights_iter, bias;
  std::vector<Param> decoder;  // [0]: H x V weight (row-major), [1]: V bias

  Model(Cell c, int L, int H, int V) : cell(c), layers(L), hidden(H), vocab(V) {
    std::mt19937 rng(0);
    const float bound = 1.0f / std::sqrt(static_cast<float>(H));  // PyTorch's default initialisation
    const memory::dim G = Gates(c);
    for (int l = 0; l < L; ++l) {
      const memory::dim in = l == 0 ? V : H;
      weights_layer.emplace_back(memory::desc({1, 1, in, G, H}, memory::data_type::f32, Tag::ldigo), rng, bound);
      weights_iter.emplace_back(memory::desc({1, 1, H, G, H}, memory::data_type::f32, Tag::ldigo), rng, bound);
      bias.emplace_back(memory::desc({1, 1, BiasGates(c), H}, memory::data_type::f32, Tag::ldgo), rng, bound);
    }
    decoder.emplace_back(memory::desc({H, V}, memory::data_type::f32, Tag::ab), rng, bound);
    decoder.emplace_back(memory::desc({V}, memory::data_type::f32, Tag::a), rng, bound);
  }

  std::vector<Param*> All() {
    std::vector<Param*> all;
    for (int l = 0; l < layers; ++l) {
      all.push_back(&weights_layer[l]);
      all.push_back(&weights_iter[l]);
      all.push_back(&bias[l]);
    }
    for (Param& p : decoder) all.push_back(&p);
    return all;
  }
};

// The memory descriptors of one single-layer RNN primitive; weights (and their gradients) any.
struct LayerDescs {
  memory::desc src_layer, src_iter, src_iter_c, weights_layer, weights_iter, bias, dst_layer, dst_iter, dst_iter_c;
  LayerDescs(Cell cell, memory::dim T, memory::dim N, memory::dim in, memory::dim H) {
    const auto f32 = memory::data_type::f32;
    const memory::dim G = Gates(cell);
    src_layer = memory::desc({T, N, in}, f32, Tag::tnc);
    dst_layer = memory::desc({T, N, H}, f32, Tag::tnc);
    src_iter = dst_iter = memory::desc({1, 1, N, H}, f32, Tag::ldnc);
    if (cell == Cell::kLstm) src_iter_c = dst_iter_c = src_iter;
    weights_layer = memory::desc({1, 1, in, G, H}, f32, Tag::any);
    weights_iter = memory::desc({1, 1, H, G, H}, f32, Tag::any);
    bias = memory::desc({1, 1, BiasGates(cell), H}, f32, Tag::ldgo);
  }
};

dnnl::primitive_desc ForwardDesc(Cell cell, dnnl::prop_kind kind, const LayerDescs& d, const dnnl::engine& e) {
  const auto dir = dnnl::rnn_direction::unidirectional_left2right;
  switch (cell) {
    case Cell::kLstm:
      return dnnl::lstm_forward::primitive_desc(
          dnnl::lstm_forward::desc(kind, dir, d.src_layer, d.src_iter, d.src_iter_c, d.weights_layer, d.weights_iter,
                                   d.bias, d.dst_layer, d.dst_iter, d.dst_iter_c),
          e);
    case Cell::kGru:
      return dnnl::lbr_gru_forward::primitive_desc(
          dnnl::lbr_gru_forward::desc(kind, dir, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias,
                                      d.dst_layer, d.dst_iter),
          e);
    case Cell::kRnnTanh:
      return dnnl::vanilla_rnn_forward::primitive_desc(
          dnnl::vanilla_rnn_forward::desc(kind, dnnl::algorithm::eltwise_tanh, dir, d.src_layer, d.src_iter,
                                          d.weights_layer, d.weights_iter, d.bias, d.dst_layer, d.dst_iter),
          e);
  }
  throw std::logic_error("unknown cell");
}

// A primitive descriptor handle of its own (the C++ wrappers taking a C handle own it).
dnnl_primitive_desc_t Clone(const dnnl::primitive_desc& pd) {
  dnnl_primitive_desc_t copy = nullptr;
  dnnl::error::wrap_c_api(dnnl_primitive_desc_clone(&copy, pd.get()), "could not clone a primitive descriptor");
  return copy;
}

dnnl::primitive_desc BackwardDesc(Cell cell, const LayerDescs& d, const dnnl::primitive_desc& fwd,
                                  const dnnl::engine& e) {
  const auto dir = dnnl::rnn_direction::unidirectional_left2right;
  const auto bwd = dnnl::prop_kind::backward;
  switch (cell) {
    case Cell::kLstm:
      return dnnl::lstm_backward::primitive_desc(
          dnnl::lstm_backward::desc(bwd, dir, d.src_layer, d.src_iter, d.src_iter_c, d.weights_layer, d.weights_iter,
                                    d.bias, d.dst_layer, d.dst_iter, d.dst_iter_c, d.src_layer, d.src_iter,
                                    d.src_iter_c, d.weights_layer, d.weights_iter, d.bias, d.dst_layer, d.dst_iter,
                                    d.dst_iter_c),
          e, dnnl::lstm_forward::primitive_desc(Clone(fwd)));
    case Cell::kGru:
      return dnnl::lbr_gru_backward::primitive_desc(
          dnnl::lbr_gru_backward::desc(bwd, dir, d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias,
                                       d.dst_layer, d.dst_iter, d.src_layer, d.src_iter, d.weights_layer,
                                       d.weights_iter, d.bias, d.dst_layer, d.dst_iter),
          e, dnnl::lbr_gru_forward::primitive_desc(Clone(fwd)));
    case Cell::kRnnTanh:
      return dnnl::vanilla_rnn_backward::primitive_desc(
          dnnl::vanilla_rnn_backward::desc(bwd, dnnl::algorithm::eltwise_tanh, dir, d.src_layer, d.src_iter,
                                           d.weights_layer, d.weights_iter, d.bias, d.dst_layer, d.dst_iter,
                                           d.src_layer, d.src_iter, d.weights_layer, d.weights_iter, d.bias,
                                           d.dst_layer, d.dst_iter),
          e, dnnl::vanilla_rnn_forward::primitive_desc(Clone(fwd)));
  }
  throw std::logic_error("unknown cell");
}

// Softmax of `logits` (rows of V) in place, plus `bias`; returns the summed cross-entropy
// against `targets` and leaves (softmax - one-hot) * scale in `logits`.
double SoftmaxCrossEntropy(float* logits, const float* bias, const int* targets, int rows, int V, float scale) {
  double loss = 0;
#pragma omp parallel for reduction(+ : loss)
  for (int r = 0; r < rows; ++r) {
    float* z = logits + static_cast<size_t>(r) * V;
    float top = -INFINITY;
    for (int v = 0; v < V; ++v) {
      z[v] += bias[v];
      top = std::max(top, z[v]);
    }
    float sum = 0;
    for (int v = 0; v < V; ++v) {
      z[v] = std::exp(z[v] - top);
      sum += z[v];
    }
    loss += std::log(sum) - std::log(z[targets[r]]);
    for (int v = 0; v < V; ++v) z[v] = z[v] / sum * scale;
    z[targets[r]] -= scale;
  }
  return loss;
}

// The training step, its primitives and buffers.
class Trainer {
 public:
  Trainer(Model& model, const std::vector<int>& train, int T, int B, double lr, const dnnl::engine& e)
      : model_(model), train_(train), T_(T), B_(B), lr_(lr), stream_(e) {
    const int L = model.layers, H = model.hidden, V = model.vocab;
    stream_length_ = (static_cast<int64_t>(train.size()) - 1) / B;
    if (stream_length_ < T) throw std::runtime_error("the corpus is too short for --batch and --seq");
    targets_.resize(static_cast<size_t>(T) * B);
    logits_.resize(static_cast<size_t>(T) * B * V);
    layers_.resize(L);
    for (int l = 0; l < L; ++l) {
      Layer& y = layers_[l];
      const LayerDescs d(model.cell, T, B, l == 0 ? V : H, H);
      y.fwd_pd = ForwardDesc(model.cell, dnnl::prop_kind::forward_training, d, e);
      y.bwd_pd = BackwardDesc(model.cell, d, y.fwd_pd, e);
      y.fwd = dnnl::primitive(y.fwd_pd);
      y.bwd = dnnl::primitive(y.bwd_pd);
      y.src_layer = l == 0 ? memory(d.src_layer, e) : layers_[l - 1].dst_layer;
      y.dst_layer = memory(d.dst_layer, e);
      y.diff_src_layer = l == 0 ? memory(d.src_layer, e) : layers_[l - 1].diff_dst_layer;
      y.diff_dst_layer = memory(d.dst_layer, e);
      y.workspace = memory(y.fwd_pd.query_md(dnnl::query::workspace_md), e);
      const bool lstm = model.cell == Cell::kLstm;
      for (memory* m : {&y.src_iter, &y.dst_iter, &y.diff_src_iter, &y.diff_dst_iter}) *m = memory(d.src_iter, e);
      if (lstm) {
        for (memory* m : {&y.src_iter_c, &y.dst_iter_c, &y.diff_src_iter_c, &y.diff_dst_iter_c})
          *m = memory(d.src_iter, e);
      }
      // The first chunk starts from a zero state; no gradient flows into a chunk from the next
      // one (truncated BPTT).
      Zero(y.src_iter);
      Zero(y.diff_dst_iter);
      if (lstm) {
        Zero(y.src_iter_c);
        Zero(y.diff_dst_iter_c);
      }
      Param &wl = model.weights_layer[l], &wi = model.weights_iter[l], &b = model.bias[l];
      y.fwd_args = {{DNNL_ARG_SRC_LAYER, y.src_layer},
                    {DNNL_ARG_SRC_ITER, y.src_iter},
                    {DNNL_ARG_WEIGHTS_LAYER, In(Md(y.fwd_pd, DNNL_ARG_WEIGHTS_LAYER), wl.Value(e), y.before_fwd)},
                    {DNNL_ARG_WEIGHTS_ITER, In(Md(y.fwd_pd, DNNL_ARG_WEIGHTS_ITER), wi.Value(e), y.before_fwd)},
                    {DNNL_ARG_BIAS, In(Md(y.fwd_pd, DNNL_ARG_BIAS), b.Value(e), y.before_fwd)},
                    {DNNL_ARG_DST_LAYER, y.dst_layer},
                    {DNNL_ARG_DST_ITER, y.dst_iter},
                    {DNNL_ARG_WORKSPACE, y.workspace}};
      y.diff_weights = {Out(Md(y.bwd_pd, DNNL_ARG_DIFF_WEIGHTS_LAYER), wl.Grad(e), y.after_bwd),
                        Out(Md(y.bwd_pd, DNNL_ARG_DIFF_WEIGHTS_ITER), wi.Grad(e), y.after_bwd),
                        Out(Md(y.bwd_pd, DNNL_ARG_DIFF_BIAS), b.Grad(e), y.after_bwd)};
      y.bwd_args = y.fwd_args;
      y.bwd_args[DNNL_ARG_WEIGHTS_LAYER] = In(Md(y.bwd_pd, DNNL_ARG_WEIGHTS_LAYER), wl.Value(e), y.before_bwd);
      y.bwd_args[DNNL_ARG_WEIGHTS_ITER] = In(Md(y.bwd_pd, DNNL_ARG_WEIGHTS_ITER), wi.Value(e), y.before_bwd);
      y.bwd_args[DNNL_ARG_BIAS] = In(Md(y.bwd_pd, DNNL_ARG_BIAS), b.Value(e), y.before_bwd);
      y.bwd_args.insert({{DNNL_ARG_DIFF_SRC_LAYER, y.diff_src_layer},
                         {DNNL_ARG_DIFF_SRC_ITER, y.diff_src_iter},
                         {DNNL_ARG_DIFF_DST_LAYER, y.diff_dst_layer},
                         {DNNL_ARG_DIFF_DST_ITER, y.diff_dst_iter},
                         {DNNL_ARG_DIFF_WEIGHTS_LAYER, y.diff_weights[0]},
                         {DNNL_ARG_DIFF_WEIGHTS_ITER, y.diff_weights[1]},
                         {DNNL_ARG_DIFF_BIAS, y.diff_weights[2]}});
      if (lstm) {
        y.fwd_args.insert({{DNNL_ARG_SRC_ITER_C, y.src_iter_c}, {DNNL_ARG_DST_ITER_C, y.dst_iter_c}});
        y.bwd_args.insert({{DNNL_ARG_SRC_ITER_C, y.src_iter_c},
                           {DNNL_ARG_DST_ITER_C, y.dst_iter_c},
                           {DNNL_ARG_DIFF_SRC_ITER_C, y.diff_src_iter_c},
                           {DNNL_ARG_DIFF_DST_ITER_C, y.diff_dst_iter_c}});
      }
    }
  }

  // One step on the next chunk; returns its mean cross-entropy (nats per symbol).
  double Step() {
    const int L = model_.layers, H = model_.hidden, V = model_.vocab, TB = T_ * B_;
    if (offset_ + T_ > stream_length_) {  // the streams wrap: start again from a zero state
      offset_ = 0;
      for (Layer& y : layers_) {
        Zero(y.src_iter);
        if (y.src_iter_c) Zero(y.src_iter_c);
      }
    }
    // One-hot input (T x B x V) and targets (T x B).
    float* x = static_cast<float*>(layers_[0].src_layer.get_data_handle());
    std::fill_n(x, static_cast<size_t>(TB) * V, 0.0f);
    for (int t = 0; t < T_; ++t) {
      for (int b = 0; b < B_; ++b) {
        const int64_t at = b * stream_length_ + offset_ + t;
        x[(static_cast<size_t>(t) * B_ + b) * V + train_[at]] = 1.0f;
        targets_[t * B_ + b] = train_[at + 1];
      }
    }
    offset_ += T_;

    for (Layer& y : layers_) {
      for (Copy& c : y.before_fwd) c.Run(stream_);
      y.fwd.execute(stream_, y.fwd_args);
    }
    // Decoder: logits (TB x V) = top output (TB x H) x W (H x V), then bias, softmax, loss.
    Param &w = model_.decoder[0], &bias = model_.decoder[1];
    const float* top = static_cast<const float*>(layers_[L - 1].dst_layer.get_data_handle());
    Check(dnnl_sgemm('N', 'N', TB, V, H, 1.0f, top, H, w.w.data(), V, 0.0f, logits_.data(), V));
    const double loss = SoftmaxCrossEntropy(logits_.data(), bias.w.data(), targets_.data(), TB, V, 1.0f / TB) / TB;
    // Its gradients: dW = top^T dlogits, db = column sums of dlogits, dtop = dlogits W^T.
    Check(dnnl_sgemm('T', 'N', H, V, TB, 1.0f, top, H, logits_.data(), V, 0.0f, w.g.data(), V));
    std::fill(bias.g.begin(), bias.g.end(), 0.0f);
    for (int r = 0; r < TB; ++r) {
      for (int v = 0; v < V; ++v) bias.g[v] += logits_[static_cast<size_t>(r) * V + v];
    }
    float* dtop = static_cast<float*>(layers_[L - 1].diff_dst_layer.get_data_handle());
    Check(dnnl_sgemm('N', 'T', TB, H, V, 1.0f, logits_.data(), V, w.w.data(), V, 0.0f, dtop, H));

    for (int l = L - 1; l >= 0; --l) {
      Layer& y = layers_[l];
      for (const memory& m : y.diff_weights) Zero(m);  // backward accumulates into them
      for (Copy& c : y.before_bwd) c.Run(stream_);
      y.bwd.execute(stream_, y.bwd_args);
      for (Copy& c : y.after_bwd) c.Run(stream_);
    }
    stream_.wait();

    ClipAndAdam();
    // The state carried to the next chunk (detached: no gradient flows back into this one).
    for (Layer& y : layers_) {
      std::memcpy(y.src_iter.get_data_handle(), y.dst_iter.get_data_handle(), y.src_iter.get_desc().get_size());
      if (y.src_iter_c)
        std::memcpy(y.src_iter_c.get_data_handle(), y.dst_iter_c.get_data_handle(), y.src_iter_c.get_desc().get_size());
    }
    return loss;
  }

  nlohmann::json Describe() const {
    const Layer& y = layers_.back();
    return {{"impl_forward", y.fwd_pd.impl_info_str()},
            {"impl_backward", y.bwd_pd.impl_info_str()},
            {"weights_layout_forward", Layout(Md(y.fwd_pd, DNNL_ARG_WEIGHTS_ITER))},
            {"weights_layout_backward", Layout(Md(y.bwd_pd, DNNL_ARG_WEIGHTS_ITER))},
            {"diff_weights_layout", Layout(Md(y.bwd_pd, DNNL_ARG_DIFF_WEIGHTS_ITER))}};
  }

  static void Check(dnnl_status_t status) {
    if (status != dnnl_success) throw std::runtime_error("dnnl_sgemm failed");
  }

 private:
  struct Layer {
    dnnl::primitive_desc fwd_pd, bwd_pd;
    dnnl::primitive fwd, bwd;
    memory src_layer, dst_layer, diff_src_layer, diff_dst_layer, workspace;
    memory src_iter, dst_iter, diff_src_iter, diff_dst_iter;
    memory src_iter_c, dst_iter_c, diff_src_iter_c, diff_dst_iter_c;  // LSTM only
    std::vector<memory> diff_weights;  // the buffers backward writes: layer, iter, bias
    std::vector<Copy> before_fwd, before_bwd, after_bwd;
    Args fwd_args, bwd_args;
  };

  // Global-norm clipping at 5 and an Adam step over every parameter (plain layouts).
  void ClipAndAdam() {
    const std::vector<Param*> params = model_.All();
    double sum = 0;
    for (const Param* p : params) {
      const size_t n = p->g.size();
      const float* g = p->g.data();
#pragma omp parallel for reduction(+ : sum)
      for (size_t i = 0; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
    }
    const double norm = std::sqrt(sum);
    const float clip = norm > 5.0 ? static_cast<float>(5.0 / (norm + 1e-6)) : 1.0f;  // as torch's clip_grad_norm_
    ++adam_steps_;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float step = static_cast<float>(lr_ / (1 - std::pow(0.9, adam_steps_)));
    const float root_c2 = static_cast<float>(std::sqrt(1 - std::pow(0.999, adam_steps_)));
    for (Param* p : params) {
      const size_t n = p->w.size();
      float *w = p->w.data(), *g = p->g.data(), *m = p->m.data(), *v = p->v.data();
#pragma omp parallel for
      for (size_t i = 0; i < n; ++i) {
        const float gi = g[i] * clip;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        w[i] -= step * m[i] / (std::sqrt(v[i]) / root_c2 + eps);
      }
    }
  }

  Model& model_;
  const std::vector<int>& train_;
  const int T_, B_;
  const double lr_;
  dnnl::stream stream_;
  int64_t stream_length_ = 0, offset_ = 0;
  int adam_steps_ = 0;
  std::vector<Layer> layers_;
  std::vector<int> targets_;
  std::vector<float> logits_;
};

// Batch-1 sampling with forward_inference primitives of T = 1.
class Sampler {
 public:
  Sampler(Model& model, const dnnl::engine& e) : model_(model), stream_(e), probs_(model.vocab) {
    const int L = model.layers, H = model.hidden, V = model.vocab;
    layers_.resize(L);
    std::vector<Copy> once;
    for (int l = 0; l < L; ++l) {
      Layer& y = layers_[l];
      const LayerDescs d(model.cell, 1, 1, l == 0 ? V : H, H);
      y.pd = ForwardDesc(model.cell, dnnl::prop_kind::forward_inference, d, e);
      y.prim = dnnl::primitive(y.pd);
      y.src_layer = l == 0 ? memory(d.src_layer, e) : layers_[l - 1].dst_layer;
      y.dst_layer = memory(d.dst_layer, e);
      const bool lstm = model.cell == Cell::kLstm;
      // The state alternates between two buffers: step s reads state[s % 2] and writes the other.
      for (int s = 0; s < 2; ++s) {
        y.state[s] = memory(d.src_iter, e);
        if (lstm) y.cell_state[s] = memory(d.src_iter, e);
      }
      const memory wl = In(Md(y.pd, DNNL_ARG_WEIGHTS_LAYER), model.weights_layer[l].Value(e), once);
      const memory wi = In(Md(y.pd, DNNL_ARG_WEIGHTS_ITER), model.weights_iter[l].Value(e), once);
      const memory b = In(Md(y.pd, DNNL_ARG_BIAS), model.bias[l].Value(e), once);
      for (int s = 0; s < 2; ++s) {
        y.args[s] = {{DNNL_ARG_SRC_LAYER, y.src_layer}, {DNNL_ARG_SRC_ITER, y.state[s]},
                     {DNNL_ARG_WEIGHTS_LAYER, wl},      {DNNL_ARG_WEIGHTS_ITER, wi},
                     {DNNL_ARG_BIAS, b},                {DNNL_ARG_DST_LAYER, y.dst_layer},
                     {DNNL_ARG_DST_ITER, y.state[1 - s]}};
        if (lstm) y.args[s].insert({{DNNL_ARG_SRC_ITER_C, y.cell_state[s]}, {DNNL_ARG_DST_ITER_C, y.cell_state[1 - s]}});
      }
    }
    for (Copy& c : once) c.Run(stream_);  // the weights into the primitives' layouts, once
    stream_.wait();
  }

  // Seconds to sample `length` symbols from a zero state, starting from symbol 0.
  double Seconds(int length) {
    const int L = model_.layers, H = model_.hidden, V = model_.vocab;
    for (Layer& y : layers_) {
      Zero(y.state[0]);
      if (y.cell_state[0]) Zero(y.cell_state[0]);
    }
    float* x = static_cast<float*>(layers_[0].src_layer.get_data_handle());
    const float* top = static_cast<const float*>(layers_[L - 1].dst_layer.get_data_handle());
    const float *w = model_.decoder[0].w.data(), *bias = model_.decoder[1].w.data();
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::fill_n(x, V, 0.0f);
    int symbol = 0;
    const Clock::time_point t0 = Clock::now();
    for (int s = 0; s < length; ++s) {
      x[symbol] = 1.0f;
      for (Layer& y : layers_) y.prim.execute(stream_, y.args[s % 2]);
      stream_.wait();
      x[symbol] = 0.0f;
      Trainer::Check(dnnl_sgemm('N', 'N', 1, V, H, 1.0f, top, H, w, V, 0.0f, probs_.data(), V));
      float peak = -INFINITY;
      for (int v = 0; v < V; ++v) {
        probs_[v] += bias[v];
        peak = std::max(peak, probs_[v]);
      }
      float sum = 0;
      for (int v = 0; v < V; ++v) sum += probs_[v] = std::exp(probs_[v] - peak);
      float u = uniform(rng_) * sum;
      symbol = V - 1;
      for (int v = 0; v < V; ++v) {
        u -= probs_[v];
        if (u < 0) {
          symbol = v;
          break;
        }
      }
    }
    return Since(t0);
  }

  std::string Impl() const { return layers_.back().pd.impl_info_str(); }
  std::string WeightsLayout() const { return Layout(Md(layers_.back().pd, DNNL_ARG_WEIGHTS_ITER)); }

 private:
  struct Layer {
    dnnl::primitive_desc pd;
    dnnl::primitive prim;
    memory src_layer, dst_layer;
    std::array<memory, 2> state, cell_state;  // cell_state: LSTM only
    std::array<Args, 2> args;
  };
  Model& model_;
  dnnl::stream stream_;
  std::vector<Layer> layers_;
  std::vector<float> probs_;
  std::mt19937 rng_{0};
};

std::string Version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = Parse(argc, argv);
    omp_set_num_threads(o.threads);
    const auto [ids, vocab] = LoadCorpus(o.corpus);
    const std::vector<int> train(ids.begin(), ids.end() - static_cast<int64_t>(ids.size() / 10));
    const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    Model model(ParseCell(o.cell), o.layers, o.hidden, vocab);
    nlohmann::json out = {{"impl", "onednn-" + Version()}, {"cell", o.cell},       {"hidden", o.hidden},
                          {"layers", o.layers},            {"threads", o.threads}, {"vocab", vocab}};
    std::string impl;
    if (!o.sample_only) {
      Trainer trainer(model, train, o.seq, o.batch, o.lr, engine);
      double loss = 0;
      for (int s = 0; s < o.warmup; ++s) loss = trainer.Step();
      const Clock::time_point t0 = Clock::now();
      for (int s = 0; s < o.steps; ++s) loss = trainer.Step();
      const double seconds = Since(t0);
      const nlohmann::json described = trainer.Describe();
      impl = " fwd " + described["impl_forward"].get<std::string>() + " bwd " +
             described["impl_backward"].get<std::string>();
      out.update(described);
      out.update({{"seq", o.seq},
                  {"batch", o.batch},
                  {"steps", o.steps},
                  {"seconds", seconds},
                  {"train_chars_per_s", std::round(10.0 * o.steps * o.seq * o.batch / seconds) / 10},
                  {"loss", std::round(loss * 1e4) / 1e4}});
    }
    if (o.sample > 0) {
      Sampler sampler(model, engine);
      sampler.Seconds(o.sample);  // untimed
      double best = 1e30;
      for (int r = 0; r < o.sample_repeats; ++r) best = std::min(best, sampler.Seconds(o.sample));
      impl += " sample " + sampler.Impl();
      out.update({{"sample_chars_per_s", std::round(10.0 * o.sample / best) / 10},
                  {"sample_repeats", o.sample_repeats},
                  {"impl_sample", sampler.Impl()},
                  {"weights_layout_sample", sampler.WeightsLayout()}});
    }
    out["impl"] = out["impl"].get<std::string>() + impl;
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::invalid_argument& e) {
    std::cerr << "bptt_onednn: " << e.what() << "\n";
    return 2;
  } catch (const dnnl::error& e) {
    std::cerr << "bptt_onednn: oneDNN: " << e.what() << " (status " << e.status << ")\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bptt_onednn: " << e.what() << "\n";
    return 1;
  }
}
