// Private keys in PKCS#8 PEM files (optionally passphrase-encrypted): generate, load, sign.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

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

}  // namespace kiln
