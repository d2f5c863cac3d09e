// kiln device ca add|list: the factory CAs device certificates (and, with --stations, station certificates)
// must chain to, each registered with proof that the caller holds its key (revoke: device_revoke.cpp).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct CaArgs {
  std::string certificate, key;
  bool stations = false;
};

}  // namespace

CLI::App* add_device_ca(CLI::App* device, cli::Context& ctx) {
  auto args = std::make_shared<CaArgs>();
  auto* ca = device->add_subcommand("ca", "Factory CAs that device certificates must chain to (agent mutual TLS)");
  ca->require_subcommand(1);
  auto* ca_add = ca->add_subcommand(
      "add",
      "Register a factory or station CA certificate (PEM), proven by signing the service's challenge with its key");
  ca_add->add_option("FILE", args->certificate, "CA certificate, PEM")->required()->check(CLI::ExistingFile);
  ca_add
      ->add_option("--key", args->key,
                   "The CA's private key (KEYREF: PEM file or pkcs11: URI); it signs a one-time challenge, proving "
                   "the CA is yours (a CA belongs to one tenant)")
      ->required();
  ca_add->add_flag("--stations", args->stations,
                   "Certificates chained to this CA may also authenticate as factory stations (mutual TLS); "
                   "without it the CA is trusted for ledger bundles and device certificates only");
  ca_add->callback([&ctx, args] {
    auto signer = open_signer(args->key, ctx.key_options());
    auto api = connect(ctx);
    ctx.render(transport::register_factory_ca(api, args->certificate, *signer, args->stations));
  });
  auto* ca_list = ca->add_subcommand("list", "List registered factory CAs");
  ca_list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_factory_cas(api));
  });
  return ca;
}

}  // namespace kiln::commands
