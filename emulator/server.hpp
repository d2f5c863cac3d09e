// Serves one emulated board on a Unix socket, shaping the link (latency, bandwidth) and injecting
// faults (dropped connection, corrupted responses, failing commands).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "emulator/board.hpp"

namespace kiln::emu {

struct LinkShaping {
  std::chrono::microseconds latency{0};  // one-way delay; a request is answered after 2 x latency
  std::uint64_t bandwidth = 0;           // bytes per second on the host-to-board wire; 0 = unlimited
};

struct FaultInjection {
  std::optional<std::uint64_t> drop_after_bytes;  // close the connection once, after this many bytes in
  std::uint64_t corrupt_every = 0;                // damage every Nth response packet (0 = never)
  std::vector<std::pair<std::uint16_t, std::uint8_t>> fail_commands;  // group:id answered with rc 1
};

// "1:5" -> {1, 5}; throws Error(usage).
std::pair<std::uint16_t, std::uint8_t> parse_group_command(const std::string& text);

class BoardServer {
 public:
  BoardServer(Board& board, std::filesystem::path socket_path, LinkShaping shaping, FaultInjection faults);
  ~BoardServer();
  BoardServer(const BoardServer&) = delete;
  BoardServer& operator=(const BoardServer&) = delete;

  // Binds the socket (replacing a stale one) and starts the serving thread.
  void start();
  void stop();
  // Called on the serving thread when --power-loss-at cuts the power; by default the board just
  // stops answering (the emulator binary exits the process instead).
  std::function<void()> on_power_loss;

 private:
  void run();
  void serve_connection(int fd);

  Board& board_;
  std::filesystem::path socket_path_;
  LinkShaping shaping_;
  FaultInjection faults_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
  std::uint64_t bytes_received_ = 0;
  std::uint64_t responses_ = 0;
  bool dropped_ = false;
  bool powered_off_ = false;
};

}  // namespace kiln::emu
