// bptt completion bash: the bash completion of the bptt program. Each command's flags are read
// from its own --help, run in this process with std::cout captured; every command's --help is
// made from its option table (options_cli.h over options.h), so they are exactly the flags its
// table declares: a line "  --flag arg ..." is a flag with a value, "  --flag ..." a switch. Values of --cell and the NAME of `bptt task` complete from the cell
// and task registries; other values and positional arguments complete as file names.
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "bptt/cell.h"
#include "bptt/error.h"
#include "bptt/task.h"
#include "commands.h"

namespace bptt::cli {

namespace {

struct Flags {
  std::vector<std::string> all;     // "--corpus", "--help", ...
  std::vector<std::string> valued;  // those that take a value
};

// The flags of one command, from its --help.
Flags FlagsOf(const Command& command) {
  std::string name(command.name), help_flag = "--help";
  char* argv[] = {name.data(), help_flag.data(), nullptr};
  std::ostringstream captured;
  std::streambuf* const previous = std::cout.rdbuf(captured.rdbuf());
  int status = 1;
  try {
    status = command.run(2, argv);
  } catch (...) {
    std::cout.rdbuf(previous);
    throw;
  }
  std::cout.rdbuf(previous);
  if (status != 0) throw Error("bptt " + name + " --help failed");
  Flags flags;
  static const std::regex option(R"(^  --([A-Za-z0-9][A-Za-z0-9-]*)( arg)?)");
  std::istringstream lines(captured.str());
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, option)) continue;
    flags.all.push_back("--" + m[1].str());
    if (m[2].matched) flags.valued.push_back("--" + m[1].str());
  }
  if (flags.all.empty()) throw Error("bptt " + name + " --help lists no flags");
  return flags;
}

std::string Words(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace

int Completion(int argc, char** argv, std::span<const Command> commands) {
  if (argc != 2 || std::string(argv[1]) != "bash") throw Error("usage: bptt completion bash");
  std::vector<std::string> names, cells, tasks;
  for (const Command& c : commands) names.emplace_back(c.name);
  for (const Cell* cell : Cells()) cells.emplace_back(cell->name);
  for (const TaskInfo& t : Tasks()) tasks.emplace_back(t.name);

  std::ostringstream flags, valued;
  for (const Command& c : commands) {
    const Flags f = FlagsOf(c);
    flags << "    " << c.name << ") flags='" << Words(f.all) << "' ;;\n";
    valued << "    " << c.name << ") valued='" << Words(f.valued) << "' ;;\n";
  }
  std::cout << "# bash completion for bptt, made by `bptt completion bash`\n"
               "_bptt() {\n"
               "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
               "  local command=\"${COMP_WORDS[1]}\" flags='' valued=''\n"
               "  COMPREPLY=()\n"
               "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
               "    mapfile -t COMPREPLY < <(compgen -W '"
            << Words(names) << " version --help --version' -- \"$cur\")\n"
               "    return\n"
               "  fi\n"
               "  case \"$command\" in\n"
            << flags.str()
            << "    *) return ;;\n"
               "  esac\n"
               "  case \"$command\" in\n"
            << valued.str()
            << "  esac\n"
               "  if [ \"$prev\" = --cell ]; then\n"
               "    mapfile -t COMPREPLY < <(compgen -W '"
            << Words(cells)
            << "' -- \"$cur\")\n"
               "    return\n"
               "  fi\n"
               "  if [[ \" $valued \" == *\" $prev \"* ]]; then\n"
               "    compopt -o filenames 2> /dev/null\n"
               "    mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
               "    return\n"
               "  fi\n"
               "  if [[ \"$cur\" == -* ]]; then\n"
               "    mapfile -t COMPREPLY < <(compgen -W \"$flags\" -- \"$cur\")\n"
               "    return\n"
               "  fi\n"
               "  if [ \"$command\" = task ] && [ \"$COMP_CWORD\" -eq 2 ]; then\n"
               "    mapfile -t COMPREPLY < <(compgen -W '"
            << Words(tasks)
            << "' -- \"$cur\")\n"
               "    return\n"
               "  fi\n"
               "  compopt -o filenames 2> /dev/null\n"
               "  mapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n"
               "}\n"
               "complete -F _bptt bptt\n";
  return std::cout ? 0 : 1;
}

}  // namespace bptt::cli
