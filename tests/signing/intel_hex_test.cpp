// Tests for signing/intel_hex: exact records (checksums computed independently, as Python's IntelHex
// writes them), parsing with extended segment/linear addresses and gaps, and each malformed-file error.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "signing/intel_hex.hpp"
#include "tests/support/errors.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

Bytes counting(std::size_t n, std::uint8_t from = 0) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(from + i);
  return out;
}

}  // namespace

TEST_CASE("intel hex: a small file is written as 16-byte data records and an end record") {
  Bytes data = counting(18);
  std::vector<HexSegment> segments = {{0x0100, data}};
  CHECK(format_intel_hex(segments) ==
        ":10010000000102030405060708090A0B0C0D0E0F77\n"
        ":020110001011CC\n"
        ":00000001FF\n");
  CHECK(format_intel_hex({}) == ":00000001FF\n");
}

TEST_CASE("intel hex: data crossing 64 KiB gets extended linear address records and splits at the boundary") {
  Bytes data = counting(16);
  std::vector<HexSegment> segments = {{0xfff8, data}};
  CHECK(format_intel_hex(segments) ==
        ":020000040000FA\n"
        ":08FFF8000001020304050607E5\n"
        ":020000040001F9\n"
        ":0800000008090A0B0C0D0E0F9C\n"
        ":00000001FF\n");
}

TEST_CASE("intel hex: format then parse round-trips, with extended addresses and gaps") {
  Bytes a = counting(40), b(8, 0x11);
  std::vector<HexSegment> segments = {{0x0800fff0, a}, {0x08010100, b}};
  std::string text = format_intel_hex(segments);
  CHECK(text.starts_with(":020000040800F2\n:10FFF000"));
  auto image = parse_intel_hex(text);
  CHECK(image.base_address == 0x0800fff0);
  REQUIRE(image.data.size() == 0x118);
  CHECK(std::equal(a.begin(), a.end(), image.data.begin()));
  CHECK(image.data[40] == 0xff);  // gap filled as erased flash
  CHECK(image.data[0x10f] == 0xff);
  CHECK(image.data[0x110] == 0x11);
  CHECK(image.data[0x117] == 0x11);
}

TEST_CASE("intel hex: extended segment addresses, start records, CRLF and blank lines are read") {
  // Segment 0x1000 → base 0x10000; the start-address record (type 05) is dropped as imgtool drops it.
  auto image = parse_intel_hex(
      ":020000021000EC\r\n"
      "\r\n"
      ":020004001122C7\r\n"
      ":0400000508000100EE\r\n"
      ":00000001FF\r\n"
      "trailing text after the end record is not read\n");
  CHECK(image.base_address == 0x10004);
  CHECK(image.data == Bytes{0x11, 0x22});
  // Only an end record: an empty image at address 0.
  auto empty = parse_intel_hex(":00000001FF\n");
  CHECK(empty.base_address == 0);
  CHECK(empty.data.empty());
}

TEST_CASE("intel hex: each malformed file fails naming the line and why") {
  const std::pair<const char*, const char*> cases[] = {
      {"0100000000FF\n", "invalid Intel HEX at line 1: a record must start with ':'"},
      {"\n:0100000000FE\n:00000001FF\n", "invalid Intel HEX at line 2: bad checksum"},
      {":10000000\n:00000001FF\n", "invalid Intel HEX at line 1: the record length does not match its byte count"},
      {":0100000000\n", "invalid Intel HEX at line 1: the record length does not match its byte count"},
      {":0100000000F\n", "invalid Intel HEX at line 1: the record is not an even number of hex digits"},
      {":01000000ZZFF\n", "invalid Intel HEX at line 1: the record is not an even number of hex digits"},
      {":00000007F9\n", "invalid Intel HEX at line 1: unknown record type 07"},
      {":0100000400FB\n", "invalid Intel HEX at line 1: extended linear address record needs 2 bytes"},
      {":0100000200FD\n", "invalid Intel HEX at line 1: extended segment address record needs 2 bytes"},
      {":0101000001FD\n", "invalid Intel HEX at line 1: missing end-of-file record"},
      {"", "invalid Intel HEX at line 0: missing end-of-file record"},
  };
  for (const auto& c : cases) {
    const std::string text = c.first;
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(parse_intel_hex(text), c.second, Error);
    CHECK(exit_code_of([&] { parse_intel_hex(text); }) == ExitCode::failure);
  }
}

TEST_CASE("intel hex: data written twice at one address is refused, whether the same start or inside a run") {
  CHECK_THROWS_WITH_AS(parse_intel_hex(":0101000001FD\n:0101000001FD\n:00000001FF\n"),
                       "Intel HEX data overlaps at address 0x100 (line 2)", Error);
  // 0x100..0x110 then a byte at 0x108: overlap found when the runs are laid out.
  Bytes sixteen = counting(16);
  std::vector<HexSegment> first = {{0x100, sixteen}};
  std::string text = format_intel_hex(first);
  text.insert(text.rfind(":00000001FF"), ":0101080001F5\n");
  CHECK_THROWS_WITH_AS(parse_intel_hex(text), "Intel HEX data overlaps at address 0x108", Error);
}

TEST_CASE("intel hex: a span wider than the limit is refused before allocation, naming the gap") {
  Bytes one{0xaa};
  std::vector<HexSegment> far = {{0, one}, {2u << 20, one}};
  std::string text = format_intel_hex(far);
  CHECK_THROWS_WITH_AS(parse_intel_hex(text, 1u << 20),
                       "Intel HEX data spans 0x0..0x200001 (2097153 bytes), more than the 1 MiB limit for one image; "
                       "nothing is written between 0x1 and 0x200000",
                       Error);
  CHECK_THROWS_WITH_AS(parse_intel_hex(text, 0x40000, "--slot-size 0x40000"),
                       "Intel HEX data spans 0x0..0x200001 (2097153 bytes), more than --slot-size 0x40000 (262144 "
                       "bytes); nothing is written between 0x1 and 0x200000",
                       Error);
  CHECK(exit_code_of([&] { parse_intel_hex(text, 1u << 20); }) == ExitCode::failure);
  // Exactly at the limit is fine.
  CHECK(parse_intel_hex(text, (2u << 20) + 1).data.size() == (2u << 20) + 1);
  // A contiguous run longer than the limit: no gap to name.
  Bytes run = counting(64);
  std::vector<HexSegment> contiguous = {{0x1000, run}};
  CHECK_THROWS_WITH_AS(parse_intel_hex(format_intel_hex(contiguous), 32, "--slot-size 32"),
                       "Intel HEX data spans 0x1000..0x1040 (64 bytes), more than --slot-size 32 (32 bytes)", Error);
}

TEST_CASE("intel hex: is_intel_hex_path looks at the last extension only, in any case") {
  CHECK(is_intel_hex_path("zephyr.hex"));
  CHECK(is_intel_hex_path("build/zephyr.HEX"));
  CHECK(is_intel_hex_path("a.bin.Hex"));
  CHECK_FALSE(is_intel_hex_path("zephyr.bin"));
  CHECK_FALSE(is_intel_hex_path("hex"));
  CHECK_FALSE(is_intel_hex_path("build.hex/zephyr"));
  CHECK_FALSE(is_intel_hex_path("zephyr.hexx"));
  CHECK_FALSE(is_intel_hex_path(""));
}
