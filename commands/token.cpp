// kiln token: the tenant's service tokens (admins): list them, revoke one (refused from its next request).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"

namespace kiln::commands {

void add_token(CLI::App& app, cli::Context& ctx) {
  auto* token = app.add_subcommand("token", "Service tokens of your tenant (admins): list, revoke");
  token->require_subcommand(1);
  auto ref = std::make_shared<std::string>();

  auto* list = token->add_subcommand("list", "List the tenant's tokens: ID, name, role, created, revoked (no secrets)");
  list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_tokens(api));
  });

  auto* revoke = token->add_subcommand(
      "revoke", "Revoke a token: its next request gets 401 (the tenant's last admin token cannot be revoked)");
  revoke->add_option("TOKEN", *ref, "Token ID (token list) or name")->required();
  revoke->callback([&ctx, ref] {
    auto api = connect(ctx);
    ctx.render(transport::revoke_token(api, *ref));
  });
}

}  // namespace kiln::commands
