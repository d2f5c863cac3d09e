// kiln login / logout / whoami: service credentials kept 0600 in the config directory.
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"

namespace kiln::commands {
namespace {

struct LoginArgs {
  std::string service;
  std::string ca_file;
  std::string token;
  cli::SecretSource token_source;
};

}  // namespace

void add_login(CLI::App& app, cli::Context& ctx) {
  auto args = std::make_shared<LoginArgs>();
  auto* login = app.add_subcommand(
      "login", "Check a service token (or station client certificate) and keep it (0600) for later commands");
  login->add_option("--service", args->service, "Service URL, https://HOST:PORT (else KILN_SERVICE or config 'service')");
  login->add_option("--token-file", args->token_source.file, "Read the token from this file")->check(CLI::ExistingFile);
  login->add_option("--token-env", args->token_source.env, "Read the token from this environment variable");
  login->add_option("--token", args->token, "The token itself (visible in the process list: prefer --token-file)");
  login->add_option("--ca-file", args->ca_file, "Trust only this CA for the service (kiln-service init writes DIR/ca.pem)")
      ->check(CLI::ExistingFile);
  login->callback([&ctx, args] {
    transport::Credentials c;
    c.service = args->service;
    if (c.service.empty()) c.service = std::getenv("KILN_SERVICE") ? std::getenv("KILN_SERVICE") : "";
    if (c.service.empty()) c.service = ctx.config_value("service").value_or("");
    if (c.service.empty()) throw Error(ExitCode::usage, "which service?", "kiln login --service https://HOST:PORT");
    if (!args->token.empty() && args->token_source.given())
      throw Error(ExitCode::usage, "give the token once: --token, --token-file or --token-env");
    if (!args->token.empty()) {
      ctx.warn("warning: --token is visible to other users in the process list; prefer --token-file");
      c.token = args->token;
    } else {
      c.token = cli::read_secret(args->token_source, "token").value_or("");
    }
    c.client = {ctx.global.client_cert, ctx.global.client_key};
    if (c.client.given()) transport::check_client_certificate(c.client);
    if (c.token.empty() && !c.client.given())
      throw Error(ExitCode::usage, "no token given",
                  "use --token-file FILE or --token-env VAR (stations: kiln --client-cert FILE --client-key FILE login)");
    c.ca_file = args->ca_file;
    c.stall_seconds = ctx.global.stall_timeout;
    ctx.render(transport::login(c));
  });

  auto* logout = app.add_subcommand("logout", "Forget the stored service credentials");
  logout->callback([&ctx] {
    bool removed = transport::logout();
    ctx.render(cli::Json{{"logged_out", removed}, {"credentials", transport::credentials_path().string()}});
  });

  auto* whoami = app.add_subcommand("whoami", "Show the tenant and role of the current service token");
  whoami->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::whoami(api));
  });
}

}  // namespace kiln::commands
