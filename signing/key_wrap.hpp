// Wrapping a private key to a board's transport key, for injection at the factory (the station wraps, the
// board unwraps): the one implementation both ends share (docs/board-protocol.md, inject-key).
#pragma once

#include <string>

#include "core/bytes.hpp"

namespace kiln {

// Key wrapped to a board's transport key: ECDH P-256 (ephemeral key `ephemeral_public_key`),
// HKDF-SHA256(shared secret, salt = "", info = "kiln key wrap v1" || uid) -> AES-256-GCM key,
// AAD = uid, plaintext = the device private key as PKCS#8 DER.
struct WrappedKey {
  Bytes ephemeral_public_key;  // DER SPKI
  Bytes iv;                    // 12 bytes
  Bytes ciphertext;
  Bytes tag;                   // 16 bytes
};
WrappedKey wrap_device_key(ByteView transport_public_key, const std::string& uid, ByteView pkcs8_private_key);
// The board side. Throws Error(verification_failed) when the key does not decrypt.
Bytes unwrap_device_key(const WrappedKey& wrapped, ByteView transport_private_key_pkcs8, const std::string& uid);

}  // namespace kiln
