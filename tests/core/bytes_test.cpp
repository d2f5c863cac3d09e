// Tests for core/bytes: hex both ways (with and without 0x), the usage errors, and little-endian packing.
#include <doctest/doctest.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "tests/support/errors.hpp"

using namespace kiln;

TEST_CASE("bytes: to_hex writes two lower-case digits per byte") {
  CHECK(to_hex(Bytes{}) == "");
  CHECK(to_hex(Bytes{0x00, 0x01, 0x7f, 0x80, 0xab, 0xff}) == "00017f80abff");
  CHECK(to_hex(as_bytes("kiln")) == "6b696c6e");
  Bytes all(256);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint8_t>(i);
  auto hex = to_hex(all);
  REQUIRE(hex.size() == 512);
  CHECK(hex.substr(0, 8) == "00010203");
  CHECK(hex.substr(504) == "fcfdfeff");
  CHECK(from_hex(hex) == all);
}

TEST_CASE("bytes: from_hex takes either case and an optional 0x prefix") {
  CHECK(from_hex("") == Bytes{});
  CHECK(from_hex("0x") == Bytes{});
  CHECK(from_hex("DEADbeef") == Bytes{0xde, 0xad, 0xbe, 0xef});
  CHECK(from_hex("0xDEADbeef") == Bytes{0xde, 0xad, 0xbe, 0xef});
  CHECK(from_hex("0X00ff") == Bytes{0x00, 0xff});
}

TEST_CASE("bytes: odd length and non-hex digits are usage errors that say what is wrong") {
  using kiln::test::exit_code_of;
  CHECK(exit_code_of([] { from_hex("abc"); }) == ExitCode::usage);
  CHECK(exit_code_of([] { from_hex("0xabc"); }) == ExitCode::usage);
  CHECK(exit_code_of([] { from_hex("zz"); }) == ExitCode::usage);
  CHECK(exit_code_of([] { from_hex("0x0x"); }) == ExitCode::usage);  // only one prefix
  CHECK(exit_code_of([] { from_hex("12 4"); }) == ExitCode::usage);
  CHECK_THROWS_WITH_AS(from_hex("abc"), "hex string has an odd number of digits (3)", Error);
  CHECK_THROWS_WITH_AS(from_hex("0x12g4"), "'g' is not a hex digit", Error);
}

TEST_CASE("bytes: little-endian packing round-trips and puts the low byte first") {
  Bytes out;
  put_le16(out, 0x1234);
  put_le32(out, 0x96f3b83dU);  // MCUboot's image magic
  CHECK(out == Bytes{0x34, 0x12, 0x3d, 0xb8, 0xf3, 0x96});
  CHECK(get_le16(out, 0) == 0x1234);
  CHECK(get_le32(out, 2) == 0x96f3b83dU);
  Bytes high{0xff, 0xff, 0xff, 0xff};
  CHECK(get_le16(high, 0) == 0xffff);
  CHECK(get_le32(high, 0) == 0xffffffffU);
}
