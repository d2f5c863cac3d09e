// Runs a program (usually the real kiln binary) with arguments, environment and stdin; captures all.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::test {

struct ProcessResult {
  int exit_code = -1;  // 128+N when killed by signal N
  int signal = 0;      // N when killed by signal N (0: the process exited by itself, with exit_code)
  std::string out;
  std::string err;
};

struct ProcessOptions {
  std::map<std::string, std::string> env;  // added to (or overriding) the inherited environment
  std::vector<std::string> unset_env;
  std::optional<std::string> stdin_data;   // nullopt: stdin is /dev/null
  std::string cwd;
  int timeout_seconds = 120;
};

ProcessResult run_process(const std::string& program, const std::vector<std::string>& args,
                          const ProcessOptions& options = {});

// Path of a binary built by this project ("kiln", "kiln-board-emu", "kiln-service").
std::string bin_path(const std::string& name);
// Runs bin/kiln with a clean, predictable environment (no user config, no color).
ProcessResult kiln(const std::vector<std::string>& args, ProcessOptions options = {});
// Same as kiln(); usable with a using-declaration at global scope (where the name kiln is the namespace).
inline ProcessResult run_kiln(const std::vector<std::string>& args, ProcessOptions options = {}) {
  return kiln(args, std::move(options));
}

std::string vectors_dir();

// True when this build (the tests and the programs they start) runs under AddressSanitizer.
constexpr bool sanitized_build() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

// A child running in the background whose stdout and stderr are read as they come, so a test can wait for
// the event it wants to interrupt (a JSON line, a "watching" message) instead of sleeping for a time budget.
class ChildProcess {
 public:
  ChildProcess(const std::string& program, const std::vector<std::string>& args, const ProcessOptions& options = {});
  ~ChildProcess();  // SIGKILL and reap if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reads until a complete line of stdout (from_stderr: stderr) satisfies `match`, and returns it; nullopt when
  // the child closed its output or `timeout_seconds` passed first. Lines seen are kept in the final result.
  std::optional<std::string> wait_for_line(const std::function<bool(const std::string&)>& match, int timeout_seconds,
                                           bool from_stderr = false);
  void signal(int sig);
  pid_t pid() const { return pid_; }
  // Reads the rest of the output, reaps the child (SIGKILL after `timeout_seconds`), returns all of it.
  ProcessResult wait(int timeout_seconds = 120);

 private:
  bool pump(int timeout_ms);  // false when both pipes are closed
  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  std::size_t scanned_[2] = {0, 0};
  ProcessResult result_;
  bool reaped_ = false;
};

// kiln() in the background.
std::unique_ptr<ChildProcess> start_kiln(const std::vector<std::string>& args, ProcessOptions options = {});

// A station (kiln -o jsonl factory run|provision|watch …) killed with SIGKILL as soon as it reports that a
// board's `step` ended with `result`: the fault lands at that event, not after a time budget. `reached` is
// false when the event never came within `timeout_seconds` (the station is then stopped and its output kept).
struct KilledAtEvent {
  bool reached = false;
  ProcessResult killed;
};
KilledAtEvent kill_kiln_at_event(const std::vector<std::string>& args, const ProcessOptions& options,
                                 const std::string& step, const std::string& result = "ok", int timeout_seconds = 60);

// `kiln -o jsonl factory run --all --jobs JOBS --profile PROFILE` with the emulator of `emu_dir`, killed (SIGKILL)
// when the first board's `step` reports ok: what the station wrote before it died. The test fails when the
// event never came or the station did not die of the kill.
ProcessResult kill_factory_run_at(const std::string& emu_dir, const std::string& profile, int jobs,
                                  const std::string& step);

}  // namespace kiln::test
