// Loads a language model's checkpoint and prints text generated from it, a symbol at a time,
// through the bptt library (checkpoint.h, sampler.h).
//
//   generate CHECKPOINT [PRIME [LENGTH]]
#include <bptt/checkpoint.h>
#include <bptt/error.h>
#include <bptt/sampler.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::cerr << "usage: generate CHECKPOINT [PRIME [LENGTH]]\n";
    return 2;
  }
  try {
    bptt::Checkpoint checkpoint = bptt::LoadCheckpoint(argv[1]);
    std::cerr << "generate: a " << checkpoint.config.cell->name << " of " << checkpoint.config.layers << " x "
              << checkpoint.config.hidden_size << " units over " << checkpoint.vocab.size() << " symbols, step "
              << checkpoint.step << "\n";
    bptt::Sampler sampler(checkpoint.config, std::move(checkpoint.params), std::move(checkpoint.vocab));

    bptt::SampleOptions options;
    options.prime = argc > 2 ? argv[2] : "";
    options.length = argc > 3 ? std::stoll(argv[3]) : 200;
    options.temperature = 0.8;
    options.seed = 7;
    sampler.Generate(options, [](std::string_view text) { std::cout << text; });
    std::cout << "\n";
    return std::cout ? 0 : 1;
  } catch (const bptt::Error& e) {
    std::cerr << "generate: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // std::stoll on a bad number
    std::cerr << "generate: " << e.what() << "\n";
    return 2;
  }
}
