// libFuzzer target: the RFC 7512 pkcs11: URI parser must reject or accept any input without crashing, and
// what it prints about an accepted URI parses back to the same selection (a throw there is a finding).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/error.hpp"
#include "signing/pkcs11_uri.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<kiln::Pkcs11Uri> uri;
  try {
    uri = kiln::parse_pkcs11_uri(text);
  } catch (const kiln::Error&) {
    return 0;
  }
  auto again = kiln::parse_pkcs11_uri(uri->description());
  if (again.token != uri->token || again.object != uri->object || again.id != uri->id || again.serial != uri->serial ||
      again.module_path != uri->module_path)
    __builtin_trap();
  (void)uri->token_description();
  (void)uri->object_description();
  return 0;
}
