// What a board checks before it accepts firmware described by a SUIT envelope: the envelope's COSE
// signatures against the installed manifest keys (M of N), the sequence number against the installed one
// (anti-rollback), the image's digest and size against the manifest, and the MCUboot signature
// against the installed boot-key hashes. Used by 64:8 (install manifest) and the update agent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "signing/image_crypto.hpp"

namespace kiln::emu {

struct UpdateCheckInput {
  ByteView envelope;                   // SUIT envelope bytes
  // DER SPKI of the keys the board trusts; at least `manifest_threshold` distinct ones must have signed the
  // envelope (suit::count_trusted_signatures). Empty: refused (no_manifest_key).
  std::vector<Bytes> manifest_keys;
  std::size_t manifest_threshold = 1;
  std::filesystem::path image;         // the image the manifest must describe
  // Not empty: the image's MCUboot signature must be by a key whose hash is one of these (the board's boot-key
  // set: more than one while a boot key is rotated, docs/key-rotation.md).
  std::vector<Bytes> boot_key_hashes;
  std::uint64_t installed_sequence = 0;
  bool allow_same_sequence = false;   // 64:8 accepts the installed sequence again; the agent wants a higher one
  std::optional<Bytes> revert_digest;  // a revert: the envelope whose SHA-256 is this may go below the installed sequence
  // The board's image-encryption key: an encrypted image is decrypted to check its hash and signature (the
  // bootloader's view), and may match the manifest by its digest without the content-key TLV
  // (docs/encrypted-delivery.md). None: an encrypted image is refused ("mcuboot").
  const mcuboot::ContentKeyOpener* decrypt = nullptr;
  // The image's body was already decrypted in its slot (the running image): it is encrypted again on
  // the fly for the manifest's digest, and its hash is checked as stored.
  bool body_decrypted = false;
};

struct UpdateCheckResult {
  // Empty when every check passed; else which one failed: "no_manifest_key", "envelope" (malformed),
  // "signature", "sequence", "digest", "size", "mcuboot".
  std::string failed_check;
  std::string reason;  // a sentence saying why
  std::uint64_t sequence = 0;
  Bytes envelope_digest;  // SHA-256 of the envelope bytes
  bool ok() const { return failed_check.empty(); }
};

// Never throws for bad input: every failure comes back as a result with the reason.
UpdateCheckResult check_update(const UpdateCheckInput& input);

// True when `der` is a DER SPKI of a key a board accepts as manifest key (ECDSA P-256 or Ed25519).
bool acceptable_manifest_key(ByteView der);

}  // namespace kiln::emu
