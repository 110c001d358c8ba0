#include "bptt/cell.h"

#include "bptt/gru.h"
#include "bptt/lstm.h"
#include "bptt/rnn.h"

namespace bptt {

namespace {
constexpr std::pair<CellType, std::string_view> kCellNames[] = {
    {CellType::kRnnTanh, "rnn-tanh"}, {CellType::kRnnSigmoid, "rnn-sigmoid"},
    {CellType::kRnnRelu, "rnn-relu"}, {CellType::kLstm, "lstm"}, {CellType::kGru, "gru"}};
}  // namespace

std::string_view CellName(CellType cell) {
  for (const auto& [type, name] : kCellNames)
    if (type == cell) return name;
  return "?";
}

std::optional<CellType> ParseCell(std::string_view name) {
  for (const auto& [type, cell_name] : kCellNames)
    if (cell_name == name) return type;
  return std::nullopt;
}

int GateCount(CellType cell) {
  switch (cell) {
    case CellType::kLstm: return 4;
    case CellType::kGru: return 3;
    default: return 1;
  }
}

template <typename S>
void LayerCache<S>::Resize(CellType cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_) {
  T = T_;
  B = B_;
  EnsureShape(gates, GateCount(cell) * H, T * B);
  EnsureShape(h, H, (T + 1) * B);
  if (cell == CellType::kLstm) {
    EnsureShape(c, H, (T + 1) * B);
    EnsureShape(tanh_c, H, T * B);
  }
  if (cell == CellType::kGru) EnsureShape(hidden_gates, 3 * H, T * B);
}

template <typename S>
void LayerBackward<S>::Resize(CellType cell, Eigen::Index H, Eigen::Index T, Eigen::Index B) {
  EnsureShape(dgates, GateCount(cell) * H, T * B);
  EnsureShape(dh, H, B);
  EnsureShape(scratch, H, B);
  if (cell == CellType::kLstm) EnsureShape(dc, H, B);
  if (cell == CellType::kGru) EnsureShape(dgates_h, 3 * H, T * B);
  if (record) {
    EnsureShape(dh_steps, H, T * B);
    if (cell == CellType::kLstm) EnsureShape(dc_steps, H, T * B);
  }
}

template <typename S>
void CellForward(CellType cell, const RecurrentParams<S>& p, LayerCache<S>& cache) {
  switch (cell) {
    case CellType::kLstm: LstmForward(p, cache); break;
    case CellType::kGru: GruForward(p, cache); break;
    default: RnnForward(cell, p, cache); break;
  }
}

template <typename S>
void CellBackward(CellType cell, const RecurrentParams<S>& p, const LayerCache<S>& cache,
                  const ConstMatRef<S>& dh_out, LayerBackward<S>& back, RecurrentParams<S>& grad) {
  switch (cell) {
    case CellType::kLstm: LstmBackward(p, cache, dh_out, back, grad); break;
    case CellType::kGru: GruBackward(p, cache, dh_out, back, grad); break;
    default: RnnBackward(cell, p, cache, dh_out, back, grad); break;
  }
}

#define BPTT_INSTANTIATE(S)                                                                       \
  template struct LayerCache<S>;                                                                  \
  template struct LayerBackward<S>;                                                               \
  template void CellForward<S>(CellType, const RecurrentParams<S>&, LayerCache<S>&);              \
  template void CellBackward<S>(CellType, const RecurrentParams<S>&, const LayerCache<S>&,        \
                                const ConstMatRef<S>&, LayerBackward<S>&, RecurrentParams<S>&);
BPTT_INSTANTIATE(float)
BPTT_INSTANTIATE(double)
#undef BPTT_INSTANTIATE

}  // namespace bptt
