// The serial link over a pty pair, with an emulated board answering on the other side.
#include <doctest/doctest.h>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "emulator/serial_server.hpp"
#include "signing/signer.hpp"
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
  auto image = dir.path() / "fw.bin";
  write_file_atomic(image, emu::make_test_image(5, 1, 2, 30000));
  auto result = upload_image(client, image, {});
  auto slots = read_image_state(client);
  REQUIRE(slots.size() == 2);
  CHECK(slots[1].version == "5.1.2");
  CHECK(slots[1].hash == result.sha256);
}
