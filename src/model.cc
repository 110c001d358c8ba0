#include "bptt/model.h"

#include "bptt/error.h"
#include "parallel_product.h"

namespace bptt {

void ModelConfig::Validate() const {
  if (vocab_size < 1) throw Error("vocabulary size must be positive");
  if (embed_size < 0) throw Error("--embed must be 0 (one-hot) or positive, got " + std::to_string(embed_size));
  if (hidden_size < 1) throw Error("--hidden must be positive, got " + std::to_string(hidden_size));
  if (layers < 1) throw Error("--layers must be positive, got " + std::to_string(layers));
  if (!(dropout >= 0.0 && dropout < 1.0)) throw Error("--dropout must be in [0, 1), got " + std::to_string(dropout));
}

template <typename S>
ModelParams<S> ModelParams<S>::Zeros(const ModelConfig& config) {
  ModelParams p;
  const Eigen::Index V = config.vocab_size, H = config.hidden_size;
  if (config.embed_size > 0) p.encoder = Mat<S>::Zero(V, config.embed_size);
  for (int l = 0; l < config.layers; ++l)
    p.layers.push_back(RecurrentParams<S>::Zeros(config.cell, l == 0 ? config.input_size() : H, H));
  p.decoder_weight = Mat<S>::Zero(V, H);
  p.decoder_bias = Mat<S>::Zero(V, 1);
  return p;
}

template <typename S>
int64_t ModelParams<S>::Count() const {
  int64_t n = 0;
  ForEach([&n](const std::string&, const Mat<S>& m) { n += m.size(); });
  return n;
}

template <typename S>
void ModelParams<S>::SetZero() {
  ForEach([](const std::string&, Mat<S>& m) { m.setZero(); });
}

template <typename S>
template <typename T>
ModelParams<T> ModelParams<S>::Cast() const {
  ModelParams<T> out;
  out.encoder = encoder.template cast<T>();
  for (const auto& l : layers)
    out.layers.push_back({l.weight_ih.template cast<T>(), l.weight_hh.template cast<T>(),
                          l.bias_ih.template cast<T>(), l.bias_hh.template cast<T>()});
  out.decoder_weight = decoder_weight.template cast<T>();
  out.decoder_bias = decoder_bias.template cast<T>();
  return out;
}

template <typename S>
State<S> State<S>::Zeros(const ModelConfig& config, Eigen::Index B) {
  State s;
  s.h.assign(config.layers, Mat<S>::Zero(config.hidden_size, B));
  if (config.cell == CellType::kLstm) s.c.assign(config.layers, Mat<S>::Zero(config.hidden_size, B));
  return s;
}

template <typename S>
void State<S>::SetZero() {
  for (auto& m : h) m.setZero();
  for (auto& m : c) m.setZero();
}

namespace {

// Input of layer l (l >= 1): the outputs h_1..h_T of layer l-1, after dropout when active.
template <typename S>
ConstMatRef<S> LayerInput(const ModelCache<S>& cache, size_t l) {
  if (!cache.dropout_mask.empty()) return cache.dropped[l - 1];
  return cache.layers[l - 1].h.rightCols(cache.T * cache.B);
}

}  // namespace

template <typename S>
void Forward(const ModelConfig& config, const ModelParams<S>& params, const Ids& inputs,
             Eigen::Index T, Eigen::Index B, const State<S>& initial, ModelCache<S>& cache,
             Rng* dropout_rng) {
  const Eigen::Index L = config.layers, H = config.hidden_size, TB = T * B;
  cache.T = T;
  cache.B = B;
  cache.layers.resize(L);
  const bool drop = dropout_rng != nullptr && config.dropout > 0 && L > 1;
  if (drop) {
    cache.dropped.resize(L - 1);
    cache.dropout_mask.resize(L - 1);
  } else {
    cache.dropout_mask.clear();
  }

  for (Eigen::Index l = 0; l < L; ++l) {
    const RecurrentParams<S>& p = params.layers[l];
    LayerCache<S>& lc = cache.layers[l];
    lc.Resize(config.cell, H, T, B);
    // Input projection for all T steps: gates = W_ih x + b_ih.
    if (l > 0) {
      ParallelProduct(lc.gates, p.weight_ih, LayerInput(cache, l), false);
    } else if (config.embed_size > 0) {
      EnsureShape(cache.embedded, config.embed_size, TB);
      for (Eigen::Index j = 0; j < TB; ++j) cache.embedded.col(j) = params.encoder.row(inputs(j)).transpose();
      ParallelProduct(lc.gates, p.weight_ih, cache.embedded, false);
    } else {
#pragma omp parallel for schedule(static)
      for (Eigen::Index j = 0; j < TB; ++j) lc.gates.col(j) = p.weight_ih.col(inputs(j));  // one-hot gather
    }
    lc.gates.colwise() += p.bias_ih.col(0);
    lc.h.leftCols(B) = initial.h[l];
    if (config.cell == CellType::kLstm) lc.c.leftCols(B) = initial.c[l];

    CellForward(config.cell, p, lc);

    if (drop && l < L - 1) {
      Mat<S>& mask = cache.dropout_mask[l];
      EnsureShape(mask, H, TB);
      const S keep_scale = S(1) / S(1 - config.dropout);
      for (Eigen::Index k = 0; k < mask.size(); ++k)
        mask(k) = dropout_rng->Uniform() < config.dropout ? S(0) : keep_scale;
      cache.dropped[l] = (lc.h.rightCols(TB).array() * mask.array()).matrix();
    }
  }
  const auto top = cache.layers[L - 1].h.rightCols(TB);
  EnsureShape(cache.logits, config.vocab_size, TB);
  ParallelProduct(cache.logits, params.decoder_weight, top, false);
  cache.logits.colwise() += params.decoder_bias.col(0);
}

template <typename S>
void FinalState(const ModelConfig& config, const ModelCache<S>& cache, State<S>& state) {
  const Eigen::Index TB = cache.T * cache.B;
  for (int l = 0; l < config.layers; ++l) {
    state.h[l] = cache.layers[l].h.middleCols(TB, cache.B);
    if (config.cell == CellType::kLstm) state.c[l] = cache.layers[l].c.middleCols(TB, cache.B);
  }
}

template <typename S>
void Backward(const ModelConfig& config, const ModelParams<S>& params, const Ids& inputs,
              ModelCache<S>& cache, const Mat<S>& dlogits, const std::type_identity_t<State<S>>* dfinal,
              ModelParams<S>& grads, std::type_identity_t<State<S>>* dinitial) {
  const Eigen::Index L = config.layers, H = config.hidden_size, B = cache.B, TB = cache.T * cache.B;
  const bool lstm = config.cell == CellType::kLstm;
  cache.back.resize(L);

  // Decoder: logits = W_dec h + b_dec.
  const auto top = cache.layers[L - 1].h.rightCols(TB);
  ParallelProduct(grads.decoder_weight, dlogits, top.transpose(), true);
  grads.decoder_bias += dlogits.rowwise().sum();
  EnsureShape(cache.dh_out, H, TB);
  ParallelProduct(cache.dh_out, params.decoder_weight.transpose(), dlogits, false);  // (H, T*B)

  for (Eigen::Index l = L - 1; l >= 0; --l) {
    const RecurrentParams<S>& p = params.layers[l];
    RecurrentParams<S>& g = grads.layers[l];
    LayerBackward<S>& lb = cache.back[l];
    lb.Resize(config.cell, H, cache.T, B);
    if (dfinal) lb.dh = dfinal->h[l]; else lb.dh.setZero();
    if (lstm) {
      if (dfinal) lb.dc = dfinal->c[l]; else lb.dc.setZero();
    }

    CellBackward<S>(config.cell, p, cache.layers[l], cache.dh_out, lb, g);

    if (dinitial) {
      dinitial->h[l] = lb.dh;
      if (lstm) dinitial->c[l] = lb.dc;
    }
    // Input projection: dW_ih += dgates x^T, db_ih += sum of dgates, dx = W_ih^T dgates.
    g.bias_ih += lb.dgates.rowwise().sum();
    if (l > 0) {
      ParallelProduct(g.weight_ih, lb.dgates, LayerInput(cache, l).transpose(), true);
      ParallelProduct(cache.dh_out, p.weight_ih.transpose(), lb.dgates, false);
      if (!cache.dropout_mask.empty()) cache.dh_out.array() *= cache.dropout_mask[l - 1].array();
    } else if (config.embed_size > 0) {
      ParallelProduct(g.weight_ih, lb.dgates, cache.embedded.transpose(), true);
      EnsureShape(cache.dx, p.weight_ih.cols(), TB);
      ParallelProduct(cache.dx, p.weight_ih.transpose(), lb.dgates, false);  // (E, T*B)
      for (Eigen::Index j = 0; j < TB; ++j) grads.encoder.row(inputs(j)) += cache.dx.col(j).transpose();
    } else {
      for (Eigen::Index j = 0; j < TB; ++j) g.weight_ih.col(inputs(j)) += lb.dgates.col(j);  // scatter
    }
  }
}

#define BPTT_INSTANTIATE(S)                                                                          \
  template struct ModelParams<S>;                                                                    \
  template struct State<S>;                                                                          \
  template void Forward<S>(const ModelConfig&, const ModelParams<S>&, const Ids&, Eigen::Index,      \
                           Eigen::Index, const State<S>&, ModelCache<S>&, Rng*);                     \
  template void FinalState<S>(const ModelConfig&, const ModelCache<S>&, State<S>&);                  \
  template void Backward<S>(const ModelConfig&, const ModelParams<S>&, const Ids&, ModelCache<S>&,   \
                            const Mat<S>&, const std::type_identity_t<State<S>>*, ModelParams<S>&,           \
                            std::type_identity_t<State<S>>*);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE
template ModelParams<double> ModelParams<float>::Cast<double>() const;
template ModelParams<float> ModelParams<double>::Cast<float>() const;
template ModelParams<float> ModelParams<float>::Cast<float>() const;
template ModelParams<double> ModelParams<double>::Cast<double>() const;

}  // namespace bptt
