// The exit code a library call fails with: what a test of a usage, conflict or verification error checks.
#pragma once

#include <functional>

#include "core/error.hpp"

namespace kiln::test {

// The code of the kiln::Error `call` throws; ExitCode::ok when it returns normally. Other exceptions pass.
inline ExitCode exit_code_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.code();
  }
  return ExitCode::ok;
}

}  // namespace kiln::test
