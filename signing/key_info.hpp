// Facts about a public key that users compare across tools: type, fingerprint, MCUboot key hash.
#pragma once

#include <string>

#include "signing/signer.hpp"

namespace kiln {

// The bytes MCUboot (and imgtool) embed and hash for a key: DER SubjectPublicKeyInfo for EC and
// Ed25519 keys, DER PKCS#1 RSAPublicKey for RSA keys.
Bytes mcuboot_public_key_bytes(ByteView spki_der);

struct KeyInfo {
  KeyType type;
  int bits;
  std::string fingerprint;       // SHA-256 of the DER SubjectPublicKeyInfo, hex
  std::string mcuboot_key_hash;  // SHA-256 of mcuboot_public_key_bytes, hex (the KEYHASH TLV)
};

KeyInfo describe_public_key(ByteView spki_der);

}  // namespace kiln
