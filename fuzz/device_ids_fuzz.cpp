// libFuzzer target: the UID-list reader of `kiln device claim --from-file` (plain lines or JSON lines)
// returns non-empty, unique UIDs or throws kiln::Error naming the line; it never crashes.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "transport/service_api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> ids;
  try {
    ids = kiln::transport::parse_device_ids(text, "fuzz");
  } catch (const kiln::Error&) {
    return 0;  // refused, naming the line
  }
  std::set<std::string> unique(ids.begin(), ids.end());
  if (unique.size() != ids.size()) __builtin_trap();
  for (const auto& id : ids)
    if (id.empty()) __builtin_trap();
  return 0;
}
