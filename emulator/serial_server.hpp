// Serves one emulated board on a pseudo-terminal with SMP console framing, as a board on a UART.
#pragma once

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "emulator/board.hpp"

namespace kiln::emu {

class SerialBoardServer {
 public:
  // Opens a pty; `link_path` (if not empty) becomes a symlink to its device (D/<uid>.tty).
  SerialBoardServer(Board& board, std::filesystem::path link_path = {});
  ~SerialBoardServer();
  SerialBoardServer(const SerialBoardServer&) = delete;
  SerialBoardServer& operator=(const SerialBoardServer&) = delete;

  // The device the host opens, e.g. /dev/pts/7.
  const std::string& device() const { return device_; }

 private:
  void run();
  Board& board_;
  std::filesystem::path link_path_;
  int master_ = -1;
  int slave_ = -1;  // kept open so the master never sees a hang-up between host sessions
  std::string device_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace kiln::emu
