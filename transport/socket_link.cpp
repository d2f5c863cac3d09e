// Link over a Unix stream socket: how kiln talks to kiln-board-emu.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/link.hpp"
#include "transport/smp.hpp"

namespace kiln {

std::optional<Bytes> PacketAssembler::next() {
  auto size = smp::frame_size(buffer_);
  if (!size || buffer_.size() < *size) return std::nullopt;
  Bytes packet(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(*size));
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(*size));
  return packet;
}

namespace {

Error disconnected(const std::string& address, const std::string& why) {
  return Error(ExitCode::board, fmt::format("board {} disconnected ({})", address, why),
               "reconnect the board and run the command again; an interrupted upload resumes where it stopped");
}

class SocketLink final : public Link {
 public:
  SocketLink(int fd, std::string path) : fd_(fd), address_("emu:" + std::move(path)) {}
  ~SocketLink() override { ::close(fd_); }
  SocketLink(const SocketLink&) = delete;
  SocketLink& operator=(const SocketLink&) = delete;

  void send(ByteView packet) override {
    std::size_t sent = 0;
    while (sent < packet.size()) {
      ssize_t n = ::send(fd_, packet.data() + sent, packet.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw disconnected(address_, std::strerror(errno));
      sent += static_cast<std::size_t>(n);
    }
  }

  std::optional<Bytes> receive(std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (auto packet = assembler_.next()) return packet;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) {
        if (ready == 0) return std::nullopt;
        throw disconnected(address_, std::strerror(errno));
      }
      std::uint8_t chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) throw disconnected(address_, "connection closed");
      if (n < 0) throw disconnected(address_, std::strerror(errno));
      assembler_.append(ByteView(chunk, static_cast<std::size_t>(n)));
    }
  }

  std::string address() const override { return address_; }

 private:
  int fd_;
  std::string address_;
  PacketAssembler assembler_;
};

}  // namespace

std::unique_ptr<Link> open_socket_link(const std::string& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path)
    throw Error(ExitCode::usage, fmt::format("socket path {} is too long", socket_path));
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(ExitCode::board, fmt::format("cannot create a socket: {}", std::strerror(errno)));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(ExitCode::board, fmt::format("cannot connect to board emu:{}: {}", socket_path, std::strerror(err)),
                "is kiln-board-emu running with that --dir?");
  }
  return std::make_unique<SocketLink>(fd, socket_path);
}

}  // namespace kiln
