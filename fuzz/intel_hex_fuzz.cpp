// libFuzzer target for the Intel HEX reader: any text must parse or throw kiln::Error, never crash; what it
// accepts writes back as HEX that reads again to the same bytes (a throw there is a finding).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.hpp"
#include "signing/intel_hex.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::HexImage image;
  try {
    // A small span limit keeps each run fast; the limit check itself is part of what is fuzzed.
    image = kiln::parse_intel_hex(std::string_view(reinterpret_cast<const char*>(data), size), 1 << 20,
                                  "--slot-size 0x100000");
  } catch (const kiln::Error&) {
    return 0;
  }
  if (image.data.size() > (1u << 20)) std::abort();  // the span limit holds
  // What was read must write back and read again to the same bytes.
  kiln::HexSegment segment{image.base_address, image.data};
  auto again = kiln::parse_intel_hex(kiln::format_intel_hex({&segment, 1}));
  if (!image.data.empty() && (again.data != image.data || again.base_address != image.base_address)) std::abort();
  return 0;
}
