// The one Signer interface behind every signature kiln makes: images, manifests, CA, ledger, tokens.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/bytes.hpp"

namespace kiln {

enum class KeyType { ecdsa_p256, ecdsa_p384, ed25519, rsa_2048, rsa_3072 };
enum class HashAlg { sha256, sha384, sha512 };

// "ecdsa-p256", "ed25519", ... (the --type names); parse throws Error(usage) listing the valid names.
std::string_view key_type_name(KeyType type);
KeyType parse_key_type(std::string_view name);
std::string_view hash_name(HashAlg hash);
std::size_t hash_size(HashAlg hash);
bool is_ecdsa(KeyType type);
bool is_rsa(KeyType type);

// A private key that can sign but may never reveal itself (file key or PKCS#11 token object).
class Signer {
 public:
  virtual ~Signer() = default;
  virtual KeyType type() const = 0;
  // DER SubjectPublicKeyInfo of the public half.
  virtual Bytes public_key_der() const = 0;
  // Human-readable origin for messages, never containing a secret ("ec256.pem", "pkcs11:token=T;object=k").
  virtual std::string description() const = 0;

  // ECDSA: `input` is a digest made with `hash`; returns a DER ECDSA-Sig-Value.
  // RSA: `input` is a digest made with `hash`; returns an RSA-PSS signature (salt = digest length,
  //      MGF1 with the same hash), as MCUboot verifies.
  // Ed25519: `input` is the message itself (pure EdDSA); `hash` is ignored.
  virtual Bytes sign(ByteView input, HashAlg hash) const = 0;
};

// Verifies a signature made by Signer::sign against a DER SubjectPublicKeyInfo. Returns false on a
// bad signature; throws Error only for unusable keys.
bool verify_signature(ByteView public_key_der, ByteView input, HashAlg hash, ByteView signature);

// Key type of a DER SubjectPublicKeyInfo; throws Error(verification_failed) for a malformed or
// invalid key (point at infinity, off the curve), Error(failure) for a type kiln does not support.
KeyType public_key_type(ByteView public_key_der);
// public_key_type without the answer: throws unless the key is valid and supported.
void check_public_key(ByteView public_key_der);

// SHA-2 digests (OpenSSL EVP).
Bytes digest(HashAlg hash, ByteView data);

// Streaming digest for large inputs.
class Hasher {
 public:
  explicit Hasher(HashAlg hash);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(ByteView data);
  Bytes finish();
  HashAlg alg() const { return alg_; }

 private:
  HashAlg alg_;
  void* ctx_;  // EVP_MD_CTX*
};

// ECDSA signature form conversions: DER ECDSA-Sig-Value <-> fixed-width r||s (COSE, PKCS#11).
Bytes ecdsa_der_to_raw(ByteView der, std::size_t coordinate_size);
Bytes ecdsa_raw_to_der(ByteView raw);

}  // namespace kiln
