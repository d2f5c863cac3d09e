// kiln key: generate, show and export keys (PEM files or PKCS#11 tokens).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include <openssl/crypto.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

cli::Json key_info_json(const std::string& keyref, const KeyInfo& info) {
  return {{"key", keyref},
          {"type", std::string(key_type_name(info.type))},
          {"bits", info.bits},
          {"fingerprint", "sha256:" + info.fingerprint},
          {"mcuboot_key_hash", info.mcuboot_key_hash}};
}

struct GenerateArgs {
  std::string type;
  std::string out;
  bool force = false;
  cli::SecretSource passphrase;
};

struct ShowArgs {
  std::string keyref;
  cli::SecretSource passphrase;
};

}  // namespace

void add_key(CLI::App& app, cli::Context& ctx) {
  auto* key = app.add_subcommand("key", "Generate, inspect and export signing keys");
  key->require_subcommand(1);

  auto gen = std::make_shared<GenerateArgs>();
  auto* generate = key->add_subcommand("generate", "Create a private key (PKCS#8 PEM, mode 0600)");
  generate->add_option("-t,--type", gen->type, "ecdsa-p256, ecdsa-p384, ed25519, rsa-2048 or rsa-3072")
      ->required()
      ->check(CLI::IsMember({"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072"}));
  generate->add_option("-o,--out", gen->out, "Where to write the private key")->required();
  generate->add_flag("--force", gen->force, "Overwrite an existing file");
  cli::add_passphrase_options(generate, gen->passphrase);
  generate->callback([&ctx, gen] {
    KeyType type = parse_key_type(gen->type);
    auto passphrase = cli::read_secret(gen->passphrase, "passphrase");
    std::string pem = generate_private_key_pem(type, passphrase);
    write_file_atomic(gen->out, as_bytes(pem), 0600,
                      gen->force ? AtomicFile::Overwrite::allow : AtomicFile::Overwrite::refuse);
    OPENSSL_cleanse(pem.data(), pem.size());
    auto info = describe_public_key(load_public_key(gen->out, ctx.key_options(gen->passphrase)));
    auto out = key_info_json(gen->out, info);
    out["encrypted"] = passphrase.has_value();
    ctx.render(out);
  });

  auto show_args = std::make_shared<ShowArgs>();
  auto* show = key->add_subcommand("show", "Show a key's type, fingerprint and MCUboot key hash");
  show->add_option("KEYREF", show_args->keyref, "PEM file or pkcs11: URI")->required();
  cli::add_passphrase_options(show, show_args->passphrase);
  show->callback([&ctx, show_args] {
    auto info = describe_public_key(load_public_key(show_args->keyref, ctx.key_options(show_args->passphrase)));
    ctx.render(key_info_json(show_args->keyref, info));
  });
}

}  // namespace kiln::commands
