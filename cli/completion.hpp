// Shell completion scripts (bash, zsh, fish) generated from the live command tree.
#pragma once

#include <string>

#include "cli/command_tree.hpp"

namespace kiln::cli {

// shell: "bash", "zsh" or "fish"; throws Error(usage) otherwise.
std::string completion_script(const CommandSpec& root, const std::string& shell);

}  // namespace kiln::cli
