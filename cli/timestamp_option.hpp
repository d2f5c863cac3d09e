// The check behind options that take a time (device list --seen-after, audit list --since): ISO 8601 only, so
// "--seen-after yesterday" is a usage error (exit 2) here rather than zero rows from the service.
#pragma once

#include <CLI/CLI.hpp>

namespace kiln::cli {

// Accepts what core/time's normalize_timestamp accepts (2026-01-31T12:00:00Z, 2026-01-31); the message names
// the value and shows both forms.
CLI::Validator timestamp_validator();

}  // namespace kiln::cli
