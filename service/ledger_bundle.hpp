// Ledger bundles (docs/ledger-bundle.md): the signed trailer line and the checks made before an import.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "service/handlers.hpp"

namespace kiln::service {

// The station ledger's signed head at export and the hash of every row up to it (docs/ledger-bundle.md).
struct BundleLedgerHead {
  std::string ledger_id;
  std::int64_t rows = 0;
  std::string hash;                // hex, row `rows`
  Bytes signature;                 // station key over ledger_head_message
  std::vector<std::string> chain;  // hex hash of rows 1..rows
  Bytes chain_signature;           // station key over ledger_chain_message
};

struct BundleTrailer {
  Bytes signature;
  std::string algorithm;
  std::optional<Bytes> bundle_sha256;
  std::int64_t units = 0;
  Bytes station_key;                               // DER SubjectPublicKeyInfo
  std::optional<std::string> station_certificate;  // PEM, chained to a registered factory CA
  std::optional<BundleLedgerHead> ledger_head;     // absent from bundles of ledgers bound to no station
};

// True when the JSON line is a trailer (holds "bundle_signature").
bool is_bundle_trailer(const Json& line);
// Parses a trailer; ApiError 400 naming the field that is missing or malformed.
BundleTrailer parse_bundle_trailer(const Json& line);

// Checks a bundle before anything is imported: `digest` is the SHA-256 of every byte before the trailer
// line and `units` the unit lines counted there. The signer must be trusted by the tenant: its key is the
// key of a registered factory CA, or the trailer's station certificate carries it and chains to one.
// Throws ApiError 422 (bundle_modified, bundle_signer_untrusted, bundle_signature_invalid).
// Also checks the ledger head's and chain's signatures with the station key (422 bundle_signature_invalid).
void verify_bundle(Store& store, std::int64_t tenant_id, const BundleTrailer& trailer, ByteView digest, std::int64_t units);

// Inside the import's transaction, after verify_bundle: the bundle's ledger must extend the head last
// imported from the same station key and ledger_id (409 ledger_rolled_back: fewer rows, or another hash
// at the remembered row), and a station whose bundles carried a head must keep sending one (422
// ledger_head_missing). Remembers the new head.
void advance_ledger_head(Store& store, std::int64_t tenant_id, const BundleTrailer& trailer);

}  // namespace kiln::service
