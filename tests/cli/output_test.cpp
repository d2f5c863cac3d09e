// Tests for cli/output: every format carries the same data; tables fit; CSV and YAML quote correctly.
#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>

#include "cli/output.hpp"
#include "core/error.hpp"

using namespace kiln;
using namespace kiln::cli;

namespace {
std::string render_as(const Json& value, OutputFormat format, int width = 0) {
  std::ostringstream out;
  render(out, value, RenderOptions{format, false, width});
  return out.str();
}

Json sample_records() {
  return Json::array({
      {{"uid", "A1"}, {"state", "blank"}, {"fw", {{"version", "1.0.0"}}}},
      {{"uid", "B2"}, {"state", "device-complete"}, {"fw", {{"version", "1.2.0"}}}},
  });
}
}  // namespace

TEST_CASE("output: json and jsonl round-trip to the same records") {
  auto records = sample_records();
  CHECK(Json::parse(render_as(records, OutputFormat::json)) == records);
  std::istringstream lines(render_as(records, OutputFormat::jsonl));
  std::string line;
  Json back = Json::array();
  while (std::getline(lines, line)) back.push_back(Json::parse(line));
  CHECK(back == records);
}

TEST_CASE("output: table has a header row and one row per record, nested fields flattened") {
  auto text = render_as(sample_records(), OutputFormat::table);
  CHECK(text.find("UID") == 0);
  CHECK(text.find("FW.VERSION") != std::string::npos);
  CHECK(text.find("device-complete") != std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 3);
}

TEST_CASE("output: table shrinks wide columns to the terminal width") {
  Json rows = Json::array({{{"name", std::string(200, 'x')}, {"id", "1"}}});
  auto text = render_as(rows, OutputFormat::table, 40);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::size_t cps = 0;
    for (unsigned char c : line)
      if ((c & 0xC0) != 0x80) ++cps;
    CHECK(cps <= 40);
  }
  CHECK(text.find("…") != std::string::npos);
}

TEST_CASE("output: csv quotes commas, quotes and newlines") {
  Json rows = Json::array({{{"a", "x,y"}, {"b", "say \"hi\""}, {"c", "l1\nl2"}}});
  auto text = render_as(rows, OutputFormat::csv);
  CHECK(text == "a,b,c\n\"x,y\",\"say \"\"hi\"\"\",\"l1\nl2\"\n");
}

TEST_CASE("output: yaml quotes strings that would change type") {
  Json obj = {{"version", "1.0"}, {"flag", "true"}, {"name", "plain"}, {"n", 3}, {"list", {1, 2}}};
  auto text = render_as(obj, OutputFormat::yaml);
  CHECK(text.find("version: \"1.0\"") != std::string::npos);
  CHECK(text.find("flag: \"true\"") != std::string::npos);
  CHECK(text.find("name: plain") != std::string::npos);
  CHECK(text.find("n: 3") != std::string::npos);
  CHECK(text.find("list:\n  - 1\n  - 2\n") != std::string::npos);
}

TEST_CASE("output: a single object renders as key/value lines in table mode") {
  Json obj = {{"type", "ed25519"}, {"bits", 256}};
  CHECK(render_as(obj, OutputFormat::table) == "type  ed25519\nbits  256\n");
}

TEST_CASE("output: empty lists are valid in every format") {
  CHECK(render_as(Json::array(), OutputFormat::json) == "[]\n");
  CHECK(render_as(Json::array(), OutputFormat::jsonl).empty());
  CHECK(render_as(Json::array(), OutputFormat::yaml) == "[]\n");
}

TEST_CASE("output: unknown format names are usage errors listing the choices") {
  try {
    parse_output_format("xml");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.hint()).find("jsonl") != std::string::npos);
  }
}

#include "cli/progress.hpp"

TEST_CASE("progress: the line shows percent, a bar that fits, rate and ETA") {
  auto line = ProgressBar::format_line("signing", 50 * 1024 * 1024, 100 * 1024 * 1024, 2.0, 60);
  CHECK(line.starts_with("signing  50% ["));
  CHECK(line.find("25.0 MiB/s") != std::string::npos);
  CHECK(line.find("ETA 2s") != std::string::npos);
  CHECK(line.size() <= 60);
  auto unknown = ProgressBar::format_line("upload", 2048, 0, 1.0, 60);
  CHECK(unknown == "upload 2.0 KiB 2.0 KiB/s");
}
