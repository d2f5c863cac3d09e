// PKCS#11 keys (RFC 7512 URIs) through the module's raw C_Sign: keys never leave the token.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "signing/key_ref.hpp"

namespace kiln {

std::unique_ptr<Signer> open_pkcs11_signer(const std::string& uri, const KeyOptions& options);
Bytes load_pkcs11_public_key(const std::string& uri, const KeyOptions& options);
// A private image-encryption key on a token (ECIES-P256, ECIES-X25519 or RSA-2048 for MCUboot images): the
// key agreement and the RSA decryption run on the token; the private key never leaves it.
class Pkcs11DecryptionKey {
 public:
  virtual ~Pkcs11DecryptionKey() = default;
  virtual Bytes public_key_der() const = 0;
  virtual std::string description() const = 0;
  // CKM_ECDH1_DERIVE (no KDF) with the peer's raw public value (an uncompressed P-256 point or 32 X25519
  // bytes): the raw shared secret of `secret_size` bytes.
  virtual Bytes derive(ByteView peer_public, std::size_t secret_size) const = 0;
  // CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA256; nullopt when the ciphertext does not decrypt.
  virtual std::optional<Bytes> decrypt_rsa_oaep_sha256(ByteView ciphertext) const = 0;
};
std::unique_ptr<Pkcs11DecryptionKey> open_pkcs11_decryption_key(const std::string& uri, const KeyOptions& options);

// Creates a key pair of `type` on the token named by `uri` (token, object label, id).
Bytes generate_pkcs11_key(const std::string& uri, KeyType type, const KeyOptions& options);

}  // namespace kiln
