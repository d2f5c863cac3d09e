// libFuzzer target for the update agent's check-in answer parser: malformed answers are refused with
// kiln::Error only, and an accepted offer only names paths on the service and bounded sizes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.hpp"
#include "emulator/agent.hpp"

namespace {
constexpr std::uint64_t slot_size = 16u << 20;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  kiln::emu::CheckInReply reply;
  try {
    reply = kiln::emu::parse_check_in_reply(body, slot_size);
  } catch (const kiln::Error&) {
    return 0;
  }
  if (!reply.deployment) return 0;
  const auto& offer = *reply.deployment;
  if (offer.id.empty() || (offer.action != "install" && offer.action != "revert")) std::abort();
  for (const auto* object : {&offer.manifest, &offer.image}) {
    if (object == &offer.manifest && object->id.empty()) continue;  // no manifest: refused by the agent
    if (object->url.empty() || object->url[0] != '/' || object->url.starts_with("//")) std::abort();
    if (object->size == 0 || object->size > slot_size || object->id.size() != 64) std::abort();
  }
  return 0;
}
