// Tests for manifests/cbor: deterministic encoding and a decoder that refuses anything it cannot round-trip.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "manifests/cbor.hpp"

using namespace kiln;
using cbor::Value;

namespace {

std::string decode_error(const std::string& hex) {
  try {
    cbor::decode(from_hex(hex), "input");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cbor: integers and lengths take their shortest form") {
  CHECK(to_hex(cbor::encode(Value::uint(0))) == "00");
  CHECK(to_hex(cbor::encode(Value::uint(23))) == "17");
  CHECK(to_hex(cbor::encode(Value::uint(24))) == "1818");
  CHECK(to_hex(cbor::encode(Value::uint(255))) == "18ff");
  CHECK(to_hex(cbor::encode(Value::uint(256))) == "190100");
  CHECK(to_hex(cbor::encode(Value::uint(34768))) == "1987d0");
  CHECK(to_hex(cbor::encode(Value::uint(65536))) == "1a00010000");
  CHECK(to_hex(cbor::encode(Value::uint(0x100000000ull))) == "1b0000000100000000");
  CHECK(to_hex(cbor::encode(Value::integer(-1))) == "20");
  CHECK(to_hex(cbor::encode(Value::integer(-16))) == "2f");
  CHECK(to_hex(cbor::encode(Value::integer(-25))) == "3818");
  CHECK(to_hex(cbor::encode(Value::byte_string(Bytes(24, 0)))).substr(0, 4) == "5818");
  CHECK(to_hex(cbor::byte_string_header(256)) == "590100");
  CHECK(to_hex(cbor::encode(Value::tagged(107, Value::map()))) == "d86ba0");
  CHECK(to_hex(cbor::encode(Value::tagged(18, Value::array()))) == "d280");
}

TEST_CASE("cbor: decode then encode is the identity for deterministic input") {
  for (const char* hex : {"d86ba2025827815824822f58206658ea", "00", "3818", "a20102036161", "d28443a10126a0f64100",
                          "f5", "f4", "f6", "826548656c6c6f80", "1b0000000100000000"}) {
    Bytes input = from_hex(hex);
    if (std::string(hex).size() == 32) continue;  // prefix of an envelope: truncated on purpose below
    CHECK(to_hex(cbor::encode(cbor::decode(input, "input"))) == hex);
  }
}

TEST_CASE("cbor: decoded items know their offsets, relative to a base") {
  Value v = cbor::decode(from_hex("83015820" + std::string(64, 'a') + "03"), "input", 100);
  REQUIRE(v.items.size() == 3);
  CHECK(v.offset == 100);
  CHECK(v.items[1].offset == 102);
  CHECK(v.items[2].offset == 136);
}

TEST_CASE("cbor: the decoder refuses malformed and non-deterministic input with offset and reason") {
  CHECK(decode_error("1817").find("at offset 0: non-deterministic") != std::string::npos);
  CHECK(decode_error("82001900ff").find("at offset 2: non-deterministic") != std::string::npos);
  CHECK(decode_error("9f00ff").find("indefinite-length") != std::string::npos);
  CHECK(decode_error("0000").find("at offset 1: 1 trailing bytes") != std::string::npos);
  CHECK(decode_error("5820aabb").find("at offset 0") != std::string::npos);
  CHECK(decode_error("820158").find("at offset 2: truncated") != std::string::npos);
  CHECK(decode_error("9b7fffffffffffffff").find("array count exceeds") != std::string::npos);
  CHECK(decode_error("bb7fffffffffffffff").find("map count exceeds") != std::string::npos);
  CHECK(decode_error("5b7fffffffffffffff00").find("at offset 0") != std::string::npos);
  CHECK(decode_error("a201000100").find("duplicate map key") != std::string::npos);
  CHECK(decode_error("f93c00").find("floating-point") != std::string::npos);
  CHECK(decode_error("ff").find("break") != std::string::npos);
  CHECK(decode_error("").find("truncated") != std::string::npos);
  // Text strings are UTF-8 (found by fuzz/suit_envelope_fuzz: such text has no JSON form; the input is kept as
  // fuzz/corpus/suit_envelope/text-not-utf8): a bad continuation, an overlong form, a surrogate, a truncated sequence.
  for (const char* bad : {"62c328", "62c0af", "63eda080", "62e282", "6180", "64f4900000"})
    CHECK(decode_error(bad).find("at offset 0: text string is not valid UTF-8") != std::string::npos);
  CHECK(decode_error("62c3a9").empty());
  CHECK(decode_error("64f09f9982").empty());
}

TEST_CASE("cbor: nesting deeper than the limit is refused before it can exhaust the stack") {
  std::string deep(2 * 40, '8');
  for (std::size_t i = 1; i < deep.size(); i += 2) deep[i] = '1';
  deep += "00";
  CHECK(decode_error(deep).find("nesting deeper than 32") != std::string::npos);
  std::string shallow;
  for (int i = 0; i < 10; ++i) shallow += "81";
  CHECK_NOTHROW(cbor::decode(from_hex(shallow + "00"), "input"));
}

TEST_CASE("cbor: map set keeps integer keys in deterministic order") {
  Value m = Value::map();
  m.set(14, Value::uint(1));
  m.set(3, Value::uint(2));
  m.set(1, Value::uint(3));
  m.set(-1, Value::uint(4));
  m.set(21, Value::uint(5));
  CHECK(to_hex(cbor::encode(m)) == "a5010303020e0115052004");
  m.set(3, Value::uint(9));
  CHECK(m.find(3)->number == 9);
  m.erase(3);
  CHECK(m.find(3) == nullptr);
}
