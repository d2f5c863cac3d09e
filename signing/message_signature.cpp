// The message-signing convention over Signer::sign and verify_signature.
#include "signing/message_signature.hpp"

#include "core/error.hpp"

namespace kiln {

Bytes sign_message(const Signer& signer, ByteView message, HashAlg hash) {
  if (signer.type() == KeyType::ed25519) return signer.sign(message, hash);
  return signer.sign(digest(hash, message), hash);
}

bool verify_message(ByteView public_key_der, ByteView message, HashAlg hash, ByteView signature) {
  try {
    if (public_key_type(public_key_der) == KeyType::ed25519)
      return verify_signature(public_key_der, message, hash, signature);
    return verify_signature(public_key_der, digest(hash, message), hash, signature);
  } catch (const Error&) {
    return false;
  }
}

}  // namespace kiln
