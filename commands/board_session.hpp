// What the board commands share: where to look for boards (KILN_EMU_DIR / config emu-dir, usb-ids).
#pragma once

#include <cstdlib>

#include "cli/context.hpp"
#include "transport/board_address.hpp"
#include "transport/smp_client.hpp"

namespace kiln::commands {

inline DiscoveryOptions board_discovery(const cli::Context& ctx) {
  DiscoveryOptions options;
  if (const char* dir = std::getenv("KILN_EMU_DIR"); dir && *dir) options.emu_dir = dir;
  else if (auto configured = ctx.config_value("emu-dir")) options.emu_dir = *configured;
  if (auto ids = ctx.config_value("usb-ids")) options.usb_ids = parse_usb_ids(*ids);
  return options;
}

// An SMP client for the one board named by --board (address or UID), or the only attached board.
inline SmpClient open_board(const cli::Context& ctx, const std::optional<std::string>& board,
                            std::chrono::milliseconds timeout, std::size_t window = 8) {
  auto address = select_board(board, board_discovery(ctx));
  ctx.debug("board " + address.text());
  SmpClientOptions options;
  options.timeout = timeout;
  options.window = window;
  return SmpClient(open_link(address), options);
}

}  // namespace kiln::commands
