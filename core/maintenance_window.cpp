// Maintenance windows (core/maintenance_window.hpp).
#include "core/maintenance_window.hpp"

#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>

namespace kiln {
namespace {

constexpr std::array<const char*, 7> day_names = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

std::optional<int> day_index(std::string_view text) {
  for (std::size_t i = 0; i < day_names.size(); ++i) {
    std::string_view name = day_names[i];
    bool same = text.size() == name.size() && std::equal(text.begin(), text.end(), name.begin(), [](char a, char b) {
                  return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
                });
    if (same) return static_cast<int>(i);
  }
  return std::nullopt;
}

// "HH:MM" -> minutes; 24:00 only when `end`.
std::optional<int> minutes_of(std::string_view text, bool end) {
  if (text.size() != 5 || text[2] != ':') return std::nullopt;
  for (std::size_t i : {0, 1, 3, 4})
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
  int h = (text[0] - '0') * 10 + (text[1] - '0'), m = (text[3] - '0') * 10 + (text[4] - '0');
  if (m > 59 || h > 24 || (h == 24 && (m != 0 || !end))) return std::nullopt;
  return h * 60 + m;
}

const date::time_zone* zone_of(const std::string& name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    return nullptr;
  }
}

// Local days since the epoch and minutes into that day at `unix_seconds` in the zone.
struct LocalMoment {
  std::int64_t day = 0;  // days since 1970-01-01 (a Thursday), local
  int minute = 0;
};
LocalMoment local_moment(const date::time_zone* zone, std::int64_t unix_seconds) {
  auto local = zone->to_local(date::sys_seconds{std::chrono::seconds{unix_seconds}});
  auto day = date::floor<date::days>(local);
  auto into = std::chrono::duration_cast<std::chrono::minutes>(local - day);
  return {day.time_since_epoch().count(), static_cast<int>(into.count())};
}

// Monday = 0 for a day count since 1970-01-01 (Thursday = 3).
int weekday_of(std::int64_t day) { return static_cast<int>(((day % 7) + 7 + 3) % 7); }

bool open_at(const std::vector<MaintenanceWindow>& windows, const LocalMoment& at) {
  int today = weekday_of(at.day), yesterday = (today + 6) % 7;
  for (auto& w : windows) {
    bool crosses = w.end_minute <= w.start_minute;
    if (!crosses) {
      if ((w.days >> today & 1u) && at.minute >= w.start_minute && at.minute < w.end_minute) return true;
    } else {
      if ((w.days >> today & 1u) && at.minute >= w.start_minute) return true;
      if ((w.days >> yesterday & 1u) && at.minute < w.end_minute) return true;
    }
  }
  return false;
}

}  // namespace

std::optional<MaintenanceWindow> parse_maintenance_window(std::string_view text, std::string& why) {
  auto shape = [&](const std::string& problem) {
    why = fmt::format("'{}' {}: a window is DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 01:00-04:00\" or \"Sat,Sun 22:00-02:00\"",
                      text, problem);
    return std::nullopt;
  };
  auto space = text.find(' ');
  if (space == std::string_view::npos || text.find(' ', space + 1) != std::string_view::npos)
    return shape("is not two parts");
  std::string_view days = text.substr(0, space), hours = text.substr(space + 1);
  MaintenanceWindow w;
  while (!days.empty()) {
    auto comma = days.find(',');
    auto item = days.substr(0, comma);
    days = comma == std::string_view::npos ? std::string_view{} : days.substr(comma + 1);
    if (comma != std::string_view::npos && days.empty()) return shape("ends its days with a comma");
    auto dash = item.find('-');
    auto first = day_index(item.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : day_index(item.substr(dash + 1));
    if (!first || !last) return shape(fmt::format("names an unknown day in '{}' (days are Mon..Sun)", item));
    for (int d = *first;; d = (d + 1) % 7) {
      w.days |= 1u << d;
      if (d == *last) break;
    }
  }
  if (w.days == 0) return shape("names no day");
  auto dash = hours.find('-');
  if (dash == std::string_view::npos) return shape("has no time range");
  auto start = minutes_of(hours.substr(0, dash), false), end = minutes_of(hours.substr(dash + 1), true);
  if (!start || !end) return shape("has a malformed time (HH:MM, 00:00..23:59; the end may be 24:00)");
  if (*start == *end) return shape("has zero length (it starts when it ends)");
  w.start_minute = *start;
  w.end_minute = *end;
  return w;
}

std::string maintenance_window_text(const MaintenanceWindow& w) {
  std::string days;
  for (int d = 0; d < 7;) {
    if (!(w.days >> d & 1u)) {
      ++d;
      continue;
    }
    int last = d;
    while (last + 1 < 7 && (w.days >> (last + 1) & 1u)) ++last;
    if (!days.empty()) days += ",";
    days += last >= d + 2 ? fmt::format("{}-{}", day_names[static_cast<std::size_t>(d)], day_names[static_cast<std::size_t>(last)])
                          : last == d + 1 ? fmt::format("{},{}", day_names[static_cast<std::size_t>(d)], day_names[static_cast<std::size_t>(last)])
                                          : std::string(day_names[static_cast<std::size_t>(d)]);
    d = last + 1;
  }
  return fmt::format("{} {:02}:{:02}-{:02}:{:02}", days, w.start_minute / 60, w.start_minute % 60, w.end_minute / 60,
                     w.end_minute % 60);
}

bool known_time_zone(const std::string& name) { return !name.empty() && zone_of(name) != nullptr; }

bool window_open(const std::vector<MaintenanceWindow>& windows, const std::string& zone, std::int64_t unix_seconds) {
  auto* z = zone_of(zone);
  return z && open_at(windows, local_moment(z, unix_seconds));
}

std::optional<std::int64_t> next_window_open(const std::vector<MaintenanceWindow>& windows, const std::string& zone,
                                             std::int64_t unix_seconds) {
  auto* z = zone_of(zone);
  if (!z || windows.empty()) return std::nullopt;
  if (open_at(windows, local_moment(z, unix_seconds))) return unix_seconds;
  // Candidates: each window's local start on each day from yesterday to 8 days ahead (a start in a skipped
  // hour maps to the end of the gap), kept when a window is open then.
  auto today = local_moment(z, unix_seconds).day;
  std::optional<std::int64_t> best;
  for (std::int64_t day = today - 1; day <= today + 8; ++day) {
    for (auto& w : windows) {
      if (!(w.days >> weekday_of(day) & 1u)) continue;
      date::local_seconds start{std::chrono::seconds{day * 86400 + std::int64_t{w.start_minute} * 60}};
      auto at = z->to_sys(start, date::choose::earliest).time_since_epoch().count();
      if (at <= unix_seconds || (best && at >= *best)) continue;
      if (open_at(windows, local_moment(z, at))) best = at;
    }
  }
  return best;
}

}  // namespace kiln
