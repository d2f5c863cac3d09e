// New private keys: a PEM file written once (0600) and read back, or a key pair on a token.
#include "signing/key_generate.hpp"

#include <openssl/crypto.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/pkcs11.hpp"

namespace kiln {

GeneratedKey generate_key(const KeyGeneration& request, const KeyOptions& keys) {
  if (request.file.empty() == request.pkcs11_uri.empty())
    throw Error(ExitCode::usage, "key generate needs -o FILE or --pkcs11 URI", "say where the new key goes");
  if (!request.pkcs11_uri.empty()) {
    if (request.passphrase_given)
      throw Error(ExitCode::usage, "--passphrase-file/--passphrase-env protect PEM files, not token keys",
                  "the token's PIN protects --pkcs11 keys");
    if (request.force)
      throw Error(ExitCode::usage, "--force does not replace keys on a token",
                  "delete the old key first (pkcs11-tool --delete-object) or choose another object=/id=");
    Bytes spki = generate_pkcs11_key(request.pkcs11_uri, request.type, keys);
    return {request.pkcs11_uri, describe_public_key(spki), false, true};
  }
  std::string pem = generate_private_key_pem(request.type, keys.passphrase);
  write_file_atomic(request.file, as_bytes(pem), 0600,
                    request.force ? AtomicFile::Overwrite::allow : AtomicFile::Overwrite::refuse);
  OPENSSL_cleanse(pem.data(), pem.size());
  return {request.file, describe_public_key(load_public_key(request.file, keys)), keys.passphrase.has_value(), false};
}

}  // namespace kiln
