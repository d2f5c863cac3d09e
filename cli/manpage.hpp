// Man pages (roff) generated from the command tree: kiln(1) and kiln-<noun>(1).
#pragma once

#include <map>
#include <string>

#include "cli/command_tree.hpp"

namespace kiln::cli {

// File name ("kiln.1", "kiln-key.1") -> roff text.
std::map<std::string, std::string> man_pages(const CommandSpec& root, const std::string& version);

}  // namespace kiln::cli
