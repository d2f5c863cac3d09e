// Trust rooted in a tenant's registered factory CAs: station certificates (mutual TLS) and ledger-bundle signers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <openssl/types.h>

#include "core/bytes.hpp"
#include "service/store.hpp"

namespace kiln::service {

// A factory CA belongs to exactly one tenant: the one that first proved it holds the CA's private key
// (POST /v1/factory-cas with a signed challenge). factory_ca_owners maps each CA key (SHA-256 of its DER
// SubjectPublicKeyInfo) to that tenant. A registration of the same key by another tenant, which databases
// from before ownership may hold, stays listed but is never trusted.

// The DER SubjectPublicKeyInfo of every factory CA the tenant registered and owns.
std::vector<Bytes> factory_ca_keys(Store& store, std::int64_t tenant_id);


// The exact bytes a CA's private key signs to prove possession for `tenant_id` (docs/openapi.yaml).
std::string factory_ca_proof_message(std::int64_t tenant_id, const std::string& key_sha256, const std::string& nonce);

// Checks that `chain` (DER certificates, leaf first) chains to a factory CA registered with `tenant_id`.
// Returns an empty string when it does, else why not (OpenSSL's verification error, in words, or
// no_factory_ca_registered when the tenant has no usable factory CA).
inline constexpr const char* no_factory_ca_registered = "no factory CA is registered";
// Revoked CAs count only with include_revoked (device certificates: units imported before a CA was revoked
// stay; imports and station logins under it are refused).
std::string chain_error(Store& store, std::int64_t tenant_id, const std::vector<std::string>& chain_der,
                        bool include_revoked = false);
// The same for a leaf the caller already parsed (chain_der[0]'s X509): a certificate is parsed once.
std::string chain_error(Store& store, std::int64_t tenant_id, X509* leaf, const std::vector<std::string>& chain_der,
                        bool include_revoked);

// The tenant's revoked factory CA that `chain` (DER or PEM certificates, leaf first) chains to, or whose key
// `key` (DER SubjectPublicKeyInfo, may be empty) is; nullopt when none.
std::optional<FactoryCaRecord> revoked_factory_ca(Store& store, std::int64_t tenant_id,
                                                  const std::vector<std::string>& chain, ByteView key = {});
// The revoked station CA (of any tenant) a station certificate chain leads to; nullopt when none.
std::optional<FactoryCaRecord> revoked_station_ca(Store& store, const std::vector<std::string>& chain_der);
// Resolves a CA of the tenant by ID (its SHA-256 fingerprint, or a unique prefix of at least 8 hex digits) or
// by the common name of its subject; ApiError 404 when none, 409 when a name or prefix is ambiguous.
FactoryCaRecord find_factory_ca(Store& store, std::int64_t tenant_id, const std::string& ref);

// The tenant whose registered factory CA the station certificate chain leads to; nullopt with `why` set
// when none (or several) do.
struct Station {
  std::int64_t tenant_id = 0;
  std::string name;  // the certificate's common name
};
std::optional<Station> find_station(Store& store, const std::vector<std::string>& chain_der, std::string& why);

// SPKI (DER) and common name of a DER or PEM certificate; empty when it is not one.
Bytes certificate_public_key(const std::string& der_or_pem);
std::string certificate_common_name(const std::string& der_or_pem);
// Both at once (one X.509 parse); nullopt when the text is not a certificate.
struct CertificateFacts {
  Bytes public_key;  // DER SubjectPublicKeyInfo
  std::string common_name;
};
std::optional<CertificateFacts> certificate_facts(const std::string& der_or_pem);

}  // namespace kiln::service
