// The variants of a cell's chunk modes (cell.h): with layer normalisation or not, and with the
// loop's regularisers (recurrent dropout, zoneout) or not. Each mode is compiled once per
// combination, so the plain path carries no branch of a variant, and chosen once per chunk:
//
//   WithVariant(p.layer_norm(), cache.loop.any(), [&](auto ln, auto loop) {
//     ChunkForwardOf<decltype(ln)::value, decltype(loop)::value>(p, cache, compute);
//   });
#pragma once

#include <type_traits>

namespace bptt::cells {

template <typename F>
void WithVariant(bool layer_norm, bool loop, F&& f) {
  if (layer_norm) {
    if (loop) f(std::true_type{}, std::true_type{});
    else f(std::true_type{}, std::false_type{});
  } else {
    if (loop) f(std::false_type{}, std::true_type{});
    else f(std::false_type{}, std::false_type{});
  }
}

}  // namespace bptt::cells
