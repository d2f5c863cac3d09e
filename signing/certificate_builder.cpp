// Shared X.509 v3 certificate construction on OpenSSL.
#include "signing/certificate_builder.hpp"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/key_info.hpp"
#include "signing/message_signature.hpp"

namespace kiln {

ossl::Ptr<X509> start_certificate(EVP_PKEY* subject_key, const std::string& organization,
                                  const std::string& common_name, X509* issuer, long validity_seconds) {
  ossl::Ptr<X509> cert(X509_new());
  unsigned char serial[16];
  if (!cert || RAND_bytes(serial, sizeof serial) != 1)
    throw Error(ExitCode::failure, "cannot start a certificate").with_detail(openssl_errors());
  X509_set_version(cert.get(), 2);
  serial[0] &= 0x7f;  // a positive INTEGER
  ossl::Ptr<BIGNUM> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), validity_seconds);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(organization.c_str()),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(cert.get(), subject_key);
  return cert;
}

void add_x509_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  bool ok = ext && X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  if (!ok) throw Error(ExitCode::failure, "cannot add a certificate extension").with_detail(openssl_errors());
}

std::string certificate_pem(X509* cert) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1)
    throw Error(ExitCode::failure, "cannot write a certificate as PEM").with_detail(openssl_errors());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

CertificateScheme certificate_scheme(const Signer& signer, std::string_view why_not) {
  switch (signer.type()) {
    case KeyType::ecdsa_p256: return {NID_ecdsa_with_SHA256, HashAlg::sha256};
    case KeyType::ecdsa_p384: return {NID_ecdsa_with_SHA384, HashAlg::sha384};
    case KeyType::ed25519: return {NID_ED25519, HashAlg::sha256};
    default:
      throw Error(ExitCode::usage,
                  fmt::format("{} is an {} key: {}", signer.description(), key_type_name(signer.type()), why_not));
  }
}

void sign_certificate(X509* cert, const Signer& signer, CertificateScheme scheme) {
  // The algorithm appears twice (inside the TBSCertificate and beside the signature); OpenSSL exposes both
  // only as const, so they are set in place, then the re-encoded TBS is signed through the Signer.
  const ASN1_BIT_STRING* signature_const = nullptr;
  const X509_ALGOR* outer_const = nullptr;
  X509_get0_signature(&signature_const, &outer_const, cert);
  for (auto* algorithm : {const_cast<X509_ALGOR*>(X509_get0_tbs_sigalg(cert)), const_cast<X509_ALGOR*>(outer_const)})
    X509_ALGOR_set0(algorithm, OBJ_nid2obj(scheme.nid), V_ASN1_UNDEF, nullptr);
  int tbs_length = i2d_re_X509_tbs(cert, nullptr);
  if (tbs_length <= 0) throw Error(ExitCode::failure, "cannot encode the TBSCertificate").with_detail(openssl_errors());
  Bytes tbs(static_cast<std::size_t>(tbs_length));
  unsigned char* p = tbs.data();
  i2d_re_X509_tbs(cert, &p);
  Bytes signature = sign_message(signer, tbs, scheme.hash);
  auto* bits = const_cast<ASN1_BIT_STRING*>(signature_const);
  ASN1_BIT_STRING_set(bits, signature.data(), static_cast<int>(signature.size()));
  bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
  bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
}

}  // namespace kiln
