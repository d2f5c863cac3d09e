// Reading a generated roff man page back in tests: its section titles in order, and the README lines a program's
// EXAMPLES section must carry (each as roff writes it).
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "core/files.hpp"

namespace kiln::test {

// The ".SH" titles of `roff`, in order.
inline std::vector<std::string> man_sections(const std::string& roff) {
  std::vector<std::string> titles;
  std::istringstream lines(roff);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with(".SH ")) titles.push_back(line.substr(4));
  return titles;
}

// The README's lines that start with `program` and a space, each with its dashes escaped as in roff ("\-") and
// prefixed with "\&" as an EXAMPLES line is.
inline std::vector<std::string> readme_example_lines(const std::string& program) {
  std::vector<std::string> out;
  std::istringstream lines(read_text_file(std::string(KILN_SOURCE_DIR) + "/README.md"));
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(program + " ")) continue;
    std::string roff = "\\&";
    for (char c : line) roff += c == '-' ? std::string("\\-") : std::string(1, c);
    out.push_back(roff);
  }
  return out;
}

}  // namespace kiln::test
