// libFuzzer target: the RFC 7512 pkcs11: URI parser must reject or accept any input without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.hpp"
#include "signing/pkcs11_uri.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto uri = kiln::parse_pkcs11_uri(text);
    // What we print about a URI must parse back to the same selection.
    auto again = kiln::parse_pkcs11_uri(uri.description());
    if (again.token != uri.token || again.object != uri.object || again.id != uri.id || again.serial != uri.serial ||
        again.module_path != uri.module_path)
      __builtin_trap();
    (void)uri.token_description();
    (void)uri.object_description();
  } catch (const kiln::Error&) {
  }
  return 0;
}
