// For tests of what kiln's CLI layer prints: what is written to std::cout or std::cerr (the stream objects, as the
// renderers use them), and a Context finalized as if its standard streams were files or a terminal.
#pragma once

#include <doctest/doctest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <iostream>
#include <sstream>
#include <string>

#include "cli/context.hpp"

namespace kiln::test {

// Everything written to `stream` while it lives.
class CapturedStream {
 public:
  explicit CapturedStream(std::ostream& stream) : stream_(stream), saved_(stream.rdbuf(buffer_.rdbuf())) {}
  ~CapturedStream() { stream_.rdbuf(saved_); }
  CapturedStream(const CapturedStream&) = delete;
  CapturedStream& operator=(const CapturedStream&) = delete;
  std::string text() const { return buffer_.str(); }

 private:
  std::ostream& stream_;
  std::ostringstream buffer_;
  std::streambuf* saved_;
};

// ctx.finalize() with stdin, stdout and stderr on /dev/null (no terminal), or stderr alone on a pseudo-terminal
// when `stderr_terminal`; the process's descriptors are restored afterwards.
inline void finalize_detached(cli::Context& ctx, bool stderr_terminal = false) {
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(null >= 0);
  int terminal = -1;
  if (stderr_terminal) {
    terminal = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(terminal >= 0);
    REQUIRE(::grantpt(terminal) == 0);
    REQUIRE(::unlockpt(terminal) == 0);
  }
  int replica = terminal >= 0 ? ::open(::ptsname(terminal), O_RDWR | O_NOCTTY | O_CLOEXEC) : null;
  REQUIRE(replica >= 0);
  std::cout.flush();
  std::cerr.flush();
  // Restores the descriptors however finalize() ends (it throws for an unknown format).
  struct Restore {
    int saved[3];
    int null, replica, terminal;
    ~Restore() {
      for (int fd = 0; fd < 3; ++fd) {
        ::dup2(saved[fd], fd);
        ::close(saved[fd]);
      }
      if (replica != null) ::close(replica);
      if (terminal >= 0) ::close(terminal);
      ::close(null);
    }
  } restore{{::dup(0), ::dup(1), ::dup(2)}, null, replica, terminal};
  for (int fd = 0; fd < 3; ++fd) ::dup2(fd == 2 ? replica : null, fd);
  ctx.finalize();
}

}  // namespace kiln::test
