// Tests for transport/serial_link: SMP packets in Zephyr console framing over a real pty pair, with the test
// as the board on the master side; damaged frames and a hang-up are board errors naming the port.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "core/error.hpp"
#include "tests/support/console_port.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"
#include "transport/console_framing.hpp"
#include "transport/smp.hpp"

using namespace kiln;
using namespace std::chrono_literals;

namespace {

// The board's end of a pty pair; device() is the port kiln opens.
class PtyBoard {
 public:
  PtyBoard() {
    fd_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(fd_ >= 0);
    REQUIRE(::grantpt(fd_) == 0);
    REQUIRE(::unlockpt(fd_) == 0);
    device_ = ::ptsname(fd_);
  }
  ~PtyBoard() { hang_up(); }
  PtyBoard(const PtyBoard&) = delete;
  PtyBoard& operator=(const PtyBoard&) = delete;
  const std::string& device() const { return device_; }
  void write(std::string_view text) const {
    REQUIRE(::write(fd_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  }
  // Reads what kiln sent until the decoder yields a whole packet.
  Bytes read_packet() const {
    ConsoleFrameDecoder decoder;
    return test::read_console_packet(fd_, decoder);
  }
  void hang_up() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string device_;
};

Bytes packet(const std::string& text) {
  smp::Header header;
  header.op = smp::Op::read_response;
  return smp::encode_frame(header, {{"d", text}});
}

}  // namespace

TEST_CASE("serial_link: packets travel as console frames both ways over a pty, console noise ignored") {
  PtyBoard board;
  auto link = open_serial_link(board.device());
  CHECK(link->address() == "serial:" + board.device());

  Bytes request = smp::encode_frame(smp::Header{}, {{"d", "ping"}});
  link->send(request);
  CHECK(board.read_packet() == request);

  // A packet longer than one console line, framed after boot noise, then a short one.
  Bytes longer = packet(std::string(600, 'z'));
  Bytes shorter = packet("ok");
  board.write("*** Booting Zephyr OS ***\n" + encode_console_frame(longer) + "log: idle\n" + encode_console_frame(shorter));
  CHECK(link->receive(2s) == longer);
  CHECK(link->receive(2s) == shorter);
  CHECK_FALSE(link->receive(10ms));  // nothing more: the timeout passes
}

TEST_CASE("serial_link: a frame with a bad CRC is a board error naming the port, and the next frame still arrives") {
  PtyBoard board;
  auto link = open_serial_link(board.device());
  Bytes good = packet("fine");
  std::string damaged = encode_console_frame(packet("damaged"));
  auto middle = damaged.size() / 2;  // a base64 character inside the packet: the CRC no longer matches
  damaged[middle] = damaged[middle] == 'A' ? 'B' : 'A';
  board.write(damaged + encode_console_frame(good));
  auto code = test::exit_code_of([&] { link->receive(2s); });
  CHECK(code == ExitCode::board);
  CHECK(link->receive(2s) == good);
}

TEST_CASE("serial_link: the board hanging up is 'disconnected', a missing port is not_found") {
  PtyBoard board;
  auto link = open_serial_link(board.device());
  board.hang_up();
  CHECK_THROWS_WITH_AS(link->receive(2s), doctest::Contains("board serial:"), Error);
  CHECK(test::exit_code_of([&] { link->receive(2s); }) == ExitCode::board);

  test::TempDir dir;
  CHECK(test::exit_code_of([&] { open_serial_link(dir.file("ttyACM9")); }) == ExitCode::not_found);
  CHECK_THROWS_WITH_AS(open_serial_link(dir.file("ttyACM9")), doctest::Contains("cannot open serial port"), Error);
}
