// Tests for core/maintenance_window: parsing (canonical text, refusals) and evaluation against a table of
// cases in real zones: day lists and ranges, midnight crossing, both DST changes, the next opening.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/maintenance_window.hpp"
#include "core/time.hpp"

using namespace kiln;

namespace {

std::int64_t at(const char* text) {
  auto t = unix_seconds(text);
  REQUIRE(t.has_value());
  return *t;
}

std::vector<MaintenanceWindow> windows(const std::vector<const char*>& texts) {
  std::vector<MaintenanceWindow> out;
  for (auto* text : texts) {
    std::string why;
    auto w = parse_maintenance_window(text, why);
    INFO(text << ": " << why);
    REQUIRE(w.has_value());
    out.push_back(*w);
  }
  return out;
}

}  // namespace

TEST_CASE("maintenance window: parse gives the canonical text; malformed and zero-length windows are refused") {
  struct Case {
    const char* text;
    const char* canonical;  // nullptr: refused
  };
  const Case cases[] = {
      {"Mon-Fri 01:00-04:00", "Mon-Fri 01:00-04:00"},
      {"sat,SUN 22:00-02:00", "Sat,Sun 22:00-02:00"},
      {"Mon,Tue,Wed 00:00-24:00", "Mon-Wed 00:00-24:00"},
      {"Fri-Mon 23:30-00:30", "Mon,Fri-Sun 23:30-00:30"},
      {"Mon-Sun 12:00-12:01", "Mon-Sun 12:00-12:01"},
      {"Wed 09:15-17:45", "Wed 09:15-17:45"},
      {"Mon-Fri 01:00-01:00", nullptr},  // zero length
      {"Mon-Fri 1:00-4:00", nullptr},
      {"Mon-Fri 24:00-02:00", nullptr},
      {"Mon-Fri 01:00-04:60", nullptr},
      {"Mon-Fry 01:00-04:00", nullptr},
      {"Mon-Fri", nullptr},
      {"01:00-04:00", nullptr},
      {"Mon, 01:00-04:00", nullptr},
      {"Mon,  01:00-04:00", nullptr},
      {"Mon 01:00", nullptr},
      {"", nullptr},
  };
  for (auto& c : cases) {
    std::string why;
    auto w = parse_maintenance_window(c.text, why);
    INFO(c.text);
    if (c.canonical) {
      REQUIRE(w.has_value());
      CHECK(maintenance_window_text(*w) == c.canonical);
      CHECK(why.empty());
    } else {
      CHECK_FALSE(w.has_value());
      CHECK(why.find("DAYS HH:MM-HH:MM") != std::string::npos);
    }
  }
  std::string why;
  CHECK_FALSE(parse_maintenance_window("Tue 03:00-03:00", why));
  CHECK(why.find("zero length") != std::string::npos);
}

TEST_CASE("maintenance window: time zones are the system's database") {
  CHECK(known_time_zone("UTC"));
  CHECK(known_time_zone("Europe/Berlin"));
  CHECK(known_time_zone("America/New_York"));
  CHECK_FALSE(known_time_zone("Europe/Atlantis"));
  CHECK_FALSE(known_time_zone(""));
  CHECK_FALSE(window_open(windows({"Mon-Sun 00:00-24:00"}), "Mars/Olympus", at("2026-12-07T10:00:00Z")));
}

