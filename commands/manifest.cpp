// kiln manifest: create, show, encode, verify, sign and sever SUIT envelopes (draft-ietf-suit-manifest-37).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_json.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct CreateArgs {
  std::vector<std::string> components, uris;
  std::string from, out, vendor_id, vendor_domain, class_id, class_name, sequence, keyref;
  bool unsigned_envelope = false, force = false;
  suit::CreateOptions options;
  cli::SecretSource passphrase;
};

struct FileArgs {
  std::string file, out, signature, signer_public_key, vector_to_sign;
  std::vector<std::string> keyrefs;
  std::vector<std::string> images;
  std::optional<std::uint64_t> min_sequence;
  bool allow_unsigned = false, force = false;
  cli::SecretSource passphrase;
};

std::uint64_t parse_sequence(const std::string& text) {
  // "auto": seconds since the Unix epoch, so every later build gets a larger number without a counter file.
  if (text == "auto")
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  std::size_t used = 0;
  try {
    std::uint64_t n = std::stoull(text, &used);
    if (used == text.size() && text[0] != '-') return n;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("--sequence {} is not a number", text),
              "pass an unsigned integer or \"auto\"");
}

// Identity: an explicit UUID, or the draft's UUIDv5 derivation from a domain / model name.
void resolve_identity(CreateArgs& a) {
  if (!a.vendor_id.empty()) a.options.vendor_id = suit::parse_uuid(a.vendor_id);
  if (!a.vendor_domain.empty()) a.options.vendor_id = suit::vendor_id_from_domain(a.vendor_domain);
  if (!a.class_id.empty()) a.options.class_id = suit::parse_uuid(a.class_id);
  if (!a.class_name.empty()) {
    if (a.options.vendor_id.empty())
      throw Error(ExitCode::usage, "--class-name needs a vendor", "pass --vendor-id or --vendor-domain");
    a.options.class_id = suit::class_id_from_name(a.options.vendor_id, a.class_name);
  }
  if (a.options.vendor_domain.empty()) a.options.vendor_domain = a.vendor_domain;
}

cli::Json envelope_summary(const std::string& file, const suit::Envelope& envelope, std::uint64_t size) {
  auto wrapper = suit::authentication(envelope);
  cli::Json signatures = cli::Json::array();
  for (const auto& block : wrapper.authentication_blocks) signatures.push_back(cose::block_algorithm_name(block));
  return {
      {"file", file},
      {"size", size},
      {"manifest-sequence-number", suit::sequence_number(suit::manifest(envelope))},
      {"manifest-digest", suit::digest_algorithm_name(wrapper.digest.algorithm) + ":" + to_hex(wrapper.digest.bytes)},
      {"signatures", signatures}};
}

// Encodes and atomically writes the envelope; returns the summary every writing verb renders.
cli::Json write_envelope(const std::string& path, const suit::Envelope& envelope) {
  Bytes encoded = suit::encode_envelope(envelope);
  write_file_atomic(path, encoded);
  return envelope_summary(path, envelope, encoded.size());
}

nlohmann::ordered_json read_json_file(const std::string& path) {
  auto json = nlohmann::ordered_json::parse(read_text_file(path), nullptr, false);
  if (json.is_discarded())
    throw Error(ExitCode::failure, fmt::format("{} is not valid JSON", path), "check the file's syntax");
  return json;
}

// The readable view: what a person checks first. `-o json` shows every element instead.
cli::Json readable_view(const std::string& file, const suit::Envelope& envelope, std::uint64_t size) {
  cli::Json view = envelope_summary(file, envelope, size);
  suit::Json full = suit::envelope_to_json(envelope);
  const suit::Json& m = full["manifest"];
  cli::Json components = cli::Json::array();
  for (const auto& id : m["common"]["components"]) components.push_back(id.dump());
  view["components"] = components;
  cli::Json images = cli::Json::array();
  for (const auto& image : suit::declared_images(envelope))
    images.push_back(fmt::format("{}:{}{}", suit::digest_algorithm_name(image.digest.algorithm),
                                 to_hex(image.digest.bytes),
                                 image.size ? fmt::format(" ({} bytes)", *image.size) : ""));
  view["images"] = images;
  if (m.contains("reference-uri")) view["reference-uri"] = m["reference-uri"];
  cli::Json sequences = cli::Json::array();
  for (const auto& [name, value] : m.items()) {
    if (name == "manifest-version" || name == "manifest-sequence-number" || name == "common" || name == "reference-uri")
      continue;
    bool severed = value.is_object() && value.contains("algorithm-id");
    bool carried = full.contains(name);
    sequences.push_back(severed ? fmt::format("{} ({})", name, carried ? "severable, present" : "severed") : name);
  }
  view["elements"] = sequences;
  return view;
}

}  // namespace

