// bptt::Error: the one exception type bptt throws for bad input (files, flags, checkpoints).
//
// Its message is a single line that names the file or flag and says what is wrong, e.g.
//   "corpus/a.txt: invalid UTF-8 at byte 1041"
// The command-line program prints it as "bptt: <message>" and exits with a non-zero status.
#pragma once

#include <stdexcept>
#include <string>

namespace bptt {

class Error : public std::runtime_error {
 public:
  // Control characters are written as \xHH, so that the message stays one line whatever text
  // from a file it quotes (a metadata value, a path, a symbol).
  explicit Error(const std::string& message) : std::runtime_error(OneLine(message)) {}

 private:
  static std::string OneLine(const std::string& message) {
    std::string out;
    out.reserve(message.size());
    for (const char c : message) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u != 0x7F) {
        out += c;
        continue;
      }
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
    return out;
  }
};

}  // namespace bptt
