// Tests for core/device_uid: the one UID alphabet (1 to 128 of A-Z a-z 0-9 - _ . :, never "." or "..").
#include <doctest/doctest.h>

#include <string>

#include "core/device_uid.hpp"

using namespace kiln;

TEST_CASE("device_uid: every character of the alphabet, at the length limits") {
  CHECK(is_device_uid("a"));
  CHECK(is_device_uid("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:"));
  CHECK(is_device_uid("board-0042"));
  CHECK(is_device_uid("00:11:22:33:44:55"));
  CHECK(is_device_uid("..."));
  CHECK(is_device_uid(".hidden"));
  CHECK(is_device_uid(std::string(max_device_uid_length, 'x')));
  CHECK_FALSE(is_device_uid(std::string(max_device_uid_length + 1, 'x')));
  CHECK(max_device_uid_length == 128);
  CHECK(device_uid_alphabet == "1 to 128 of A-Z a-z 0-9 - _ . :");
}

TEST_CASE("device_uid: empty, path components and characters outside the alphabet are refused") {
  for (const std::string& bad : {std::string(), std::string("."), std::string(".."), std::string("a/b"),
                                std::string("../etc"), std::string("a b"), std::string("a\\b"), std::string("a%2f"),
                                std::string("uid?x=1"), std::string("a#b"), std::string("a\nb"), std::string("a\0b", 3),
                                std::string("caf\xC3\xA9"), std::string("\xEF\xBC\xA1")}) {  // é, fullwidth A
    CAPTURE(bad);
    CHECK_FALSE(is_device_uid(bad));
  }
  // Every byte outside the alphabet, alone and after a valid prefix.
  const std::string allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:";
  for (int c = 0; c < 256; ++c) {
    const std::string uid = "ok" + std::string(1, static_cast<char>(c));
    CAPTURE(c);
    CHECK(is_device_uid(uid) == (allowed.find(static_cast<char>(c)) != std::string::npos));
  }
}
