// The subcommands of the bptt program. Each parses its own options with
// Boost.Program_options, calls the library and returns the exit status; bptt.cc turns a
// bptt::Error or an option error into one line on stderr and exit status 1.
#pragma once

namespace bptt::cli {

int Train(int argc, char** argv);
int Sample(int argc, char** argv);
int Eval(int argc, char** argv);
int Inspect(int argc, char** argv);
int Tokenize(int argc, char** argv);
int Decay(int argc, char** argv);
int Task(int argc, char** argv);
int Gradcheck(int argc, char** argv);
int Plot(int argc, char** argv);

}  // namespace bptt::cli
