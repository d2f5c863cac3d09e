// RAII owners for OpenSSL handles used across the signing library.
#pragma once

#include <memory>
#include <string_view>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "signing/signer.hpp"

namespace kiln::ossl {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
  void operator()(SSL* p) const { SSL_free(p); }
  void operator()(SSL_SESSION* p) const { SSL_SESSION_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// The OpenSSL digest for a HashAlg.
inline const EVP_MD* md(HashAlg hash) {
  switch (hash) {
    case HashAlg::sha256: return EVP_sha256();
    case HashAlg::sha384: return EVP_sha384();
    case HashAlg::sha512: return EVP_sha512();
  }
  return EVP_sha256();
}

}  // namespace kiln::ossl

namespace kiln {
// Decodes a DER SubjectPublicKeyInfo and checks the key (EVP_PKEY_public_check: on the curve, in
// its group, not the point at infinity). Throws Error(verification_failed) for a malformed or
// invalid key: every public key kiln reads goes through here.
ossl::Ptr<EVP_PKEY> decode_public_key(ByteView spki_der);
// EVP_PKEY_check on a private key (scalar range, public half matches); throws
// Error(verification_failed) naming `what` (e.g. the file).
void check_private_key(EVP_PKEY* key, std::string_view what);
}  // namespace kiln
