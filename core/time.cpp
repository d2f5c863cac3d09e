// UTC timestamps: formatting and the one strict ISO 8601 parser behind every timestamp kiln reads.
#include "core/time.hpp"

#include <ctime>

#include <fmt/format.h>

namespace kiln {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

namespace {

std::string format_utc(std::int64_t unix_seconds, const char* fraction) {
  auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, fraction);
}

struct Parsed {
  std::int64_t seconds = 0;
  int millis = 0;
};

// date [T time [.fraction] (Z | +HH:MM | -HH:MM)], validated field by field.
std::optional<Parsed> parse(std::string_view text) {
  std::size_t at = 0;
  auto digits = [&](std::size_t count, int& out) {
    if (at + count > text.size()) return false;
    out = 0;
    for (std::size_t i = 0; i < count; ++i) {
      char c = text[at + i];
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    at += count;
    return true;
  };
  auto literal = [&](char c) {
    if (at >= text.size() || text[at] != c) return false;
    ++at;
    return true;
  };
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, millis = 0;
  if (!digits(4, year) || !literal('-') || !digits(2, month) || !literal('-') || !digits(2, day)) return std::nullopt;
  static const int days_in_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1970 || month < 1 || month > 12 || day < 1) return std::nullopt;
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > days_in_month[month - 1] + (month == 2 && leap ? 1 : 0)) return std::nullopt;
  int offset_seconds = 0;
  if (at < text.size()) {
    if (!literal('T') && !literal('t') && !literal(' ')) return std::nullopt;
    if (!digits(2, hour) || !literal(':') || !digits(2, minute) || !literal(':') || !digits(2, second))
      return std::nullopt;
    if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
    if (second == 60) second = 59;  // a leap second sorts with the second before it
    if (literal('.')) {
      std::size_t start = at;
      while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
      if (at == start || at - start > 9) return std::nullopt;
      for (std::size_t i = 0; i < 3; ++i) millis = millis * 10 + (start + i < at ? text[start + i] - '0' : 0);
    }
    if (!literal('Z') && !literal('z')) {
      bool minus = at < text.size() && text[at] == '-';
      if (!literal('+') && !literal('-')) return std::nullopt;
      int oh = 0, om = 0;
      if (!digits(2, oh) || !literal(':') || !digits(2, om) || oh > 23 || om > 59) return std::nullopt;
      offset_seconds = (minus ? -1 : 1) * (oh * 3600 + om * 60);
    }
    if (at != text.size()) return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return Parsed{static_cast<std::int64_t>(timegm(&tm)) - offset_seconds, millis};
}

}  // namespace

std::string iso8601(std::int64_t unix_seconds) { return format_utc(unix_seconds, ""); }

std::string now_iso8601() { return iso8601(unix_now()); }

std::string iso8601_millis(std::chrono::system_clock::time_point at) {
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
  auto seconds = millis / 1000 - (millis % 1000 < 0 ? 1 : 0);
  return format_utc(seconds, fmt::format(".{:03}", millis - seconds * 1000).c_str());
}

std::string now_iso8601_millis() { return iso8601_millis(std::chrono::system_clock::now()); }

std::optional<std::string> normalize_timestamp(std::string_view text) {
  auto parsed = parse(text);
  if (!parsed) return std::nullopt;
  return iso8601(parsed->seconds);  // the fraction is dropped: storage has whole seconds
}

std::optional<std::int64_t> unix_seconds(std::string_view text) {
  auto parsed = parse(text);
  if (!parsed) return std::nullopt;
  return parsed->seconds;
}

std::optional<std::int64_t> unix_millis(std::string_view text) {
  auto parsed = parse(text);
  if (!parsed) return std::nullopt;
  return parsed->seconds * 1000 + parsed->millis;
}

}  // namespace kiln
