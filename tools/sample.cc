// bptt sample: the command-line front end of sampler.h.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <iostream>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/sampler.h"
#include "commands.h"

namespace po = boost::program_options;

namespace bptt::cli {

int Sample(int argc, char** argv) {
  SampleOptions o;
  const SampleOptions d;
  std::string checkpoint;
  po::options_description options("bptt sample CHECKPOINT [options]");
  std::string precision = PrecisionName(d.precision);
  options.add_options()
      ("length", po::value(&o.length)->default_value(d.length), "symbols to generate per sample (after the prime)")
      ("temperature", po::value(&o.temperature)->default_value(d.temperature), "divide the logits by this (> 0): lower is more conservative")
      ("top-k", po::value(&o.top_k)->default_value(d.top_k), "sample from the k most probable symbols (0 = all)")
      ("top-p", po::value(&o.top_p)->default_value(d.top_p), "sample from the most probable symbols up to this probability mass (1 = all)")
      ("prime", po::value(&o.prime)->default_value(d.prime), "text to start from, printed before each sample (default: a line start)")
      ("seed", po::value(&o.seed)->default_value(d.seed), "random seed: the same seed gives the same text")
      ("argmax", po::bool_switch(&o.argmax), "always take the most probable symbol (greedy; ignores the seed)")
      ("stop", po::value(&o.stop)->default_value(d.stop), "end a sample once its generated text ends with this string")
      ("num", po::value(&o.num)->default_value(d.num), "samples to generate, separated by a newline")
      ("precision", po::value(&precision)->default_value(precision),
       "arithmetic of the per-symbol products: fp32; bf16 (bfloat16 weights, float sums: about twice as fast); "
       "int8 (8-bit weights and vector, int32 sums: about four times; see bptt eval --precision for what it costs; "
       "the default where the CPU has AVX-512 VNNI or AVX2)")
      ("threads", po::value(&o.threads)->default_value(d.threads),
       "threads splitting each per-symbol product by rows (0 = timed as it runs: one thread, or the cores whose "
       "caches hold the weights; the text is the same either way)")
      ("help", "show this help");
  po::options_description hidden;
  hidden.add_options()("checkpoint", po::value(&checkpoint), "checkpoint file (.safetensors)");
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  if (checkpoint.empty()) throw Error("missing CHECKPOINT (see bptt sample --help)");
  o.precision = ParsePrecision(precision, "--precision");
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
