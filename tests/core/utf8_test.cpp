// core/utf8: the strict UTF-8 check and the repair that keeps text storable.
#include <doctest/doctest.h>

#include <string>

#include "core/utf8.hpp"

using namespace kiln;

TEST_CASE("to_valid_utf8: valid text is kept byte for byte; each bad byte becomes one U+FFFD") {
  const std::string valid = "Gr\xC3\xBC\xC3\x9F Gott \xE2\x82\xAC \xF0\x9F\x94\x91";  // ü ß € and a 4-byte key emoji
  CHECK(is_utf8(valid));
  CHECK(to_valid_utf8(valid) == valid);
  CHECK(to_valid_utf8("") == "");
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(to_valid_utf8("a\xFF" "b") == "a" + fffd + "b");
  // An overlong '/', a surrogate (U+D800), a code point beyond U+10FFFF: each byte replaced.
  CHECK(to_valid_utf8("\xC0\xAF") == fffd + fffd);
  CHECK(to_valid_utf8("\xED\xA0\x80") == fffd + fffd + fffd);
  CHECK(to_valid_utf8("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd);
  // A sequence cut short (as a 256-byte truncation can leave it) keeps what came before.
  CHECK(to_valid_utf8("ok\xE2\x82") == "ok" + fffd + fffd);
  for (const char* bad : {"\xFF", "\xC0\xAF", "\xED\xA0\x80", "ok\xE2\x82"}) CHECK(is_utf8(to_valid_utf8(bad)));
}
