// Link over a serial port (termios, raw 8N1) with Zephyr's SMP console framing.
#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/board_address.hpp"
#include "transport/console_framing.hpp"

namespace kiln {
namespace {

class SerialLink final : public Link {
 public:
  SerialLink(int fd, std::string device) : fd_(fd), address_("serial:" + std::move(device)) {}
  ~SerialLink() override { ::close(fd_); }
  SerialLink(const SerialLink&) = delete;
  SerialLink& operator=(const SerialLink&) = delete;

  void send(ByteView packet) override {
    std::string lines = encode_console_frame(packet);
    std::size_t sent = 0;
    while (sent < lines.size()) {
      ssize_t n = ::write(fd_, lines.data() + sent, lines.size() - sent);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        pollfd pfd{fd_, POLLOUT, 0};
        ::poll(&pfd, 1, 100);
        continue;
      }
      if (n <= 0) throw gone(std::strerror(errno));
      sent += static_cast<std::size_t>(n);
    }
  }

  std::optional<Bytes> receive(std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      std::optional<Bytes> packet;
      try {
        packet = decoder_.next();
      } catch (Error& e) {
        throw Error(ExitCode::board, fmt::format("board {}: {}", address_, e.what()), e.hint());
      }
      if (packet) return packet;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return std::nullopt;
      if (ready < 0 || (pfd.revents & (POLLHUP | POLLERR) && !(pfd.revents & POLLIN))) throw gone("hang-up");
      std::uint8_t chunk[4096];
      ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) throw gone(n == 0 ? "end of file" : std::strerror(errno));
      decoder_.feed(ByteView(chunk, static_cast<std::size_t>(n)));
    }
  }

  std::string address() const override { return address_; }

 private:
  Error gone(const std::string& why) const {
    return Error(ExitCode::board, fmt::format("board {} disconnected ({})", address_, why),
                 "reconnect the board and run the command again; an interrupted upload resumes where it stopped");
  }
  int fd_;
  std::string address_;
  ConsoleFrameDecoder decoder_;
};

}  // namespace

std::unique_ptr<Link> open_serial_link(const std::string& device) {
  int fd = ::open(device.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    throw Error(errno == ENOENT ? ExitCode::not_found : ExitCode::board,
                fmt::format("cannot open serial port {}: {}", device, std::strerror(errno)),
                errno == EACCES ? "add yourself to the dialout group" : "");
  termios tio{};
  if (::tcgetattr(fd, &tio) == 0) {
    ::cfmakeraw(&tio);
    ::cfsetispeed(&tio, B115200);
    ::cfsetospeed(&tio, B115200);
    tio.c_cflag |= CLOCAL | CREAD;
    ::tcsetattr(fd, TCSANOW, &tio);
  }
  return std::make_unique<SerialLink>(fd, device);
}

}  // namespace kiln
