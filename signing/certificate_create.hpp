// `kiln cert`: X.509 certificates made through the Signer (a CA key on a PKCS#11 token never leaves it).
#pragma once

#include <optional>
#include <string>

#include "signing/signer.hpp"

namespace kiln {

struct CertificateRequest {
  std::string subject;       // OpenSSL's "/CN=Station CA/O=Example" form
  Bytes subject_public_key;  // DER SubjectPublicKeyInfo of the certified key
  bool ca = false;           // basicConstraints CA:TRUE, keyCertSign + cRLSign
  int days = 365;            // 1..36500
};

// Issues the certificate, signed by `signer` (ECDSA P-256/P-384 or Ed25519): self-signed when
// `issuer_certificate_der` is empty (then `signer` must be the subject's key), otherwise issued by that
// certificate, whose key `signer` must hold and which must be a CA. The result verifies with the issuer's
// key or nothing is returned. Throws Error(usage) for a bad subject, key type or days.
Bytes create_certificate(const CertificateRequest& request, const Signer& signer,
                         const std::optional<Bytes>& issuer_certificate_der);

// PEM or DER certificate file contents as DER.
Bytes certificate_der_from_file_bytes(ByteView bytes, const std::string& what);

struct CertificateInfo {
  std::string subject, issuer, serial_hex, not_before, not_after;
  bool ca = false;
  bool self_signed = false;
  std::optional<bool> self_signature_ok;  // for self-signed certificates
  KeyType key_type = KeyType::ecdsa_p256;
  std::string fingerprint;  // SHA-256 of the DER, hex
  Bytes public_key_der;
};
CertificateInfo describe_certificate(ByteView der);
std::string certificate_to_pem(ByteView der);

}  // namespace kiln
