// Maintenance windows: weekly local-time windows such as "Mon-Fri 01:00-04:00" or "Sat,Sun 22:00-02:00"
// (crossing midnight), evaluated in an IANA time zone (the system's tzdata, through date/tz.h). Pure: the
// time is always an argument; nothing here reads the clock or prints.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

struct MaintenanceWindow {
  unsigned days = 0;     // bit 0 Monday .. bit 6 Sunday: the days the window opens on
  int start_minute = 0;  // local minutes after midnight, 0..1439
  int end_minute = 0;    // 1..1440; at or below start_minute: the window closes the next day
  bool operator==(const MaintenanceWindow&) const = default;
};

// "DAYS HH:MM-HH:MM": DAYS a comma list of days (Mon, Tue, Wed, Thu, Fri, Sat, Sun; any case) and ranges
// (Mon-Fri; Fri-Mon wraps over the week end); the end may be 24:00. nullopt, with `why` set, for malformed
// text or a window of zero length.
std::optional<MaintenanceWindow> parse_maintenance_window(std::string_view text, std::string& why);
// The canonical text: "Mon-Fri 01:00-04:00", "Sat,Sun 22:00-02:00".
std::string maintenance_window_text(const MaintenanceWindow& window);

// True when `name` is a time zone of the system's database ("UTC", "Europe/Berlin").
bool known_time_zone(const std::string& name);

// True when one of the windows is open at `unix_seconds` in the zone (an unknown zone: false). Local time
// as the zone has it then: on a spring-forward day a window inside the skipped hour does not open; on a
// fall-back day the repeated hour is inside a window twice.
bool window_open(const std::vector<MaintenanceWindow>& windows, const std::string& zone, std::int64_t unix_seconds);

// When the next window opens, at or after `unix_seconds` (itself when one is open then); nullopt when none
// opens within the next 8 days (it never opens) or the zone is unknown.
std::optional<std::int64_t> next_window_open(const std::vector<MaintenanceWindow>& windows, const std::string& zone,
                                             std::int64_t unix_seconds);

}  // namespace kiln
