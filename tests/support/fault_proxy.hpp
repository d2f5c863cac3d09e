// A TCP proxy on 127.0.0.1 for network-fault tests: forwards to a target port, can cut after N bytes.
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
  // After `bytes` more client->server bytes, cut every connection and refuse new ones until allow().
  void cut_after(std::int64_t bytes) { budget_ = bytes; }
  void allow() {
    budget_ = -1;
    response_budget_ = -1;
    blocked_ = false;
  }
  bool cut_happened() const { return cut_happened_; }
  // After `bytes` more server->client bytes, cut every connection and refuse new ones until allow().
  void cut_responses_after(std::int64_t bytes) { response_budget_ = bytes; }
  // Server->client bytes forwarded so far.
  std::int64_t response_bytes() const { return response_bytes_; }
  // Refuse (accept and close at once) every connection until allow().
  void block() { blocked_ = true; }
  int connections() const { return connections_accepted_; }

 private:
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

  void forward(int client) {
    int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(target_port_));
    if (connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close(client);
      close(server);
      return;
    }
    char buf[16384];
    while (!stopping_ && !blocked_) {
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(fds, 2, 50) <= 0) continue;
      if (fds[0].revents) {
        auto n = read(client, buf, sizeof buf);
        if (n <= 0) break;
        std::int64_t allowed = n;
        std::int64_t budget = budget_;
        if (budget >= 0) {
          allowed = std::min<std::int64_t>(n, budget);
          budget_ = budget - allowed;
        }
        if (allowed > 0 && write(server, buf, static_cast<std::size_t>(allowed)) != allowed) break;
        if (budget >= 0 && allowed < n) {
          blocked_ = true;
          cut_happened_ = true;
          break;
        }
      }
      if (fds[1].revents) {
        auto n = read(server, buf, sizeof buf);
        if (n <= 0) break;
        std::int64_t allowed = n;
        std::int64_t budget = response_budget_;
        if (budget >= 0) {
          allowed = std::min<std::int64_t>(n, budget);
          response_budget_ = budget - allowed;
        }
        if (allowed > 0 && write(client, buf, static_cast<std::size_t>(allowed)) != allowed) break;
        response_bytes_ += allowed;
        if (budget >= 0 && allowed < n) {
          blocked_ = true;
          cut_happened_ = true;
          break;
        }
      }
    }
    close(client);
    close(server);
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<bool> cut_happened_{false};
  std::atomic<int> connections_accepted_{0};
  std::atomic<std::int64_t> budget_{-1};
  std::atomic<std::int64_t> response_budget_{-1};
  std::atomic<std::int64_t> response_bytes_{0};
  std::mutex mutex_;
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

}  // namespace kiln::test
