// A running kiln-board-emu for end-to-end tests: started with arguments, ready once it prints
// "ready", stopped with SIGTERM (or SIGKILL, as a power cut) when the object goes away.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace kiln::test {

class EmulatorProcess {
 public:
  explicit EmulatorProcess(const std::vector<std::string>& args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    std::string program = bin_path("kiln-board-emu");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv{const_cast<char*>(program.c_str())};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(program.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    out_ = out[0];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (output_.find("ready\n") == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd fd{out_, POLLIN, 0};
      if (left.count() <= 0 || poll(&fd, 1, static_cast<int>(left.count())) <= 0) break;
      char buffer[4096];
      ssize_t n = read(out_, buffer, sizeof buffer);
      if (n <= 0) break;
      output_.append(buffer, static_cast<std::size_t>(n));
    }
    if (output_.find("ready\n") == std::string::npos) {
      stop(SIGKILL);
      throw std::runtime_error("kiln-board-emu did not become ready: " + output_);
    }
  }
  ~EmulatorProcess() { stop(SIGTERM); }
  EmulatorProcess(const EmulatorProcess&) = delete;
  EmulatorProcess& operator=(const EmulatorProcess&) = delete;

  // "<uid> <socket>" lines printed at start.
  const std::string& output() const { return output_; }
  void stop(int signal_number) {
    if (pid_ <= 0) return;
    kill(pid_, signal_number);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (out_ >= 0) close(out_);
    out_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

}  // namespace kiln::test
