// The command table: one entry per noun, each defined in commands/<noun>.cpp (the git model).
#pragma once

#include <span>

namespace CLI {
class App;
}
namespace kiln::cli {
class Context;
}

namespace kiln::commands {

struct Noun {
  const char* name;
  void (*add)(CLI::App& app, cli::Context& ctx);
};

std::span<const Noun> all_commands();

// One per file in commands/.
void add_version(CLI::App& app, cli::Context& ctx);
void add_key(CLI::App& app, cli::Context& ctx);
void add_image(CLI::App& app, cli::Context& ctx);
void add_cert(CLI::App& app, cli::Context& ctx);
void add_manifest(CLI::App& app, cli::Context& ctx);
void add_factory(CLI::App& app, cli::Context& ctx);
void add_board(CLI::App& app, cli::Context& ctx);
void add_completion(CLI::App& app, cli::Context& ctx);
void add_help(CLI::App& app, cli::Context& ctx);
void add_login(CLI::App& app, cli::Context& ctx);  // login, logout, whoami
void add_product(CLI::App& app, cli::Context& ctx);
void add_trust(CLI::App& app, cli::Context& ctx);  // trust create|sign|verify|show|publish
void add_group(CLI::App& app, cli::Context& ctx);
void add_device(CLI::App& app, cli::Context& ctx);
void add_deployment(CLI::App& app, cli::Context& ctx);
void add_token(CLI::App& app, cli::Context& ctx);  // token list|revoke
void add_audit(CLI::App& app, cli::Context& ctx);
// image upload|list|show|download, added to the image noun by add_image.
void add_image_service_verbs(CLI::App* image, cli::Context& ctx);
// factory ledger verify|export|stats, added to the factory noun by add_factory.
void add_factory_ledger(CLI::App* factory, cli::Context& ctx);
// device claim-challenge|claim, added to the device noun by add_device.
void add_device_claim(CLI::App* device, cli::Context& ctx);
// device ca add|list, added by add_device; returns the `device ca` subcommand.
CLI::App* add_device_ca(CLI::App* device, cli::Context& ctx);
// device revoke and device ca revoke, added by add_device (ca: its `device ca` subcommand).
void add_device_revoke(CLI::App* device, CLI::App* ca, cli::Context& ctx);
void add_device_transfer(CLI::App* device, cli::Context& ctx);
// deployment create (its rollout controls), added to the deployment noun by add_deployment.
void add_deployment_create(CLI::App* deployment, cli::Context& ctx);
// image sign (imgtool's options), added to the image noun by add_image.
void add_image_sign(CLI::App* image, cli::Context& ctx);

}  // namespace kiln::commands
