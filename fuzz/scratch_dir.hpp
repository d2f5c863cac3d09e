// One scratch directory per fuzzing process for the targets that write files: on tmpfs (/dev/shm) when the
// machine has it, so that a write (and an fsync) per input costs memory, not a disk; made on first use and
// removed when the process exits normally (a crash leaves it for the finding's post-mortem).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace kiln::fuzz {

inline const std::filesystem::path& scratch_dir() {
  struct Scratch {
    std::filesystem::path path;
    Scratch() {
      std::error_code ec;
      std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                                       ? std::filesystem::path("/dev/shm")
                                       : std::filesystem::temp_directory_path();
      std::string tmpl = (base / "kiln-fuzz-XXXXXX").string();
      if (!::mkdtemp(tmpl.data())) std::abort();
      path = tmpl;
    }
    ~Scratch() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
  };
  static const Scratch scratch;
  return scratch.path;
}

}  // namespace kiln::fuzz
