// kiln factory ledger: verify, export and summarise the station ledger.
#include <filesystem>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "cli/factory_views.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/profile.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

namespace fs = std::filesystem;

struct LedgerArgs {
  std::string profile;
  std::string out;
  bool allow_unverified = false, force = false;
};

}  // namespace

void add_factory_ledger(CLI::App* factory, cli::Context& ctx) {
  auto* ledger_command = factory->add_subcommand("ledger", "Verify, export and summarise the station ledger");
  ledger_command->require_subcommand(1);
  auto ledger_args = std::make_shared<LedgerArgs>();

  auto* verify = ledger_command->add_subcommand(
      "verify", "Check the hash chain, station binding, checkpoint and head signatures; name the first bad row");
  verify->add_option("--profile", ledger_args->profile, "Station profile")->required();
  verify->add_flag("--allow-unverified", ledger_args->allow_unverified,
                   "Accept a ledger with no station row and signed head (written by an older kiln)");
  verify->callback([&ctx, ledger_args] {
    auto profile = read_profile(ledger_args->profile);
    auto station_key = load_public_key(profile.station_key, ctx.key_options());
    if (!fs::exists(profile.ledger))
      throw Error(ExitCode::not_found, fmt::format("ledger {} does not exist", profile.ledger.string()),
                  "a station creates it on its first run (kiln factory run/provision)");
    Ledger ledger(profile.ledger);
    auto report = ledger.verify(station_key);
    ctx.render(cli::ledger_verify_json(profile.ledger, report));
    require_provable(report, profile.ledger, ledger_args->allow_unverified);
  });

  auto* exporter = ledger_command->add_subcommand("export", "Write the signed JSON-lines bundle for kiln device import");
  exporter->add_option("--profile", ledger_args->profile, "Station profile")->required();
  cli::add_output_file_option(exporter, ledger_args->out, "Bundle to write (units.jsonl)")->required();
  cli::add_force_flag(exporter, ledger_args->force);
  exporter->add_flag("--allow-unverified", ledger_args->allow_unverified,
                     "Export a ledger with no station row and signed head (written by an older kiln)");
  exporter->callback([&ctx, ledger_args] {
    cli::check_overwrite(ledger_args->out, ledger_args->force);
    auto profile = read_profile(ledger_args->profile);
    auto signer = open_signer(profile.station_key, ctx.key_options());
    if (!fs::exists(profile.ledger))
      throw Error(ExitCode::not_found, fmt::format("ledger {} does not exist", profile.ledger.string()));
    Ledger ledger(profile.ledger);
    require_provable(ledger.verify(signer->public_key_der()), profile.ledger, ledger_args->allow_unverified);
    auto units = ledger.export_bundle(ledger_args->out, *signer);
    ctx.render(cli::Json{{"bundle", ledger_args->out}, {"units", units}});
  });

  auto* stats = ledger_command->add_subcommand("stats", "Yield, failures per step, throughput, certificates against the quota");
  stats->add_option("--profile", ledger_args->profile, "Station profile")->required();
  stats->callback([&ctx, ledger_args] {
    auto profile = read_profile(ledger_args->profile);
    // Opening would create an empty ledger, which verify then refuses (nothing in it is signed).
    if (!fs::exists(profile.ledger))
      throw Error(ExitCode::not_found, fmt::format("ledger {} does not exist", profile.ledger.string()),
                  "a station creates it on its first run (kiln factory run/provision)");
    Ledger ledger(profile.ledger);
    ctx.render(cli::ledger_stats_json(ledger.stats(), profile.quota));
  });
}

}  // namespace kiln::commands
