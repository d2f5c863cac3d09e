// Building X.509 v3 certificates with OpenSSL: the steps every issuer in kiln shares (emulated
// silicon vendor, service TLS material). Signing stays with the caller.
#pragma once

#include <string>
#include <string_view>

#include <openssl/x509.h>

#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln {

// A v3 certificate for subject_key: random positive 128-bit serial, valid from an hour ago for
// `validity_seconds`, subject O=organization, CN=common_name, issued by `issuer` (self-issued when null).
ossl::Ptr<X509> start_certificate(EVP_PKEY* subject_key, const std::string& organization,
                                  const std::string& common_name, X509* issuer, long validity_seconds);

// Adds one extension in OpenSSL's config syntax ("critical,CA:TRUE", "hash", "keyid:always").
// `issuer` is the issuing certificate (the certificate itself when self-issued).
void add_x509_extension(X509* cert, X509* issuer, int nid, const char* value);

// How a certificate is signed by a key: the signature algorithm's NID and the hash the Signer applies.
struct CertificateScheme {
  int nid;
  HashAlg hash;
};
// ECDSA P-256/P-384 or Ed25519; another key type is refused (exit 2): "{key} is an {type} key: {why_not}".
CertificateScheme certificate_scheme(const Signer& signer, std::string_view why_not);

// Signs `cert` through `signer` (a key file or an HSM's key): the scheme's algorithm in both places a
// certificate names it, then the re-encoded TBSCertificate signed as one message.
void sign_certificate(X509* cert, const Signer& signer, CertificateScheme scheme);

// The certificate in PEM ("-----BEGIN CERTIFICATE-----" ...).
std::string certificate_pem(X509* cert);

}  // namespace kiln