TEST_CASE("maintenance window: open or not, a table of cases (days, midnight, zones, DST)") {
  struct Case {
    std::vector<const char*> windows;
    const char* zone;
    const char* when;  // UTC
    bool open;
  };
  // 2026-12-07 is a Monday; Europe/Berlin is UTC+1 in winter, UTC+2 in summer (from 2026-03-29 01:00 UTC to
  // 2026-10-25 01:00 UTC); America/New_York is UTC-5 in winter.
  const std::vector<Case> cases = {
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T01:00:00Z", true},   // opens on the minute
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T00:59:59Z", false},
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T03:59:59Z", true},
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T04:00:00Z", false},  // closes at its end
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-12T02:00:00Z", false},  // Saturday
      {{"Sat,Sun 01:00-04:00"}, "UTC", "2026-12-12T02:00:00Z", true},
      {{"Sat,Sun 01:00-04:00"}, "UTC", "2026-12-09T02:00:00Z", false},  // Wednesday
      {{"Mon,Wed-Fri 01:00-04:00"}, "UTC", "2026-12-08T02:00:00Z", false},  // Tuesday
      {{"Mon,Wed-Fri 01:00-04:00"}, "UTC", "2026-12-10T02:00:00Z", true},   // Thursday
      // Crossing midnight: Friday 22:00 to Saturday 02:00, not Saturday 22:00 nor Friday 01:00.
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-11T23:00:00Z", true},
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-12T01:59:00Z", true},
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-12T02:00:00Z", false},
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-12T23:00:00Z", false},
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-11T01:00:00Z", false},
      {{"Sun 23:00-01:00"}, "UTC", "2026-12-07T00:30:00Z", true},  // Sunday's window into Monday
      // Zones: 01:00-04:00 Berlin is 00:00-03:00 UTC in winter, 23:00-02:00 UTC the day before in summer.
      {{"Mon-Fri 01:00-04:00"}, "Europe/Berlin", "2026-12-07T00:30:00Z", true},
      {{"Mon-Fri 01:00-04:00"}, "Europe/Berlin", "2026-12-07T03:30:00Z", false},
      {{"Mon-Fri 01:00-04:00"}, "Europe/Berlin", "2026-06-07T23:30:00Z", true},  // Monday 01:30 CEST
      {{"Mon-Fri 01:00-04:00"}, "America/New_York", "2026-12-07T07:00:00Z", true},  // Monday 02:00 EST
      {{"Mon-Fri 01:00-04:00"}, "America/New_York", "2026-12-07T02:00:00Z", false},  // Sunday 21:00 EST
      // Spring forward (Berlin, Sunday 2026-03-29: 02:00 local does not exist): a window inside the skipped
      // hour never opens that day; one across it is open from 03:00 CEST.
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-03-29T01:00:00Z", false},  // 03:00 CEST
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-03-29T00:59:59Z", false},  // 01:59:59 CET
      {{"Sun 02:00-03:30"}, "Europe/Berlin", "2026-03-29T01:10:00Z", true},   // 03:10 CEST
      {{"Sun 02:00-03:30"}, "Europe/Berlin", "2026-03-29T01:30:00Z", false},  // 03:30 CEST
      // Fall back (Berlin, Sunday 2026-10-25: 02:00-03:00 happens twice): open both times.
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-10-25T00:10:00Z", true},  // 02:10 CEST
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-10-25T01:10:00Z", true},  // 02:10 CET
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-10-25T00:40:00Z", false},
      // Several windows: any one open.
      {{"Mon 01:00-02:00", "Tue 05:00-06:00"}, "UTC", "2026-12-08T05:30:00Z", true},
      {{"Mon 01:00-02:00", "Tue 05:00-06:00"}, "UTC", "2026-12-08T01:30:00Z", false},
      {{"Mon-Sun 00:00-24:00"}, "Asia/Kolkata", "2026-12-09T12:34:00Z", true},
  };
  for (auto& c : cases) {
    auto w = windows(c.windows);
    INFO(c.windows.front() << " in " << c.zone << " at " << c.when);
    CHECK(window_open(w, c.zone, at(c.when)) == c.open);
  }
}

TEST_CASE("maintenance window: the next opening (itself when open; across midnight, zones and DST)") {
  struct Case {
    std::vector<const char*> windows;
    const char* zone;
    const char* from;
    const char* next;
  };
  const std::vector<Case> cases = {
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T02:00:00Z", "2026-12-07T02:00:00Z"},  // open: now
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-07T04:00:00Z", "2026-12-08T01:00:00Z"},
      {{"Mon-Fri 01:00-04:00"}, "UTC", "2026-12-11T05:00:00Z", "2026-12-14T01:00:00Z"},  // Friday: next Monday
      {{"Fri 22:00-02:00"}, "UTC", "2026-12-12T03:00:00Z", "2026-12-18T22:00:00Z"},
      {{"Mon-Fri 01:00-04:00"}, "Europe/Berlin", "2026-12-07T12:00:00Z", "2026-12-08T00:00:00Z"},
      {{"Sat 12:00-13:00", "Sun 08:00-09:00"}, "UTC", "2026-12-12T14:00:00Z", "2026-12-13T08:00:00Z"},
      // Spring forward: the window across the gap opens at its end (03:00 CEST = 01:00 UTC).
      {{"Sun 02:00-03:30"}, "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"},
      // A window inside the gap skips that Sunday: the next opens a week later (02:00 CEST = 00:00 UTC).
      {{"Sun 02:00-02:30"}, "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-04-05T00:00:00Z"},
  };
  for (auto& c : cases) {
    auto w = windows(c.windows);
    INFO(c.windows.front() << " in " << c.zone << " from " << c.from);
    auto next = next_window_open(w, c.zone, at(c.from));
    REQUIRE(next.has_value());
    CHECK(iso8601(*next) == iso8601(at(c.next)));
  }
  CHECK_FALSE(next_window_open({}, "UTC", at("2026-12-07T00:00:00Z")).has_value());
  CHECK_FALSE(next_window_open(windows({"Mon 01:00-02:00"}), "Nowhere/Land", at("2026-12-07T00:00:00Z")).has_value());
}
