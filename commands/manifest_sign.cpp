// kiln manifest verify, sign and sever: the checks and signatures on an existing SUIT envelope.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/manifest_views.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "commands/manifest_files.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {

CLI::App* add_envelope_sign(CLI::App* noun, cli::Context& ctx, const std::string& description,
                            const std::string& file_help, void (*check)(ByteView input)) {
  auto sign_args = std::make_shared<FileArgs>();
  auto* sign = noun->add_subcommand("sign", description);
  sign->add_option("FILE", sign_args->file, file_help)->required()->check(CLI::ExistingFile);
  sign->add_option("--key", sign_args->keyrefs, "Signing key: PEM file or pkcs11: URI (repeatable)")
      ->type_name("KEYREF");
  sign->add_option("--signature", sign_args->signature,
                   "Add a detached COSE signature made elsewhere (binary: DER or r||s for ECDSA, 64 bytes for EdDSA)");
  sign->add_option("--signer-public-key", sign_args->signer_public_key,
                   "Public key of the offline signer (with --signature or --vector-to-sign)")
      ->type_name("KEYREF");
  sign->add_option("--vector-to-sign", sign_args->vector_to_sign,
                   "Write what the offline signer must sign to -o instead: digest (ECDSA) or payload (Sig_structure)")
      ->check(CLI::IsMember({"digest", "payload"}));
  cli::add_output_file_option(sign, sign_args->out, "Where to write the signed envelope (default: replace FILE)");
  cli::add_force_flag(sign, sign_args->force);
  cli::add_passphrase_options(sign, sign_args->passphrase);
  sign->callback([&ctx, a = sign_args, check, noun_name = noun->get_name()] {
    const bool external = !a->signature.empty() || !a->vector_to_sign.empty();
    if (external && !a->keyrefs.empty())
      throw Error(ExitCode::usage, "--key cannot be combined with --signature or --vector-to-sign",
                  "sign with keys here, or with the offline signer's signature, in separate runs");
    if (!a->signature.empty() && !a->vector_to_sign.empty())
      throw Error(ExitCode::usage, "--signature and --vector-to-sign are two steps of offline signing, not one");
    if (external && a->signer_public_key.empty())
      throw Error(ExitCode::usage, "offline signing needs --signer-public-key KEYREF",
                  "name the public key of the key that signs (or will sign) elsewhere");
    if (!external && a->keyrefs.empty())
      throw Error(ExitCode::usage,
                  fmt::format("{} sign needs --key KEYREF, or --signature SIG --signer-public-key PUB", noun_name));
    if (!a->vector_to_sign.empty() && a->out.empty())
      throw Error(ExitCode::usage, "--vector-to-sign needs -o FILE for the vector");
    if (!a->out.empty() && a->out != a->file) cli::check_overwrite(a->out, a->force);
    Bytes input = read_file(a->file);
    if (check) check(input);
    suit::Envelope envelope = suit::parse_envelope(input);
    if (!a->vector_to_sign.empty()) {
      Bytes vector = suit::signature_vector(envelope, load_public_key(a->signer_public_key, ctx.key_options(a->passphrase)),
                                            a->vector_to_sign == "digest");
      write_file_atomic(a->out, vector);
      ctx.render(cli::Json{{"output", a->out}, {"vector", a->vector_to_sign}, {"bytes", vector.size()}});
      return;
    }
    if (!a->signature.empty()) {
      suit::add_external_signature(envelope, load_public_key(a->signer_public_key, ctx.key_options(a->passphrase)),
                                   read_file(a->signature));
    } else {
      for (const auto& keyref : a->keyrefs)
        suit::add_signature(envelope, *open_signer(keyref, ctx.key_options(a->passphrase)));
    }
    ctx.render(write_envelope(a->out.empty() ? a->file : a->out, envelope));
  });

  return sign;
}

void add_manifest_signing(CLI::App* manifest, cli::Context& ctx) {
  auto verify_args = std::make_shared<FileArgs>();
  auto* verify =
      manifest->add_subcommand("verify", "Check digest, signatures, severable elements, images and sequence floor");
  verify->add_option("FILE", verify_args->file, "SUIT envelope")->required()->check(CLI::ExistingFile);
  verify
      ->add_option("--key", verify_args->keyrefs,
                   "Trusted public key (PEM file or pkcs11: URI, repeatable); without --threshold each must have signed")
      ->type_name("KEYREF");
  verify
      ->add_option("--threshold", verify_args->threshold,
                   "M of N: at least M distinct --key keys must have signed (others' signatures are ignored)")
      ->type_name("M");
  verify->add_flag("--unsigned", verify_args->allow_unsigned,
                   "Accept an envelope without signatures (checks digests only)");
  verify
      ->add_option("--image", verify_args->images,
                   "Image file that must match a declared image-digest and image-size (repeatable)")
      ->check(CLI::ExistingFile);
  verify->add_option("--min-sequence", verify_args->min_sequence,
                     "Refuse manifest-sequence-number below N (anti-rollback)");
  cli::add_passphrase_options(verify, verify_args->passphrase);
  verify->callback([&ctx, a = verify_args] {
    if (a->keyrefs.empty() && !a->allow_unsigned)
      throw Error(ExitCode::usage, "manifest verify needs --key KEYREF",
                  "pass the signer's public key, or --unsigned to check digests only");
    if (a->threshold) suit::check_threshold(*a->threshold, a->keyrefs.size(), "manifest verify --threshold");
    suit::VerifyOptions options;
    options.threshold = a->threshold;
    for (const auto& keyref : a->keyrefs)
      options.keys.push_back({keyref, load_public_key(keyref, ctx.key_options(a->passphrase))});
    options.allow_unsigned = a->allow_unsigned;
    for (const auto& image : a->images) options.images.emplace_back(image);
    options.min_sequence = a->min_sequence;
    suit::VerifyReport report = suit::verify_envelope(read_file(a->file), options);
    ctx.render(cli::verify_report_json(a->file, report));
  });

  add_envelope_sign(manifest, ctx, "Add a COSE_Sign1 signature (several signers allowed)", "SUIT envelope", nullptr);

  auto sever_args = std::make_shared<FileArgs>();
  auto* sever = manifest->add_subcommand(
      "sever", "Remove severable elements (install, payload-fetch, text), keeping their digests");
  sever->add_option("FILE", sever_args->file, "SUIT envelope")->required()->check(CLI::ExistingFile);
  cli::add_output_file_option(sever, sever_args->out, "Where to write the severed envelope (default: replace FILE)");
  cli::add_force_flag(sever, sever_args->force);
  sever->callback([&ctx, a = sever_args] {
    if (!a->out.empty() && a->out != a->file) cli::check_overwrite(a->out, a->force);
    suit::Envelope envelope = suit::parse_envelope(read_file(a->file));
    std::vector<std::string> removed = suit::sever(envelope);
    cli::Json result = write_envelope(a->out.empty() ? a->file : a->out, envelope);
    result["severed"] = removed;
    ctx.render(result);
  });
}

}  // namespace kiln::commands
