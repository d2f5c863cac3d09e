// Tests for emulator/serial_server: one emulated board on a pty with console framing. kiln's serial link talks to it
// (echo, a windowed upload); its D/<uid>.tty symlink names the device while it serves; a damaged frame is dropped and
// the next request answered; a host that closes the port and opens it again finds the board still there.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "emulator/board.hpp"
#include "emulator/serial_server.hpp"
#include "signing/signer.hpp"
#include "tests/support/console_port.hpp"
#include "tests/support/link_checks.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"
#include "transport/console_framing.hpp"
#include "transport/smp.hpp"

using namespace kiln;
using namespace std::chrono_literals;

namespace {

struct PtyBoard {
  test::TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  std::unique_ptr<emu::Board> board = emu::Board::create(dir.path(), root, {}, 0);
};

Bytes echo_request(const std::string& text, std::uint8_t sequence) {
  smp::Header header;
  header.op = smp::Op::write;
  header.group = smp::group::os;
  header.command = os_command::echo;
  header.sequence = sequence;
  return smp::encode_frame(header, {{"d", text}});
}

// The host side by hand: the port opened raw, whole packets read back through the console decoder.
class RawPort {
 public:
  explicit RawPort(const std::string& device) {
    fd_ = ::open(device.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(fd_ >= 0);
    termios tio{};
    REQUIRE(::tcgetattr(fd_, &tio) == 0);
    ::cfmakeraw(&tio);
    REQUIRE(::tcsetattr(fd_, TCSANOW, &tio) == 0);
  }
  ~RawPort() { ::close(fd_); }
  RawPort(const RawPort&) = delete;
  RawPort& operator=(const RawPort&) = delete;
  void write(const std::string& lines) {
    REQUIRE(::write(fd_, lines.data(), lines.size()) == static_cast<ssize_t>(lines.size()));
  }
  smp::Frame read_frame() { return smp::decode_frame(test::read_console_packet(fd_, decoder_)); }

 private:
  int fd_ = -1;
  ConsoleFrameDecoder decoder_;
};

}  // namespace

TEST_CASE("serial_server: kiln's serial link gets echo and a windowed upload over the pty") {
  PtyBoard b;
  emu::SerialBoardServer pty(*b.board);
  auto address = parse_board_address("serial:" + pty.device());
  REQUIRE(address);
  SmpClient client(open_link(*address));
  CHECK(client.board() == "serial:" + pty.device());
  CHECK(echo(client, "over the wire") == "over the wire");
  test::check_upload_lands_in_slot_1(client, b.dir.path(), 5, 1, 2, 30000);
}

TEST_CASE("serial_server: the symlink names the pty while the board is served, and goes with it") {
  PtyBoard b;
  auto link = b.dir.path() / "0a1b.tty";
  std::string device;
  {
    emu::SerialBoardServer pty(*b.board, link);
    device = pty.device();
    CHECK(device.starts_with("/dev/pts/"));
    REQUIRE(std::filesystem::is_symlink(link));
    CHECK(std::filesystem::read_symlink(link) == device);
    RawPort port(link.string());  // the link opens the board
    port.write(encode_console_frame(echo_request("via link", 1)));
    CHECK(port.read_frame().body["r"] == "via link");
  }
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(link)));
}

TEST_CASE("serial_server: a damaged frame is dropped and the next request answered; the port reopens") {
  PtyBoard b;
  emu::SerialBoardServer pty(*b.board);
  {
    RawPort port(pty.device());
    std::string damaged = encode_console_frame(echo_request("lost", 1));
    auto middle = damaged.size() / 2;
    damaged[middle] = damaged[middle] == 'A' ? 'B' : 'A';
    port.write("boot noise\n" + damaged + encode_console_frame(echo_request("kept", 2)));
    auto reply = port.read_frame();
    CHECK(reply.header.op == smp::Op::write_response);
    CHECK(reply.header.sequence == 2);  // the damaged request got no answer
    CHECK(reply.body["r"] == "kept");
  }
  // The host closed the port; the next session finds the board as before.
  RawPort again(pty.device());
  again.write(encode_console_frame(echo_request("second session", 3)));
  auto reply = again.read_frame();
  CHECK(reply.header.sequence == 3);
  CHECK(reply.body["r"] == "second session");
}
