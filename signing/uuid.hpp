// Name-based UUIDs (RFC 9562 version 5, as Python's uuid.uuid5): MCUboot's vendor and class IDs and SUIT's.
#pragma once

#include <string_view>

#include "core/bytes.hpp"

namespace kiln {

// The first 16 bytes of SHA-1(namespace || name), with the version (5) and variant bits set.
Bytes uuid5(ByteView name_space, std::string_view name);

}  // namespace kiln
