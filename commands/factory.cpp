// kiln factory: station profile (init), one board (provision), every board (run), the ledger.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "provisioning/board_watch.hpp"
#include "provisioning/firmware.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/profile.hpp"
#include "provisioning/station_ca.hpp"
#include "provisioning/workflow.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "signing/key_ref.hpp"
#include "transport/board_address.hpp"

namespace kiln::commands {
namespace {

namespace fs = std::filesystem;

struct InitArgs {
  std::string ca_key, ca_cert, vendor_root, boot_key, product, service, identity = "csr", station_id, ledger,
      station_key, trust_anchor, final_state, out, image, manifest, manifest_key;
  std::optional<std::int64_t> quota;
  int validity_days = 3650;
  bool force = false;
};

struct RunArgs {
  std::optional<std::string> board;
  std::string profile;
  std::string operator_name;
  bool all = false;
  bool dry_run = false;
  bool reprovision = false;
  int jobs = 4;
  int timeout_ms = 5000;
};

struct WatchArgs {
  RunArgs run;
  std::optional<std::size_t> count;
};

struct LedgerArgs {
  std::string profile;
  std::string out;
  bool allow_unverified = false, force = false;
};

// A ledger whose end no signature proves (bound to no station: written before signed heads) is
// refused unless the operator accepts it explicitly.
void check_provable(const LedgerVerifyReport& report, const fs::path& ledger, bool allow_unverified) {
  if (!report.ok)
    throw Error(ExitCode::verification_failed, fmt::format("ledger {}: {}", ledger.string(), report.problem),
                "a ledger that fails verification is not exported; keep the file for investigation");
  // An empty ledger proves nothing either: a station never wrote to it, or every row (station row and
  // head included) was deleted. Both look the same from the file alone.
  if (report.ledger_id.empty() && report.rows == 0 && !allow_unverified)
    throw Error(ExitCode::verification_failed,
                fmt::format("ledger {} has no rows, no station row and no signed head: nothing proves what it held "
                            "(a station never wrote to it, or every row was deleted)",
                            ledger.string()),
                "compare with the bundles this station exported before (the service refuses a ledger that goes "
                "back); pass --allow-unverified to accept an empty ledger");
  if (report.ledger_id.empty() && report.rows > 0 && !allow_unverified)
    throw Error(ExitCode::verification_failed,
                fmt::format("ledger {} has no station row and no signed head: {} of its {} rows are covered by no "
                            "signature, and rows cut from its end could not be detected",
                            ledger.string(), report.unverified_rows, report.rows),
                "run the station once with this ledger (kiln factory run/provision binds it and signs its head), or "
                "pass --allow-unverified to accept it as it is");
}


std::string absolute_keyref(const std::string& keyref) {
  return is_pkcs11_uri(keyref) ? keyref : fs::absolute(keyref).string();
}

// The firmware step's files, checked against each other and pinned by digest (exit 3 naming a mismatch).
std::optional<FirmwareProfile> firmware_from(const InitArgs& a, const cli::Context& ctx) {
  if (a.image.empty()) return std::nullopt;
  auto firmware = check_firmware(a.image, a.manifest, load_public_key(a.manifest_key, ctx.key_options()),
                                 load_public_key(a.boot_key, ctx.key_options()));
  return FirmwareProfile{fs::absolute(a.image), fs::absolute(a.manifest), to_hex(firmware.manifest_key),
                         to_hex(firmware.image_sha256), to_hex(firmware.manifest_digest)};
}

StationProfile profile_from(const InitArgs& a, const cli::Context& ctx) {
  StationProfile p;
  p.product = a.product;
  p.station_id = a.station_id.empty() ? "station" : a.station_id;
  fs::path out_dir = fs::absolute(a.out).parent_path();
  p.ledger = a.ledger.empty() ? out_dir / "station-ledger.sqlite" : fs::absolute(a.ledger);
  p.quota = a.quota;
  p.ca_key = absolute_keyref(a.ca_key);
  p.station_key = a.station_key.empty() ? p.ca_key : absolute_keyref(a.station_key);
  p.ca_certificate = fs::absolute(a.ca_cert);
  p.validity_days = a.validity_days;
  p.vendor_root = fs::absolute(a.vendor_root);
  p.identity = a.identity == "inject" ? IdentityMode::inject : IdentityMode::csr;
  p.boot_key_hash = describe_public_key(load_public_key(a.boot_key, ctx.key_options())).mcuboot_key_hash;
  if (!a.service.empty()) p.service_url = a.service;
  p.trust_anchor = a.trust_anchor.empty() ? p.ca_certificate : fs::absolute(a.trust_anchor);
  p.final_state = a.final_state.empty()
                      ? (p.service_url ? ManufacturingState::device_complete : ManufacturingState::module_complete)
                      : parse_manufacturing_state(a.final_state);
  p.firmware = firmware_from(a, ctx);
  return p;
}

cli::Json outcome_json(const ProvisionOutcome& o) {
  cli::Json out{{"board", o.board}, {"uid", o.uid}, {"result", o.result}};
  if (!o.certificate_serial.empty()) out["serial"] = o.certificate_serial;
  if (!o.planned_steps.empty()) out["would_run"] = fmt::format("{}", fmt::join(o.planned_steps, ","));
  if (!o.failed_step.empty()) out["failed_step"] = o.failed_step;
  if (!o.error.empty()) out["error"] = o.error;
  out["duration_ms"] = o.duration_ms;
  return out;
}

cli::Json event_json(const ProvisionEvent& e) {
  cli::Json out{{"board", e.board}, {"uid", e.uid}, {"step", e.step}, {"result", e.result}, {"duration_ms", e.duration_ms}};
  if (!e.error.empty()) out["error"] = e.error;
  return out;
}

// Where step events go: JSON lines on stdout with -o jsonl, a live table on a terminal, or nowhere.
class EventView {
 public:
  explicit EventView(const cli::Context& ctx) : ctx_(ctx) {
    if (ctx.format() == cli::OutputFormat::jsonl) records_ = ctx.records();
    live_ = !records_ && ctx.stderr_is_terminal() && !ctx.global.quiet;
  }
  EventSink sink() {
    return [this](const ProvisionEvent& e) { on_event(e); };
  }
  void add_record(const cli::Json& record) {
    std::lock_guard lock(mutex_);
    if (records_) records_->add(record);
  }
  bool streaming() const { return records_ != nullptr; }
  void finish() {
    if (records_) records_->finish();
  }

