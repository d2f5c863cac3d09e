// KEYREF dispatch: pkcs11: URIs go to the token, anything else is a PEM file path.
#include "signing/key_ref.hpp"

#include "signing/file_key.hpp"
#include "signing/pkcs11.hpp"
#include "signing/pkcs11_uri.hpp"

namespace kiln {

bool is_pkcs11_uri(std::string_view keyref) { return keyref.starts_with("pkcs11:"); }

std::string keyref_display_name(const std::string& keyref) {
  return is_pkcs11_uri(keyref) ? parse_pkcs11_uri(keyref).description() : keyref;
}

std::unique_ptr<Signer> open_signer(const std::string& keyref, const KeyOptions& options) {
  if (is_pkcs11_uri(keyref)) {
    auto signer = open_pkcs11_signer(keyref, options);
    check_public_key(signer->public_key_der());  // the token's public half, as every key kiln reads
    return signer;
  }
  return load_file_signer(keyref, options.passphrase);
}

Bytes load_public_key(const std::string& keyref, const KeyOptions& options) {
  if (is_pkcs11_uri(keyref)) {
    Bytes spki = load_pkcs11_public_key(keyref, options);
    check_public_key(spki);
    return spki;
  }
  return load_public_key_file(keyref, options.passphrase);
}

}  // namespace kiln
