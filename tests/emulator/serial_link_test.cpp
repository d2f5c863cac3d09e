// The serial link over a pty pair, with an emulated board answering on the other side.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "signing/signer.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"
#include "transport/console_framing.hpp"

using namespace kiln;

namespace {

// The board end of a serial cable: console frames in, board replies out, on the pty master.
class PtyBoard {
 public:
  explicit PtyBoard(emu::Board& board) : board_(board) {
    termios raw{};
    cfmakeraw(&raw);
    REQUIRE(openpty(&master_, &slave_, name_, &raw, nullptr) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~PtyBoard() {
    stop_ = true;
    thread_.join();
    ::close(slave_);
    ::close(master_);
  }
  std::string device() const { return name_; }

 private:
  void run() {
    ConsoleFrameDecoder decoder;
    std::uint8_t buffer[4096];
    while (!stop_) {
      pollfd pfd{master_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      ssize_t n = ::read(master_, buffer, sizeof buffer);
      if (n <= 0) continue;
      decoder.feed(ByteView(buffer, static_cast<std::size_t>(n)));
      while (auto packet = decoder.next()) {
        auto reply = board_.handle_packet(*packet);
        if (!reply.packet) continue;
        std::string lines = encode_console_frame(*reply.packet);
        std::size_t sent = 0;
        while (sent < lines.size()) {
          ssize_t w = ::write(master_, lines.data() + sent, lines.size() - sent);
          if (w > 0) sent += static_cast<std::size_t>(w);
        }
      }
    }
  }
  emu::Board& board_;
  int master_ = -1, slave_ = -1;
  char name_[256] = {};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("serial link: echo and a windowed upload over a pty with console framing") {
  test::TempDir dir;
  auto root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  PtyBoard pty(*board);
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
