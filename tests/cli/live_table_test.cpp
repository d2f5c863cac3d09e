// Tests for cli/live_table: rows redraw in place, sorted by key, with text from boards escaped.
#include <doctest/doctest.h>

#include <sstream>

#include "cli/live_table.hpp"

using namespace kiln::cli;

TEST_CASE("live table: the first draw writes each row; later draws go up over what was drawn") {
  std::ostringstream out;
  LiveTable table(out);
  table.set("b", "board b");
  CHECK(out.str() == "\r\x1b[2Kboard b\n");
  out.str("");
  table.set("a", "board a");
  CHECK(out.str() == "\x1b[1A\r\x1b[2Kboard a\n\r\x1b[2Kboard b\n");
  out.str("");
  table.set("b", "board b done");
  CHECK(out.str() == "\x1b[2A\r\x1b[2Kboard a\n\r\x1b[2Kboard b done\n");
}

TEST_CASE("live table: control characters from a board cannot move the cursor") {
  std::ostringstream out;
  LiveTable table(out);
  table.set("x", "uid\x1b[2J\r\nevil");
  const std::string drawn = out.str();
  CHECK(drawn.find("\x1b[2J") == std::string::npos);
  CHECK(drawn.find("\r\n") == std::string::npos);
  CHECK(drawn.rfind('\n') == drawn.size() - 1);  // one line per row
}
