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
