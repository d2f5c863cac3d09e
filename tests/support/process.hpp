// Runs a program (usually the real kiln binary) with arguments, environment and stdin; captures all.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::test {

struct ProcessResult {
  int exit_code = -1;  // 128+N when killed by signal N
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

}  // namespace kiln::test
