// Tests for transport/board_address: address parsing and text, usb-ids, discovery of emulator sockets,
// --serial pty links and serial globs in a real directory, board selection with its exit codes, and a
// survey that keeps the error of a board that does not answer. USB matching is left out (usb_ids empty).
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.hpp"
#include "core/files.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"

using namespace kiln;
using kiln::test::exit_code_of;
namespace fs = std::filesystem;

namespace {

// A bound (not listening) Unix socket at `path`: a socket file that refuses connections.
struct BoundSocket {
  int fd = -1;
  explicit BoundSocket(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::copy(path.begin(), path.end(), addr.sun_path);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~BoundSocket() { ::close(fd); }
  BoundSocket(const BoundSocket&) = delete;
  BoundSocket& operator=(const BoundSocket&) = delete;
};

DiscoveryOptions emulators_only(const test::TempDir& dir) {
  DiscoveryOptions options;
  options.emu_dir = dir.path();
  options.usb_ids = {};
  return options;
}

}  // namespace

TEST_CASE("board_address: emu:, usb: and serial: addresses parse and print back") {
  auto emu = parse_board_address("emu:/tmp/d/0a1b.sock");
  REQUIRE(emu);
  CHECK(emu->kind == BoardAddress::Kind::emulator);
  CHECK(emu->location == "/tmp/d/0a1b.sock");
  CHECK(emu->uid_hint == "0a1b");
  CHECK(emu->text() == "emu:/tmp/d/0a1b.sock");
  auto usb = parse_board_address("usb:1-2.4.1");
  REQUIRE(usb);
  CHECK(usb->kind == BoardAddress::Kind::usb);
  CHECK(usb->location == "1-2.4.1");
  CHECK(usb->uid_hint.empty());
  CHECK(usb->text() == "usb:1-2.4.1");
  auto serial = parse_board_address("serial:/dev/ttyACM0");
  REQUIRE(serial);
  CHECK(serial->kind == BoardAddress::Kind::serial);
  CHECK(serial->text() == "serial:/dev/ttyACM0");
  // Anything else is a UID, not an address.
  CHECK_FALSE(parse_board_address("0a1b"));
  CHECK_FALSE(parse_board_address("EMU:/tmp/x.sock"));
  CHECK_FALSE(parse_board_address(""));
}

TEST_CASE("board_address: a known prefix with a bad location is a usage error") {
  CHECK_THROWS_WITH_AS(parse_board_address("usb:1-"), "'usb:1-' is not a USB address", Error);
  CHECK_THROWS_WITH_AS(parse_board_address("usb:bus1-2"), "'usb:bus1-2' is not a USB address", Error);
  CHECK_THROWS_WITH_AS(parse_board_address("usb:"), "'usb:' is not a USB address", Error);
  CHECK_THROWS_WITH_AS(parse_board_address("emu:"), "board address 'emu:' has no location", Error);
  CHECK_THROWS_WITH_AS(parse_board_address("serial:"), "board address 'serial:' has no location", Error);
  CHECK(exit_code_of([] { parse_board_address("usb:x"); }) == ExitCode::usage);
}

TEST_CASE("board_address: usb-ids are hex VID:PID pairs separated by commas") {
  using Ids = std::vector<std::pair<std::uint16_t, std::uint16_t>>;
  CHECK(parse_usb_ids("1209:4b4e,2fe3:0100") == Ids{{0x1209, 0x4b4e}, {0x2fe3, 0x0100}});
  CHECK(parse_usb_ids(" 1:A , FFFF:ffff ") == Ids{{0x0001, 0x000a}, {0xffff, 0xffff}});
  CHECK(DiscoveryOptions::default_usb_ids() == Ids{{0x1209, 0x4b4e}, {0x2fe3, 0x0100}});
  CHECK_THROWS_WITH_AS(parse_usb_ids("1209:4b4e,"), "usb-ids: '' is not a VID:PID pair", Error);
  CHECK_THROWS_WITH_AS(parse_usb_ids("12345:1"), "usb-ids: '12345:1' is not a VID:PID pair", Error);
  CHECK_THROWS_WITH_AS(parse_usb_ids("1209-4b4e"), "usb-ids: '1209-4b4e' is not a VID:PID pair", Error);
  CHECK(exit_code_of([] { parse_usb_ids("g:1"); }) == ExitCode::usage);
}

TEST_CASE("board_address: discovery lists sockets and pty links in the emulator directory, sorted, and serial globs") {
  test::TempDir dir;
  BoundSocket b(dir.file("b2.sock"));
  BoundSocket a(dir.file("a1.sock"));
  write_file_atomic(dir.file("c3.sock"), as_bytes("a regular file is no board"));
  fs::create_symlink("/dev/null", dir.file("d4.tty"));  // what kiln-board-emu --serial links (a character device)
  write_file_atomic(dir.file("e5.tty"), as_bytes("not a character device"));
  write_file_atomic(dir.file("ttyACM0"), Bytes{});
  write_file_atomic(dir.file("ttyACM1"), Bytes{});

  auto options = emulators_only(dir);
  options.serial_patterns = {dir.file("ttyACM*"), dir.file("d4.tty"), dir.file("nothing*")};
  auto boards = discover_boards(options);
  REQUIRE(boards.size() == 5);
  CHECK(boards[0].text() == "emu:" + dir.file("a1.sock"));
  CHECK(boards[0].uid_hint == "a1");
  CHECK(boards[1].text() == "emu:" + dir.file("b2.sock"));
  CHECK(boards[2].text() == "serial:" + dir.file("d4.tty"));  // listed once, though a pattern names it too
  CHECK(boards[2].uid_hint == "d4");
  CHECK(boards[3].text() == "serial:" + dir.file("ttyACM0"));
  CHECK(boards[3].uid_hint.empty());
  CHECK(boards[4].text() == "serial:" + dir.file("ttyACM1"));

  DiscoveryOptions none;
  none.usb_ids = {};
  none.emu_dir = dir.file("absent");
  CHECK(discover_boards(none).empty());
}

TEST_CASE("board_address: select_board takes an address, a UID (any case) or the only board") {
  test::TempDir dir;
  auto options = emulators_only(dir);
  CHECK_THROWS_WITH_AS(select_board(std::nullopt, options), "no board attached", Error);
  CHECK(exit_code_of([&] { select_board(std::nullopt, options); }) == ExitCode::board);
  // An address is taken as it is, attached or not.
  CHECK(select_board(std::string("usb:3-1"), options).text() == "usb:3-1");

  BoundSocket one(dir.file("0A1B.sock"));
  CHECK(select_board(std::nullopt, options).uid_hint == "0A1B");
  CHECK(select_board(std::string("0a1b"), options).location == dir.file("0A1B.sock"));
  CHECK_THROWS_WITH_AS(select_board(std::string("ffff"), options), "no attached board has UID ffff", Error);
  CHECK(exit_code_of([&] { select_board(std::string("ffff"), options); }) == ExitCode::board);

  BoundSocket two(dir.file("0c2d.sock"));
  CHECK_THROWS_WITH_AS(select_board(std::nullopt, options),
                       ("2 boards are attached; choose one with --board:\n  emu:" + dir.file("0A1B.sock") +
                        "  (0A1B)\n  emu:" + dir.file("0c2d.sock") + "  (0c2d)")
                           .c_str(),
                       Error);
  CHECK(exit_code_of([&] { select_board(std::nullopt, options); }) == ExitCode::usage);
  CHECK(select_board(std::string("0C2D"), options).uid_hint == "0c2d");
}

TEST_CASE("board_address: a board that does not answer keeps its error in the survey") {
  test::TempDir dir;
  BoundSocket dead(dir.file("dead.sock"));
  auto summaries = survey_boards(emulators_only(dir), std::chrono::milliseconds(200));
  REQUIRE(summaries.size() == 1);
  CHECK(summaries[0].address.text() == "emu:" + dir.file("dead.sock"));
  CHECK(summaries[0].uid == "dead");
  CHECK(summaries[0].state.empty());
  CHECK(summaries[0].firmware.empty());
  CHECK_FALSE(summaries[0].error.empty());
}
