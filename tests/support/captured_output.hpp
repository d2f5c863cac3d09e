// What a cli/ view writes through a Context: stdout and stderr captured in files while it runs, with stdin
// from /dev/null (never a terminal, so nothing waits for an answer).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "cli/context.hpp"
#include "tests/support/temp_dir.hpp"

namespace kiln::test {

struct CapturedOutput {
  std::string out, err;
};

// Runs `body(ctx)` with a Context made for `format` (-o) and returns what it wrote. `setup` may change the
// global options before the Context is finalized (--quiet, --no-color).
template <typename Body>
CapturedOutput capture_output(const std::string& format, Body&& body, void (*setup)(cli::GlobalOptions&) = nullptr) {
  TempDir dir;
  std::fflush(stdout);
  std::cout.flush();
  std::cerr.flush();
  int saved[3] = {::dup(STDIN_FILENO), ::dup(STDOUT_FILENO), ::dup(STDERR_FILENO)};
  auto redirect = [](const std::string& path, int flags, int fd) {
    int file = ::open(path.c_str(), flags, 0600);
    REQUIRE(file >= 0);
    ::dup2(file, fd);
    ::close(file);
  };
  redirect("/dev/null", O_RDONLY, STDIN_FILENO);
  redirect(dir.file("stdout"), O_WRONLY | O_CREAT | O_TRUNC, STDOUT_FILENO);
  redirect(dir.file("stderr"), O_WRONLY | O_CREAT | O_TRUNC, STDERR_FILENO);
  auto restore = [&] {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(stdout);
    std::fflush(stderr);
    for (int fd = 0; fd < 3; ++fd) {
      ::dup2(saved[fd], fd);
      ::close(saved[fd]);
    }
  };
  try {
    cli::Context ctx;
    ctx.global.output = format;
    if (setup) setup(ctx.global);
    ctx.finalize();
    body(static_cast<const cli::Context&>(ctx));
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return {slurp(dir.file("stdout")), slurp(dir.file("stderr"))};
}

}  // namespace kiln::test
