// Tests for emulator/server: --fail-command parsing, the socket's life (stale socket replaced, too-long path,
// removed on stop), link shaping, and each injected fault as the real SMP client meets it.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <string>

#include "core/error.hpp"
#include "emulator/board.hpp"
#include "emulator/server.hpp"
#include "tests/emulator/served_board.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_api.hpp"

using namespace kiln;
using test::ServedBoard;

TEST_CASE("emulator server: --fail-command takes GROUP:ID in range, nothing else") {
  CHECK(emu::parse_group_command("1:5") == std::pair<std::uint16_t, std::uint8_t>{1, 5});
  CHECK(emu::parse_group_command("64:10") == std::pair<std::uint16_t, std::uint8_t>{64, 10});
  CHECK(emu::parse_group_command("65535:255") == std::pair<std::uint16_t, std::uint8_t>{65535, 255});
  for (const char* bad : {"", "1", ":", "1:", ":5", "a:b", "65536:1", "1:256", "-1:5", "1:5x", "1x:5", "1:2:3", " 1:5"}) {
    try {
      emu::parse_group_command(bad);
      FAIL("accepted '" << bad << "'");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
      CHECK(std::string(e.what()) == std::string("--fail-command wants GROUP:ID (like 1:1), not '") + bad + "'");
    }
  }
}

TEST_CASE("emulator server: a stale socket file is replaced, the socket goes on stop, a long path is refused") {
  test::TempDir dir;
  auto root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  auto socket = dir.path() / "board.sock";
  std::ofstream(socket) << "stale";
  {
    emu::BoardServer server(*board, socket, {}, {});
    server.start();
    SmpClient client(open_socket_link(socket.string()));
    CHECK(echo(client, "hi") == "hi");
    server.stop();
    CHECK_FALSE(std::filesystem::exists(socket));
    server.stop();  // twice is fine
  }
  emu::BoardServer never_started(*board, socket, {}, {});
  never_started.stop();

  emu::BoardServer too_long(*board, dir.path() / (std::string(120, 'x') + ".sock"), {}, {});
  try {
    too_long.start();
    FAIL("a path longer than sun_path must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("is too long; use a shorter --dir") != std::string::npos);
  }
}

TEST_CASE("emulator server: latency delays each answer by twice the one-way delay") {
  emu::LinkShaping shaping;
  shaping.latency = std::chrono::milliseconds(60);
  ServedBoard b({}, shaping, {});
  auto client = b.client();
  auto started = std::chrono::steady_clock::now();
  CHECK(echo(client, "x") == "x");
  CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(120));
}

TEST_CASE("emulator server: a dropped connection drops once; the next connection is served") {
  emu::FaultInjection faults;
  faults.drop_after_bytes = 1;
  ServedBoard b({}, {}, faults);
  SmpClientOptions options;
  options.timeout = std::chrono::milliseconds(300);
  options.read_retries = 0;
  {
    auto client = b.client(options);
    try {
      echo(client, "lost");
      FAIL("the first connection must drop");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::board);
    }
  }
  auto again = b.client(options);
  CHECK(echo(again, "back") == "back");
}

TEST_CASE("emulator server: corrupted responses, failing commands and a hung board are reported") {
  SUBCASE("corrupted frame") {
    emu::FaultInjection faults;
    faults.corrupt_every = 2;
    ServedBoard b({}, {}, faults);
    auto client = b.client();
    echo(client, "one");
    try {
      echo(client, "two");
      FAIL("corruption not detected");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("damaged packet") != std::string::npos);
    }
  }
  SUBCASE("failing command") {
    emu::FaultInjection faults;
    faults.fail_commands = {{0, 0}};
    ServedBoard b({}, {}, faults);
    auto client = b.client();
    CHECK_THROWS_WITH_AS(echo(client, "x"), doctest::Contains("unknown error"), Error);
  }
  SUBCASE("hung board") {
    emu::LinkShaping slow;
    slow.latency = std::chrono::seconds(2);
    ServedBoard b({}, slow, {});
    SmpClientOptions options;
    options.timeout = std::chrono::milliseconds(200);
    options.read_retries = 1;
    auto client = b.client(options);
    try {
      read_image_state(client);
      FAIL("no timeout");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::board);
      CHECK(std::string(e.what()).find("did not answer") != std::string::npos);
      CHECK(std::string(e.what()).find(b.socket.string()) != std::string::npos);
      CHECK(std::string(e.what()).find("2 attempts") != std::string::npos);
    }
  }
}
