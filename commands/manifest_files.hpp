// What the manifest verbs share: the arguments of the verbs that take one envelope file, reading a JSON
// description, and writing an envelope with the summary every writing verb renders.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "cli/manifest_views.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_json.hpp"

namespace kiln::commands {

struct FileArgs {
  std::string file, out, signature, signer_public_key, vector_to_sign;
  std::vector<std::string> keyrefs;
  std::vector<std::string> images;
  std::optional<std::uint64_t> min_sequence;
  std::optional<std::size_t> threshold;
  bool allow_unsigned = false, force = false;
  cli::SecretSource passphrase;
};

// Encodes and atomically writes the envelope; returns the summary every writing verb renders.
inline cli::Json write_envelope(const std::string& path, const suit::Envelope& envelope) {
  Bytes encoded = suit::encode_envelope(envelope);
  write_file_atomic(path, encoded);
  return cli::envelope_summary(path, envelope, encoded.size());
}

inline nlohmann::ordered_json read_json_file(const std::string& path) {
  auto json = nlohmann::ordered_json::parse(read_text_file(path), nullptr, false);
  if (json.is_discarded())
    throw Error(ExitCode::failure, fmt::format("{} is not valid JSON", path), "check the file's syntax");
  return json;
}

// `NOUN sign`: adds COSE_Sign1 signatures to a SUIT envelope from key files, pkcs11: URIs or an offline signer
// (--vector-to-sign, then --signature). `check` (may be null) refuses an input that is not what NOUN signs.
// Shared by `manifest sign` and `trust sign` (trust updates are SUIT envelopes).
CLI::App* add_envelope_sign(CLI::App* noun, cli::Context& ctx, const std::string& description,
                            const std::string& file_help, void (*check)(ByteView input));

// manifest verify, sign and sever (manifest_sign.cpp), added to the manifest noun by add_manifest.
void add_manifest_signing(CLI::App* manifest, cli::Context& ctx);

}  // namespace kiln::commands
