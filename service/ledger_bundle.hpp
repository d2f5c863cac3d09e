// Ledger bundles (docs/ledger-bundle.md): the signed trailer line and the checks made before an import.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/bytes.hpp"
#include "service/handlers.hpp"

namespace kiln::service {

struct BundleTrailer {
  Bytes signature;
  std::string algorithm;
  std::optional<Bytes> bundle_sha256;
  std::int64_t units = 0;
  Bytes station_key;                               // DER SubjectPublicKeyInfo
  std::optional<std::string> station_certificate;  // PEM, chained to a registered factory CA
};

// True when the JSON line is a trailer (holds "bundle_signature").
bool is_bundle_trailer(const Json& line);
// Parses a trailer; ApiError 400 naming the field that is missing or malformed.
BundleTrailer parse_bundle_trailer(const Json& line);

// Checks a bundle before anything is imported: `digest` is the SHA-256 of every byte before the trailer
// line and `units` the unit lines counted there. The signer must be trusted by the tenant: its key is the
// key of a registered factory CA, or the trailer's station certificate carries it and chains to one.
// Throws ApiError 422 (bundle_modified, bundle_signer_untrusted, bundle_signature_invalid).
void verify_bundle(Store& store, std::int64_t tenant_id, const BundleTrailer& trailer, ByteView digest, std::int64_t units);

}  // namespace kiln::service
