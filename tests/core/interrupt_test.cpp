// Tests for core/interrupt in a child process (the flag is process-wide and a second signal ends the process): no
// signal, no interruption; SIGINT or SIGTERM sets the flag and check_interrupted throws Error(interrupted) with its
// hint; a second signal ends the process at once.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include "core/error.hpp"
#include "core/interrupt.hpp"

using namespace kiln;

namespace {

struct ChildResult {
  std::string said;  // what the child reported before the second signal
  int status = 0;
};

// Forks: the child installs the handlers, reports what it sees around one `signal`, then raises it again.
ChildResult interrupt_child(int signal) {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    std::string report;
    install_interrupt_handlers();
    report += interrupted() ? "early;" : "calm;";
    try {
      check_interrupted();
      report += "no-throw;";
    } catch (const Error&) {
      report += "threw-early;";
    }
    std::raise(signal);
    report += interrupted() ? "interrupted;" : "missed;";
    try {
      check_interrupted();
      report += "no-throw;";
    } catch (const Error& e) {
      report += std::to_string(static_cast<int>(e.code())) + ":" + e.what() + ":" + e.hint() + ";";
    }
    (void)!::write(pipe_fds[1], report.data(), report.size());
    ::close(pipe_fds[1]);
    std::raise(signal);  // the second one: the default action ends the process
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  ChildResult result;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.said.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  REQUIRE(::waitpid(pid, &result.status, 0) == pid);
  return result;
}

}  // namespace

TEST_CASE("interrupt: SIGINT and SIGTERM stop work at the next check; a second signal ends the process") {
  for (int signal : {SIGINT, SIGTERM}) {
    CAPTURE(signal);
    auto child = interrupt_child(signal);
    CHECK(child.said ==
          "calm;no-throw;interrupted;130:interrupted:nothing was left half-written; run the command again;");
    CHECK(WIFSIGNALED(child.status));
    CHECK(WTERMSIG(child.status) == signal);
  }
}
