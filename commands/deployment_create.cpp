// kiln deployment create: images (or a signed trust update) to a device group, in waves, with the rollout
// controls (halts, rate, schedule, maintenance windows, retries) as the API takes them; --dry-run plans only.
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/deployment_views.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "transport/deployment_options.hpp"

namespace kiln::commands {

void add_deployment_create(CLI::App* deployment, cli::Context& ctx) {
  auto args = std::make_shared<transport::DeploymentOptions>();
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
    cli::render_deployment_plan(ctx, answer);
    transport::require_would_create(answer);
  });
}

}  // namespace kiln::commands
