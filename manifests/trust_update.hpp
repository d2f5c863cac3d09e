// Trust updates (docs/key-rotation.md): a signed statement that replaces a board's manifest key set and
// threshold and its boot-key hashes. Encoded as a SUIT envelope (tag 107) so that the same COSE signing
// (manifest sign: key files, pkcs11:, offline) and the same M-of-N count (suit::count_trusted_signatures)
// apply: manifest-sequence-number is the trust version, the component is ['kiln-trust'], and the payload
// is a bstr-wrapped map under the manifest's private key `trust_payload_key`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "manifests/suit_envelope.hpp"

namespace kiln::trust {

// SUIT_Manifest member (private use, negative) holding the payload map.
constexpr std::int64_t trust_payload_key = -257;
// Keys of the payload map.
namespace payload_key {
constexpr std::int64_t product = 1, manifest_keys = 2, manifest_threshold = 3, boot_key_hashes = 4, boot_keys = 5;
}
constexpr const char* component_name = "kiln-trust";

struct TrustUpdate {
  std::string product;                 // the product the boards belong to (its name on the service)
  std::uint64_t version = 0;           // > 0; boards take only a version above the installed one
  std::vector<Bytes> manifest_keys;    // DER SPKI (ECDSA P-256 or Ed25519), distinct, at least one
  std::uint64_t manifest_threshold = 0;  // 1..manifest_keys.size()
  std::vector<Bytes> boot_key_hashes;  // 32-byte SHA-256 of each MCUboot boot key, distinct, at least one
  // Optional: the DER SPKI of boot keys in the set (each one's MCUboot key hash is in boot_key_hashes). Boards
  // need only the hashes; the service checks releases against full keys (kiln trust create --boot-key).
  std::vector<Bytes> boot_keys;
};

// What a board (or the service, for a product) trusts now. product empty: not yet bound to a product
// (the first accepted update binds it).
struct TrustState {
  std::string product;
  std::uint64_t version = 0;
  std::vector<Bytes> manifest_keys;
  std::uint64_t manifest_threshold = 0;
  std::vector<Bytes> boot_key_hashes;
};

// Throws Error(usage) naming the first problem: empty product, version 0, an empty key or boot-key set, a key
// that is no P-256/Ed25519 public key, a key or hash listed twice, a hash that is not 32 bytes, or a threshold
// outside 1..N, a boot key whose hash is not in the set. `what` prefixes the message.
void check_update_fields(const TrustUpdate& update, const std::string& what);

// A new, unsigned trust update envelope (check_update_fields first).
suit::Envelope create(const TrustUpdate& update);

// Reads the payload of a trust update. Throws Error(verification_failed) for anything that is not a
// well-formed trust update (truncated, not CBOR, not a SUIT envelope, a firmware manifest, a payload with
// missing or mistyped fields); the digest over the manifest is checked too.
TrustUpdate parse(ByteView input);

// Whether `input` may replace `current`: well-formed, for current.product (when set), version above
// current.version, signed by at least current.manifest_threshold distinct keys of current.manifest_keys, and its
// sets valid. Never throws.
struct Decision {
  // Empty when accepted; else "malformed", "product", "version", "signature" or "sets".
  std::string failed_check;
  std::string reason;
  TrustUpdate update;  // filled when parsed
  bool ok() const { return failed_check.empty(); }
};
Decision check(ByteView input, const TrustState& current);

// The state after `update` was accepted.
TrustState apply(const TrustUpdate& update);

// SHA-256 of the key as MCUboot hashes it (the KEYHASH TLV).
Bytes boot_key_hash(ByteView der);

// The short fingerprint kiln shows for a key (first 16 hex digits of the SHA-256 of its DER).
std::string key_fingerprint(ByteView der);

}  // namespace kiln::trust
