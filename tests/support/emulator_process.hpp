// Runs kiln-board-emu for a test: starts it, waits for its sockets, stops it when the test ends.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace kiln::test {

class EmulatorProcess {
 public:
  // Starts `kiln-board-emu --dir DIR --count COUNT ARGS...` and waits until it prints "ready".
  EmulatorProcess(const std::string& dir, int count = 1, const std::vector<std::string>& args = {});
  ~EmulatorProcess();
  EmulatorProcess(const EmulatorProcess&) = delete;
  EmulatorProcess& operator=(const EmulatorProcess&) = delete;

  const std::vector<std::string>& uids() const { return uids_; }
  const std::vector<std::string>& sockets() const { return sockets_; }
  // Waits for the process to end by itself (e.g. power loss); nullopt on timeout.
  std::optional<int> wait_exit(int timeout_seconds);

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::vector<std::string> uids_;
  std::vector<std::string> sockets_;
};

// Writes the vendor root that the boards of an emulator in `dir` chain their attestation to (kiln-board-emu
// --print-vendor-root) to the file `out`, for a station profile's --vendor-root.
void write_vendor_root(const std::string& dir, const std::string& out);

}  // namespace kiln::test
