// PKCS#11 signer: placeholder until the raw-module implementation lands.
#include "signing/pkcs11.hpp"

#include "core/error.hpp"

namespace kiln {

std::unique_ptr<Signer> open_pkcs11_signer(const std::string&, const KeyOptions&) {
  throw Error(ExitCode::failure, "PKCS#11 keys are not supported yet");
}
Bytes load_pkcs11_public_key(const std::string&, const KeyOptions&) {
  throw Error(ExitCode::failure, "PKCS#11 keys are not supported yet");
}
Bytes generate_pkcs11_key(const std::string&, KeyType, const KeyOptions&) {
  throw Error(ExitCode::failure, "PKCS#11 keys are not supported yet");
}

}  // namespace kiln
