// Intel HEX files: parse into one contiguous image (gaps filled with 0xFF), write segments back.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/bytes.hpp"

namespace kiln {

struct HexImage {
  std::uint32_t base_address = 0;
  Bytes data;  // from the lowest to the highest address, gaps filled with 0xFF (as IntelHex.tobinarray)
};

// Largest span (lowest to highest address) a HEX file may cover when no slot size bounds it.
constexpr std::uint64_t default_max_hex_span = 64u << 20;

// Throws Error(failure) naming the line for bad records, checksums or overlapping data, and for
// data spread over more than `max_span` bytes (a flash image is contiguous; gaps become 0xFF).
// The span is checked before the image is allocated: memory stays proportional to the file.
// `limit` names max_span in that message ("--slot-size 0x40000").
HexImage parse_intel_hex(std::string_view text, std::uint64_t max_span = default_max_hex_span,
                         std::string_view limit = "");

struct HexSegment {
  std::uint32_t address = 0;
  ByteView data;
};
// Records of up to 16 bytes, extended linear address records as needed, end-of-file record;
// the same layout Python's IntelHex writes (uppercase, LF line ends).
std::string format_intel_hex(std::span<const HexSegment> segments);

// True when the path ends in .hex (any case), as imgtool decides.
bool is_intel_hex_path(std::string_view path);

}  // namespace kiln
