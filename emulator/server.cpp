// The per-board socket server: one thread, poll(2) on the connection and a stop event.
#include "emulator/server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <string_view>
#include <cstring>
#include <deque>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/link.hpp"

namespace kiln::emu {
namespace {

using Clock = std::chrono::steady_clock;

void send_all(int fd, ByteView bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the host went away; the next recv notices
    sent += static_cast<std::size_t>(n);
  }
}

}  // namespace

std::pair<std::uint16_t, std::uint8_t> parse_group_command(const std::string& text) {
  // Both numbers whole: "1:5x", "1:2:3" or " 1:5" are not a command (std::stoul stopped at the first non-digit).
  auto number = [&](std::string_view digits, unsigned max) -> std::optional<unsigned> {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value > max) return std::nullopt;
    return value;
  };
  auto colon = text.find(':');
  std::optional<unsigned> group, id;
  if (colon != std::string::npos) {
    group = number(std::string_view(text).substr(0, colon), 0xFFFF);
    id = number(std::string_view(text).substr(colon + 1), 0xFF);
  }
  if (!group || !id) throw Error(ExitCode::usage, fmt::format("--fail-command wants GROUP:ID (like 1:1), not '{}'", text));
  return {static_cast<std::uint16_t>(*group), static_cast<std::uint8_t>(*id)};
}

BoardServer::BoardServer(Board& board, std::filesystem::path socket_path, LinkShaping shaping, FaultInjection faults)
    : board_(board), socket_path_(std::move(socket_path)), shaping_(shaping), faults_(std::move(faults)) {}

BoardServer::~BoardServer() { stop(); }

void BoardServer::start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = socket_path_.string();
  if (path.size() >= sizeof addr.sun_path)
    throw Error(ExitCode::usage, fmt::format("socket path {} is too long; use a shorter --dir", path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  std::filesystem::remove(socket_path_);
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0)
    throw Error(ExitCode::failure, fmt::format("cannot listen on {}: {}", path, std::strerror(errno)));
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

void BoardServer::stop() {
  if (thread_.joinable()) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    std::filesystem::remove(socket_path_);
  }
  if (stop_fd_ >= 0) {
    ::close(stop_fd_);
    stop_fd_ = -1;
  }
}

void BoardServer::run() {
  while (!powered_off_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    serve_connection(fd);
    ::close(fd);
  }
}

void BoardServer::serve_connection(int fd) {
  struct Queued {
    Bytes packet;
    Clock::time_point due;
  };
  std::deque<Queued> queue;
  PacketAssembler assembler;
  Clock::time_point wire_free = Clock::now();
  std::vector<std::uint8_t> chunk(65536);

  while (true) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    timespec ts{};
    if (!queue.empty()) {  // wake when the oldest request is due; nanosecond precision for shaped links
      auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(queue.front().due - Clock::now());
      auto ns = std::max<std::int64_t>(0, wait.count());
      ts = {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    }
    int ready = ::ppoll(fds, 2, queue.empty() ? nullptr : &ts, nullptr);
    if (ready < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(fd, chunk.data(), chunk.size(), 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return;  // host closed the connection
      }
      bytes_received_ += static_cast<std::uint64_t>(n);
      if (faults_.drop_after_bytes && !dropped_ && bytes_received_ >= *faults_.drop_after_bytes) {
        dropped_ = true;  // the cable comes out once
        return;
      }
      assembler.append(ByteView(chunk.data(), static_cast<std::size_t>(n)));
      while (true) {
        std::optional<Bytes> packet;
        try {
          packet = assembler.next();
        } catch (const Error&) {
          return;  // the stream is out of step: drop the link as firmware would
        }
        if (!packet) break;
        auto now = Clock::now();
        if (wire_free < now) wire_free = now;
        if (shaping_.bandwidth)
          wire_free += std::chrono::nanoseconds(packet->size() * 1000000000ull / shaping_.bandwidth);
        queue.push_back({std::move(*packet), wire_free + 2 * shaping_.latency});
      }
    }
    while (!queue.empty() && queue.front().due <= Clock::now()) {
      Bytes packet = std::move(queue.front().packet);
      queue.pop_front();
      Board::Reply reply;
      try {
        smp::Header header = smp::decode_header(packet);
        bool fail = false;
        for (auto [g, id] : faults_.fail_commands) fail = fail || (g == header.group && id == header.command);
        if (fail && !smp::is_response(header.op)) {
          header.op = smp::response_op(header.op);
          reply.packet = smp::encode_frame(header, smp::error_body(smp::rc::unknown));
        } else {
          reply = board_.handle_packet(packet);
        }
      } catch (const PowerLoss&) {
        powered_off_ = true;
        if (on_power_loss) on_power_loss();
        return;
      } catch (const Error&) {
        return;
      }
      if (!reply.packet) continue;
      ++responses_;
      if (faults_.corrupt_every && responses_ % faults_.corrupt_every == 0 && reply.packet->size() > smp::header_size)
        (*reply.packet)[smp::header_size] = 0xff;  // a CBOR break where the body's map should start
      send_all(fd, *reply.packet);
      if (reply.reset_after) {
        ::shutdown(fd, SHUT_RDWR);
        try {
          board_.boot();
        } catch (const PowerLoss&) {
          powered_off_ = true;
          if (on_power_loss) on_power_loss();
        }
        return;
      }
    }
  }
}

}  // namespace kiln::emu
