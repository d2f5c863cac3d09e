// kiln device: import ledger bundles, list (streamed), show, count, assign and claim devices.
#include <algorithm>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/context.hpp"
#include "core/time.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "transport/provisioning_group.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/maintenance_window.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct DeviceArgs {
  transport::DeviceFilter filter;
  std::string claimed;  // "", "true", "false"
  std::string id;
  std::vector<std::string> ids;
  std::string group;
  std::string by = "version";
  std::string bundle;
  std::string key;
  std::string board;
  std::string nonce;
  std::string signature_file;
  std::string from_file;
  std::string time_zone;
  int page_size = 5000;
  transport::DevicePage page;
};

void add_filter_options(CLI::App* command, DeviceArgs& args) {
  command->add_option("--group", args.filter.group, "Group ID or Product/Group");
  command->add_option("--product", args.filter.product, "Product ID or name");
  command->add_option("--state", args.filter.state, "Manufacturing state");
  command->add_option("--version", args.filter.version, "Firmware version");
  // Checked here as well as by the service: "--seen-after yesterday" is a usage error (exit 2), not zero rows.
  CLI::Validator iso8601_time(
      [](std::string& value) -> std::string {
        return normalize_timestamp(value) ? std::string()
                                          : "'" + value + "' is not an ISO 8601 time such as 2026-01-31T12:00:00Z or 2026-01-31";
      },
      "TIME", "ISO 8601 time");
  command->add_option("--seen-before", args.filter.seen_before, "Last seen before this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(iso8601_time);
  command->add_option("--seen-after", args.filter.seen_after, "Last seen after this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(iso8601_time);
  command->add_option("--claimed", args.claimed, "true or false")->check(CLI::IsMember({"true", "false"}));
}

transport::DeviceFilter filter_of(const DeviceArgs& args) {
  auto f = args.filter;
  if (!args.claimed.empty()) f.claimed = args.claimed == "true";
  return f;
}

}  // namespace

void add_device(CLI::App& app, cli::Context& ctx) {
  auto* device = app.add_subcommand("device", "Devices on the service: import, list, count, assign, update, claim");
  device->require_subcommand(1);
  auto args = std::make_shared<DeviceArgs>();

  auto* list = device->add_subcommand("list", "List devices, every page streamed (constant memory)");
  add_filter_options(list, *args);
  list->add_option("--page-size", args->page_size, "Devices per request")->check(CLI::Range(1, 10000));
  list->add_option("--limit", args->page.limit, "At most N devices; the cursor to continue from goes to stderr")
      ->check(CLI::PositiveNumber);
  list->add_option("--cursor", args->page.cursor, "Continue after this cursor (from an earlier --limit)");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    auto out = ctx.records();
    auto next = transport::list_devices(api, filter_of(*args), [&](const cli::Json& d) { out->add(d); },
                                        args->page_size, args->page);
    out->finish();
    if (next) ctx.info(fmt::format("more devices match: continue with --cursor {}", *next));
  });

  auto* show = device->add_subcommand("show", "Show one device");
  show->add_option("ID", args->id, "Device UID")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_device(api, args->id));
  });

  auto* count = device->add_subcommand("count", "Count devices grouped by a field");
  count->add_option("--by", args->by, "version, group, state or product")
      ->check(CLI::IsMember({"version", "group", "state", "product"}));
  add_filter_options(count, *args);
  count->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::count_devices(api, args->by, filter_of(*args))["counts"]);
  });

  auto* assign = device->add_subcommand("assign", "Move devices to a group");
  assign->add_option("ID", args->ids, "Device UIDs")->required();
  assign->add_option("--group", args->group, "Group ID or Product/Group")->required();
  assign->callback([&ctx, args] {
    auto api = connect(ctx);
    cli::Json out = cli::Json::array();
    for (auto& id : args->ids) out.push_back(transport::assign_device(api, id, args->group));
    ctx.render(out);
  });

  auto* update = device->add_subcommand("update", "Change a device: its own time zone for maintenance windows");
  update->add_option("ID", args->id, "Device UID")->required();
  update->add_option("--time-zone", args->time_zone,
                     "IANA time zone its deployments' maintenance windows are read in (e.g. Europe/Berlin), or none")
      ->required();
  update->callback([&ctx, args] {
    std::optional<std::string> zone;
    if (args->time_zone != "none") {
      if (!known_time_zone(args->time_zone))
        throw Error(ExitCode::usage, fmt::format("--time-zone wants an IANA time zone such as Europe/Berlin or UTC (or "
                                                 "none), not '{}'",
                                                 args->time_zone));
      zone = args->time_zone;
    }
    auto api = connect(ctx);
    ctx.render(transport::update_device(api, args->id, zone));
  });

  auto* import = device->add_subcommand(
      "import", "Register units from a signed ledger bundle ('kiln factory ledger export', docs/ledger-bundle.md)");
  import->add_option("FILE", args->bundle, "Bundle file")->required()->check(CLI::ExistingFile);
  import->callback([&ctx, args] {
    auto api = connect(ctx);
    std::function<void(std::uint64_t)> progress;
    if (ctx.stderr_is_terminal() && !ctx.global.quiet)
      progress = [](std::uint64_t units) { std::cerr << fmt::format("\rimported {} units", units) << std::flush; };
    auto result = transport::import_devices(api, args->bundle, progress);
    if (progress) std::cerr << "\n";
    ctx.render(result);
  });

  auto* ca = device->add_subcommand("ca", "Factory CAs that device certificates must chain to (agent mutual TLS)");
  ca->require_subcommand(1);
  auto* ca_add = ca->add_subcommand(
      "add",
      "Register a factory or station CA certificate (PEM), proven by signing the service's challenge with its key");
  ca_add->add_option("FILE", args->bundle, "CA certificate, PEM")->required()->check(CLI::ExistingFile);
  ca_add
      ->add_option("--key", args->key,
                   "The CA's private key (KEYREF: PEM file or pkcs11: URI); it signs a one-time challenge, proving "
                   "the CA is yours (a CA belongs to one tenant)")
      ->required();
  auto stations = std::make_shared<bool>(false);
  ca_add->add_flag("--stations", *stations,
                   "Certificates chained to this CA may also authenticate as factory stations (mutual TLS); "
                   "without it the CA is trusted for ledger bundles and device certificates only");
  ca_add->callback([&ctx, args, stations] {
    auto signer = open_signer(args->key, ctx.key_options());
    auto api = connect(ctx);
    ctx.render(transport::register_factory_ca(api, args->bundle, *signer, *stations));
  });
  auto* ca_list = ca->add_subcommand("list", "List registered factory CAs");
  ca_list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_factory_cas(api));
  });

  auto* challenge = device->add_subcommand("claim-challenge", "Ask the service for a claim challenge (two-step claim)");
  challenge->add_option("--id", args->id, "Device UID")->required();
  challenge->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::claim_challenge(api, args->id));
  });

  auto* claim = device->add_subcommand("claim", "Bind devices to your tenant: each proves it holds its device key");
  claim->add_option("--id", args->ids, "Device UID (repeat for several)");
  claim->add_option("--from-file", args->from_file,
                    "UIDs, one per line ('#' comments), or JSON lines with uid/id (ledger export, device list -o jsonl)")
      ->type_name("FILE")
      ->check(CLI::ExistingFile);
  auto* key = claim->add_option("--key", args->key,
                                "The device's KEYREF (emulated/development devices); {uid} in it names each device's key");
  auto* board = claim->add_option("--board,-b", args->board,
                                  "Ask this board to sign the challenge (one device); without --board and --key each "
                                  "device's board is found by its UID");
  auto* nonce = claim->add_option("--nonce", args->nonce, "Nonce from 'kiln device claim-challenge' (one device)");
  claim->add_option("--signature-file", args->signature_file, "The device's signature over the challenge message (DER)")
      ->needs(nonce)
      ->check(CLI::ExistingFile);
  nonce->needs("--signature-file");
  key->excludes(nonce);
  board->excludes(key)->excludes(nonce);
  claim->callback([&ctx, args] {
    auto ids = args->ids;
    if (!args->from_file.empty())
      for (auto& id : transport::read_device_ids(args->from_file))
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    if (ids.empty())
      throw Error(ExitCode::usage, "which devices?", "name them with --id UID (repeatable) or --from-file FILE");
    bool several = ids.size() > 1 || !args->from_file.empty();
    if (several && (!args->board.empty() || !args->nonce.empty()))
      throw Error(ExitCode::usage, "--board and --nonce claim one device",
                  "for several devices, each board is found by its UID (omit --board), or use --key with {uid}");
    auto api = connect(ctx);
    // The device key never leaves the board's secure element: the board signs over the link.
    auto board_signs = [&](const std::string& address, const std::string& message) {
      auto client = open_board(ctx, address, std::chrono::seconds(10));
      return sign_challenge(client, as_bytes(message));
    };
    auto key_signs = [&](const std::string& id, const std::string& message) {
      std::string keyref = args->key;
      for (auto at = keyref.find("{uid}"); at != std::string::npos; at = keyref.find("{uid}", at + id.size()))
        keyref.replace(at, 5, id);
      return transport::sign_message(*open_signer(keyref, ctx.key_options()), message);
    };
    if (!several) {
      const auto& id = ids.front();
      if (!args->nonce.empty()) {
        ctx.render(transport::claim_with_signature(api, id, args->nonce, read_file(args->signature_file)));
      } else if (!args->key.empty()) {
        ctx.render(transport::claim_device(api, id, [&](const std::string& m) { return key_signs(id, m); }));
      } else {
        auto address = args->board.empty() ? id : args->board;
        ctx.render(transport::claim_device(api, id, [&](const std::string& m) { return board_signs(address, m); }));
      }
      return;
    }
    auto rows = transport::claim_devices(api, ids, [&](const std::string& id, const std::string& message) {
      return args->key.empty() ? board_signs(id, message) : key_signs(id, message);
    });
    cli::Json table = cli::Json::array();
    std::vector<std::string> failed;
    for (const auto& row : rows) {
      table.push_back({{"uid", row["uid"]}, {"result", row["result"]}, {"error", row["error"]}});
      if (row["result"] == "failed")
        failed.push_back(fmt::format("{} ({})", row["uid"].get<std::string>(), row["error"].get<std::string>()));
    }
    ctx.render(table);
    if (!failed.empty())
      throw Error(ExitCode::partial,
                  fmt::format("{} of {} devices were not claimed: {}", failed.size(), rows.size(), fmt::join(failed, "; ")),
                  "fix those and run the same command again: claiming a claimed device again succeeds");
  });
}

}  // namespace kiln::commands
