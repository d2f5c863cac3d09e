// libFuzzer target for the MCUboot image parser: any bytes must parse or throw FormatError, never crash.
#include <cstdint>
#include <cstdlib>
#include <optional>

#include "signing/mcuboot_image.hpp"

using namespace kiln::mcuboot;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView bytes(data, size);
  parse_trailer(bytes);
  std::optional<ParsedImage> parsed;
  try {
    parsed = parse_image(bytes);
  } catch (const FormatError&) {
    return 0;
  }
  // What the parser accepted must lie inside the input, and the header must round-trip (a throw is a finding).
  if (parsed->end > size) std::abort();
  auto within = [&](const TlvArea& area) {
    for (const auto& e : area.entries)
      if (e.offset + e.value.size() > size) std::abort();
  };
  within(parsed->unprotected_area);
  if (parsed->protected_area) within(*parsed->protected_area);
  auto again = parse_header(encode_header(parsed->header));
  if (again.image_size != parsed->header.image_size || again.protected_tlv_size != parsed->header.protected_tlv_size)
    std::abort();
  return 0;
}
