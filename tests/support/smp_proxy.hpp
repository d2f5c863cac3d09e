// A man-in-the-middle "board" for attack tests: listens on a Unix socket like kiln-board-emu and
// forwards SMP requests to a real emulated board, except those it answers itself or rewrites.
// Models a proxy or counterfeit board that replays or relays another board's answers.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "transport/link.hpp"
#include "transport/smp.hpp"

namespace kiln::test {

class SmpProxy {
 public:
  // Answers a request itself (a body) or lets it through (nullopt).
  using Answer = std::function<std::optional<smp::Body>(const smp::Header&, const smp::Body& request)>;
  // Edits the upstream board's response to a request before it goes back.
  using Patch = std::function<void(const smp::Header&, smp::Body& response)>;

  SmpProxy(std::filesystem::path listen_path, std::string upstream_path, Answer answer, Patch patch = {})
      : path_(std::move(listen_path)), upstream_(std::move(upstream_path)), answer_(std::move(answer)),
        patch_(std::move(patch)) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::filesystem::remove(path_);
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 16) != 0)
      throw std::runtime_error("smp proxy: cannot listen on " + path_.string());
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~SmpProxy() {
    stopping_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : connections_) t.join();
    ::close(listen_fd_);
    std::filesystem::remove(path_);
  }
  SmpProxy(const SmpProxy&) = delete;
  SmpProxy& operator=(const SmpProxy&) = delete;

  std::string address() const { return "emu:" + path_.string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  void accept_loop() {
    while (!stopping_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mutex_);
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static bool send_all(int fd, const Bytes& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  void serve(int fd) {
    std::unique_ptr<Link> upstream;
    try {
      upstream = open_socket_link(upstream_);
    } catch (const Error&) {
      ::close(fd);
      return;
    }
    PacketAssembler assembler;
    std::uint8_t chunk[4096];
    while (!stopping_) {
      pollfd pfd{fd, POLLIN, 0};
      int ready = ::poll(&pfd, 1, 50);
      if (ready <= 0) continue;
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      assembler.append(ByteView(chunk, static_cast<std::size_t>(n)));
      bool open = true;
      try {
        while (auto packet = assembler.next()) {
          auto frame = smp::decode_frame(*packet);
          smp::Header response = frame.header;
          response.op = smp::response_op(frame.header.op);
          if (auto body = answer_ ? answer_(frame.header, frame.body) : std::nullopt) {
            open = send_all(fd, smp::encode_frame(response, *body));
          } else {
            upstream->send(*packet);
            auto reply = upstream->receive(std::chrono::seconds(10));
            if (!reply) {
              open = false;
              break;
            }
            auto answered = smp::decode_frame(*reply);
            if (patch_) patch_(frame.header, answered.body);
            open = send_all(fd, smp::encode_frame(answered.header, answered.body));
          }
          if (!open) break;
        }
      } catch (const Error&) {
        open = false;  // the board dropped the link (a reset) or sent garbage: so does the proxy
      }
      if (!open) break;
    }
    ::close(fd);
  }

  std::filesystem::path path_;
  std::string upstream_;
  Answer answer_;
  Patch patch_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> connections_;
};

}  // namespace kiln::test
