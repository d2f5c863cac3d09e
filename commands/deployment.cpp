// kiln deployment: list, show, watch, pause, resume, abort and delete deployments of images or trust updates
// (create: deployment_create.cpp).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/deployment_views.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/deployment_states.hpp"
#include "transport/deployment_options.hpp"

namespace kiln::commands {
namespace {

struct DeploymentArgs {
  std::string group;
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

  add_deployment_create(deployment, ctx);

  auto* list = deployment->add_subcommand("list", "List deployments");
  list->add_option("--group", args->group, "Only this group's deployments");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    auto all = transport::list_deployments(api, args->group.empty() ? std::nullopt : std::optional(args->group));
    cli::render_deployment_list(ctx, all);
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
      ->check(CLI::IsMember(device_status_filters()));
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
  watch->add_option("--interval", args->interval, "Time between polls, 100ms to 24h: 500ms, 2s, 1m");
  watch->callback([&ctx, args] {
    auto interval = transport::watch_interval_ms(args->interval);
    auto api = connect(ctx);
    cli::DeploymentWatchView view(ctx);  // -o jsonl: one event per state change, else each new view
    auto last = view.events() ? transport::watch_deployment_events(api, args->id, interval, view.sink())
                              : transport::watch_deployment(api, args->id, interval, view.sink());
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

  struct Change {
    const char* action;
    const char* help;
  };
  static constexpr Change changes[] = {
      {"pause", "Stop offering a deployment (devices keep what they have)"},
      {"resume", "Continue a paused or halted deployment (failures so far are forgiven; after a wave success pause, "
                 "the next wave opens)"},
      {"abort", "End a deployment: each device that installed it goes back to exactly what it ran before (exit 8 if "
                "one cannot)"}};
  for (const Change& c : changes) {
    auto* change = deployment->add_subcommand(c.action, c.help);
    change->add_option("ID", args->id, "Deployment ID")->required();
    change->callback([&ctx, args, action = c.action] {
      auto api = connect(ctx);
      auto answer = transport::change_deployment(api, args->id, action);
      cli::render_deployment(ctx, answer);
      if (std::string_view(action) == "abort") transport::require_all_reverted(answer);
    });
  }
}

}  // namespace kiln::commands
