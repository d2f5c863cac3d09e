// kiln deployment: roll images out to a device group; pause, resume, abort.
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"

namespace kiln::commands {
namespace {

struct DeploymentArgs {
  std::string group;
  std::vector<std::string> images;
  std::string rollout = "100%";
  std::string id;
};

int parse_rollout(std::string text) {
  if (text.ends_with('%')) text.pop_back();
  try {
    std::size_t used = 0;
    int value = std::stoi(text, &used);
    if (used == text.size() && value >= 1 && value <= 100) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, "--rollout wants a percentage 1%..100%");
}

}  // namespace

void add_deployment(CLI::App& app, cli::Context& ctx) {
  auto* deployment = app.add_subcommand("deployment", "Deployments of images to device groups");
  deployment->require_subcommand(1);
  auto args = std::make_shared<DeploymentArgs>();

  auto* create = deployment->add_subcommand("create", "Deploy images to a group");
  create->add_option("--group", args->group, "Group ID or Product/Group")->required();
  create->add_option("--image", args->images, "Image ID (SHA-256); repeat for several")->required();
  create->add_option("--rollout", args->rollout, "Share of the group to update, e.g. 10%");
  create->callback([&ctx, args] {
    int rollout = parse_rollout(args->rollout);
    auto api = connect(ctx);
    ctx.render(transport::create_deployment(api, args->group, args->images, rollout));
  });

  auto* list = deployment->add_subcommand("list", "List deployments");
  list->add_option("--group", args->group, "Only this group's deployments");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::list_deployments(api, args->group.empty() ? std::nullopt : std::optional(args->group)));
  });

  auto* show = deployment->add_subcommand("show", "Show a deployment");
  show->add_option("ID", args->id, "Deployment ID")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_deployment(api, args->id));
  });

  for (const char* action : {"pause", "resume", "abort"}) {
    auto* change = deployment->add_subcommand(action, std::string("Deployment: ") + action);
    change->add_option("ID", args->id, "Deployment ID")->required();
    change->callback([&ctx, args, action] {
      auto api = connect(ctx);
      ctx.render(transport::change_deployment(api, args->id, action));
    });
  }
}

}  // namespace kiln::commands
