// Building X.509 v3 certificates with OpenSSL: the steps every issuer in kiln shares (emulated
// silicon vendor, service TLS material). Signing stays with the caller.
#pragma once

#include <string>

#include <openssl/x509.h>

#include "signing/openssl_ptr.hpp"

namespace kiln {

// A v3 certificate for subject_key: random positive 128-bit serial, valid from an hour ago for
// `validity_seconds`, subject O=organization, CN=common_name, issued by `issuer` (self-issued when null).
ossl::Ptr<X509> start_certificate(EVP_PKEY* subject_key, const std::string& organization,
                                  const std::string& common_name, X509* issuer, long validity_seconds);

// Adds one extension in OpenSSL's config syntax ("critical,CA:TRUE", "hash", "keyid:always").
// `issuer` is the issuing certificate (the certificate itself when self-issued).
void add_x509_extension(X509* cert, X509* issuer, int nid, const char* value);

// The certificate in PEM ("-----BEGIN CERTIFICATE-----" ...).
std::string certificate_pem(X509* cert);

}  // namespace kiln
