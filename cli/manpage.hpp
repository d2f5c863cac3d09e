// Man pages (roff) generated from the command trees: kiln(1), kiln-<noun>(1), kiln-service(8), kiln-board-emu(1).
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cli/command_tree.hpp"

namespace kiln::cli {

// The README as it was when the program was built (generated from README.md at configure time): its
// examples are the man pages' EXAMPLES sections.
std::string_view readme_text();

// The commands in the README's ```sh blocks, each as written (continuation lines included), grouped by
// page: "kiln NOUN" for a kiln command whose words name one of kiln_nouns, "kiln" for the others,
// "kiln-service" and "kiln-board-emu".
std::map<std::string, std::vector<std::string>> readme_examples(std::string_view readme,
                                                                const std::set<std::string>& kiln_nouns);

// File name ("kiln.1", "kiln-key.1") -> roff text, with the examples of readme.
std::map<std::string, std::string> man_pages(const CommandSpec& root, const std::string& version,
                                             std::string_view readme = readme_text());

// One page for a program with its own command tree (kiln-service(8), kiln-board-emu(1)).
struct ProgramPage {
  std::string name;     // "kiln-service"
  int section = 1;
  std::string version;
  std::string summary;           // NAME line after the dash
  std::string description_roff;  // DESCRIPTION body, roff
  std::string sections_roff;     // further sections (FILES, SIGNALS, ...), roff, before EXAMPLES
  std::vector<std::string> examples;
  std::string see_also_roff;
};
std::string program_man_page(const CommandSpec& root, const ProgramPage& page);

}  // namespace kiln::cli
