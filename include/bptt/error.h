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
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace bptt
