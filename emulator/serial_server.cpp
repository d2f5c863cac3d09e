// The pty board: console frames in, board replies out; a reset re-runs MCUboot.
#include "emulator/serial_server.hpp"

#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/console_framing.hpp"

namespace kiln::emu {

SerialBoardServer::SerialBoardServer(Board& board, std::filesystem::path link_path)
    : board_(board), link_path_(std::move(link_path)) {
  termios raw{};
  cfmakeraw(&raw);
  char name[256] = {};
  if (openpty(&master_, &slave_, name, &raw, nullptr) != 0)
    throw Error(ExitCode::failure, fmt::format("cannot open a pseudo-terminal: {}", std::strerror(errno)));
  device_ = name;
  if (!link_path_.empty()) {
    std::filesystem::remove(link_path_);
    std::filesystem::create_symlink(device_, link_path_);
  }
  thread_ = std::thread([this] { run(); });
}

SerialBoardServer::~SerialBoardServer() {
  stop_ = true;
  thread_.join();
  if (!link_path_.empty()) std::filesystem::remove(link_path_);
  ::close(slave_);
  ::close(master_);
}

void SerialBoardServer::run() {
  ConsoleFrameDecoder decoder;
  std::uint8_t buffer[4096];
  while (!stop_) {
    pollfd pfd{master_, POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    ssize_t n = ::read(master_, buffer, sizeof buffer);
    if (n <= 0) continue;
    decoder.feed(ByteView(buffer, static_cast<std::size_t>(n)));
    while (true) {
      std::optional<Bytes> packet;
      try {
        packet = decoder.next();
      } catch (const Error&) {
        continue;  // a damaged frame is dropped; the host times out and retries reads
      }
      if (!packet) break;
      Board::Reply reply;
      try {
        reply = board_.handle_packet(*packet);
      } catch (const Error&) {
        continue;
      }
      if (!reply.packet) continue;
      std::string lines = encode_console_frame(*reply.packet);
      std::size_t sent = 0;
      while (sent < lines.size()) {
        ssize_t w = ::write(master_, lines.data() + sent, lines.size() - sent);
        if (w < 0 && errno != EINTR && errno != EAGAIN) break;
        if (w > 0) sent += static_cast<std::size_t>(w);
      }
      if (reply.reset_after) board_.boot();
    }
  }
}

}  // namespace kiln::emu
