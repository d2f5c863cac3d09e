// Board-side update verification: each failed check comes back with its own name and reason.
#include "emulator/update_check.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>

#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/image_delivery.hpp"
#include "signing/key_info.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/signer.hpp"

namespace kiln::emu {
namespace {

UpdateCheckResult refuse(UpdateCheckResult result, std::string check, std::string reason) {
  result.failed_check = std::move(check);
  result.reason = std::move(reason);
  return result;
}

std::string short_hex(const Bytes& b) { return to_hex(b).substr(0, 16); }

// The MCUboot check as a board with a hardware key (MCUBOOT_HW_KEY) does it: the image names its
// key (PUBKEY TLV, or KEYHASH); the key's hash must be the installed boot-key hash; the signature
// must verify with that key. With KEYHASH only, the board needs the full key from elsewhere: the
// manifest keys when one is the same key (its hash matches).
std::optional<std::string> check_mcuboot(const std::filesystem::path& image, const std::vector<Bytes>& boot_key_hashes,
                                         const std::vector<Bytes>& manifest_keys,
                                         const mcuboot::ContentKeyOpener* decrypt) {
  mcuboot::ImageReport plain = mcuboot::inspect_image(image, std::nullopt, {}, decrypt);
  if (plain.encryption_tlv && !decrypt && !plain.hash_ok)
    return fmt::format("the image is encrypted (content key in TLV {:#04x}) and this board holds no image-encryption key",
                       *plain.encryption_tlv);
  if (!plain.hash_ok) return plain.failure;
  if (!plain.embedded_key_hash) return std::string("the image names no signing key (no KEYHASH or PUBKEY TLV)");
  const Bytes& boot_key_hash = *plain.embedded_key_hash;
  if (std::find(boot_key_hashes.begin(), boot_key_hashes.end(), boot_key_hash) == boot_key_hashes.end()) {
    std::string trusted;
    for (const auto& hash : boot_key_hashes) trusted += (trusted.empty() ? "" : ", ") + to_hex(hash);
    return fmt::format("the image was signed by the key with hash {}, the board trusts boot key hash{} {}",
                       to_hex(boot_key_hash), boot_key_hashes.size() == 1 ? "" : "es", trusted);
  }
  std::optional<Bytes> key;
  for (const auto& e : plain.image.unprotected_area.entries)
    if (e.type == mcuboot::tlv::pubkey) key = e.value;
  for (const auto& manifest_key : manifest_keys)
    if (!key && digest(HashAlg::sha256, mcuboot_public_key_bytes(manifest_key)) == boot_key_hash) key = manifest_key;
  if (!key)
    return std::string(
        "the image carries only the key hash and the board holds no public key with that hash "
        "(sign with --public-key-format full)");
  mcuboot::ImageReport report = mcuboot::inspect_image(image, key, {}, decrypt);
  if (!report.ok()) return report.failure;
  return std::nullopt;
}

}  // namespace

bool acceptable_manifest_key(ByteView der) {
  try {
    KeyType type = public_key_type(der);
    return type == KeyType::ecdsa_p256 || type == KeyType::ed25519;
  } catch (const Error&) {
    return false;
  }
}

UpdateCheckResult check_update(const UpdateCheckInput& input) {
  UpdateCheckResult result;
  result.envelope_digest = digest(HashAlg::sha256, input.envelope);
  if (input.manifest_keys.empty())
    return refuse(result, "no_manifest_key", "the board has no manifest key installed");

  // 1. Envelope structure and signatures by the installed manifest keys: M of N distinct ones.
  suit::Envelope envelope;
  try {
    envelope = suit::parse_envelope(input.envelope);
  } catch (const Error& e) {
    return refuse(result, "envelope", fmt::format("not a valid SUIT envelope: {}", e.what()));
  }
  try {
    suit::VerifyOptions options;
    for (std::size_t i = 0; i < input.manifest_keys.size(); ++i)
      options.keys.push_back({fmt::format("manifest key {} (64:3)", i + 1), input.manifest_keys[i]});
    options.threshold = input.manifest_threshold;
    suit::VerifyReport report = suit::verify_envelope(input.envelope, options);
    result.sequence = report.sequence_number;
  } catch (const Error& e) {
    std::string what = e.what();
    bool malformed = what.find("not a valid SUIT envelope") != std::string::npos ||
                     what.find("severable") != std::string::npos;
    return refuse(result, malformed ? "envelope" : "signature", what);
  }

  // 2. Anti-rollback.
  bool reverting = input.revert_digest && *input.revert_digest == result.envelope_digest;
  bool sequence_ok = input.allow_same_sequence ? result.sequence >= input.installed_sequence
                                               : result.sequence > input.installed_sequence;
  if (!sequence_ok && !reverting)
    return refuse(result, "sequence",
                  fmt::format("manifest sequence number {} is not {} the installed {}", result.sequence,
                              input.allow_same_sequence ? "at least" : "above", input.installed_sequence));

  // 3. The image is the one the manifest declares.
  std::vector<suit::DeclaredImage> declared;
  try {
    declared = suit::declared_images(envelope);
  } catch (const Error& e) {
    return refuse(result, "envelope", fmt::format("the manifest's image parameters are malformed: {}", e.what()));
  }
  if (declared.empty()) return refuse(result, "digest", "the manifest declares no image digest");
  std::map<std::int64_t, std::unique_ptr<Hasher>> hashers;
  for (const auto& d : declared)
    if (auto hash = suit::digest_hash(d.digest.algorithm); hash && !hashers.count(d.digest.algorithm))
      hashers.emplace(d.digest.algorithm, std::make_unique<Hasher>(*hash));
  std::uint64_t size = 0;
  try {
    ChunkReader reader(input.image);
    for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next()) {
      for (auto& [alg, hasher] : hashers) hasher->update(chunk);
      size += chunk.size();
    }
  } catch (const Error& e) {
    return refuse(result, "digest", fmt::format("cannot read the image: {}", e.what()));
  }
  std::map<std::int64_t, Bytes> digests;
  for (auto& [alg, hasher] : hashers) digests[alg] = hasher->finish();
  // An encrypted image also matches by its digest without the content-key TLV: the same for every device's
  // wrap. One the bootloader already decrypted in its slot matches only that way (its bytes are not what was
  // delivered).
  std::optional<mcuboot::KeylessDigest> keyless;
  try {
    keyless = mcuboot::keyless_digest(input.image, input.body_decrypted ? input.decrypt : nullptr);
  } catch (const Error&) {
    // Not an encrypted MCUboot image the board can read: only the file's digest counts.
  }
  if (keyless && input.body_decrypted) digests.clear();
  const suit::DeclaredImage* match = nullptr;
  for (const auto& d : declared)
    if (digests.count(d.digest.algorithm) && digests[d.digest.algorithm] == d.digest.bytes) match = &d;
  if (!match && keyless)
    for (const auto& d : declared)
      if (d.digest.algorithm == suit::digest_sha256 && d.digest.bytes == keyless->sha256) {
        match = &d;
        size = keyless->size;
      }
  if (!match)
    return refuse(result, "digest",
                  fmt::format("the image ({} bytes, digest {}…) matches no image digest in the manifest (declared {}…)",
                              size, digests.empty() ? std::string("?") : short_hex(digests.begin()->second),
                              short_hex(declared.front().digest.bytes)));
  if (match->size && *match->size != size)
    return refuse(result, "size",
                  fmt::format("the image is {} bytes, the manifest says {}", size, *match->size));

  // 4. MCUboot signature against the boot-key hash.
  if (!input.boot_key_hashes.empty()) {
    std::optional<std::string> failure;
    try {
      failure = check_mcuboot(input.image, input.boot_key_hashes, input.manifest_keys,
                              input.body_decrypted ? nullptr : input.decrypt);
    } catch (const Error& e) {
      failure = fmt::format("not a valid MCUboot image: {}", e.what());
    }
    if (failure) return refuse(result, "mcuboot", "MCUboot: " + *failure);
  }
  return result;
}

}  // namespace kiln::emu
