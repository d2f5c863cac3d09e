// kiln manifest: create, show and encode SUIT envelopes (draft-ietf-suit-manifest-37); verify, sign and
// sever are in manifest_sign.cpp.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>

#include "cli/context.hpp"
#include "cli/manifest_views.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "commands/manifest_files.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_json.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {
namespace {

struct CreateArgs {
  suit::CreateRequest request;
  std::string from, out, keyref;
  bool unsigned_envelope = false, force = false;
  cli::SecretSource passphrase;
};

std::uint64_t now_seconds() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

void add_manifest(CLI::App& app, cli::Context& ctx) {
  auto* manifest = app.add_subcommand("manifest", "Create, inspect, verify and sign SUIT update manifests");
  manifest->require_subcommand(1);

  auto create_args = std::make_shared<CreateArgs>();
  auto* create =
      manifest->add_subcommand("create", "Create a SUIT envelope over signed images or from a JSON description");
  create
      ->add_option("--component", create_args->request.components,
                   "Signed image file to install (repeatable; digest and size computed)")
      ->check(CLI::ExistingFile);
  create
      ->add_option("--uri", create_args->request.uris,
                   "Where the device fetches each --component, in the same order (repeatable)")
      ->type_name("URI");
  auto* vendor_id = create->add_option("--vendor-id", create_args->request.vendor_id, "Vendor UUID")->type_name("UUID");
  create->add_option("--vendor-domain", create_args->request.vendor_domain, "Vendor domain: vendor-id = UUID5(DNS, domain)")
      ->excludes(vendor_id);
  auto* class_id = create->add_option("--class-id", create_args->request.class_id, "Device class UUID")->type_name("UUID");
  create->add_option("--class-name", create_args->request.class_name, "Class name: class-id = UUID5(vendor-id, name)")
      ->excludes(class_id);
  create
      ->add_option("--sequence", create_args->request.sequence,
                   "manifest-sequence-number: N, or auto (seconds since the epoch)")
      ->type_name("N|auto");
  create->add_option("--reference-uri", create_args->request.options.reference_uri, "reference-uri of the manifest");
  create->add_option("--description", create_args->request.options.manifest_description, "Text: manifest-description");
  create->add_option("--update-description", create_args->request.options.update_description, "Text: update-description");
  create->add_option("--vendor-name", create_args->request.options.vendor_name, "Text: vendor-name of the first component");
  create->add_option("--model-name", create_args->request.options.model_name, "Text: model-name of the first component");
  create->add_option("--component-description", create_args->request.options.component_description,
                     "Text: component-description");
  create->add_flag("--severable", create_args->request.options.severable,
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
      description = suit::describe_request(a->request, now_seconds());
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
      ctx.render(cli::envelope_readable_view(a->file, envelope, input.size()));
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

  add_manifest_signing(manifest, ctx);
}

}  // namespace kiln::commands
