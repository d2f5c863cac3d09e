// UTC timestamps as kiln writes and reads them: ISO 8601 "YYYY-MM-DDTHH:MM:SSZ" (whole seconds).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

std::string now_iso8601();
std::string iso8601(std::int64_t unix_seconds);
// A date ("2026-01-31") or a date and time with a zone ("2026-01-31T12:00:00Z", "...+02:00",
// fractions dropped) as "YYYY-MM-DDTHH:MM:SSZ" in UTC; nullopt for anything else ("yesterday",
// "2026-02-30", a time without a zone). Times compare correctly as text in this form.
std::optional<std::string> normalize_timestamp(std::string_view text);
// Unix seconds of a timestamp normalize_timestamp accepts; nullopt for anything else.
std::optional<std::int64_t> unix_seconds(std::string_view text);

}  // namespace kiln
