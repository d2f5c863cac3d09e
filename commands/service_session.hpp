// What the service commands share: connecting with the stored credentials, and byte progress on stderr.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cli/context.hpp"
#include "cli/progress.hpp"
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

// A (done, total) callback driving a cli::ProgressBar created on the first call, when total is known.
inline std::function<void(std::uint64_t, std::uint64_t)> progress_bar(const cli::Context& ctx, std::string label) {
  auto bar = std::make_shared<std::unique_ptr<cli::ProgressBar>>();
  return [&ctx, bar, label = std::move(label)](std::uint64_t done, std::uint64_t total) {
    if (!*bar) *bar = std::make_unique<cli::ProgressBar>(ctx, label, total);
    (*bar)->update(done);
    if (done >= total) (*bar)->finish();
  };
}

}  // namespace kiln::commands
