// COSE_Sign1 (RFC 9052) with a detached payload, as SUIT uses it: ES256, ES384 and EdDSA via the Signer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/bytes.hpp"
#include "manifests/cbor.hpp"
#include "signing/signer.hpp"

namespace kiln::cose {

constexpr std::uint64_t sign1_tag = 18;
constexpr std::int64_t header_alg = 1;
constexpr std::int64_t header_kid = 4;
constexpr std::int64_t alg_es256 = -7;
constexpr std::int64_t alg_es384 = -35;
constexpr std::int64_t alg_eddsa = -8;

struct Sign1 {
  Bytes protected_header;  // the encoded protected header map (content of the bstr)
  cbor::Value unprotected = cbor::Value::map();
  std::optional<Bytes> payload;  // nullopt: detached (nil)
  Bytes signature;               // r||s for ECDSA, 64 bytes for Ed25519
};

// "ES256", "ES384", "EdDSA", or the number for algorithms kiln does not implement.
std::string algorithm_name(std::int64_t alg);
std::optional<std::int64_t> algorithm_from_name(const std::string& name);
// The COSE algorithm a key signs with; throws Error(usage) for RSA keys.
std::int64_t algorithm_for_key(KeyType type);
// The protected header's alg; throws Error(failure) if it is missing.
std::int64_t algorithm(const Sign1& sign1);

Sign1 parse_sign1(const cbor::Value& tagged, std::string_view what);
// For listings: "ES256" for a COSE_Sign1, "COSE tag 17" for other COSE structures, "no algorithm" when absent.
std::string block_algorithm_name(const cbor::Value& block);
cbor::Value to_value(const Sign1& sign1);

// Sig_structure = ["Signature1", protected, external_aad = h'', payload].
Bytes sig_structure(ByteView protected_header, ByteView payload);

// Signs `detached_payload` with `signer`; the result carries payload nil.
Sign1 sign_detached(const Signer& signer, ByteView detached_payload);

// True when the signature verifies with `public_key_der` over `detached_payload`. Throws Error(verification_failed)
// when the key cannot have made it (algorithm and key type disagree).
bool verify_detached(const Sign1& sign1, ByteView public_key_der, ByteView detached_payload);

}  // namespace kiln::cose
