// Tests for core/time: formatting Unix seconds, normalizing ISO 8601 input to UTC "YYYY-MM-DDTHH:MM:SSZ",
// and refusing what is not a real date and time. Expected values computed with `date -u` (GNU coreutils).
#include <doctest/doctest.h>

#include <chrono>

#include "core/time.hpp"

using namespace kiln;

TEST_CASE("time: iso8601 formats Unix seconds as UTC with a Z") {
  CHECK(iso8601(0) == "1970-01-01T00:00:00Z");
  CHECK(iso8601(951782400) == "2000-02-29T00:00:00Z");
  CHECK(iso8601(1700000000) == "2023-11-14T22:13:20Z");
  CHECK(iso8601(4102444799) == "2099-12-31T23:59:59Z");
}

TEST_CASE("time: now_iso8601 is the current second in the same form") {
  auto before = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  auto now = now_iso8601();
  auto after = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  REQUIRE(now.size() == 20);
  CHECK(now.back() == 'Z');
  auto seconds = unix_seconds(now);
  REQUIRE(seconds);
  CHECK(*seconds >= before.count());
  CHECK(*seconds <= after.count());
}

TEST_CASE("time: dates and zoned times are normalized to UTC") {
  const std::pair<const char*, const char*> cases[] = {
      {"2026-01-31", "2026-01-31T00:00:00Z"},
      {"2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"},
      {"2026-01-31t12:00:00z", "2026-01-31T12:00:00Z"},
      {"2026-01-31 12:00:00Z", "2026-01-31T12:00:00Z"},
      {"2026-01-31T12:00:00.123456789Z", "2026-01-31T12:00:00Z"},
      {"2024-02-29T23:30:00+02:00", "2024-02-29T21:30:00Z"},
      {"2024-02-29T23:30:00-05:30", "2024-03-01T05:00:00Z"},
      {"2000-02-29", "2000-02-29T00:00:00Z"},
      {"2026-06-30T23:59:60Z", "2026-06-30T23:59:59Z"},  // a leap second sorts with the second before it
  };
  for (const auto& c : cases) {
    const std::string input = c.first;
    CAPTURE(input);
    auto normal = normalize_timestamp(c.first);
    REQUIRE(normal);
    CHECK(*normal == c.second);
  }
}

TEST_CASE("time: what is not a real date and time with a zone is refused") {
  for (const char* bad : {"", "yesterday", "2026-02-30", "2026-02-29", "1900-02-29", "2026-13-01", "2026-00-10",
                          "2026-01-00", "2026-04-31", "1969-12-31", "2026-1-31", "26-01-31", "2026/01/31",
                          "2026-01-31T12:00:00", "2026-01-31T24:00:00Z", "2026-01-31T12:60:00Z",
                          "2026-01-31T12:00:61Z", "2026-01-31T12:00Z", "2026-01-31T12:00:00.Z",
                          "2026-01-31T12:00:00.1234567890Z", "2026-01-31T12:00:00+0200", "2026-01-31T12:00:00+24:00",
                          "2026-01-31T12:00:00+02:60", "2026-01-31T12:00:00Zjunk", "2026-01-31X12:00:00Z",
                          "2026-01-31T", " 2026-01-31"}) {
    const std::string input = bad;
    CAPTURE(input);
    CHECK_FALSE(normalize_timestamp(bad));
    CHECK_FALSE(unix_seconds(bad));
  }
}

TEST_CASE("time: unix_seconds reads what normalize_timestamp accepts") {
  CHECK(unix_seconds("1970-01-01") == 0);
  CHECK(unix_seconds("2026-01-31") == 1769817600);
  CHECK(unix_seconds("2024-02-29T23:30:00+02:00") == 1709242200);
  CHECK(unix_seconds("2023-11-14T22:13:20Z") == 1700000000);
  // Round trip: formatting then reading gives the same second.
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{86399}, std::int64_t{1709242200}, std::int64_t{4102444799}})
    CHECK(unix_seconds(iso8601(t)) == t);
}

TEST_CASE("time: normalized times compare correctly as text") {
  auto earlier = normalize_timestamp("2026-01-31T23:30:00-02:00");  // 2026-02-01T01:30:00Z
  auto later = normalize_timestamp("2026-02-01T03:00:00+01:00");    // 2026-02-01T02:00:00Z
  REQUIRE(earlier);
  REQUIRE(later);
  CHECK(*earlier == "2026-02-01T01:30:00Z");
  CHECK(*earlier < *later);
}

TEST_CASE("time: iso8601_millis formats milliseconds, truncated, as the ledger writes them") {
  using std::chrono::milliseconds;
  std::chrono::system_clock::time_point at(milliseconds(1700000000123));
  CHECK(iso8601_millis(at) == "2023-11-14T22:13:20.123Z");
  CHECK(iso8601_millis(std::chrono::system_clock::time_point(milliseconds(5))) == "1970-01-01T00:00:00.005Z");
  CHECK(iso8601_millis(at + std::chrono::microseconds(999)) == "2023-11-14T22:13:20.123Z");
  auto now = now_iso8601_millis();
  REQUIRE(now.size() == 24);
  CHECK(now[19] == '.');
  CHECK(now.back() == 'Z');
}

TEST_CASE("time: unix_millis keeps the fraction's first three digits; unix_now is the current second") {
  CHECK(unix_millis("2023-11-14T22:13:20.123Z") == 1700000000123);
  CHECK(unix_millis("2023-11-14T22:13:20.1Z") == 1700000000100);
  CHECK(unix_millis("2023-11-14T22:13:20.123999Z") == 1700000000123);
  CHECK(unix_millis("2023-11-14T22:13:20Z") == 1700000000000);
  CHECK(unix_millis("2023-11-14T23:13:20.5+01:00") == 1700000000500);
  CHECK_FALSE(unix_millis("2023-11-14T22:13:20.Z"));
  CHECK(unix_millis(now_iso8601_millis()).value() / 1000 >= unix_seconds(now_iso8601()).value() - 1);
  auto before = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  auto now = unix_now();
  CHECK(now >= before.count());
  CHECK(now <= before.count() + 1);
}
