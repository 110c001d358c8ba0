// UTF-8 well-formedness, shared by the tokenizer (vocab.cc), the corpus listing (corpus.cc) and
// the safetensors reader (safetensors.cc).
#pragma once

#include <cstddef>
#include <string_view>

namespace bptt {

// Length of a well-formed UTF-8 sequence starting at in[0] (Unicode Table 3-7), or the
// negated length of its maximal ill-formed subpart, or 0 if `in` ends inside a sequence that
// is well formed so far.
inline int CheckUtf8Sequence(std::string_view in) {
  const auto lead = static_cast<unsigned char>(in[0]);
  int length = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) lo = 0xA0;  // no overlong forms
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) lo = 0x90;  // no overlong forms
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // a continuation byte, C0, C1 or F5..FF
  }
  for (int j = 1; j < length; ++j) {
    if (static_cast<size_t>(j) >= in.size()) return 0;
    const auto byte = static_cast<unsigned char>(in[static_cast<size_t>(j)]);
    if (byte < lo || byte > hi) return -j;
    lo = 0x80;
    hi = 0xBF;
  }
  return length;
}

// Whether all of `s` is well-formed UTF-8.
inline bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    const int n = CheckUtf8Sequence(s);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace bptt
