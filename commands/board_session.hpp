// What the board commands share: where to look for boards (KILN_EMU_DIR / config emu-dir, usb-ids).
#pragma once

#include <cstdlib>

#include "cli/context.hpp"
#include "transport/board_address.hpp"

namespace kiln::commands {

inline DiscoveryOptions board_discovery(const cli::Context& ctx) {
  DiscoveryOptions options;
  if (const char* dir = std::getenv("KILN_EMU_DIR"); dir && *dir) options.emu_dir = dir;
  else if (auto configured = ctx.config_value("emu-dir")) options.emu_dir = *configured;
  if (auto ids = ctx.config_value("usb-ids")) options.usb_ids = parse_usb_ids(*ids);
  return options;
}

}  // namespace kiln::commands
