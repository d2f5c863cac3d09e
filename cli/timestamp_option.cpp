// ISO 8601 time options, checked before any request.
#include "cli/timestamp_option.hpp"

#include <string>

#include "core/time.hpp"

namespace kiln::cli {

CLI::Validator timestamp_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        return normalize_timestamp(value) ? std::string()
                                          : "'" + value + "' is not an ISO 8601 time such as 2026-01-31T12:00:00Z or 2026-01-31";
      },
      "TIME", "ISO 8601 time");
}

}  // namespace kiln::cli
