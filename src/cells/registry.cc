// The one list of cells, and the buffers every cell shares (cell.h).
#include "bptt/error.h"
#include "bptt/cell.h"

namespace bptt {

// The cells, in the order of --help. A cell is its file in src/cells/ and its name on this line.
#define BPTT_CELLS(X) X(kRnnTanh) X(kRnnSigmoid) X(kRnnRelu) X(kLstm) X(kGru)

namespace cells {
#define BPTT_DECLARE_CELL(name) extern constinit const Cell name;
BPTT_CELLS(BPTT_DECLARE_CELL)
#undef BPTT_DECLARE_CELL
}  // namespace cells

namespace {
#define BPTT_LIST_CELL(name) &cells::name,
constexpr const Cell* kCells[] = {BPTT_CELLS(BPTT_LIST_CELL)};
#undef BPTT_LIST_CELL
}  // namespace

std::span<const Cell* const> Cells() { return kCells; }

const Cell* FindCell(std::string_view name) {
  for (const Cell* cell : kCells)
    if (cell->name == name) return cell;
  return nullptr;
}

std::string CellNames(bool layer_norm) {
  std::string names;
  for (const Cell* cell : kCells)
    if (cell->layer_norm || !layer_norm) names += (names.empty() ? "" : ", ") + std::string(cell->name);
  return names;
}

const Cell& ParseCell(std::string_view name, std::string_view flag) {
  if (const Cell* cell = FindCell(name)) return *cell;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of " + CellNames());
}

const Cell& DefaultCell() { return cells::kLstm; }

template <typename S>
RecurrentParams<S> RecurrentParams<S>::Shaped(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm) {
  const Eigen::Index GH = cell.gates * H;
  RecurrentParams p;
  p.weight_ih.resize(GH, E);
  p.weight_hh.resize(GH, H);
  p.bias_ih.resize(GH, 1);
  p.bias_hh.resize(GH, 1);
  if (layer_norm) {
    for (Mat<S>* m : {&p.ln_ih_weight, &p.ln_ih_bias, &p.ln_hh_weight, &p.ln_hh_bias}) m->resize(GH, 1);
    if (cell.cell_state)
      for (Mat<S>* m : {&p.ln_c_weight, &p.ln_c_bias}) m->resize(H, 1);
  }
  return p;
}

template <typename S>
RecurrentParams<S> RecurrentParams<S>::Zeros(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm) {
  RecurrentParams p = Shaped(cell, E, H, layer_norm);
  for (Mat<S>* m : {&p.weight_ih, &p.weight_hh, &p.bias_ih, &p.bias_hh, &p.ln_ih_weight, &p.ln_ih_bias, &p.ln_hh_weight,
                    &p.ln_hh_bias, &p.ln_c_weight, &p.ln_c_bias})
    m->setZero();
  return p;
}

template <typename S>
void LayerCache<S>::Resize(const Cell& cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_, bool layer_norm) {
  T = T_;
  B = B_;
  EnsureShape(gates, cell.gates * H, T * B);
  EnsureShape(h, H, (T + 1) * B);
  if (cell.cell_state) {
    EnsureShape(c, H, (T + 1) * B);
    EnsureShape(tanh_c, H, T * B);
  }
  if (cell.separate_recurrent) EnsureShape(recurrent, cell.gates * H, T * B);
  if (layer_norm) {
    EnsureShape(ln_ih, cell.gates * H, T * B);
    EnsureShape(ln_hh, cell.gates * H, T * B);
    if (cell.cell_state) EnsureShape(ln_c, H, T * B);
    EnsureShape(ln_rstd, cell.cell_state ? 3 : 2, T * B);
  }
}

template <typename S>
void LayerBackward<S>::Resize(const Cell& cell, Eigen::Index H, Eigen::Index T, Eigen::Index B, bool layer_norm) {
  EnsureShape(dgates, cell.gates * H, T * B);
  EnsureShape(dh, H, B);
  if (cell.cell_state) EnsureShape(dc, H, B);
  if (cell.separate_recurrent || layer_norm) EnsureShape(drecurrent, cell.gates * H, T * B);
  if (layer_norm) {
    EnsureShape(dln_ih, cell.gates * H, T * B);
    if (cell.separate_recurrent) EnsureShape(dln_hh, cell.gates * H, T * B);
    if (cell.cell_state) EnsureShape(dln_c, H, T * B);
  }
  if (record) {
    EnsureShape(dh_steps, H, T * B);
    if (cell.cell_state) EnsureShape(dc_steps, H, T * B);
  }
}

template struct RecurrentParams<float>;
template struct RecurrentParams<double>;
template struct LayerCache<float>;
template struct LayerCache<double>;
template struct LayerBackward<float>;
template struct LayerBackward<double>;

}  // namespace bptt
