// Reading a generated roff man page back in tests: its section titles in order, and the EXAMPLES section a program's
// page must carry (the README's examples as roff writes them).
#pragma once

#include <doctest/doctest.h>

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

// The EXAMPLES section a program's page must have: the README's lines that start with `program` and a space (at
// least `at_least` of them), then `extra` lines, each with its dashes escaped as in roff ("\-") and prefixed with
// "\&", unfilled.
inline std::string expected_examples_section(const std::string& program, std::size_t at_least,
                                             const std::vector<std::string>& extra = {}) {
  std::vector<std::string> examples;
  std::istringstream lines(read_text_file(std::string(KILN_SOURCE_DIR) + "/README.md"));
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with(program + " ")) examples.push_back(line);
  CHECK(examples.size() >= at_least);
  examples.insert(examples.end(), extra.begin(), extra.end());
  std::string section = ".SH EXAMPLES\n.nf\n";
  for (const auto& example : examples) {
    section += "\\&";
    for (char c : example) section += c == '-' ? std::string("\\-") : std::string(1, c);
    section += "\n";
  }
  return section + ".fi\n";
}

}  // namespace kiln::test
