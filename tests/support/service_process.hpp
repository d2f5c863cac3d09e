// A running `kiln-service run` on 127.0.0.1 for end-to-end tests: started, awaited, stopped by RAII.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.hpp"

namespace kiln::test {

class ServiceProcess {
 public:
  // Starts the service on 127.0.0.1 (port 0: a free port) and waits for "listening on https://...".
  // With agents, a second listener for device agents (mutual TLS) on a free port.
  // extra_args are appended to `kiln-service run` (e.g. {"--header-timeout", "3"}).
  explicit ServiceProcess(const std::filesystem::path& dir, int port = 0, bool agents = false,
                          const std::vector<std::string>& extra_args = {}) {
    int err_pipe[2];
    if (pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    std::string program = bin_path("kiln-service");
    std::string listen = "127.0.0.1:" + std::to_string(port);
    // Built before fork: the child of a threaded test must not allocate.
    std::vector<std::string> args{program, "run", "--dir", dir.string(), "--listen", listen};
    if (agents) args.insert(args.end(), {"--agent-listen", "127.0.0.1:0"});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(err_pipe[1], 2);
      int devnull = open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      execv(program.c_str(), argv.data());
      _exit(127);
    }
    close(err_pipe[1]);
    stderr_fd_ = err_pipe[0];
    std::string seen;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    const std::string marker = "listening on https://127.0.0.1:";
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{stderr_fd_, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char buf[256];
        auto n = read(stderr_fd_, buf, sizeof buf);
        if (n <= 0) break;
        seen.append(buf, static_cast<std::size_t>(n));
        auto at = seen.find("\n" + marker);
        at = seen.starts_with(marker) ? 0 : (at == std::string::npos ? at : at + 1);
        bool agents_ready = !agents || seen.find("agents: listening") != std::string::npos;
        if (at != std::string::npos && seen.find('\n', at) != std::string::npos && agents_ready) {
          port_ = std::stoi(seen.substr(at + marker.size()));
          const std::string agent_marker = "agents: listening on https://127.0.0.1:";
          if (auto a = seen.find(agent_marker); a != std::string::npos) agent_port_ = std::stoi(seen.substr(a + agent_marker.size()));
          return;
        }
      }
    }
    stop();
    throw std::runtime_error("kiln-service did not start: " + seen);
  }
  ~ServiceProcess() { stop(); }
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;

  int port() const { return port_; }
  int agent_port() const { return agent_port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }

  pid_t pid() const { return pid_; }

  // What the service wrote to stderr (its log) after it started listening, read up to now without waiting.
  const std::string& log() {
    char buf[4096];
    while (pid_ > 0) {
      pollfd p{stderr_fd_, POLLIN, 0};
      if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)) break;
      auto n = read(stderr_fd_, buf, sizeof buf);
      if (n <= 0) break;
      log_.append(buf, static_cast<std::size_t>(n));
    }
    return log_;
  }

  // SIGKILL at once (a crash), and reap.
  void kill_hard() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    close(stderr_fd_);
  }

  // SIGTERM and wait (SIGKILL after 10 s); returns the exit status, or -1 if already stopped.
  int stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        close(stderr_fd_);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    close(stderr_fd_);
    return 128 + SIGKILL;
  }

 private:
  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  int port_ = 0;
  int agent_port_ = 0;
  std::string log_;
};

}  // namespace kiln::test
