// The one list of cells, and the tensors of a layer shaped from its cell's declarations (cell.h).
#include "bptt/error.h"
#include "bptt/cell.h"

namespace bptt {

// The cells, in the order of --help. A cell is its file in src/cells/ and its name on this line.
#define BPTT_CELLS(X) X(kRnnTanh) X(kRnnSigmoid) X(kRnnRelu) X(kLstm) X(kGru) X(kMinGru) X(kMinLstm)

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
    if (cell->layer_norm() || !layer_norm) names += (names.empty() ? "" : ", ") + std::string(cell->name);
  return names;
}

const Cell& ParseCell(std::string_view name, std::string_view flag) {
  if (const Cell* cell = FindCell(name)) return *cell;
  throw Error(std::string(flag) + " '" + std::string(name) + "' is not one of " + CellNames());
}

const Cell& DefaultCell() { return cells::kLstm; }

namespace {

// Each buffer of `decls` present in this variant at its shape, every other one empty; the
// buffers keep their memory when their shape does not change.
template <typename S>
void ShapeBuffers(std::span<const BufferDecl> decls, const Sizes& sizes, bool layer_norm, bool record,
                  std::vector<Mat<S>>& buffers) {
  buffers.resize(decls.size());
  for (size_t k = 0; k < decls.size(); ++k) {
    const BufferDecl& d = decls[k];
    if (Present(d.when, layer_norm, record)) EnsureShape(buffers[k], d.rows.Of(sizes), d.cols.Of(sizes));
    else EnsureShape(buffers[k], 0, 0);
  }
}

}  // namespace

template <typename S>
RecurrentParams<S> RecurrentParams<S>::Shaped(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm) {
  RecurrentParams p;
  p.cell = &cell;
  p.E = E;
  p.H = H;
  p.with_layer_norm = layer_norm;
  const Sizes sizes{cell.gates, H, E};
  p.tensors.resize(cell.params.size());
  for (size_t k = 0; k < cell.params.size(); ++k) {
    const ParamDecl& d = cell.params[k];
    if (Present(d.when, layer_norm)) p.tensors[k].resize(d.rows.Of(sizes), d.cols.Of(sizes));
  }
  return p;
}

template <typename S>
RecurrentParams<S> RecurrentParams<S>::Zeros(const Cell& cell, Eigen::Index E, Eigen::Index H, bool layer_norm) {
  RecurrentParams p = Shaped(cell, E, H, layer_norm);
  for (Mat<S>& m : p.tensors) m.setZero();
  return p;
}

template <typename S>
const Mat<S>& RecurrentParams<S>::weight_hh() const {
  static const Mat<S> kNone;
  return cell->recurrent_matrix() ? tensors[kWeightHhSlot] : kNone;
}

template <typename S>
Mat<S>& RecurrentParams<S>::tensor(std::string_view name) {
  for (size_t k = 0; k < cell->params.size(); ++k)
    if (cell->params[k].name == name) {
      if (!Present(cell->params[k].when, with_layer_norm))
        throw Error("this " + std::string(cell->name) + " layer has no '" + std::string(name) +
                    "' (it is a tensor of the layer-normalised variant)");
      return tensors[k];
    }
  throw Error("the " + std::string(cell->name) + " cell has no tensor '" + std::string(name) + "'");
}

template <typename S>
const Mat<S>& RecurrentParams<S>::tensor(std::string_view name) const {
  return const_cast<RecurrentParams*>(this)->tensor(name);
}

template <typename S>
void LayerCache<S>::Resize(const Cell& cell, Eigen::Index H, Eigen::Index T_, Eigen::Index B_, bool layer_norm) {
  T = T_;
  B = B_;
  ShapeBuffers(cell.cache, Sizes{cell.gates, H, 0, T, B}, layer_norm, false, buffers);
}

template <typename S>
void LayerBackward<S>::Resize(const Cell& cell, Eigen::Index H, Eigen::Index T, Eigen::Index B, bool layer_norm) {
  ShapeBuffers(cell.backward, Sizes{cell.gates, H, 0, T, B}, layer_norm, record, buffers);
}

template struct RecurrentParams<float>;
template struct RecurrentParams<double>;
template struct LayerCache<float>;
template struct LayerCache<double>;
template struct LayerBackward<float>;
template struct LayerBackward<double>;

}  // namespace bptt
