// bptt sample: the command-line front end of sampler.h; its options are SampleOptionSpecs().
#include <unistd.h>

#include <iostream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/sampler.h"
#include "commands.h"
#include "options_cli.h"

namespace bptt::cli {

int Sample(int argc, char** argv) {
  CommandLine<SampleOptions> cli("bptt sample CHECKPOINT [options]", SampleOptionSpecs(), kAnyCommand, SampleOptions());
  cli.Argument("checkpoint", "checkpoint file (.safetensors)");
  if (!cli.ParseOrShowHelp(argc, argv)) return 0;
  const std::string checkpoint = cli.Argument("checkpoint");
  if (checkpoint.empty()) throw Error("missing CHECKPOINT (see bptt sample --help)");
  const SampleOptions o = cli.Apply(SampleOptions());
  o.Validate();  // before the (slow) load, so that a bad flag is reported at once

  Checkpoint c = LoadCheckpoint(checkpoint);
  if (!c.checksum_verified) std::cerr << "bptt sample: " << checkpoint << " has no checksum; loaded unverified\n";
  Sampler sampler(c.config, std::move(c.params), std::move(c.vocab));
  // On a terminal each symbol is shown as it comes; into a pipe or file the stream buffers: a
  // write per symbol costs about 4 us, near a tenth of an int8 step of a 2x512 LSTM.
  const bool live = isatty(STDOUT_FILENO) != 0;
  char last = '\n';
  sampler.Generate(o, [&last, live](std::string_view text) {
    if (text.empty()) return;
    std::cout.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (live) std::cout.flush();
    last = text.back();
  });
  if (last != '\n') std::cout << '\n';
  std::cout.flush();
  return std::cout ? 0 : 1;
}

}  // namespace bptt::cli