void add_manifest(CLI::App& app, cli::Context& ctx) {
  auto* manifest = app.add_subcommand("manifest", "Create, inspect, verify and sign SUIT update manifests");
  manifest->require_subcommand(1);

  auto create_args = std::make_shared<CreateArgs>();
  auto* create =
      manifest->add_subcommand("create", "Create a SUIT envelope over signed images or from a JSON description");
  create
      ->add_option("--component", create_args->components,
                   "Signed image file to install (repeatable; digest and size computed)")
      ->check(CLI::ExistingFile);
  create
      ->add_option("--uri", create_args->uris,
                   "Where the device fetches each --component, in the same order (repeatable)")
      ->type_name("URI");
  auto* vendor_id = create->add_option("--vendor-id", create_args->vendor_id, "Vendor UUID")->type_name("UUID");
  create->add_option("--vendor-domain", create_args->vendor_domain, "Vendor domain: vendor-id = UUID5(DNS, domain)")
      ->excludes(vendor_id);
  auto* class_id = create->add_option("--class-id", create_args->class_id, "Device class UUID")->type_name("UUID");
  create->add_option("--class-name", create_args->class_name, "Class name: class-id = UUID5(vendor-id, name)")
      ->excludes(class_id);
  create
      ->add_option("--sequence", create_args->sequence,
                   "manifest-sequence-number: N, or auto (seconds since the epoch)")
      ->type_name("N|auto");
  create->add_option("--reference-uri", create_args->options.reference_uri, "reference-uri of the manifest");
  create->add_option("--description", create_args->options.manifest_description, "Text: manifest-description");
  create->add_option("--update-description", create_args->options.update_description, "Text: update-description");
  create->add_option("--vendor-name", create_args->options.vendor_name, "Text: vendor-name of the first component");
  create->add_option("--model-name", create_args->options.model_name, "Text: model-name of the first component");
  create->add_option("--component-description", create_args->options.component_description,
                     "Text: component-description");
  create->add_flag("--severable", create_args->options.severable,
                   "Carry install and text as severable elements (digests in the manifest)");
  create->add_option("--from", create_args->from, "JSON description in the schema of the draft's exampleN.json")
      ->check(CLI::ExistingFile);
  auto* key =
      create->add_option("--key", create_args->keyref, "Signing key: PEM file or pkcs11: URI")->type_name("KEYREF");
  create->add_flag("--unsigned", create_args->unsigned_envelope, "Write an envelope without a signature")
      ->excludes(key);
  cli::add_output_file_option(create, create_args->out, "Where to write the envelope")->required();
  cli::add_force_flag(create, create_args->force);
  cli::add_passphrase_options(create, create_args->passphrase);
  create->callback([&ctx, create, a = create_args] {
    if (!a->from.empty())
      for (const char* option : {"--component", "--uri", "--vendor-id", "--vendor-domain", "--class-id", "--class-name",
                                 "--sequence", "--reference-uri", "--description", "--update-description",
                                 "--vendor-name", "--model-name", "--component-description", "--severable"})
        if (create->count(option) > 0)
          throw Error(ExitCode::usage, fmt::format("{} cannot be combined with --from", option),
                      "put everything in the JSON description, or build from options without --from");
    if (a->keyref.empty() && !a->unsigned_envelope)
      throw Error(ExitCode::usage, "manifest create needs --key KEYREF or --unsigned",
                  "a device only installs signed manifests");
    cli::check_overwrite(a->out, a->force);
    nlohmann::ordered_json description;
    std::filesystem::path base_dir;
    if (!a->from.empty()) {
      description = read_json_file(a->from);
      base_dir = std::filesystem::path(a->from).parent_path();
    } else {
      if (a->sequence.empty())
        throw Error(ExitCode::usage, "--sequence is required", "pass --sequence N or --sequence auto");
      if (!a->uris.empty() && a->uris.size() != a->components.size())
        throw Error(ExitCode::usage, fmt::format("{} --uri for {} --component", a->uris.size(), a->components.size()),
                    "give one --uri per --component, in the same order, or none");
      for (std::size_t i = 0; i < a->components.size(); ++i)
        a->options.components.push_back({a->components[i], a->uris.empty() ? "" : a->uris[i]});
      resolve_identity(*a);
      a->options.sequence_number = parse_sequence(a->sequence);
      description = suit::describe(a->options);
    }
    std::unique_ptr<Signer> signer;
    std::vector<const Signer*> signers;
    if (!a->keyref.empty()) {
      signer = open_signer(a->keyref, ctx.key_options(a->passphrase));
      signers.push_back(signer.get());
    }
    ctx.render(write_envelope(a->out, suit::create_envelope(description, base_dir, signers)));
  });

  auto show_args = std::make_shared<FileArgs>();
  auto* show =
      manifest->add_subcommand("show", "Show a SUIT envelope (-o json: every element named as the draft names it)");
  show->add_option("FILE", show_args->file, "SUIT envelope")->required()->check(CLI::ExistingFile);
  show->callback([&ctx, a = show_args] {
    Bytes input = read_file(a->file);
    suit::Envelope envelope = suit::parse_envelope(input);
    if (ctx.format() == cli::OutputFormat::table)
      ctx.render(readable_view(a->file, envelope, input.size()));
    else
      ctx.render(suit::envelope_to_json(envelope));
  });

  auto encode_args = std::make_shared<FileArgs>();
  auto* encode =
      manifest->add_subcommand("encode", "Turn the JSON of `manifest show -o json` back into the envelope's bytes");
  encode->add_option("JSON", encode_args->file, "JSON file")->required()->check(CLI::ExistingFile);
  cli::add_output_file_option(encode, encode_args->out, "Where to write the envelope")->required();
  cli::add_force_flag(encode, encode_args->force);
  encode->callback([&ctx, a = encode_args] {
    cli::check_overwrite(a->out, a->force);
    // Parsing what was encoded checks it is an envelope kiln (and a device) would accept.
    suit::Envelope envelope =
        suit::parse_envelope(suit::encode_envelope(suit::envelope_from_json(read_json_file(a->file))));
    ctx.render(write_envelope(a->out, envelope));
  });

  auto verify_args = std::make_shared<FileArgs>();
  auto* verify =
      manifest->add_subcommand("verify", "Check digest, signatures, severable elements, images and sequence floor");
  verify->add_option("FILE", verify_args->file, "SUIT envelope")->required()->check(CLI::ExistingFile);
  verify
      ->add_option("--key", verify_args->keyrefs,
                   "Trusted public key (PEM file or pkcs11: URI); each must have signed (repeatable)")
      ->type_name("KEYREF");
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
    suit::VerifyOptions options;
    for (const auto& keyref : a->keyrefs)
      options.keys.push_back({keyref, load_public_key(keyref, ctx.key_options(a->passphrase))});
    options.allow_unsigned = a->allow_unsigned;
    for (const auto& image : a->images) options.images.emplace_back(image);
    options.min_sequence = a->min_sequence;
    suit::VerifyReport report = suit::verify_envelope(read_file(a->file), options);
    cli::Json signatures = cli::Json::array();
    for (const auto& s : report.signatures)
      signatures.push_back(
          {{"algorithm", s.algorithm}, {"key", s.key.empty() ? cli::Json(nullptr) : cli::Json(s.key)}});
    cli::Json images = cli::Json::array();
    for (const auto& i : report.images)
      images.push_back({{"path", i.path.string()}, {"digest", to_hex(i.digest.bytes)}, {"size", i.size}});
    ctx.render({{"file", a->file},
                {"verified", true},
                {"manifest-sequence-number", report.sequence_number},
                {"manifest-digest", suit::digest_algorithm_name(report.manifest_digest.algorithm) + ":" +
                                        to_hex(report.manifest_digest.bytes)},
                {"signatures", signatures},
                {"severable-checked", report.severable_checked},
                {"severed", report.severed},
                {"images", images}});
  });

  auto sign_args = std::make_shared<FileArgs>();
  auto* sign = manifest->add_subcommand("sign", "Add a COSE_Sign1 signature (several signers allowed)");
  sign->add_option("FILE", sign_args->file, "SUIT envelope")->required()->check(CLI::ExistingFile);
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
  sign->callback([&ctx, a = sign_args] {
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
      throw Error(ExitCode::usage, "manifest sign needs --key KEYREF, or --signature SIG --signer-public-key PUB");
    if (!a->vector_to_sign.empty() && a->out.empty())
      throw Error(ExitCode::usage, "--vector-to-sign needs -o FILE for the vector");
    if (!a->out.empty() && a->out != a->file) cli::check_overwrite(a->out, a->force);
    suit::Envelope envelope = suit::parse_envelope(read_file(a->file));
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
