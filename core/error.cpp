// Exit-code names and OpenSSL error-queue capture.
#include "core/error.hpp"

#include <openssl/err.h>

namespace kiln {

const char* exit_code_name(ExitCode code) {
  switch (code) {
    case ExitCode::ok: return "ok";
    case ExitCode::failure: return "failure";
    case ExitCode::usage: return "usage";
    case ExitCode::verification_failed: return "verification-failed";
    case ExitCode::board: return "board";
    case ExitCode::service: return "service";
    case ExitCode::authentication: return "authentication";
    case ExitCode::conflict: return "conflict";
    case ExitCode::partial: return "partial";
    case ExitCode::not_found: return "not-found";
    case ExitCode::interrupted: return "interrupted";
  }
  return "unknown";
}

const char* exit_code_description(ExitCode code) {
  switch (code) {
    case ExitCode::ok: return "the command did what was asked";
    case ExitCode::failure: return "a failure not covered below (unreadable or malformed input, I/O, internal error)";
    case ExitCode::usage: return "the command line is wrong (unknown option, missing or bad argument)";
    case ExitCode::verification_failed: return "a signature, digest, chain, sequence or policy check failed";
    case ExitCode::board: return "a board or its link failed (not found, unplugged, timeout, refused)";
    case ExitCode::service: return "the security service failed (unreachable, TLS, 5xx, unreadable answer)";
    case ExitCode::authentication: return "credentials missing or wrong (token, PIN, passphrase, forbidden)";
    case ExitCode::conflict: return "conflicts with existing state (exists, irreversible state, quota)";
    case ExitCode::partial: return "batch work where some items failed; they are named";
    case ExitCode::not_found: return "a named file, device, image, token or key object does not exist";
    case ExitCode::interrupted: return "stopped by SIGINT/SIGTERM; nothing half-written is left";
  }
  return "";
}

std::string openssl_errors() {
  std::string out;
  unsigned long err;
  char buf[256];
  while ((err = ERR_get_error()) != 0) {
    ERR_error_string_n(err, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

}  // namespace kiln
