// kiln device revoke and device ca revoke: a device's certificate, or a factory CA's imports and station
// logins, refused from now on (docs/security.md).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "transport/device_claims.hpp"

namespace kiln::commands {
namespace {

struct RevokeArgs {
  std::vector<std::string> ids;
  std::string ref, reason, from_file;
};

}  // namespace

void add_device_revoke(CLI::App* device, CLI::App* ca, cli::Context& ctx) {
  auto a = std::make_shared<RevokeArgs>();
  auto* revoke = device->add_subcommand(
      "revoke", "Revoke devices: their certificates are refused from now on and they leave their deployments");
  revoke->add_option("ID", a->ids, "Device UIDs");
  revoke->add_option("--from-file", a->from_file,
                     "UIDs, one per line ('#' comments), or JSON lines with uid/id (device list -o jsonl); - reads "
                     "standard input")
      ->type_name("FILE");
  revoke->add_option("--reason", a->reason, "Why (kept with the device and written to the service log)");
  revoke->callback([&ctx, a] {
    auto ids = transport::named_device_ids(a->ids, a->from_file);
    auto api = connect(ctx);
    // Every UID must exist first: an unknown one (exit 9) leaves every device as it was.
    for (auto& id : ids) transport::show_device(api, id);
    cli::Json out = cli::Json::array();
    for (auto& id : ids) out.push_back(transport::revoke_device(api, id, a->reason));
    ctx.render(out);
  });

  auto* ca_revoke = ca->add_subcommand(
      "revoke", "Revoke a factory or station CA: imports and station logins under it are refused from now on");
  ca_revoke->add_option("CA", a->ref, "CA ID (device ca list), a unique ID prefix, or its subject's common name")
      ->required();
  ca_revoke->add_option("--reason", a->reason, "Why (shown by device ca list)");
  ca_revoke->callback([&ctx, a] {
    auto api = connect(ctx);
    ctx.render(transport::revoke_factory_ca(api, a->ref, a->reason));
  });
}

}  // namespace kiln::commands
