// UTC timestamps as kiln writes and reads them, one function per form:
//   ISO 8601 "YYYY-MM-DDTHH:MM:SSZ" (whole seconds): the service's API and store, CLI filters, vouchers;
//   ISO 8601 "YYYY-MM-DDTHH:MM:SS.mmmZ" (milliseconds): the station ledger's rows and reservations;
//   Unix seconds: expiry and rollout arithmetic.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// The current time in Unix seconds.
std::int64_t unix_now();
// "YYYY-MM-DDTHH:MM:SSZ".
std::string iso8601(std::int64_t unix_seconds);
std::string now_iso8601();
// "YYYY-MM-DDTHH:MM:SS.mmmZ" (milliseconds truncated, not rounded).
std::string iso8601_millis(std::chrono::system_clock::time_point at);
std::string now_iso8601_millis();
// A date ("2026-01-31") or a date and time with a zone ("2026-01-31T12:00:00Z", "...+02:00",
// fractions dropped) as "YYYY-MM-DDTHH:MM:SSZ" in UTC; nullopt for anything else ("yesterday",
// "2026-02-30", a time without a zone). Times compare correctly as text in this form.
std::optional<std::string> normalize_timestamp(std::string_view text);
// Unix seconds of a timestamp normalize_timestamp accepts; nullopt for anything else.
std::optional<std::int64_t> unix_seconds(std::string_view text);
// Unix milliseconds of the same (the fraction's first three digits kept); nullopt for anything else.
std::optional<std::int64_t> unix_millis(std::string_view text);

}  // namespace kiln
