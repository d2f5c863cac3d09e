// Station CA: verifies CSRs and silicon attestation, issues X.509 v3 device certificates signed
// through the Signer interface (file or PKCS#11 CA keys alike).
#pragma once

#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "signing/signer.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln {

// Device certificate validity, in days (the profile's ca.validity_days has the same range).
constexpr int min_validity_days = 1;
constexpr int max_validity_days = 36500;

struct CertificateTemplate {
  std::string organization;  // O= (the product name)
  int validity_days = 3650;
};

struct IssuedCertificate {
  Bytes der;
  std::string pem;
  std::string serial_hex;
};

// The public key (DER SPKI) of a PKCS#10 CSR whose self-signature verifies.
// Throws Error(verification_failed) for a bad signature, Error(failure) for undecodable DER.
Bytes verify_csr(ByteView csr_der);

// Issues CN=uid, O=organization for `device_public_key`: serial random 128-bit, basicConstraints
// CA:FALSE, keyUsage digitalSignature, extendedKeyUsage clientAuth, SKI/AKI. The TBSCertificate is
// built with OpenSSL and its digest signed by `ca` (ECDSA P-256/P-384 or Ed25519 CA keys).
IssuedCertificate issue_device_certificate(const Signer& ca, ByteView ca_certificate_der, ByteView device_public_key,
                                           const std::string& uid, const CertificateTemplate& certificate_template);

// The board's attestation certificate chains to `vendor_root_der` (not to the root the board
// sends), binds the UID the board reports (subject serialNumber, else CN), signed its transport
// key, and answered this station's fresh `nonce` (the identity statement). Throws
// Error(verification_failed) naming the board otherwise: a replayed or relabelled answer fails.
void verify_attestation(const BoardIdentity& identity, ByteView vendor_root_der, ByteView nonce);
// The identity the attestation certificate binds: its subject serialNumber, else its CN.
std::string attested_uid(ByteView attestation_certificate_der);
// The attestation key (of a verified identity) vouches for `device_public_key` made in its secure
// element: `signature` is over the key statement for `nonce`. Throws Error(verification_failed).
void verify_key_attestation(const BoardIdentity& identity, ByteView nonce, ByteView device_public_key,
                            ByteView signature);

// A certificate's issuer and public key match the CA and the device: used to accept a chain a
// board already holds from an earlier run.
bool certificate_matches(ByteView certificate_der, ByteView ca_certificate_der, ByteView device_public_key);
std::string certificate_serial_hex(ByteView certificate_der);

// PEM <-> DER helpers for certificates and public keys.
std::string certificate_pem(ByteView der);
std::string public_key_pem(ByteView spki_der);
// The first certificate in PEM text as DER. Throws Error(failure) when there is none.
Bytes certificate_der_from_pem(const std::string& pem);
// The first certificate in a PEM file (or a DER file) as DER.
Bytes read_certificate_file(const std::string& path);

}  // namespace kiln
