// kiln deployment: roll images (or a trust update) out to a device group in waves; show, watch, pause, resume,
// abort, delete.
#include <CLI/CLI.hpp>

#include <fmt/format.h>

#include "cli/context.hpp"
#include "cli/deployment_views.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "transport/deployment_options.hpp"

namespace kiln::commands {
namespace {

using Json = cli::Json;

struct DeploymentArgs : transport::DeploymentOptions {
  std::string interval = "2s";
  std::string status;
  std::string id;
};

}  // namespace

void add_deployment(CLI::App& app, cli::Context& ctx) {
  auto* deployment =
      app.add_subcommand("deployment", "Deployments of images or trust updates to device groups, in waves");
  deployment->require_subcommand(1);
  auto args = std::make_shared<DeploymentArgs>();

  auto* create = deployment->add_subcommand("create", "Deploy images or a trust update to a group, in waves");
  create->add_option("--group", args->group, "Group ID or Product/Group")->required();
  create->add_option("--image", args->images, "Image ID (SHA-256); repeat for several");
  create->add_option("--trust-update", args->trust_update,
                     "Signed trust update (kiln trust create/sign) to deliver instead of images: it rotates the "
                     "group's manifest and boot keys; boards behind get every missing version, in order")
      ->check(CLI::ExistingFile)
      ->type_name("FILE");
  create->add_option("--manifest", args->manifest,
                     "SUIT manifest ID (SHA-256); default: the manifest uploaded with the image");
  create->add_option("--rollout", args->rollout, "Share of the group per wave, cumulative: 10% or 1%,10%,50%,100%");
  create->add_option("--step-after", args->step_after, "Time before the next wave opens: 30s, 5m, 1h");
  create->add_option("--halt-on-failure", args->halt_on_failure,
                     "Halt when failed devices pass this share of admitted ones (default 5%), or never");
  create->add_option("--halt-min-executed", args->halt_min_executed,
                     "Apply the halt threshold once this many devices finished (default 5)");
  create->add_option("--wave-success", args->wave_success,
                     "Open the next wave once this share of a wave's devices installed (e.g. 90%)");
  create->add_option("--wave-success-then", args->wave_success_then,
                     "On wave success: next (open the next wave, the default) or pause (wait for 'resume')")
      ->check(CLI::IsMember({"next", "pause"}));
  create->add_option("--wave-error", args->wave_error,
                     "Halt when more than this many (3) or this share (10%) of a wave's devices failed");
  create->add_option("--abort-on", args->abort_on,
                     "Abort when more than PERCENT of executed devices ended KIND (failed, refused, rolled_back, "
                     "timed_out), once MIN_EXECUTED (default 5) finished: KIND:PERCENT[:MIN_EXECUTED]; repeatable");
  create->add_option("--timeout", args->timeouts,
                     "A device silent this long in a phase is timed_out, a failure: PHASE=DURATION with PHASE "
                     "downloading, installing or testing (e.g. downloading=10m); repeatable");
  create->add_option("--rate", args->rate,
                     "Offer it to at most this many new devices per minute (1..1000, e.g. 10 or 10/m), the first at once");
  create->add_option("--rate-factor", args->rate_factor, "Multiply the rate by this (1..5) at each raise");
  create->add_option("--rate-increase-on", args->rate_increase_on,
                     "Raise the rate each time N more devices were notified or succeeded: notified:N or succeeded:N");
  create->add_option("--rate-max", args->rate_max, "Never above this many devices per minute (1..1000)");
  create->add_option("--start-at", args->start_at,
                     "Scheduled start: nothing is offered before this time (e.g. 2026-12-24T02:00:00Z); waves and rate "
                     "count from it");
  create->add_option("--retry", args->retry,
                     "Retry a device whose attempt failed transiently (download cut, power lost while installing) up "
                     "to N more times (1..10)");
  create->add_option("--retry-backoff", args->retry_backoff,
                     "Wait before the first retry (default 1m); the wait doubles at each retry");
  create->add_option("--retry-backoff-max", args->retry_backoff_max,
                     "At most this wait between retries (default 1h, or the backoff when above)");
  create->add_option("--window", args->windows,
                     "Maintenance window: devices start (or retry) only inside one: DAYS HH:MM-HH:MM, e.g. \"Mon-Fri "
                     "01:00-04:00\" or \"Sat,Sun 22:00-02:00\" (crossing midnight); repeatable");
  create->add_option("--window-tz", args->window_tz,
                     "IANA time zone of the windows (default UTC); a device's own zone (device update --time-zone) "
                     "wins");
  create->add_flag("--dry-run", args->dry_run,
                   "Check and plan (devices, waves, checks) without creating anything; exit 3 if it would be refused");
  create->callback([&ctx, args] {
    auto request = transport::deployment_request(*args);
    auto api = connect(ctx);
    auto answer = transport::create_deployment(api, request);
    if (!args->dry_run) return cli::render_deployment(ctx, answer);
    if (ctx.format() == cli::OutputFormat::table)
      ctx.write_output(cli::dry_run_text(answer, ctx.render_options()));
    else
      ctx.render(answer);
    transport::require_would_create(answer);
  });

  auto* list = deployment->add_subcommand("list", "List deployments");
  list->add_option("--group", args->group, "Only this group's deployments");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    auto all = transport::list_deployments(api, args->group.empty() ? std::nullopt : std::optional(args->group));
    ctx.render(ctx.format() == cli::OutputFormat::table ? cli::deployment_list_rows(all) : all);
  });

  auto* show = deployment->add_subcommand("show", "Show a deployment: state, halt reason, counts per wave and state");
  show->add_option("ID", args->id, "Deployment ID")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    cli::render_deployment(ctx, transport::show_deployment(api, args->id));
  });

  auto* devices = deployment->add_subcommand("devices", "List a deployment's admitted devices: wave, status, detail");
  devices->add_option("ID", args->id, "Deployment ID")->required();
  devices->add_option("--status", args->status,
                      "Only this status (failures: failed, rolled_back, refused or timed_out)")
      ->check(CLI::IsMember({"pending", "failures", "downloading", "verifying", "installing", "testing", "installed",
                             "failed", "rolled_back", "refused", "timed_out", "notified", "retrying",
                             "waiting_window"}));
  devices->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::list_deployment_devices(api, args->id,
                                                  args->status.empty() ? std::nullopt : std::optional(args->status)));
  });

  auto* watch = deployment->add_subcommand(
      "watch",
      "Follow a deployment until it completes (exit 0), halts (8) or is aborted or superseded (7); -o jsonl: one "
      "event per state change");
  watch->add_option("ID", args->id, "Deployment ID")->required();
  watch->add_option("--interval", args->interval, "Time between polls: 500ms, 2s, 1m");
  watch->callback([&ctx, args] {
    auto interval = transport::parse_duration_ms(args->interval, "--interval");
    if (interval < 100) throw Error(ExitCode::usage, "--interval is at least 100ms");
    auto api = connect(ctx);
    if (ctx.format() == cli::OutputFormat::jsonl) {
      // One event per state change, flushed as it is seen (a CI job can gate on it).
      auto last = transport::watch_deployment_events(api, args->id, static_cast<int>(interval), [&ctx](const Json& event) {
        ctx.write_output(cli::json_text(event) + "\n");
      });
      return transport::require_watch_completed(last);
    }
    cli::DeploymentWatchView view(ctx);
    auto last = transport::watch_deployment(api, args->id, static_cast<int>(interval),
                                            [&view](const Json& current) { view.show(current); });
    transport::require_watch_completed(last);
  });

  auto* report = deployment->add_subcommand(
      "report", "Every device of the deployment's group: final state, versions before and after, failure, timings");
  report->add_option("ID", args->id, "Deployment ID")->required();
  report->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::deployment_report(api, args->id));
  });

  auto* remove = deployment->add_subcommand(
      "delete", "Delete a finished (completed, aborted or superseded) deployment with its device records");
  remove->add_option("ID", args->id, "Deployment ID")->required();
  remove->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::delete_deployment(api, args->id));
  });

  for (const char* action : {"pause", "resume", "abort"}) {
    const char* help = std::string_view(action) == "pause" ? "Stop offering a deployment (devices keep what they have)"
                       : std::string_view(action) == "resume"
                           ? "Continue a paused or halted deployment (failures so far are forgiven; after a wave "
                             "success pause, the next wave opens)"
                           : "End a deployment: each device that installed it goes back to exactly what it ran "
                             "before (exit 8 if one cannot)";
    auto* change = deployment->add_subcommand(action, help);
    change->add_option("ID", args->id, "Deployment ID")->required();
    change->callback([&ctx, args, action] {
      auto api = connect(ctx);
      auto answer = transport::change_deployment(api, args->id, action);
      cli::render_deployment(ctx, answer);
      if (std::string_view(action) == "abort") transport::require_all_reverted(answer);
    });
  }
}

}  // namespace kiln::commands
