// What the service commands share: connecting with the stored credentials, and a stderr progress bar.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "cli/context.hpp"
#include "transport/service_api.hpp"

namespace kiln::commands {

// Credentials file + KILN_SERVICE / KILN_TOKEN / KILN_CA_FILE + the config's "service".
inline transport::ServiceApi connect(const cli::Context& ctx) {
  return transport::ServiceApi(transport::load_credentials(ctx.config_value("service")));
}

// A progress callback drawing "label [#####     ] 42%" on stderr when it is a terminal (else silent).
std::function<void(std::uint64_t, std::uint64_t)> progress_bar(const cli::Context& ctx, std::string label);

}  // namespace kiln::commands
