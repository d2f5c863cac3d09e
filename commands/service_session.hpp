// What the service commands share: connecting with the stored credentials.
#pragma once

#include "cli/context.hpp"
#include "transport/service_api.hpp"

namespace kiln::commands {

// Credentials file + KILN_SERVICE / KILN_TOKEN / KILN_CA_FILE + the config's "service", and the global
// --client-cert/--client-key (KILN_CLIENT_CERT/KILN_CLIENT_KEY) and --stall-timeout.
inline transport::Credentials credentials(const cli::Context& ctx) {
  auto c = transport::load_credentials(ctx.config_value("service"), {ctx.global.client_cert, ctx.global.client_key});
  c.stall_seconds = ctx.global.stall_timeout;
  return c;
}

inline transport::ServiceApi connect(const cli::Context& ctx) { return transport::ServiceApi(credentials(ctx)); }

}  // namespace kiln::commands
