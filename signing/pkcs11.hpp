// PKCS#11 keys (RFC 7512 URIs) through the module's raw C_Sign: keys never leave the token.
#pragma once

#include <memory>
#include <string>

#include "signing/key_ref.hpp"

namespace kiln {

std::unique_ptr<Signer> open_pkcs11_signer(const std::string& uri, const KeyOptions& options);
Bytes load_pkcs11_public_key(const std::string& uri, const KeyOptions& options);
// Creates a key pair of `type` on the token named by `uri` (token, object label, id).
Bytes generate_pkcs11_key(const std::string& uri, KeyType type, const KeyOptions& options);

}  // namespace kiln
