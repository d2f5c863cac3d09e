// One emulated board served on a socket in a temp dir, as kiln-board-emu serves it, and an SMP client for it:
// the emulator's board and server tests share it. Header-only.
#pragma once

#include <filesystem>
#include <memory>

#include "emulator/board.hpp"
#include "emulator/server.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/link.hpp"
#include "transport/smp_client.hpp"

namespace kiln::test {

// One board served on a socket in a temp dir, as kiln-board-emu would.
struct ServedBoard {
  TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  std::unique_ptr<emu::Board> board;
  std::unique_ptr<emu::BoardServer> server;
  std::filesystem::path socket;

  explicit ServedBoard(emu::BoardOptions options = {}, emu::LinkShaping shaping = {}, emu::FaultInjection faults = {}) {
    board = emu::Board::create(dir.path(), root, options, 0);
    serve(shaping, faults);
  }
  void serve(emu::LinkShaping shaping = {}, emu::FaultInjection faults = {}) {
    socket = dir.path() / (board->uid() + ".sock");
    server = std::make_unique<emu::BoardServer>(*board, socket, shaping, faults);
    server->start();
  }
  // Power cycle: stop serving, reopen the board from its directory, serve again.
  void power_cycle(emu::BoardOptions options = {}) {
    server.reset();
    auto board_dir = dir.path() / board->uid();
    board.reset();
    board = emu::Board::open(board_dir, root, options);
    serve();
  }
  SmpClient client(SmpClientOptions options = {}) { return SmpClient(open_socket_link(socket.string()), options); }
};

}  // namespace kiln::test
