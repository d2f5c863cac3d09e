// `kiln key generate`: a new private key, as a PKCS#8 PEM file (mode 0600, passphrase-encrypted when one is
// given) or as a key pair made on a PKCS#11 token.
#pragma once

#include <string>

#include "signing/key_info.hpp"
#include "signing/key_ref.hpp"

namespace kiln {

struct KeyGeneration {
  KeyType type = KeyType::ecdsa_p256;
  std::string file;              // a PEM file (-o FILE), or
  std::string pkcs11_uri;        // a key pair on this token (--pkcs11 URI)
  bool force = false;            // replace an existing file; refused for a token key
  bool passphrase_given = false; // --passphrase-file/--passphrase-env named; refused for a token key
};

struct GeneratedKey {
  std::string keyref;  // the file, or the token URI
  KeyInfo info;        // the new key's public half
  bool encrypted = false;
  bool on_token = false;
};

// Makes the key. `keys.passphrase` encrypts a PEM file; `keys` opens the token. Usage errors (exit 2) name the
// option: neither or both of file and URI, --force or a passphrase with a token key. An existing file without
// force is Error(conflict). The PEM text is wiped from memory once written.
GeneratedKey generate_key(const KeyGeneration& request, const KeyOptions& keys);

}  // namespace kiln
