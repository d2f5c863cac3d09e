// kiln device: import ledger bundles, list (streamed), show, count, assign and update devices (factory CAs:
// device_ca.cpp; claim: device_claim.cpp; revoke: device_revoke.cpp; transfer: device_transfer.cpp).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "cli/progress.hpp"
#include "cli/timestamp_option.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "transport/device_claims.hpp"

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
  command->add_option("--seen-before", args.filter.seen_before, "Last seen before this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(cli::timestamp_validator());
  command->add_option("--seen-after", args.filter.seen_after, "Last seen after this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(cli::timestamp_validator());
  command->add_option("--claimed", args.claimed, "true or false")->check(CLI::IsMember({"true", "false"}));
}

transport::DeviceFilter filter_of(const DeviceArgs& args) {
  auto f = args.filter;
  if (!args.claimed.empty()) f.claimed = args.claimed == "true";
  return f;
}

}  // namespace

void add_device(CLI::App& app, cli::Context& ctx) {
  auto* device =
      app.add_subcommand("device", "Devices on the service: import, list, count, assign, update, claim, revoke");
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

  auto* assign = device->add_subcommand(
      "assign", "Move devices to a group: 1,000 per request, each request all or none (a refused one names the device)");
  assign->add_option("ID", args->ids, "Device UIDs");
  assign->add_option("--from-file", args->from_file,
                     "UIDs, one per line ('#' comments), or JSON lines with uid/id (device list -o jsonl); - reads "
                     "standard input")
      ->type_name("FILE");
  assign->add_option("--group", args->group, "Group ID or Product/Group")->required();
  assign->callback([&ctx, args] {
    auto ids = transport::named_device_ids(args->ids, args->from_file);
    auto api = connect(ctx);
    cli::ProgressBar progress(ctx, "assigned", ids.size(), "devices");
    auto out = ctx.records();  // written batch by batch; what moved before a failing batch is shown (exit 8)
    std::size_t shown = 0;
    try {
      transport::assign_devices_each(api, ids, args->group, [&](cli::Json d) { out->add(d), ++shown; }, progress.callback());
    } catch (...) {
      if (shown > 0) out->finish();  // the progress line is cleared as the error unwinds
      throw;
    }
    progress.finish();
    out->finish();
  });

  auto* update = device->add_subcommand("update", "Change a device: its own time zone for maintenance windows");
  update->add_option("ID", args->id, "Device UID")->required();
  update->add_option("--time-zone", args->time_zone,
                     "IANA time zone its deployments' maintenance windows are read in (e.g. Europe/Berlin), or none")
      ->required();
  update->callback([&ctx, args] {
    auto zone = transport::device_time_zone(args->time_zone);
    auto api = connect(ctx);
    ctx.render(transport::update_device(api, args->id, zone));
  });

  auto* import = device->add_subcommand(
      "import", "Register units from a signed ledger bundle ('kiln factory ledger export', docs/ledger-bundle.md)");
  import->add_option("FILE", args->bundle, "Bundle file")->required()->check(CLI::ExistingFile);
  import->callback([&ctx, args] {
    auto api = connect(ctx);
    cli::ProgressBar progress(ctx, "imported", 0, "units");
    auto result = transport::import_devices(api, args->bundle, progress.callback());
    progress.finish();
    ctx.render(result);
  });

  auto* ca = add_device_ca(device, ctx);

  add_device_claim(device, ctx);
  add_device_revoke(device, ca, ctx);
  add_device_transfer(device, ctx);
}

}  // namespace kiln::commands
