// Tests for cli/output: every format carries the same data; tables fit; CSV and YAML quote correctly.
#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>
#include <yaml-cpp/yaml.h>

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

TEST_CASE("output: yaml nests lists inside lists") {
  Json obj = {{"components", Json::array({Json::array({"00"}), Json::array({"01", "02"})})}};
  auto text = render_as(obj, OutputFormat::yaml);
  CHECK(text == "components:\n  -\n    - \"00\"\n  -\n    - \"01\"\n    - \"02\"\n");
  auto doc = YAML::Load(text);
  REQUIRE(doc["components"].IsSequence());
  REQUIRE(doc["components"].size() == 2);
  CHECK(doc["components"][1][1].as<std::string>() == "02");
  CHECK(doc["components"][1][1].Tag() == "!");  // quoted: stays a string, not the number 2
}

TEST_CASE("output: yaml reads back as the same data, strings that look like other types stay strings") {
  Json obj = {{"version", "1.0"}, {"flag", "true"}, {"nothing", nullptr}, {"empty", ""}, {"dash", "-x"},
              {"colon", "a: b"}, {"count", 42}, {"ok", false}, {"ratio", 0.5}, {"lines", "l1\nl2"},
              {"unicode", "Müller ✓"}, {"none", Json::array()}, {"nested", {{"k", Json::object()}}}};
  auto doc = YAML::Load(render_as(obj, OutputFormat::yaml));
  for (const char* key : {"version", "flag", "empty", "dash", "colon", "lines", "unicode"}) {
    CAPTURE(key);
    CHECK(doc[key].as<std::string>() == obj[key].get<std::string>());
  }
  for (const char* key : {"version", "flag", "empty"}) {
    CAPTURE(key);
    CHECK(doc[key].Tag() == "!");
  }
  CHECK(doc["nothing"].IsNull());
  CHECK(doc["count"].as<int>() == 42);
  CHECK(doc["ok"].as<bool>() == false);
  CHECK(doc["ratio"].as<double>() == doctest::Approx(0.5));
  CHECK(doc["none"].IsSequence());
  CHECK(doc["none"].size() == 0);
  CHECK(doc["nested"]["k"].IsMap());
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

namespace {
// Bytes a hostile device or name can carry: ESC[2J (clear screen), BEL, CR, DEL, the 8-bit CSI
// U+009B, a right-to-left override, a stray 0xff byte; and ordinary Unicode that must survive.
const std::string hostile = "dev\x1b[2J\a\r\x7f\xc2\x9b" "31m\xe2\x80\xae" "ok\xff";
const std::string unicode = "Müller-Gerät ✓ 温度";

bool has_raw_control(const std::string& text, bool allow_newlines) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n' && allow_newlines) continue;
    if (c < 0x20 || c == 0x7f) return true;
    if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(text[i + 1]) <= 0x9f)
      return true;  // C1 control as UTF-8
    if (c == 0xe2 && text.compare(i, 3, "\xe2\x80\xae") == 0) return true;
    if (c == 0xff) return true;
  }
  return false;
}
}  // namespace

TEST_CASE("output: terminal_safe escapes C0, DEL, C1, bidi overrides and invalid UTF-8, keeps Unicode") {
  CHECK(terminal_safe(hostile) == "dev\\x1b[2J\\x07\\r\\x7f\\u009b31m\\u202eok\\xff");
  CHECK(terminal_safe(unicode) == unicode);
  CHECK(terminal_safe("a\nb\tc") == "a\\nb\\tc");
  CHECK(terminal_safe("a\nb", true) == "a\nb");
  CHECK(terminal_safe("\xc0\xaf") == "\\xc0\\xaf");          // overlong '/'
  CHECK(terminal_safe("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a UTF-16 surrogate
  CHECK(terminal_safe("\xe2\x82") == "\\xe2\\x82");           // truncated sequence
}

TEST_CASE("output: device fields with ESC[2J reach no format raw; json stays parseable") {
  Json records = Json::array({{{"uid", hostile}, {"state", "testing"}, {"detail", unicode}},
                              {{"uid", "B2"}, {"state", hostile}, {"detail", "fine"}}});
  for (auto format : {OutputFormat::table, OutputFormat::csv, OutputFormat::yaml, OutputFormat::json, OutputFormat::jsonl}) {
    CAPTURE(output_format_name(format));
    auto text = render_as(records, format, 80);
    CHECK_FALSE(has_raw_control(text, true));
    CHECK(text.find("Müller-Gerät ✓ 温度") != std::string::npos);
    auto single = render_as(records[0], format, 80);
    CHECK_FALSE(has_raw_control(single, true));
  }
  // Keys (map keys from a device, e.g. per-UID tallies) are escaped as well.
  CHECK_FALSE(has_raw_control(render_as(Json{{hostile, 1}}, OutputFormat::table), true));
  CHECK_FALSE(has_raw_control(render_as(Json::array({Json{{hostile, 1}}}), OutputFormat::csv), true));
  // JSON keeps the value (U+FFFD for the invalid byte) and parses back.
  auto parsed = Json::parse(render_as(records, OutputFormat::json));
  CHECK(parsed[0]["uid"].get<std::string>().starts_with("dev\x1b[2J"));
  CHECK(parsed[0]["detail"] == unicode);
  // YAML double-quotes the value with its own escapes.
  CHECK(render_as(Json{{"uid", "a\x1b[2Jb"}}, OutputFormat::yaml) == "uid: \"a\\x1b[2Jb\"\n");
}

namespace {
// A stream buffer that counts flushes: what a reader at the other end of a pipe sees when.
class CountingBuffer : public std::stringbuf {
 public:
  int syncs = 0;

 protected:
  int sync() override {
    ++syncs;
    return std::stringbuf::sync();
  }
};
}  // namespace

TEST_CASE("output: jsonl records are flushed one by one, so a pipe reader gets each event when it happens") {
  CountingBuffer buffer;
  std::ostream out(&buffer);
  auto writer = make_record_writer(out, RenderOptions{OutputFormat::jsonl, false, 0});
  writer->add(Json{{"step", "attest"}});
  CHECK(buffer.syncs == 1);
  CHECK(buffer.str() == "{\"step\":\"attest\"}\n");
  writer->add(Json{{"step", "firmware"}});
  CHECK(buffer.syncs == 2);
  writer->finish();
}
