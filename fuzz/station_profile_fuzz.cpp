// libFuzzer target: the station profile reader rejects malformed TOML with kiln::Error only, and
// whatever profile it accepts survives a write/read round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.hpp"
#include "provisioning/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  kiln::StationProfile profile;
  try {
    profile = kiln::parse_profile(text, "/station");
  } catch (const kiln::Error&) {
    return 0;
  }
  std::string written;
  try {
    written = kiln::profile_to_toml(profile);
  } catch (const kiln::Error&) {
    return 0;  // values with line breaks cannot be written back
  }
  auto again = kiln::parse_profile(written, "/station");
  if (kiln::profile_to_toml(again) != written) std::abort();
  return 0;
}
