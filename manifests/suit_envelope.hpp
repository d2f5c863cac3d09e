// The SUIT envelope (draft-ietf-suit-manifest-37): member keys, digests, parse/encode, sign and sever.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "manifests/cbor.hpp"
#include "manifests/cose.hpp"
#include "signing/signer.hpp"

namespace kiln::suit {

constexpr std::uint64_t envelope_tag = 107;

// Keys of SUIT_Envelope, SUIT_Manifest and SUIT_Common (draft-37 section 8 and its IANA tables).
namespace envelope_key {
constexpr std::int64_t authentication_wrapper = 2, manifest = 3;
}
namespace manifest_key {
constexpr std::int64_t version = 1, sequence_number = 2, common = 3, reference_uri = 4, validate = 7, load = 8,
                       invoke = 9, payload_fetch = 16, install = 20, text = 23;
}
namespace common_key {
constexpr std::int64_t components = 2, shared_sequence = 4;
}
// Members that may be severed: held in the manifest as a digest, carried in the envelope.
constexpr std::int64_t severable_keys[] = {manifest_key::payload_fetch, manifest_key::install, manifest_key::text};

// COSE algorithm ids of SUIT_Digest.
constexpr std::int64_t digest_sha256 = -16, digest_sha384 = -43, digest_sha512 = -44;

struct Digest {
  std::int64_t algorithm = digest_sha256;
  Bytes bytes;
  bool operator==(const Digest&) const = default;
};

std::optional<HashAlg> digest_hash(std::int64_t algorithm);
std::string digest_algorithm_name(std::int64_t algorithm);  // "sha256", or the number
Digest parse_digest(const cbor::Value& value, std::string_view what);
cbor::Value digest_value(const Digest& digest);
// SUIT_Digest over `data`; throws Error for algorithms kiln cannot compute.
Digest compute_digest(std::int64_t algorithm, ByteView data);
// Digest of a bstr-wrapped element: over its CBOR byte-string header and content, as the draft requires.
Digest compute_wrapped_digest(std::int64_t algorithm, ByteView content);

struct AuthenticationWrapper {
  Bytes digest_encoded;  // the SUIT_Digest as encoded in the envelope: the COSE detached payload
  Digest digest;
  std::vector<cbor::Value> authentication_blocks;  // decoded COSE items (COSE_Sign1 tag 18, ...)
};

// A SUIT envelope (SUIT_Envelope_Tagged): its map members in encoded order. Bstr-wrapped members keep their bytes, so
// that what was signed stays exactly what is written back.
struct Envelope {
  cbor::Value members = cbor::Value::map();
};

// Decodes and validates the whole envelope structure; throws Error(failure) with offset and reason.
Envelope parse_envelope(ByteView input);
Bytes encode_envelope(const Envelope& envelope);

AuthenticationWrapper authentication(const Envelope& envelope);
void set_authentication(Envelope& envelope, const AuthenticationWrapper& wrapper);
// The encoded SUIT_Manifest (content of the manifest bstr).
const Bytes& manifest_bytes(const Envelope& envelope);
cbor::Value manifest(const Envelope& envelope);
// Replaces the manifest and resets the authentication wrapper to its digest only (no signatures).
void set_manifest(Envelope& envelope, const cbor::Value& manifest_value);
std::uint64_t sequence_number(const cbor::Value& manifest_value);

// Adds a COSE_Sign1 made by `signer` over the manifest digest. Throws Error(verification_failed) if the
// recorded digest does not match the manifest (signing a corrupt envelope helps nobody).
cose::Sign1 add_signature(Envelope& envelope, const Signer& signer);

// Offline signing of an envelope: what the signer with `public_key_der` must sign for a COSE_Sign1 over the
// manifest digest. `digest` (ES256/ES384): SHA-256/384 of the Sig_structure; otherwise the Sig_structure
// itself (EdDSA signs it whole; `openssl dgst -sign` hashes it). Error(usage) for a digest with an Ed25519 key.
Bytes signature_vector(const Envelope& envelope, ByteView public_key_der, bool digest);
// Adds a COSE_Sign1 whose signature was made elsewhere (DER or r||s for ECDSA) after checking it verifies
// with `public_key_der`: Error(verification_failed), envelope unchanged, when it does not.
cose::Sign1 add_external_signature(Envelope& envelope, ByteView public_key_der, ByteView signature);

// Removes every severable element the manifest holds by digest; returns the draft names of those removed.
std::vector<std::string> sever(Envelope& envelope);

std::string severable_name(std::int64_t key);

}  // namespace kiln::suit
