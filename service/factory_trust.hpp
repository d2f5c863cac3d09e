// Trust rooted in a tenant's registered factory CAs: station certificates (mutual TLS) and ledger-bundle signers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "service/db.hpp"

namespace kiln::service {

// The DER SubjectPublicKeyInfo of every factory CA the tenant registered (POST /v1/factory-cas).
std::vector<Bytes> factory_ca_keys(Db& db, std::int64_t tenant_id);

// Checks that `chain` (DER certificates, leaf first) chains to a factory CA registered with `tenant_id`.
// Returns an empty string when it does, else why not (OpenSSL's verification error, in words, or
// no_factory_ca_registered when the tenant has no usable factory CA).
inline constexpr const char* no_factory_ca_registered = "no factory CA is registered";
std::string chain_error(Db& db, std::int64_t tenant_id, const std::vector<std::string>& chain_der);

// The tenant whose registered factory CA the station certificate chain leads to; nullopt with `why` set
// when none (or several) do.
struct Station {
  std::int64_t tenant_id = 0;
  std::string name;  // the certificate's common name
};
std::optional<Station> find_station(Db& db, const std::vector<std::string>& chain_der, std::string& why);

// SPKI (DER) and common name of a DER or PEM certificate; empty when it is not one.
Bytes certificate_public_key(const std::string& der_or_pem);
std::string certificate_common_name(const std::string& der_or_pem);

}  // namespace kiln::service
