// kiln product: create, list, show and delete products (each starts with Development, Field Test, Production).
#include <CLI/CLI.hpp>

#include <fmt/format.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_export.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct ProductArgs {
  std::string name;
  std::string description;
  std::vector<std::string> boot_keys, manifest_keys;
  std::optional<std::size_t> manifest_threshold;
  std::string slot_size;
};

// A key file (public or private key, PEM or DER) as the PEM public key the service takes.
std::string public_pem(const std::string& keyref) {
  auto pem = export_public_key(load_public_key(keyref), PublicKeyFormat::pem);
  return std::string(pem.begin(), pem.end());
}

// 0x10000, 65536, 64K, 1M.
std::int64_t parse_size(const std::string& text) {
  try {
    std::size_t used = 0;
    auto value = std::stoll(text, &used, 0);
    std::string unit = text.substr(used);
    std::int64_t scale = unit.empty() ? 1 : unit == "K" || unit == "k" ? 1024 : unit == "M" ? 1 << 20 : 0;
    if (scale > 0 && value > 0 && value <= (std::int64_t{1} << 32) / scale) return value * scale;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("--slot-size wants a size in bytes such as 0x40000, 256K or 1M, not '{}'", text));
}

transport::ProductTrust trust_of(const ProductArgs& args) {
  transport::ProductTrust trust;
  for (auto& k : args.boot_keys) trust.boot_keys.push_back(public_pem(k));
  for (auto& k : args.manifest_keys) trust.manifest_keys.push_back(public_pem(k));
  if (args.manifest_threshold) {
    // Checked here when the keys are given too; against the product's keys by the service otherwise (400).
    if (!args.manifest_keys.empty()) suit::check_threshold(*args.manifest_threshold, args.manifest_keys.size(),
                                                           "--manifest-threshold");
    else if (*args.manifest_threshold < 1)
      throw Error(ExitCode::usage, "--manifest-threshold must be at least 1");
    trust.manifest_threshold = static_cast<std::int64_t>(*args.manifest_threshold);
  }
  if (!args.slot_size.empty()) trust.slot_size = parse_size(args.slot_size);
  return trust;
}

void add_trust_options(CLI::App* command, ProductArgs& args) {
  command->add_option("--boot-key", args.boot_keys,
                      "Key the boards' MCUboot trusts (public or private key file; repeat for several)");
  command->add_option("--manifest-key", args.manifest_keys,
                      "Key the boards check SUIT manifests with (public or private key file; repeat for several)");
  command->add_option("--manifest-threshold", args.manifest_threshold,
                      "M: distinct manifest keys that must have signed a release (M of N; default 1)")
      ->type_name("M");
  command->add_option("--slot-size", args.slot_size, "Image slot size in bytes: 0x40000, 256K, 1M (default 16M)");
}

}  // namespace

void add_product(CLI::App& app, cli::Context& ctx) {
  auto* product = app.add_subcommand("product", "Products on the service");
  product->require_subcommand(1);
  auto args = std::make_shared<ProductArgs>();

  auto* create = product->add_subcommand("create", "Create a product with its default device groups");
  create->add_option("NAME", args->name, "Product name")->required();
  create->add_option("-d,--description", args->description, "Free text");
  add_trust_options(create, *args);
  create->callback([&ctx, args] {
    auto trust = trust_of(*args);
    auto api = connect(ctx);
    ctx.render(transport::create_product(api, args->name, args->description, trust));
  });

  auto* update = product->add_subcommand("update", "Set the keys the product's boards trust and its slot size");
  update->add_option("PRODUCT", args->name, "ID or name")->required();
  add_trust_options(update, *args);
  update->callback([&ctx, args] {
    auto trust = trust_of(*args);
    if (trust.boot_keys.empty() && trust.manifest_keys.empty() && trust.manifest_threshold == 0 &&
        trust.slot_size == 0)
      throw Error(ExitCode::usage,
                  "product update needs --boot-key, --manifest-key, --manifest-threshold or --slot-size");
    auto api = connect(ctx);
    ctx.render(transport::update_product(api, args->name, trust));
  });

  auto* list = product->add_subcommand("list", "List products");
  list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_products(api));
  });

  auto* show = product->add_subcommand("show", "Show a product (by ID or name)");
  show->add_option("PRODUCT", args->name, "ID or name")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_product(api, args->name));
  });

  auto* remove = product->add_subcommand("delete", "Delete a product that has no devices");
  remove->add_option("PRODUCT", args->name, "ID or name")->required();
  remove->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::delete_product(api, args->name));
  });
}

}  // namespace kiln::commands
