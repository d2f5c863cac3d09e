// Child processes for end-to-end tests: fork/exec with pipes, polled until exit or timeout.
#include "tests/support/process.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace kiln::test {

namespace {

// The child's environment (ours, minus unset_env, plus env) and argv, built before fork(): only
// async-signal-safe calls may run between fork() and execve().
struct Exec {
  std::vector<std::string> env_strings;
  std::vector<char*> argv, envp;
  Exec(const std::string& program, const std::vector<std::string>& args, const ProcessOptions& options) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      auto eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    for (auto& u : options.unset_env) env.erase(u);
    for (auto& [k, v] : options.env) env[k] = v;
    for (auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    argv.push_back(const_cast<char*>(program.c_str()));
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

// fork() + execve() with stdout and stderr on the given pipe ends and stdin from `in_fd` (/dev/null when -1).
pid_t spawn(const std::string& program, const Exec& exec, const ProcessOptions& options, int in_fd, int out_fd,
            int err_fd) {
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    dup2(in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY), 0);
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(127);
    execve(program.c_str(), exec.argv.data(), exec.envp.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

ProcessResult run_process(const std::string& program, const std::vector<std::string>& args,
                          const ProcessOptions& options) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC) || pipe2(in_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");

  Exec exec(program, args, options);

  pid_t pid = spawn(program, exec, options, options.stdin_data ? in_pipe[0] : -1, out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(in_pipe[0]);
  if (options.stdin_data) {
    // Small inputs only: write before reading (pipe buffer is 64 KiB).
    const std::string& data = *options.stdin_data;
    ssize_t ignored = write(in_pipe[1], data.data(), data.size());
    (void)ignored;
  }
  close(in_pipe[1]);

  ProcessResult result;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_seconds);
  struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t r = read(fds[i].fd, buf, sizeof buf);
        if (r > 0) {
          (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(r));
        } else {
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        }
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) result.exit_code = 128 + (result.signal = WTERMSIG(status));
  return result;
}

std::string bin_path(const std::string& name) { return std::string(KILN_BIN_DIR) + "/" + name; }

std::string vectors_dir() {
  // The environment names another copy at test time (a clone away from ../shared); the build's choice otherwise.
  if (const char* dir = std::getenv("KILN_VECTORS_DIR"); dir && *dir) return dir;
  return KILN_VECTORS_DIR;
}

namespace {

void prepare_kiln(ProcessOptions& options) {
  options.unset_env.insert(options.unset_env.end(),
                           {"KILN_OUTPUT", "KILN_CONFIG", "KILN_QUIET", "KILN_VERBOSE", "KILN_DEBUG", "KILN_TOKEN",
                            "KILN_SERVICE", "KILN_PKCS11_MODULE", "KILN_PKCS11_PIN", "KILN_EMU_DIR"});
  if (!options.env.count("XDG_CONFIG_HOME")) options.env["XDG_CONFIG_HOME"] = "/nonexistent-kiln-test-config";
  options.env["NO_COLOR"] = "1";
}

}  // namespace

ProcessResult kiln(const std::vector<std::string>& args, ProcessOptions options) {
  prepare_kiln(options);
  return run_process(bin_path("kiln"), args, options);
}

std::unique_ptr<ChildProcess> start_kiln(const std::vector<std::string>& args, ProcessOptions options) {
  prepare_kiln(options);
  return std::make_unique<ChildProcess>(bin_path("kiln"), args, options);
}

ChildProcess::ChildProcess(const std::string& program, const std::vector<std::string>& args,
                           const ProcessOptions& options) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC)) throw std::runtime_error("pipe failed");
  Exec exec(program, args, options);
  pid_ = spawn(program, exec, options, -1, out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  out_ = out_pipe[0];
  err_ = err_pipe[0];
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (out_ >= 0) close(out_);
  if (err_ >= 0) close(err_);
}

bool ChildProcess::pump(int timeout_ms) {
  struct pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
  if (out_ < 0 && err_ < 0) return false;
  int n = poll(fds, 2, timeout_ms);
  if (n < 0 && errno == EINTR) return true;
  char buf[65536];
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = read(fds[i].fd, buf, sizeof buf);
      if (r > 0) {
        (i == 0 ? result_.out : result_.err).append(buf, static_cast<std::size_t>(r));
      } else {
        close(fds[i].fd);
        (i == 0 ? out_ : err_) = -1;
      }
    }
  }
  return out_ >= 0 || err_ >= 0;
}

std::optional<std::string> ChildProcess::wait_for_line(const std::function<bool(const std::string&)>& match,
                                                        int timeout_seconds, bool from_stderr) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  int which = from_stderr ? 1 : 0;
  for (;;) {
    const std::string& text = from_stderr ? result_.err : result_.out;
    for (auto end = text.find('\n', scanned_[which]); end != std::string::npos; end = text.find('\n', scanned_[which])) {
      std::string line = text.substr(scanned_[which], end - scanned_[which]);
      scanned_[which] = end + 1;
      if (match(line)) return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    if (!pump(static_cast<int>(left.count())) && (from_stderr ? err_ : out_) < 0) {
      // Closed: scan what is left once more, then give up.
      const std::string& rest = from_stderr ? result_.err : result_.out;
      for (auto end = rest.find('\n', scanned_[which]); end != std::string::npos;
           end = rest.find('\n', scanned_[which])) {
        std::string line = rest.substr(scanned_[which], end - scanned_[which]);
        scanned_[which] = end + 1;
        if (match(line)) return line;
      }
      return std::nullopt;
    }
  }
}

void ChildProcess::signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

ProcessResult ChildProcess::wait(int timeout_seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid_, SIGKILL);
      break;
    }
    if (!pump(static_cast<int>(left.count()))) break;
  }
  if (!reaped_) {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) result_.exit_code = 128 + (result_.signal = WTERMSIG(status));
  }
  return result_;
}

KilledAtEvent kill_kiln_at_event(const std::vector<std::string>& args, const ProcessOptions& options,
                                 const std::string& step, const std::string& result, int timeout_seconds) {
  auto station = start_kiln(args, options);
  const std::string step_field = "\"step\":\"" + step + "\"";
  const std::string result_field = "\"result\":\"" + result + "\"";
  auto event = station->wait_for_line(
      [&](const std::string& line) {
        return line.find(step_field) != std::string::npos && line.find(result_field) != std::string::npos;
      },
      timeout_seconds);
  station->signal(SIGKILL);
  return {event.has_value(), station->wait()};
}

ProcessResult kill_factory_run_at(const std::string& emu_dir, const std::string& profile, int jobs,
                                  const std::string& step) {
  ProcessOptions options;
  options.env["KILN_EMU_DIR"] = emu_dir;
  auto run = kill_kiln_at_event(
      {"-o", "jsonl", "factory", "run", "--all", "--jobs", std::to_string(jobs), "--profile", profile}, options, step);
  REQUIRE_MESSAGE(run.reached, run.killed.err);
  CHECK(run.killed.exit_code == 128 + SIGKILL);
  return run.killed;
}

}  // namespace kiln::test
