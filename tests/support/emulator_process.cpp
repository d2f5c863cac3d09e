// kiln-board-emu as a child process: fork/exec, read its board list, SIGTERM on destruction.
#include "tests/support/emulator_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/support/process.hpp"

namespace kiln::test {

EmulatorProcess::EmulatorProcess(const std::string& dir, int count, const std::vector<std::string>& args) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::string program = bin_path("kiln-board-emu");
  std::vector<std::string> argv_strings{program, "--dir", dir, "--count", std::to_string(count)};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(out[1], 1);
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (text.find("ready\n") == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pfd{out[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(out[0]);
  if (text.find("ready\n") == std::string::npos) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    throw std::runtime_error("kiln-board-emu did not start: " + text);
  }
  std::istringstream lines(text);
  std::string uid, socket;
  while (lines >> uid && uid != "ready" && lines >> socket) {
    uids_.push_back(uid);
    sockets_.push_back(socket);
  }
}

std::optional<int> EmulatorProcess::wait_exit(int timeout_seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

EmulatorProcess::~EmulatorProcess() {
  if (exited_ || pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!wait_exit(5)) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void write_vendor_root(const std::string& dir, const std::string& out) {
  auto root = run_process(bin_path("kiln-board-emu"), {"--dir", dir, "--print-vendor-root"});
  if (root.exit_code != 0) throw std::runtime_error("kiln-board-emu --print-vendor-root failed: " + root.err);
  std::ofstream(out) << root.out;
}

}  // namespace kiln::test
