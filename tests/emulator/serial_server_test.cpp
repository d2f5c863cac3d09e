// The serial link over a pty pair, with an emulated board answering on the other side.
#include <doctest/doctest.h>

#include "emulator/board.hpp"
#include "emulator/serial_server.hpp"
#include "signing/signer.hpp"
#include "tests/support/link_checks.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"

using namespace kiln;

TEST_CASE("serial link: echo and a windowed upload over a pty with console framing") {
  test::TempDir dir;
  auto root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  emu::SerialBoardServer pty(*board);
  auto address = parse_board_address("serial:" + pty.device());
  REQUIRE(address);
  SmpClient client(open_link(*address));
  CHECK(client.board() == "serial:" + pty.device());
  CHECK(echo(client, "over the wire") == "over the wire");
  test::check_upload_lands_in_slot_1(client, dir.path(), 5, 1, 2, 30000);
}
