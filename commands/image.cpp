// kiln image: verify, inspect and decrypt MCUboot images; `sign` is in image_sign.cpp, the service verbs
// (upload, list, show, download) in image_service.cpp.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/image_views.hpp"
#include "cli/output_file.hpp"
#include "cli/progress.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "signing/key_ref.hpp"
#include "signing/mcuboot_sign.hpp"

namespace kiln::commands {
namespace {

using namespace kiln::mcuboot;

struct CheckArgs {
  std::string file, key, decrypt_key;
  bool hash_only = false;
  cli::SecretSource passphrase;
};

std::optional<Bytes> public_key_for(const cli::Context& ctx, const CheckArgs& a) {
  if (a.key.empty()) return std::nullopt;
  return load_public_key(a.key, ctx.key_options(a.passphrase));
}

void add_check(CLI::App* image, cli::Context& ctx, bool verify_only) {
  auto a = std::make_shared<CheckArgs>();
  auto* cmd = verify_only
                  ? image->add_subcommand("verify", "Check an image's hash, key hash and signature (exit 3 if bad)")
                  : image->add_subcommand("info", "Show an image's header, TLVs, trailer and verification result");
  cmd->add_option("FILE", a->file, "MCUboot image (.hex for Intel HEX, otherwise binary)")->required();
  auto* key_option = cmd->add_option("-k,--key", a->key, "Key to verify with: PEM (private or public) or pkcs11: URI");
  if (verify_only)
    cmd->add_flag("--hash-only", a->hash_only,
                  "Check only the image's structure and hash: proves nothing about who made it")
        ->excludes(key_option);
  cmd->add_option("--decrypt-key", a->decrypt_key,
                  "Private key of an encrypted image (PEM file or pkcs11: URI): the hash is checked over the plaintext, "
                  "as the bootloader does");
  cli::add_passphrase_options(cmd, a->passphrase);
  cmd->callback([&ctx, a, verify_only] {
    // Without a key any self-consistent image passes: that must be asked for, never a default.
    if (verify_only && a->key.empty() && !a->hash_only)
      throw Error(ExitCode::usage, "kiln image verify needs the key the image must be signed with",
                  "pass --key KEYREF (the public key is enough), or --hash-only to check the hash alone");
    auto key = public_key_for(ctx, *a);
    std::unique_ptr<ContentKeyOpener> opener;
    if (!a->decrypt_key.empty()) opener = load_content_key_opener(a->decrypt_key, ctx.key_options(a->passphrase));
    auto progress = cli::progress_callback(ctx, "verifying");
    if (verify_only) {
      auto r = verify_image(a->file, key, progress, opener.get());
      for (const auto& what : r.unchecked) ctx.warn(fmt::format("not checked: {}", what));
      ctx.render(cli::verify_result_json(a->file, a->key, r));
      return;
    }
    auto r = inspect_image(a->file, key, progress, opener.get());
    ctx.render(cli::image_report_json(a->file, a->key, r));
    if (!r.ok()) throw Error(ExitCode::verification_failed, fmt::format("{}: {}", a->file, r.failure));
  });
}

struct DecryptArgs {
  std::string input, output, key;
  bool force = false;
  cli::SecretSource passphrase;
};

void add_decrypt(CLI::App* image, cli::Context& ctx) {
  auto a = std::make_shared<DecryptArgs>();
  auto* cmd = image->add_subcommand(
      "decrypt", "Write an encrypted image with its body decrypted (exit 3 if the key does not open it)");
  cmd->add_option("INFILE", a->input, "Encrypted MCUboot image")->required();
  cmd->add_option("OUTFILE", a->output, "Image to write: the same image with a plaintext body")
      ->required()
      ->check(cli::output_file_validator());
  cmd->add_option("--key", a->key,
                  "Private encryption key: a PEM file, or a pkcs11: URI (the key agreement or RSA decryption runs on "
                  "the token)")
      ->required();
  cli::add_force_flag(cmd, a->force);
  cli::add_passphrase_options(cmd, a->passphrase);
  cmd->callback([&ctx, a] {
    cli::check_overwrite(a->output, a->force);
    auto opener = load_content_key_opener(a->key, ctx.key_options(a->passphrase));
    auto r = decrypt_image(a->input, a->output, *opener, cli::progress_callback(ctx, "decrypting"));
    ctx.render(cli::decrypt_result_json(a->output, r));
  });
}

}  // namespace

void add_image(CLI::App& app, cli::Context& ctx) {
  auto* image = app.add_subcommand("image", "Sign, verify and inspect MCUboot images; upload them to the service");
  image->require_subcommand(1);
  add_image_service_verbs(image, ctx);
  add_image_sign(image, ctx);
  add_check(image, ctx, true);
  add_check(image, ctx, false);
  add_decrypt(image, ctx);
}

}  // namespace kiln::commands
