// A plain description of the CLI11 command tree: the one source for completions, man pages and
// "did you mean" suggestions, so none of them can drift from the real commands.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kiln::cli {

struct OptionSpec {
  std::vector<std::string> names;  // "-o", "--output"
  std::string description;
  std::string value_name;          // "" for flags
  std::vector<std::string> choices;  // enumerated values, if any
  bool takes_file = false;
  bool takes_dir = false;
  bool takes_board = false;
  bool positional = false;
  bool required = false;
};

struct CommandSpec {
  std::string name;
  std::string description;
  std::vector<OptionSpec> options;
  std::vector<CommandSpec> subcommands;
};

CommandSpec describe(const CLI::App& app);

// Closest candidate by edit distance, or "" when nothing is close enough to suggest.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace kiln::cli
