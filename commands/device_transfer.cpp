// kiln device unclaim and device transfer create/accept: a device leaves its owner, or moves to another
// tenant with a signed, single-use voucher and a fresh proof that it holds its device key (docs/security.md).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_ref.hpp"
#include "transport/deployment_options.hpp"
#include "transport/device_claims.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::commands {
namespace {

struct TransferArgs {
  std::vector<std::string> ids;
  std::string from_file, to_tenant, expires = "24h", out, voucher, key;
  bool force = false;
};

std::vector<std::string> named_devices(const TransferArgs& a) {
  return transport::named_device_ids(a.ids, a.from_file);
}

void add_from_file(CLI::App* command, std::string& from_file) {
  command
      ->add_option("--from-file", from_file,
                   "UIDs, one per line ('#' comments), or JSON lines with uid/id (device list -o jsonl); - reads "
                   "standard input")
      ->type_name("FILE");
}

}  // namespace

void add_device_transfer(CLI::App* device, cli::Context& ctx) {
  auto a = std::make_shared<TransferArgs>();
  auto* unclaim = device->add_subcommand(
      "unclaim", "Return devices to unclaimed: they leave their group and unfinished deployments (history is kept)");
  unclaim->add_option("ID", a->ids, "Device UIDs");
  add_from_file(unclaim, a->from_file);
  unclaim->callback([&ctx, a] {
    auto ids = named_devices(*a);
    auto api = connect(ctx);
    // Every UID must exist and be claimed first: an unknown one (exit 9) leaves every device as it was.
    for (auto& id : ids)
      if (!transport::show_device(api, id).value("claimed", false))
        throw Error(ExitCode::conflict, "device " + id + " is not claimed", "nothing was unclaimed");
    cli::Json out = cli::Json::array();
    for (auto& id : ids) out.push_back(transport::unclaim_device(api, id));
    ctx.render(out);
  });

  auto* transfer = device->add_subcommand("transfer", "Move devices to another tenant with a signed voucher");
  transfer->require_subcommand(1);
  auto* create = transfer->add_subcommand(
      "create", "Issue a signed, single-use voucher giving the named devices to another tenant (admin)");
  create->add_option("ID", a->ids, "Device UIDs (claimed, not revoked)");
  add_from_file(create, a->from_file);
  create->add_option("--to-tenant", a->to_tenant, "The tenant that may redeem the voucher")->required();
  create->add_option("--expires", a->expires, "How long the voucher can be redeemed: 30s, 15m, 24h, 7d (at most 30d)")
      ->capture_default_str();
  cli::add_output_file_option(create, a->out, "Voucher file to write (standard output without it)");
  cli::add_force_flag(create, a->force);
  create->callback([&ctx, a] {
    auto ids = named_devices(*a);
    auto ms = transport::parse_duration_ms(a->expires, "--expires");
    if (ms < 1000 || ms > 30LL * 24 * 3600 * 1000)
      throw Error(ExitCode::usage, "--expires must be between 1s and 30d", "for example --expires 24h");
    cli::check_file_or_stdout(ctx, a->out, a->force);
    auto api = connect(ctx);
    auto voucher = transport::create_transfer(api, a->to_tenant, ids, ms / 1000);
    // Not a secret (0644): redeeming it takes the receiving tenant's token and every device's key.
    if (!cli::write_file_or_stdout(ctx, a->out, as_bytes(voucher.dump(2) + "\n"))) return;
    ctx.render(cli::Json{{"voucher", voucher["id"]},
                         {"file", a->out},
                         {"to_tenant", voucher["to_tenant"]},
                         {"devices", voucher["devices"].size()},
                         {"expires_at", voucher["expires_at"]}});
  });

  auto* accept = transfer->add_subcommand(
      "accept", "Redeem a voucher: each device proves it holds its key again, then all move to your tenant");
  accept->add_option("VOUCHER", a->voucher, "Voucher file from 'kiln device transfer create'")
      ->required()
      ->check(CLI::ExistingFile);
  accept->add_option("--key", a->key,
                     "The devices' KEYREF (emulated/development devices); {uid} in it names each device's key; "
                     "without it each device's board, found by its UID, signs");
  accept->callback([&ctx, a] {
    auto text = read_text_file(a->voucher);
    auto api = connect(ctx);
    auto result = transport::accept_transfer(api, text, [&](const std::string& id, const std::string& message) {
      if (!a->key.empty())
        return transport::sign_message(*open_signer(transport::device_keyref(a->key, id), ctx.key_options()), message);
      auto client = open_board(ctx, id, std::chrono::seconds(10));
      return sign_challenge(client, as_bytes(message));
    });
    ctx.render(result["devices"]);
  });
}

}  // namespace kiln::commands
