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
  std::string serial;
  if (const char* env = std::getenv("KILN_SERIAL_PORTS"); env && *env) serial = env;
  else if (auto configured = ctx.config_value("serial-ports")) serial = *configured;
  for (std::size_t start = 0; start < serial.size();) {
    auto comma = serial.find(',', start);
    if (comma == std::string::npos) comma = serial.size();
    if (comma > start) options.serial_patterns.push_back(serial.substr(start, comma - start));
    start = comma + 1;
  }
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
