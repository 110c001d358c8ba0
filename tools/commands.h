// The subcommands of the bptt program. Each parses its command line with its option table
// (options_cli.h over options.h), calls the library, prints and returns the exit status;
// bptt.cc turns any exception (a bptt::Error, an option error, anything else) into one line on
// stderr and exit status 1.
#pragma once

#include <span>
#include <string_view>

namespace bptt::cli {

// A subcommand of the bptt program: its name, its main and its line in `bptt --help`.
struct Command {
  std::string_view name;
  int (*run)(int argc, char** argv);
  std::string_view help;
};

int Train(int argc, char** argv);
int Sample(int argc, char** argv);
int Eval(int argc, char** argv);
int Inspect(int argc, char** argv);
int Tokenize(int argc, char** argv);
int Decay(int argc, char** argv);
int Task(int argc, char** argv);
int Gradcheck(int argc, char** argv);
int Credit(int argc, char** argv);
int Plot(int argc, char** argv);
int Predict(int argc, char** argv);
int Forecast(int argc, char** argv);

// `bptt completion bash`: prints the bash completion of the program, made from each command's
// --help (the flags its option declarations make; whether each takes a value) and the names of
// the cells and tasks. Hidden from `bptt --help`.
int Completion(int argc, char** argv, std::span<const Command> commands);

}  // namespace bptt::cli
