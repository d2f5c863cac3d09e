// kiln key: generate, show and export keys (PEM files or PKCS#11 tokens).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/key_views.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "signing/external_signing.hpp"
#include "signing/key_export.hpp"
#include "signing/key_generate.hpp"
#include "signing/key_info.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct GenerateArgs {
  std::string type;
  std::string out;
  std::string pkcs11_uri;
  bool force = false;
  cli::SecretSource passphrase;
};

struct ShowArgs {
  std::string keyref;
  cli::SecretSource passphrase;
};

struct ExportArgs {
  std::string keyref;
  std::string out;
  std::string format = "pem";
  bool force = false;
  cli::SecretSource passphrase;
};

}  // namespace

void add_key(CLI::App& app, cli::Context& ctx) {
  auto* key = app.add_subcommand("key", "Generate, inspect and export signing keys");
  key->require_subcommand(1);

  auto gen = std::make_shared<GenerateArgs>();
  auto* generate = key->add_subcommand(
      "generate", "Create a private key: a PKCS#8 PEM file (mode 0600) or a key pair on a PKCS#11 token");
  generate->add_option("-t,--type", gen->type, "ecdsa-p256, ecdsa-p384, ed25519, rsa-2048 or rsa-3072")
      ->required()
      ->check(CLI::IsMember({"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072"}));
  auto* out_option = cli::add_output_file_option(generate, gen->out, "Where to write the private key (PEM)");
  auto* pkcs11_option = generate->add_option(
      "--pkcs11", gen->pkcs11_uri, "Create the key pair on this token instead: pkcs11:token=T;object=LABEL;id=%01");
  out_option->excludes(pkcs11_option);
  generate->add_flag("--force", gen->force, "Overwrite an existing file (never applies to token keys)");
  cli::add_passphrase_options(generate, gen->passphrase);
  generate->callback([&ctx, gen] {
    KeyGeneration request{parse_key_type(gen->type), gen->out, gen->pkcs11_uri, gen->force, gen->passphrase.given()};
    auto keys = ctx.key_options(gen->out.empty() ? cli::SecretSource{} : gen->passphrase);  // PEM files only
    ctx.render(cli::generated_key_json(generate_key(request, keys)));
  });

  auto show_args = std::make_shared<ShowArgs>();
  auto* show = key->add_subcommand("show", "Show a key's type, fingerprint and MCUboot key hash");
  show->add_option("KEYREF", show_args->keyref, "PEM file or pkcs11: URI")->required();
  cli::add_passphrase_options(show, show_args->passphrase);
  show->callback([&ctx, show_args] {
    auto info = describe_public_key(load_public_key(show_args->keyref, ctx.key_options(show_args->passphrase)));
    ctx.render(cli::key_info_json(show_args->keyref, info));
  });

  auto export_args = std::make_shared<ExportArgs>();
  auto* export_public_command =
      key->add_subcommand("export-public", "Write a key's public half as PEM, DER, raw bytes or imgtool C/Rust source");
  export_public_command->add_option("KEYREF", export_args->keyref, "PEM file or pkcs11: URI")->required();
  cli::add_output_file_option(export_public_command, export_args->out, "Output file (default: stdout)");
  cli::add_force_flag(export_public_command, export_args->force);
  export_public_command->add_option("-f,--format", export_args->format, "pem (default), der, c, rust or raw")
      ->check(CLI::IsMember({"pem", "der", "c", "rust", "raw"}));
  cli::add_passphrase_options(export_public_command, export_args->passphrase);
  export_public_command->callback([&ctx, export_args] {
    const auto& a = *export_args;
    PublicKeyFormat format = parse_public_key_format(a.format);
    cli::check_file_or_stdout(ctx, a.out, a.force, is_binary_format(format) ? a.format : "");
    Bytes exported = export_public_key(load_public_key(a.keyref, ctx.key_options(a.passphrase)), format);
    if (cli::write_file_or_stdout(ctx, a.out, exported))
      ctx.info(fmt::format("wrote the public key of {} to {} ({})", keyref_display_name(a.keyref), a.out, a.format));
  });

  struct SignDigestArgs {
    std::string keyref, input, out;
    bool base64 = false, force = false;
    cli::SecretSource passphrase;
  };
  auto sd = std::make_shared<SignDigestArgs>();
  auto* sign_digest = key->add_subcommand(
      "sign-digest",
      "Sign a vector written by --vector-to-sign (offline signing): a digest (ECDSA, RSA) or the bytes (Ed25519)");
  sign_digest->add_option("KEYREF", sd->keyref, "Private key: PEM file or pkcs11: URI")->required();
  sign_digest->add_option("IN", sd->input, "The digest (32/48/64 bytes) or, for Ed25519, the bytes to sign")
      ->required()
      ->check(CLI::ExistingFile);
  cli::add_output_file_option(sign_digest, sd->out, "Where to write the signature (DER for ECDSA, as openssl pkeyutl)")
      ->required();
  sign_digest->add_flag("--base64", sd->base64, "Write base64 (imgtool's --fix-sig format) instead of binary");
  cli::add_force_flag(sign_digest, sd->force);
  cli::add_passphrase_options(sign_digest, sd->passphrase);
  sign_digest->callback([&ctx, sd] {
    cli::check_overwrite(sd->out, sd->force);
    auto signer = open_signer(sd->keyref, ctx.key_options(sd->passphrase));
    Bytes signature = sign_vector_file(*signer, sd->input, sd->out, sd->base64);
    ctx.render(cli::signature_json(sd->keyref, signer->type(), sd->out, signature.size()));
  });
}

}  // namespace kiln::commands
