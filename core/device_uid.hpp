// The device UID alphabet, one definition for the service (import, routes), the CLI (UID lists)
// and the factory station (boards it provisions): 1 to 128 of A-Z a-z 0-9 - _ . : and never "." or "..".
#pragma once

#include <cstddef>
#include <string_view>

namespace kiln {

constexpr std::size_t max_device_uid_length = 128;
// Human-readable form for messages and docs.
constexpr std::string_view device_uid_alphabet = "1 to 128 of A-Z a-z 0-9 - _ . :";

// ASCII only (never locale-dependent): a UID also names files and URL path segments.
bool is_device_uid(std::string_view uid);

}  // namespace kiln