 private:
  void on_event(const ProvisionEvent& e) {
    std::lock_guard lock(mutex_);
    if (records_) {
      records_->add(event_json(e));
      return;
    }
    if (!live_) {
      if (e.result == "failed") ctx_.detail(fmt::format("{} {}: {}", e.board, e.step, e.error));  // detail() escapes
      return;
    }
    auto& row = rows_[e.board];
    // UIDs and errors come from boards: escaped, or one board could redraw the operator's screen.
    row = fmt::format("{:<12} {:<15} {:<10} {}", cli::terminal_safe(e.uid.empty() ? "?" : e.uid),
                      cli::terminal_safe(e.step), cli::terminal_safe(e.result), cli::terminal_safe(e.error.substr(0, 60)));
    // Redraw the whole table in place: up N lines, then one line per board.
    if (drawn_ > 0) std::cerr << fmt::format("\x1b[{}A", drawn_);
    for (const auto& [board, text] : rows_) std::cerr << "\r\x1b[2K" << text << '\n';
    drawn_ = rows_.size();
    std::cerr.flush();
  }

  const cli::Context& ctx_;
  std::unique_ptr<cli::RecordWriter> records_;
  bool live_ = false;
  std::mutex mutex_;
  std::map<std::string, std::string> rows_;
  std::size_t drawn_ = 0;
};

std::string operator_name(const RunArgs& args) {
  if (!args.operator_name.empty()) return args.operator_name;
  const char* user = std::getenv("USER");
  return user && *user ? user : "unknown";
}

void add_run_options(CLI::App* command, RunArgs& args) {
  command->add_option("--profile", args.profile, "Station profile (kiln factory init)")->required();
  command->add_flag("--dry-run", args.dry_run, "Show what would happen to each board; change nothing");
  command->add_flag("--reprovision", args.reprovision,
                    "Issue a new certificate to a UID this station already certified (recorded in the ledger)");
  command->add_option("--operator", args.operator_name, "Operator recorded in the ledger (default: $USER)")->type_name("NAME");
  command->add_option("--timeout", args.timeout_ms, "Milliseconds to wait for each board answer")
      ->check(CLI::Range(10, 600000));
}

// The outcomes as a result, or the error that names every failed board.
void report(cli::Context& ctx, EventView& view, const std::vector<ProvisionOutcome>& outcomes) {
  cli::Json rows = cli::Json::array();
  std::vector<const ProvisionOutcome*> failed;
  for (const auto& o : outcomes) {
    rows.push_back(outcome_json(o));
    if (o.result == "failed") failed.push_back(&o);
  }
  if (view.streaming()) {
    for (const auto& row : rows) {
      auto summary = row;
      summary["step"] = "done";
      view.add_record(summary);
    }
    view.finish();
  } else {
    ctx.render(rows);
  }
  if (failed.empty()) return;
  if (outcomes.size() == 1)
    throw Error(failed.front()->code, fmt::format("board {}: {} failed: {}", failed.front()->uid.empty() ? failed.front()->board : failed.front()->uid,
                                                  failed.front()->failed_step, failed.front()->error),
                "run the same command again: completed steps are skipped");
  std::vector<std::string> names;
  for (const auto* o : failed) names.push_back(fmt::format("{} ({})", o->uid.empty() ? o->board : o->uid, o->failed_step));
  throw Error(ExitCode::partial,
              fmt::format("{} of {} boards failed: {}", failed.size(), outcomes.size(), fmt::join(names, ", ")),
              "run again to resume them; completed steps are skipped");
}

std::vector<ProvisionOutcome> run_boards(cli::Context& ctx, EventView& view, const RunArgs& args,
                                         const std::vector<BoardAddress>& boards) {
  auto station = open_station(args.profile, ctx.key_options(), operator_name(args));
  ProvisionOptions options;
  options.dry_run = args.dry_run;
  options.reprovision = args.reprovision;
  options.board_timeout = std::chrono::milliseconds(args.timeout_ms);
  auto outcomes = provision_boards(*station, boards, args.jobs, options, view.sink());
  if (!args.dry_run) station->ledger->checkpoint();  // seal this run
  return outcomes;
}

}  // namespace

void add_factory(CLI::App& app, cli::Context& ctx) {
  auto* factory = app.add_subcommand("factory", "Provision boards: station profile, identities, certificates, ledger");
  factory->require_subcommand(1);

  auto init_args = std::make_shared<InitArgs>();
  auto* init = factory->add_subcommand("init", "Write a station profile (TOML)");
  init->add_option("--ca-key", init_args->ca_key, "Station CA key: PEM file or pkcs11: URI")->required()->type_name("KEYREF");
  init->add_option("--ca-cert", init_args->ca_cert, "Station CA certificate (PEM)")->required()->check(CLI::ExistingFile);
  init->add_option("--vendor-root", init_args->vendor_root, "Silicon vendor root the attestation must chain to (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  init->add_option("--boot-key", init_args->boot_key, "MCUboot signing key (its hash is installed)")->required()->type_name("KEYREF");
  init->add_option("--product", init_args->product, "Product name (O= of device certificates)")->required()->type_name("NAME");
  init->add_option("--service", init_args->service, "Security service URL installed on each device (https://...)")->type_name("URL");
  init->add_option("--quota", init_args->quota, "Certificates this station may issue")
      ->check(CLI::Range(profile_range::quota.min, profile_range::quota.max));
  init->add_option("--identity", init_args->identity, "csr (key made on the board) or inject (wrapped station key)")
      ->check(CLI::IsMember({"csr", "inject"}));
  init->add_option("--station-id", init_args->station_id, "Name of this station in the ledger")->type_name("NAME");
  init->add_option("--ledger", init_args->ledger, "Ledger database (default: station-ledger.sqlite beside the profile)")->type_name("FILE");
  init->add_option("--station-key", init_args->station_key, "Key signing ledger checkpoints and exports (default: CA key)")->type_name("KEYREF");
  init->add_option("--trust-anchor", init_args->trust_anchor, "Service trust anchor to install (default: CA certificate)")->type_name("FILE");
  init->add_option("--validity-days", init_args->validity_days, "Device certificate validity (days)")
      ->check(CLI::Range(profile_range::validity_days.min, profile_range::validity_days.max));
  init->add_option("--final-state", init_args->final_state, "module-complete or device-complete")
      ->check(CLI::IsMember({"module-complete", "device-complete"}));
  auto* image = init->add_option("--image", init_args->image, "Signed MCUboot image every board must run (firmware step)")
                    ->check(CLI::ExistingFile);
  auto* manifest = init->add_option("--manifest", init_args->manifest, "SUIT envelope describing --image")
                       ->check(CLI::ExistingFile);
  auto* manifest_key = init->add_option("--manifest-key", init_args->manifest_key,
                                        "The SUIT signer's public key (PEM or DER), or its KEYREF; installed on each board")
                           ->type_name("FILE|KEYREF");
  image->needs(manifest)->needs(manifest_key);
  manifest->needs(image);
  manifest_key->needs(image);
  cli::add_output_file_option(init, init_args->out, "Profile to write")->required();
  cli::add_force_flag(init, init_args->force);
  init->callback([&ctx, init_args] {
    auto profile = profile_from(*init_args, ctx);
    // Check now what the station will need: the CA key signs for the CA certificate.
    auto ca = open_signer(profile.ca_key, ctx.key_options());
    if (ca->public_key_der() != load_public_key_file(profile.ca_certificate, std::nullopt))
      throw Error(ExitCode::usage, fmt::format("CA key {} does not belong to {}", init_args->ca_key, init_args->ca_cert));
    read_certificate_file(profile.vendor_root.string());
    // A ledger already bound to another station key stays with that station (exit 7).
    if (fs::exists(profile.ledger)) {
      auto station_key = open_signer(profile.station_key, ctx.key_options())->public_key_der();
      Ledger existing(profile.ledger);
      if (auto owner = existing.station_public_key(); owner && *owner != station_key)
        throw Error(ExitCode::conflict,
                    fmt::format("ledger {} belongs to another station key (sha256 {}…): this profile's station key "
                                "could not append to it",
                                profile.ledger.string(), to_hex(digest(HashAlg::sha256, *owner)).substr(0, 16)),
                    "choose another ledger for this station: --ledger PATH (station.ledger in the profile)");
    }
    auto text = profile_to_toml(profile);
    parse_profile(text, fs::absolute(init_args->out).parent_path());  // what we write, we can read
    write_profile(init_args->out, profile, init_args->force);
    ctx.render(cli::Json{{"profile", init_args->out},
                         {"product", profile.product},
                         {"identity", std::string(identity_mode_name(profile.identity))},
                         {"final_state", std::string(manufacturing_state_name(profile.final_state))},
                         {"quota", profile.quota ? cli::Json(*profile.quota) : cli::Json(nullptr)},
                         {"ledger", profile.ledger.string()},
                         {"firmware", profile.firmware ? cli::Json(profile.firmware->image.string()) : cli::Json(nullptr)},
                         {"profile_hash", profile_hash(init_args->out)}});
  });

  auto provision_args = std::make_shared<RunArgs>();
  auto* provision = factory->add_subcommand("provision", "Provision one board (resumable: a re-run continues)");
  provision->add_option("-b,--board", provision_args->board, "usb:..., serial:..., emu:/path.sock or a UID");
  add_run_options(provision, *provision_args);
  provision->callback([&ctx, provision_args] {
    auto board = select_board(provision_args->board, board_discovery(ctx));
    EventView view(ctx);
    report(ctx, view, run_boards(ctx, view, *provision_args, {board}));
  });

  auto run_args = std::make_shared<RunArgs>();
  auto* run = factory->add_subcommand("run", "Provision every attached board concurrently");
  run->add_flag("--all", run_args->all, "Every board found (USB and KILN_EMU_DIR)")->required();
  run->add_option("-j,--jobs", run_args->jobs, "Boards in parallel")->check(CLI::Range(1, 256));
  add_run_options(run, *run_args);
  run->callback([&ctx, run_args] {
    auto boards = discover_boards(board_discovery(ctx));
    if (boards.empty())
      throw Error(ExitCode::board, "no boards attached", "plug boards in, or set KILN_EMU_DIR for emulated boards");
    EventView view(ctx);
    report(ctx, view, run_boards(ctx, view, *run_args, boards));
  });

  auto watch_args = std::make_shared<WatchArgs>();
  auto* watch = factory->add_subcommand(
      "watch", "Keep provisioning boards as they appear (USB hotplug, emulator directory); stop with Ctrl-C");
  watch->add_option("-j,--jobs", watch_args->run.jobs, "Boards in parallel")->check(CLI::Range(1, 256));
  watch->add_option("--count", watch_args->count, "Stop after this many boards")->check(CLI::PositiveNumber);
  add_run_options(watch, watch_args->run);
  watch->callback([&ctx, watch_args] {
    auto discovery = board_discovery(ctx);
    const auto& args = watch_args->run;
    auto station = open_station(args.profile, ctx.key_options(), operator_name(args));
    WatchOptions options;
    options.jobs = args.jobs;
    options.max_boards = watch_args->count;
    options.provision.dry_run = args.dry_run;
    options.provision.reprovision = args.reprovision;
    options.provision.board_timeout = std::chrono::milliseconds(args.timeout_ms);
    options.emu_dir = discovery.emu_dir;
    options.usb_ids = discovery.usb_ids;
    EventView view(ctx);
    auto notice = [&](const std::string& message) { ctx.info(message); };
    ctx.info("Ctrl-C stops the watch (boards in flight are finished)");
    auto outcomes = watch_boards(*station, options, view.sink(), {}, notice);
    if (!args.dry_run) station->ledger->checkpoint();
    report(ctx, view, outcomes);
  });

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
    cli::Json out{{"ledger", profile.ledger.string()},
                  {"ok", report.ok},
                  {"rows", report.rows},
                  {"units", report.units},
                  {"checkpoints", report.checkpoints},
                  {"unsealed_rows", report.unsealed_rows},
                  {"unverified_rows", report.unverified_rows},
                  {"head_verified", report.head_verified},
                  {"reprovisions", report.reprovisions}};
    if (!report.ledger_id.empty()) out["ledger_id"] = report.ledger_id;
    if (report.bad_row) out["bad_row"] = *report.bad_row;
    if (!report.ok) out["problem"] = report.problem;
    ctx.render(out);
    check_provable(report, profile.ledger, ledger_args->allow_unverified);
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
    check_provable(ledger.verify(signer->public_key_der()), profile.ledger, ledger_args->allow_unverified);
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
    auto s = ledger.stats();
    cli::Json failures = cli::Json::object();
    for (const auto& [step, count] : s.failures_per_step) failures[step] = count;
    ctx.render(cli::Json{{"attempts", s.attempts},
                         {"failed_attempts", s.failed_attempts},
                         {"units_attempted", s.units_attempted},
                         {"units_provisioned", s.units_provisioned},
                         {"yield", s.yield},
                         {"units_per_hour", s.units_per_hour},
                         {"certificates_issued", s.certificates_issued},
                         {"certificates_reserved", s.certificates_reserved},
                         {"quota", profile.quota ? cli::Json(*profile.quota) : cli::Json(nullptr)},
                         {"failures_per_step", failures}});
  });
}

}  // namespace kiln::commands
