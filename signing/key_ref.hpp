// KEYREF: a PEM file path or an RFC 7512 pkcs11: URI, resolved to a Signer or a public key.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "signing/signer.hpp"

namespace kiln {

// Where secrets for opening a key come from. Never logged.
struct KeyOptions {
  std::optional<std::string> passphrase;    // for encrypted PEM files
  std::optional<std::string> pkcs11_module; // --pkcs11-module / KILN_PKCS11_MODULE / config
  std::optional<std::string> pkcs11_pin;    // KILN_PKCS11_PIN (URI pin-value/pin-source win)
};

bool is_pkcs11_uri(std::string_view keyref);
// How output names a key: a PEM path as given, a pkcs11: URI without its PIN.
std::string keyref_display_name(const std::string& keyref);

// Opens the private key named by `keyref`.
std::unique_ptr<Signer> open_signer(const std::string& keyref, const KeyOptions& options = {});

// The public key named by `keyref`: a private or public PEM file, or a pkcs11: URI. DER SPKI.
Bytes load_public_key(const std::string& keyref, const KeyOptions& options = {});

}  // namespace kiln
