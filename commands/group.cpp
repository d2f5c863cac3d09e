// kiln group: device groups, named by ID or "Product/Group".
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"

namespace kiln::commands {
namespace {

struct GroupArgs {
  std::string ref;
  std::string product;
  std::optional<std::string> name;
  std::optional<std::string> description;
};

}  // namespace

void add_group(CLI::App& app, cli::Context& ctx) {
  auto* group = app.add_subcommand("group", "Device groups on the service (ID or Product/Group)");
  group->require_subcommand(1);
  auto args = std::make_shared<GroupArgs>();

  auto* create = group->add_subcommand("create", "Create a group: kiln group create Product/Group");
  create->add_option("GROUP", args->ref, "Product/Group")->required();
  create->add_option("-d,--description", args->description, "Free text");
  create->callback([&ctx, args] {
    auto slash = args->ref.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == args->ref.size())
      throw Error(ExitCode::usage, "name the new group as Product/Group", "e.g. kiln group create Thermo/Beta");
    auto api = connect(ctx);
    ctx.render(transport::create_group(api, args->ref.substr(0, slash), args->ref.substr(slash + 1),
                                       args->description.value_or("")));
  });

  auto* list = group->add_subcommand("list", "List groups");
  list->add_option("--product", args->product, "Only this product's groups");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::list_groups(api, args->product.empty() ? std::nullopt : std::optional(args->product)));
  });

  auto* show = group->add_subcommand("show", "Show a group");
  show->add_option("GROUP", args->ref, "ID or Product/Group")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_group(api, args->ref));
  });

  auto* update = group->add_subcommand("update", "Rename a group or change its description");
  update->add_option("GROUP", args->ref, "ID or Product/Group")->required();
  update->add_option("--name", args->name, "New name");
  update->add_option("-d,--description", args->description, "New description");
  update->callback([&ctx, args] {
    if (!args->name && !args->description) throw Error(ExitCode::usage, "nothing to update", "give --name and/or --description");
    auto api = connect(ctx);
    ctx.render(transport::update_group(api, args->ref, args->name, args->description));
  });

  auto* remove = group->add_subcommand("delete", "Delete a group that has no devices");
  remove->add_option("GROUP", args->ref, "ID or Product/Group")->required();
  remove->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::delete_group(api, args->ref));
  });
}

}  // namespace kiln::commands
