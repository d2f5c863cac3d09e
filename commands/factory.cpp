// kiln factory: station profile (init), one board (provision), every board (run), boards as they appear
// (watch). The ledger verbs are in factory_ledger.cpp.
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/factory_views.hpp"
#include "cli/provision_view.hpp"
#include "cli/output_file.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "provisioning/profile.hpp"
#include "provisioning/station_run.hpp"
#include "provisioning/station_setup.hpp"
#include "transport/board_address.hpp"

namespace kiln::commands {
namespace {

struct InitArgs {
  StationSetup setup;
  std::string out;
  bool force = false;
};

struct RunArgs {
  StationRun run;
  std::optional<std::string> board;
  bool all = false;
};

struct WatchArgs {
  StationRun run;
  std::optional<std::size_t> count;
};

void add_run_options(CLI::App* command, StationRun& run) {
  command->add_option("--profile", run.profile, "Station profile (kiln factory init)")->required();
  command->add_flag("--dry-run", run.dry_run, "Show what would happen to each board; change nothing");
  command->add_flag("--reprovision", run.reprovision,
                    "Issue a new certificate to a UID this station already certified (recorded in the ledger)");
  command->add_option("--operator", run.operator_name, "Operator recorded in the ledger (default: $USER)")->type_name("NAME");
  command->add_option("--timeout", run.timeout_ms, "Milliseconds to wait for each board answer")
      ->check(CLI::Range(10, 600000));
}

// The outcomes as a result, or the error that names every failed board.
void report(cli::ProvisionView& view, const std::vector<ProvisionOutcome>& outcomes) {
  view.render_outcomes(outcomes);
  require_all_provisioned(outcomes);
}

}  // namespace

void add_factory(CLI::App& app, cli::Context& ctx) {
  auto* factory = app.add_subcommand("factory", "Provision boards: station profile, identities, certificates, ledger");
  factory->require_subcommand(1);

  auto init_args = std::make_shared<InitArgs>();
  auto* init = factory->add_subcommand("init", "Write a station profile (TOML)");
  init->add_option("--ca-key", init_args->setup.ca_key, "Station CA key: PEM file or pkcs11: URI")->required()->type_name("KEYREF");
  init->add_option("--ca-cert", init_args->setup.ca_cert, "Station CA certificate (PEM)")->required()->check(CLI::ExistingFile);
  init->add_option("--vendor-root", init_args->setup.vendor_root, "Silicon vendor root the attestation must chain to (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  init->add_option("--boot-key", init_args->setup.boot_key, "MCUboot signing key (its hash is installed)")->required()->type_name("KEYREF");
  init->add_option("--product", init_args->setup.product, "Product name (O= of device certificates)")->required()->type_name("NAME");
  init->add_option("--service", init_args->setup.service, "Security service URL installed on each device (https://...)")->type_name("URL");
  init->add_option("--quota", init_args->setup.quota, "Certificates this station may issue")
      ->check(CLI::Range(profile_range::quota.min, profile_range::quota.max));
  init->add_option("--identity", init_args->setup.identity, "csr (key made on the board) or inject (wrapped station key)")
      ->check(CLI::IsMember({"csr", "inject"}));
  init->add_option("--station-id", init_args->setup.station_id, "Name of this station in the ledger")->type_name("NAME");
  init->add_option("--ledger", init_args->setup.ledger, "Ledger database (default: station-ledger.sqlite beside the profile)")->type_name("FILE");
  init->add_option("--station-key", init_args->setup.station_key, "Key signing ledger checkpoints and exports (default: CA key)")->type_name("KEYREF");
  init->add_option("--trust-anchor", init_args->setup.trust_anchor, "Service trust anchor to install (default: CA certificate)")->type_name("FILE");
  init->add_option("--validity-days", init_args->setup.validity_days, "Device certificate validity (days)")
      ->check(CLI::Range(profile_range::validity_days.min, profile_range::validity_days.max));
  init->add_option("--final-state", init_args->setup.final_state, "module-complete or device-complete")
      ->check(CLI::IsMember({"module-complete", "device-complete"}));
  auto* image = init->add_option("--image", init_args->setup.image, "Signed MCUboot image every board must run (firmware step)")
                    ->check(CLI::ExistingFile);
  auto* manifest = init->add_option("--manifest", init_args->setup.manifest, "SUIT envelope describing --image")
                       ->check(CLI::ExistingFile);
  auto* manifest_key = init->add_option("--manifest-key", init_args->setup.manifest_keys,
                                        "A SUIT signer's public key (PEM or DER), or its KEYREF; installed on each "
                                        "board (repeatable: M of N with --manifest-threshold)")
                           ->type_name("FILE|KEYREF");
  auto* threshold = init->add_option("--manifest-threshold", init_args->setup.manifest_threshold,
                                     "M: distinct --manifest-key signatures a manifest needs (required with "
                                     "more than one key; default 1)")
                        ->type_name("M");
  image->needs(manifest)->needs(manifest_key);
  manifest->needs(image);
  manifest_key->needs(image);
  threshold->needs(manifest_key);
  cli::add_output_file_option(init, init_args->out, "Profile to write")->required();
  cli::add_force_flag(init, init_args->force);
  init->callback([&ctx, init_args] {
    auto profile = init_station(init_args->setup, init_args->out, ctx.key_options(), init_args->force);
    ctx.render(cli::profile_json(init_args->out, profile));
  });

  auto provision_args = std::make_shared<RunArgs>();
  auto* provision = factory->add_subcommand("provision", "Provision one board (resumable: a re-run continues)");
  provision->add_option("-b,--board", provision_args->board, "usb:..., serial:..., emu:/path.sock or a UID");
  add_run_options(provision, provision_args->run);
  provision->callback([&ctx, provision_args] {
    auto board = select_board(provision_args->board, board_discovery(ctx));
    cli::ProvisionView view(ctx);
    report(view, run_station(provision_args->run, {board}, ctx.key_options(), view.sink()));
  });

  auto run_args = std::make_shared<RunArgs>();
  auto* run = factory->add_subcommand("run", "Provision every attached board concurrently");
  run->add_flag("--all", run_args->all, "Every board found (USB and KILN_EMU_DIR)")->required();
  run->add_option("-j,--jobs", run_args->run.jobs, "Boards in parallel")->check(CLI::Range(1, 256));
  add_run_options(run, run_args->run);
  run->callback([&ctx, run_args] {
    auto boards = discover_boards(board_discovery(ctx));
    cli::ProvisionView view(ctx);
    report(view, run_station(run_args->run, boards, ctx.key_options(), view.sink()));
  });

  auto watch_args = std::make_shared<WatchArgs>();
  auto* watch = factory->add_subcommand(
      "watch", "Keep provisioning boards as they appear (USB hotplug, emulator directory); stop with Ctrl-C");
  watch->add_option("-j,--jobs", watch_args->run.jobs, "Boards in parallel")->check(CLI::Range(1, 256));
  watch->add_option("--count", watch_args->count, "Stop after this many boards")->check(CLI::PositiveNumber);
  add_run_options(watch, watch_args->run);
  watch->callback([&ctx, watch_args] {
    auto where = watch_where(board_discovery(ctx), watch_args->count);
    cli::ProvisionView view(ctx);
    auto notice = [&ctx](const std::string& message) { ctx.info(message); };
    report(view, watch_station(watch_args->run, where, ctx.key_options(), view.sink(), notice));
  });

  add_factory_ledger(factory, ctx);
}

}  // namespace kiln::commands
