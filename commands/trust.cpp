// kiln trust: create, sign, verify, show and publish (register) trust updates (docs/key-rotation.md), the signed
// statements that rotate the manifest keys and boot keys of a product's boards over the air; deployments
// (kiln deployment create --trust-update) deliver them.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "cli/trust_views.hpp"
#include "commands/commands.hpp"
#include "commands/manifest_files.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/trust_update.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct TrustArgs {
  std::string file, out, product;
  std::uint64_t version = 0;
  std::vector<std::string> manifest_keys, boot_keys, boot_key_hashes, keyrefs;
  std::optional<std::uint64_t> threshold, installed_version;
  bool force = false;
  cli::SecretSource passphrase;
};

// `trust sign` refuses what is no trust update (a firmware manifest signed by mistake would be harmless, but
// the signer meant something else).
void check_trust_update(ByteView input) { trust::parse(input); }

std::size_t signature_count(ByteView input) {
  return suit::authentication(suit::parse_envelope(input)).authentication_blocks.size();
}

}  // namespace

void add_trust(CLI::App& app, cli::Context& ctx) {
  auto* noun = app.add_subcommand("trust", "Trust updates: rotate the manifest and boot keys of a product's boards");
  noun->require_subcommand(1);
  auto args = std::make_shared<TrustArgs>();

  auto* create = noun->add_subcommand("create", "Write a new, unsigned trust update");
  create->add_option("--product", args->product, "Product (its name on the service)")->required();
  create->add_option("--version", args->version, "Trust version, above every earlier one (boards refuse older)")
      ->required()
      ->type_name("N");
  create->add_option("--manifest-key", args->manifest_keys, "Manifest key of the new set (repeatable)")
      ->type_name("KEYREF");
  create->add_option("--manifest-threshold", args->threshold, "M: distinct manifest keys a release needs (M of N)")
      ->type_name("M");
  create->add_option("--boot-key", args->boot_keys, "MCUboot key of the new boot-key set (repeatable)")
      ->type_name("KEYREF");
  create->add_option("--boot-key-hash", args->boot_key_hashes,
                     "MCUboot key hash (64 hex digits) of the new set, when the key itself is not at hand")
      ->type_name("HEX");
  cli::add_output_file_option(create, args->out, "Where to write the trust update")->required();
  cli::add_force_flag(create, args->force);
  cli::add_passphrase_options(create, args->passphrase);
  create->callback([&ctx, a = args] {
    cli::check_overwrite(a->out, a->force);
    trust::TrustUpdate update;
    update.product = a->product;
    update.version = a->version;
    for (const auto& keyref : a->manifest_keys)
      update.manifest_keys.push_back(load_public_key(keyref, ctx.key_options(a->passphrase)));
    update.manifest_threshold = a->threshold.value_or(update.manifest_keys.size() == 1 ? 1 : 0);
    for (const auto& keyref : a->boot_keys) {
      update.boot_keys.push_back(load_public_key(keyref, ctx.key_options(a->passphrase)));
      update.boot_key_hashes.push_back(trust::boot_key_hash(update.boot_keys.back()));
    }
    for (const auto& hex : a->boot_key_hashes) {
      if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        throw Error(ExitCode::usage, fmt::format("--boot-key-hash {} is not 64 hex digits (SHA-256)", hex));
      update.boot_key_hashes.push_back(from_hex(hex));
    }
    Bytes encoded = suit::encode_envelope(trust::create(update));
    write_file_atomic(a->out, encoded);
    ctx.render(cli::trust_update_json(a->out, update, 0));
  });

  add_envelope_sign(noun, ctx, "Add a signature to a trust update (several signers allowed)", "Trust update",
                    check_trust_update);

  auto* verify = noun->add_subcommand("verify", "Check a trust update as a board with the given trust would");
  verify->add_option("FILE", args->file, "Trust update")->required()->check(CLI::ExistingFile);
  verify->add_option("--key", args->keyrefs, "Manifest key in force (repeatable)")->required()->type_name("KEYREF");
  verify->add_option("--threshold", args->threshold, "M in force (default: every --key must have signed)")
      ->type_name("M");
  verify->add_option("--product", args->product, "Refuse an update for another product");
  verify->add_option("--installed-version", args->installed_version,
                     "Refuse an update not above this trust version (default 0)")
      ->type_name("N");
  cli::add_passphrase_options(verify, args->passphrase);
  verify->callback([&ctx, a = args] {
    trust::TrustState state;
    state.product = a->product;
    state.version = a->installed_version.value_or(0);
    for (const auto& keyref : a->keyrefs)
      state.manifest_keys.push_back(load_public_key(keyref, ctx.key_options(a->passphrase)));
    state.manifest_threshold = a->threshold.value_or(state.manifest_keys.size());
    suit::check_threshold(state.manifest_threshold, state.manifest_keys.size(), "trust verify --threshold");
    Bytes input = read_file(a->file);
    trust::Decision decision = trust::check(input, state);
    if (!decision.ok())
      throw Error(ExitCode::verification_failed,
                  fmt::format("trust update refused ({}): {}", decision.failed_check, decision.reason));
    cli::Json out = cli::trust_update_json(a->file, decision.update, signature_count(input));
    out["result"] = "accepted";
    ctx.render(out);
  });

  auto* show = noun->add_subcommand("show", "Show what a trust update installs (signatures are not checked)");
  show->add_option("FILE", args->file, "Trust update")->required()->check(CLI::ExistingFile);
  show->callback([&ctx, a = args] {
    Bytes input = read_file(a->file);
    trust::TrustUpdate update = trust::parse(input);  // first: a malformed file exits 3 with its reason
    ctx.render(cli::trust_update_json(a->file, update, signature_count(input)));
  });

  auto* publish = noun->add_subcommand(
      "publish",
      "Register a signed trust update on the service (checked, recorded); boards get it only through a deployment "
      "(kiln deployment create --trust-update)");
  publish->add_option("FILE", args->file, "Signed trust update")->required()->check(CLI::ExistingFile);
  publish->add_option("--product", args->product, "Product on the service (default: the one the update names)");
  publish->callback([&ctx, a = args] {
    Bytes input = read_file(a->file);
    std::string product = a->product.empty() ? trust::parse(input).product : a->product;
    auto api = connect(ctx);
    ctx.render(transport::publish_trust_update(api, product, input));
  });
}

}  // namespace kiln::commands
