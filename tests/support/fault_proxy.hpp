// A TCP proxy on 127.0.0.1 for network-fault tests: forwards to a target port, can cut or stall after N bytes.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tests/support/loopback.hpp"

namespace kiln::test {

class FaultProxy {
 public:
  explicit FaultProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 64) != 0)
      throw std::runtime_error("proxy: cannot listen");
    socklen_t len = sizeof addr;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~FaultProxy() {
    stopping_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : connections_) t.join();
    close(listen_fd_);
  }
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  enum class Direction { to_server, to_client };
  // After `bytes` more bytes in `direction`, cut every connection and refuse new ones until allow().
  void cut_after(std::int64_t bytes, Direction direction = Direction::to_server) { arm(bytes, direction, Fault::cut, false); }
  // After `bytes` more bytes in `direction`, the connection stalls: the proxy keeps reading both sides
  // but forwards nothing, and never closes. Unless `once`, every later connection stalls from its
  // first byte until allow(); with `once`, later connections are forwarded normally.
  void stall_after(std::int64_t bytes, Direction direction = Direction::to_server, bool once = false) {
    arm(bytes, direction, Fault::stall, once);
  }
  void allow() {
    budget_ = -1;
    blocked_ = false;
    stall_all_ = false;
  }
  bool cut_happened() const { return cut_happened_; }
  bool stall_happened() const { return stall_happened_; }
  // After `bytes` more server->client bytes, cut every connection and refuse new ones until allow().
  void cut_responses_after(std::int64_t bytes) { cut_after(bytes, Direction::to_client); }
  // Server->client bytes forwarded so far.
  std::int64_t response_bytes() const { return response_bytes_; }
  // Refuse (accept and close at once) every connection until allow().
  void block() { blocked_ = true; }
  int connections() const { return connections_accepted_; }

 private:
  enum class Fault { cut, stall };
  void arm(std::int64_t bytes, Direction direction, Fault fault, bool once) {
    direction_ = direction;
    fault_ = fault;
    once_ = once;
    budget_ = bytes;
  }

  void accept_loop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      ++connections_accepted_;
      if (blocked_) {
        close(client);
        continue;
      }
      std::lock_guard lock(mutex_);
      connections_.emplace_back([this, client] { forward(client); });
    }
  }

  // Reads and drops whatever arrives until the peer leaves or the proxy stops: a link that went silent.
  void drain(int client, int server) {
    char buf[16384];
    while (!stopping_) {
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(fds, server >= 0 ? 2 : 1, 50) <= 0) continue;
      if (fds[0].revents && read(client, buf, sizeof buf) <= 0) break;
      if (server >= 0 && fds[1].revents && read(server, buf, sizeof buf) <= 0) server = -1;
    }
  }

  void forward(int client) {
    if (stall_all_) {
      drain(client, -1);
      close(client);
      return;
    }
    int server = connect_loopback(target_port_, 0);
    if (server < 0) {
      close(client);
      return;
    }
    char buf[16384];
    bool stalled = false;
    // Moves what `from` has to `to`, spending the fault budget when this is the armed direction.
    // Returns false when the connection is over (closed, cut or stalled).
    auto pump = [&](int from, int to, Direction direction) {
      auto n = read(from, buf, sizeof buf);
      if (n <= 0) return false;
      std::int64_t allowed = n;
      std::int64_t budget = budget_;
      bool armed = budget >= 0 && direction == direction_;
      if (armed) {
        allowed = std::min<std::int64_t>(n, budget);
        budget_ = budget - allowed;
      }
      if (allowed > 0 && write(to, buf, static_cast<std::size_t>(allowed)) != allowed) return false;
      if (direction == Direction::to_client) response_bytes_ += allowed;
      if (armed && allowed < n) {
        if (fault_ == Fault::cut) {
          blocked_ = true;
          cut_happened_ = true;
        } else {
          stalled = true;
          stall_happened_ = true;
          if (once_) budget_ = -1;
          else stall_all_ = true;
        }
        return false;
      }
      return true;
    };
    while (!stopping_ && !blocked_) {
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(fds, 2, 50) <= 0) continue;
      if (fds[0].revents && !pump(client, server, Direction::to_server)) break;
      if (fds[1].revents && !pump(server, client, Direction::to_client)) break;
    }
    if (stalled) drain(client, server);
    close(client);
    close(server);
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<bool> cut_happened_{false};
  std::atomic<bool> stall_happened_{false};
  std::atomic<bool> stall_all_{false};
  std::atomic<bool> once_{false};
  std::atomic<Direction> direction_{Direction::to_server};
  std::atomic<Fault> fault_{Fault::cut};
  std::atomic<int> connections_accepted_{0};
  std::atomic<std::int64_t> budget_{-1};
  std::atomic<std::int64_t> response_bytes_{0};
  std::mutex mutex_;
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

}  // namespace kiln::test
