// Tests for core/base64: RFC 4648 vectors both ways, and strict decoding.
#include <doctest/doctest.h>

#include "core/base64.hpp"

using namespace kiln;

TEST_CASE("base64: RFC 4648's test vectors encode and decode") {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& v : vectors) {
    const std::string plain = v.first;
    CAPTURE(plain);
    CHECK(to_base64(as_bytes(v.first)) == v.second);
    auto decoded = from_base64(v.second);
    REQUIRE(decoded);
    CHECK(std::string(decoded->begin(), decoded->end()) == v.first);
  }
  Bytes all(256);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint8_t>(i);
  CHECK(from_base64(to_base64(all)) == all);
}

TEST_CASE("base64: wrong lengths, foreign characters and misplaced padding are refused") {
  for (const char* bad : {"Zg=", "Zm9", "Zm9v!A==", "Z=g=", "=Zg=", "Zg==Zg==", "Zm 9v", "Zg\n=="}) {
    const std::string text = bad;
    CAPTURE(text);
    CHECK_FALSE(from_base64(bad));
  }
}
