// Tests for signing/uuid: UUIDv5 as Python's uuid.uuid5 computes it.
#include <doctest/doctest.h>

#include "core/bytes.hpp"
#include "signing/uuid.hpp"

using namespace kiln;

TEST_CASE("uuid5: Python's uuid.uuid5 values, version and variant bits") {
  const auto dns = from_hex("6ba7b8109dad11d180b400c04fd430c8");
  // uuid.uuid5(uuid.NAMESPACE_DNS, "python.org") == 886313e1-3b8a-5372-9b90-0c9aee199e5d
  CHECK(to_hex(uuid5(dns, "python.org")) == "886313e13b8a53729b900c9aee199e5d");
  // uuid.uuid5(uuid.NAMESPACE_DNS, "example.com") == cfbff0d1-9375-5685-968c-48ce8b15ae17
  CHECK(to_hex(uuid5(dns, "example.com")) == "cfbff0d193755685968c48ce8b15ae17");
  auto id = uuid5(dns, "");
  REQUIRE(id.size() == 16);
  CHECK((id[6] & 0xf0) == 0x50);
  CHECK((id[8] & 0xc0) == 0x80);
  CHECK(uuid5(dns, "a") != uuid5(dns, "b"));
}
