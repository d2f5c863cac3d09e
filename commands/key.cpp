// kiln key: generate, show and export keys (PEM files or PKCS#11 tokens).
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/external_signing.hpp"
#include "signing/file_key.hpp"
#include "signing/key_export.hpp"
#include "signing/key_info.hpp"
#include "signing/key_ref.hpp"
#include "signing/pkcs11.hpp"
#include "signing/pkcs11_uri.hpp"

namespace kiln::commands {
namespace {

// How output names a key: PEM paths as given, pkcs11: URIs without their PIN.
std::string keyref_for_display(const std::string& keyref) {
  return is_pkcs11_uri(keyref) ? parse_pkcs11_uri(keyref).description() : keyref;
}

cli::Json key_info_json(const std::string& keyref, const KeyInfo& info) {
  return {{"key", keyref_for_display(keyref)},
          {"type", std::string(key_type_name(info.type))},
          {"bits", info.bits},
          {"fingerprint", "sha256:" + info.fingerprint},
          {"mcuboot_key_hash", info.mcuboot_key_hash}};
}

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

void generate_key(const cli::Context& ctx, const GenerateArgs& args) {
  KeyType type = parse_key_type(args.type);
  if (!args.pkcs11_uri.empty()) {
    if (args.passphrase.given())
      throw Error(ExitCode::usage, "--passphrase-file/--passphrase-env protect PEM files, not token keys",
                  "the token's PIN protects --pkcs11 keys");
    if (args.force)
      throw Error(ExitCode::usage, "--force does not replace keys on a token",
                  "delete the old key first (pkcs11-tool --delete-object) or choose another object=/id=");
    Bytes spki = generate_pkcs11_key(args.pkcs11_uri, type, ctx.key_options());
    ctx.render(key_info_json(args.pkcs11_uri, describe_public_key(spki)));
    return;
  }
  auto passphrase = cli::read_secret(args.passphrase, "passphrase");
  std::string pem = generate_private_key_pem(type, passphrase);
  write_file_atomic(args.out, as_bytes(pem), 0600,
                    args.force ? AtomicFile::Overwrite::allow : AtomicFile::Overwrite::refuse);
  OPENSSL_cleanse(pem.data(), pem.size());
  auto info = describe_public_key(load_public_key(args.out, ctx.key_options(args.passphrase)));
  auto out = key_info_json(args.out, info);
  out["encrypted"] = passphrase.has_value();
  ctx.render(out);
}

void export_public(const cli::Context& ctx, const ExportArgs& args) {
  PublicKeyFormat format = parse_public_key_format(args.format);
  if (args.out.empty() && is_binary_format(format) && ::isatty(STDOUT_FILENO) == 1)
    throw Error(ExitCode::usage, fmt::format("refusing to write binary {} to a terminal", args.format),
                "add -o FILE or redirect stdout");
  cli::check_overwrite(args.out, args.force);
  Bytes exported = export_public_key(load_public_key(args.keyref, ctx.key_options(args.passphrase)), format);
  if (args.out.empty()) {
    ctx.write_output(std::string_view(reinterpret_cast<const char*>(exported.data()), exported.size()));
    return;
  }
  write_file_atomic(args.out, exported, 0644);
  ctx.info(
      fmt::format("wrote the public key of {} to {} ({})", keyref_for_display(args.keyref), args.out, args.format));
}

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
    if (gen->out.empty() && gen->pkcs11_uri.empty())
      throw Error(ExitCode::usage, "key generate needs -o FILE or --pkcs11 URI", "say where the new key goes");
    generate_key(ctx, *gen);
  });

  auto show_args = std::make_shared<ShowArgs>();
  auto* show = key->add_subcommand("show", "Show a key's type, fingerprint and MCUboot key hash");
  show->add_option("KEYREF", show_args->keyref, "PEM file or pkcs11: URI")->required();
  cli::add_passphrase_options(show, show_args->passphrase);
  show->callback([&ctx, show_args] {
    auto info = describe_public_key(load_public_key(show_args->keyref, ctx.key_options(show_args->passphrase)));
    ctx.render(key_info_json(show_args->keyref, info));
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
  export_public_command->callback([&ctx, export_args] { export_public(ctx, *export_args); });

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
    Bytes signature = sign_vector(*signer, read_file(sd->input));
    if (sd->base64)
      write_file_atomic(sd->out, as_bytes(to_base64(signature)));
    else
      write_file_atomic(sd->out, signature);
    ctx.render(cli::Json{{"key", keyref_for_display(sd->keyref)},
                         {"type", std::string(key_type_name(signer->type()))},
                         {"output", sd->out},
                         {"signature_bytes", signature.size()}});
  });
}

}  // namespace kiln::commands
