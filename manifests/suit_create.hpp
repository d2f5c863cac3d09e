// Building SUIT envelopes: from the reference generator's JSON description (exampleN.json) or from options.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "manifests/suit_envelope.hpp"
#include "signing/uuid.hpp"  // uuid5

namespace kiln::suit {

// The draft's UUIDv5 derivations: vendor-id = UUID5(DNS namespace, domain); class-id = UUID5(vendor-id, name).
Bytes vendor_id_from_domain(std::string_view domain);
Bytes class_id_from_name(ByteView vendor_id, std::string_view name);

// Compiles a description in the schema of suit-tool's input (the draft's exampleN.json: "components" with
// install-id, install-digest or file, install-size, uri, vendor-id, class-id, slot, bootable, loadable,
// download-id, load-id, ...; "manifest-version", "manifest-sequence-number", "reference-uri",
// "description", "severable") into an unsigned envelope, with the commands the draft's examples use.
// Relative "file" paths resolve against `base_dir`. Throws Error(failure) naming the bad field.
Envelope compile_description(const nlohmann::ordered_json& description, const std::filesystem::path& base_dir = {});

// compile_description, then one COSE_Sign1 per signer (none: an unsigned envelope).
Envelope create_envelope(const nlohmann::ordered_json& description, const std::filesystem::path& base_dir,
                         const std::vector<const Signer*>& signers);

// `kiln manifest create` options for the common case: one install component per signed image file.
struct ComponentOptions {
  std::filesystem::path image;
  std::string uri;  // empty: no fetch (the image is already in place)
};
struct CreateOptions {
  std::vector<ComponentOptions> components;
  Bytes vendor_id;  // 16 bytes
  Bytes class_id;   // 16 bytes; empty: none
  std::uint64_t sequence_number = 0;
  std::string reference_uri;
  std::string manifest_description, update_description;
  std::string vendor_name, model_name, vendor_domain, component_description;
  bool severable = false;  // carry install and text in the envelope, their digests in the manifest
};

// The same description compile_description takes, built from options (the first component is bootable).
nlohmann::ordered_json describe(const CreateOptions& options);

// `kiln manifest create` as written on the command line: identities as UUIDs or names, the sequence as
// text, one URI per component or none. describe_request resolves them (UUIDv5 from names, "auto" as
// seconds since the epoch at `now`) and describes the envelope; usage errors (exit 2) name the option.
struct CreateRequest {
  std::vector<std::string> components, uris;
  std::string vendor_id, vendor_domain, class_id, class_name;
  std::string sequence;  // N or auto
  CreateOptions options;  // the texts, reference-uri and severable; components and identity are filled in
};
nlohmann::ordered_json describe_request(CreateRequest request, std::uint64_t now_seconds);

// --sequence: an unsigned decimal number, or "auto" (now_seconds, so every later build gets a larger one).
std::uint64_t parse_sequence_number(const std::string& text, std::uint64_t now_seconds);

}  // namespace kiln::suit
