// Private keys in PKCS#8 PEM files (optionally passphrase-encrypted): generate, load, sign.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln {

// A new private key as PKCS#8 PEM; encrypted with AES-256-CBC (scrypt... PBKDF2) when passphrase is set.
std::string generate_private_key_pem(KeyType type, const std::optional<std::string>& passphrase);

// Loads a private key PEM. Throws Error(authentication) for a wrong or missing passphrase,
// Error(failure) for a file that holds no usable key.
std::unique_ptr<Signer> load_file_signer(const std::filesystem::path& path,
                                         const std::optional<std::string>& passphrase);

// Public key (DER SPKI) from a PEM holding a private key, a public key or a certificate.
Bytes load_public_key_file(const std::filesystem::path& path, const std::optional<std::string>& passphrase);

// The private key in a PEM file, checked (EVP_PKEY_check), of any type OpenSSL reads (X25519 too).
ossl::Ptr<EVP_PKEY> load_private_key_file(const std::filesystem::path& path,
                                          const std::optional<std::string>& passphrase);
// load_public_key_file without the check that the key is one kiln signs with (X25519, RSA-OAEP keys).
Bytes load_any_public_key_file(const std::filesystem::path& path, const std::optional<std::string>& passphrase);

}  // namespace kiln
