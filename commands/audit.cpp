// kiln audit list: the service's log of every write (who, what, on which object, the answer, when).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/timestamp_option.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"

namespace kiln::commands {
namespace {

struct AuditArgs {
  transport::AuditFilter filter;
  std::uint64_t limit = 0;
};

}  // namespace

void add_audit(CLI::App& app, cli::Context& ctx) {
  auto* audit = app.add_subcommand("audit", "The service's audit log of every write (admin tokens)");
  audit->require_subcommand(1);
  auto args = std::make_shared<AuditArgs>();

  auto* list = audit->add_subcommand(
      "list", "List audit entries, oldest first, every page streamed (-o jsonl exports one entry per line)");
  list->add_option("--actor", args->filter.actor, "Token name (station:NAME for stations) or device UID");
  list->add_option("--action", args->filter.action, "Action such as image.delete or deployment.create");
  list->add_option("--target", args->filter.target, "ID of the object acted on");
  // Checked here as well as by the service: "--since yesterday" is a usage error (exit 2), not zero rows.
  list->add_option("--since", args->filter.since, "Entries at or after this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(cli::timestamp_validator());
  list->add_option("--until", args->filter.until, "Entries at or before this time (ISO 8601: 2026-01-31[T12:00:00Z])")
      ->check(cli::timestamp_validator());
  list->add_option("--limit", args->limit, "At most N entries")->check(CLI::PositiveNumber);
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    auto out = ctx.records();
    transport::list_audit(api, args->filter, args->limit, [&](const cli::Json& entry) { out->add(entry); });
    out->finish();
  });
}

}  // namespace kiln::commands
