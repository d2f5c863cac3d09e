// Signing a message with one meaning for every key type, so that no caller branches on the key type:
// ECDSA and RSA sign the message's digest (made here with `hash`), Ed25519 signs the message itself (pure
// EdDSA; `hash` names the digest only for the other types). Signer::sign stays the primitive underneath
// (a digest for ECDSA/RSA, the message for Ed25519), for formats that define what is signed themselves.
#pragma once

#include "core/bytes.hpp"
#include "signing/signer.hpp"

namespace kiln {

// ECDSA: DER ECDSA-Sig-Value; RSA: RSA-PSS; Ed25519: the 64-byte signature.
Bytes sign_message(const Signer& signer, ByteView message, HashAlg hash);
// Whether `signature` is sign_message's over `message` by the key `public_key_der` (DER SPKI). False for a bad
// signature and for a key that cannot verify: it never throws.
bool verify_message(ByteView public_key_der, ByteView message, HashAlg hash, ByteView signature);

}  // namespace kiln
