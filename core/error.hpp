// Error type every kiln library throws: a user-facing message plus an exit-code category.
#pragma once

#include <stdexcept>
#include <string>

namespace kiln {

// Process exit codes. Stable: scripts depend on them. Documented in docs/exit-codes.md.
enum class ExitCode : int {
  ok = 0,
  failure = 1,            // anything not covered below (I/O, bad input files, internal)
  usage = 2,              // bad command line: unknown option, missing argument, conflicting flags
  verification_failed = 3,// a signature, digest, chain or policy check said no
  board = 4,              // board or link: not found, unplugged, timeout, protocol error
  service = 5,            // the security service: unreachable, TLS failure, 5xx, bad answer
  authentication = 6,     // missing/expired token, wrong PIN, wrong passphrase, forbidden
  conflict = 7,           // already exists, refuses to overwrite, irreversible state, quota
  partial = 8,            // batch work where some items failed and others succeeded
  not_found = 9,          // a named object (file, device, image, key object) does not exist
  interrupted = 130,      // SIGINT / SIGTERM: stopped cleanly, nothing half-written
};

const char* exit_code_name(ExitCode code);
// One sentence for help and man pages (docs/exit-codes.md has the long form).
const char* exit_code_description(ExitCode code);

// What went wrong (message) and, separately, what to do about it (hint). Libraries throw this;
// the CLI prints "kiln: error: <message>" and "  hint: <hint>" and exits with code().
class Error : public std::runtime_error {
 public:
  Error(ExitCode code, std::string message, std::string hint = {})
      : std::runtime_error(message), code_(code), hint_(std::move(hint)) {}
  ExitCode code() const { return code_; }
  const std::string& hint() const { return hint_; }
  // Low-level detail (e.g. the OpenSSL error queue); shown only with --debug.
  const std::string& detail() const { return detail_; }
  Error& with_detail(std::string detail) {
    detail_ = std::move(detail);
    return *this;
  }

 private:
  ExitCode code_;
  std::string hint_;
  std::string detail_;
};

// Drains the OpenSSL error queue into one string (for Error::detail), leaving the queue empty.
std::string openssl_errors();

}  // namespace kiln
