// Ledger-bundle trailer: parse it, then check digest, unit count, signer trust and signature.
#include "service/ledger_bundle.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"
#include "service/factory_trust.hpp"
#include "signing/ledger_signature.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

ApiError bad_trailer(const std::string& why) {
  return ApiError{400, "invalid_request", "bundle signature trailer: " + why};
}

// `field`: the name messages give it, the path from the trailer ("ledger_head.signature").
Bytes hex_field(const Json& line, const char* name, std::size_t max_length, std::string_view field = {}) {
  if (field.empty()) field = name;
  auto it = line.find(name);
  if (it == line.end() || !it->is_string()) throw bad_trailer(fmt::format("'{}' must be a hex string", field));
  auto text = it->get<std::string>();
  if (text.empty() || text.size() > max_length) throw bad_trailer(fmt::format("'{}' has a wrong length", field));
  try {
    return from_hex(text);
  } catch (const Error&) {
    throw bad_trailer(fmt::format("'{}' is not hex", field));
  }
}

Bytes spki_from_pem(const std::string& pem) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<EVP_PKEY> key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return {};
  int len = i2d_PUBKEY(key.get(), nullptr);
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_PUBKEY(key.get(), &p);
  return der;
}

bool is_hex_digest(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

BundleLedgerHead parse_ledger_head(const Json& head) {
  if (!head.is_object()) throw bad_trailer("'ledger_head' must be an object");
  BundleLedgerHead out;
  auto id = head.find("ledger_id");
  if (id == head.end() || !id->is_string() || id->get<std::string>().empty() || id->get<std::string>().size() > 64 ||
      id->get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos)
    throw bad_trailer("'ledger_head.ledger_id' must be 1 to 64 lowercase hex digits");
  out.ledger_id = id->get<std::string>();
  auto rows = head.find("rows");
  if (rows == head.end() || !rows->is_number_integer() || rows->get<std::int64_t>() < 1)
    throw bad_trailer("'ledger_head.rows' must be a positive count");
  out.rows = rows->get<std::int64_t>();
  auto hash = head.find("hash");
  if (hash == head.end() || !hash->is_string() || !is_hex_digest(hash->get<std::string>()))
    throw bad_trailer("'ledger_head.hash' must be a hex SHA-256");
  out.hash = hash->get<std::string>();
  out.signature = hex_field(head, "signature", 2048, "ledger_head.signature");
  auto chain = head.find("chain");
  if (chain == head.end() || !chain->is_array())
    throw bad_trailer(
        "'ledger_head.chain' (the hash of every ledger row) is required: export the bundle again with "
        "this kiln");
  if (static_cast<std::int64_t>(chain->size()) != out.rows)
    throw bad_trailer(fmt::format("'ledger_head.chain' holds {} hashes for {} rows", chain->size(), out.rows));
  out.chain.reserve(chain->size());
  for (const auto& link : *chain) {
    if (!link.is_string() || !is_hex_digest(link.get<std::string>()))
      throw bad_trailer("'ledger_head.chain' must hold hex SHA-256 hashes");
    out.chain.push_back(link.get<std::string>());
  }
  if (out.chain.back() != out.hash) throw bad_trailer("'ledger_head.chain' does not end with the head's hash");
  out.chain_signature = hex_field(head, "chain_signature", 2048, "ledger_head.chain_signature");
  return out;
}

// SHA-256 of a DER SubjectPublicKeyInfo, hex (how the service names station and CA keys).
std::string key_sha256(ByteView key) {
  return to_hex(kiln::digest(HashAlg::sha256, key));
}

}  // namespace

bool is_bundle_trailer(const Json& line) {
  return line.is_object() && line.contains("bundle_signature");
}

BundleTrailer parse_bundle_trailer(const Json& line) {
  BundleTrailer t;
  t.signature = hex_field(line, "bundle_signature", 2048);
  t.algorithm = optional_string(line, "algorithm", 64).value_or("");
  if (line.contains("bundle_sha256")) t.bundle_sha256 = hex_field(line, "bundle_sha256", 64);
  auto units = line.find("units");
  if (units == line.end() || !units->is_number_integer() || units->get<std::int64_t>() < 0)
    throw bad_trailer("'units' must be a count");
  t.units = units->get<std::int64_t>();
  auto pem = optional_string(line, "station_public_key", 16384);
  if (!pem) throw bad_trailer("'station_public_key' (PEM) is required");
  t.station_key = spki_from_pem(*pem);
  if (t.station_key.empty()) throw bad_trailer("'station_public_key' is not a PEM public key");
  t.station_certificate = optional_string(line, "station_certificate", 16384);
  if (line.contains("ledger_head")) t.ledger_head = parse_ledger_head(line["ledger_head"]);
  return t;
}

void verify_bundle(Store& store, std::int64_t tenant_id, const BundleTrailer& trailer, ByteView digest, std::int64_t units) {
  if (trailer.units != units)
    throw ApiError{
        422, "bundle_modified",
        fmt::format("the bundle holds {} units but its signature trailer says {}: units were added or removed "
                    "after the station signed it",
                    units, trailer.units)};
  if (trailer.bundle_sha256 && *trailer.bundle_sha256 != Bytes(digest.begin(), digest.end()))
    throw ApiError{422, "bundle_modified",
                   "the bundle's content does not hash to the SHA-256 its station signed: it was edited after export"};

  std::string fingerprint = key_sha256(trailer.station_key);
  // A revoked CA signs no more imports: neither as the station key itself nor as its certificate's issuer.
  std::vector<std::string> chain;
  if (trailer.station_certificate && certificate_public_key(*trailer.station_certificate) == trailer.station_key)
    chain.push_back(*trailer.station_certificate);
  if (auto revoked = revoked_factory_ca(store, tenant_id, chain, trailer.station_key))
    throw ApiError{403, "ca_revoked",
                   fmt::format("the bundle is signed under factory CA {} ({}), revoked at {}{}: imports under a "
                               "revoked CA are refused; nothing was imported",
                               revoked->id.substr(0, 16), revoked->subject, revoked->revoked_at.value_or("?"),
                               revoked->revoked_reason && !revoked->revoked_reason->empty()
                                   ? " (" + *revoked->revoked_reason + ")"
                                   : std::string())};
  auto keys = factory_ca_keys(store, tenant_id);
  bool trusted = std::find(keys.begin(), keys.end(), trailer.station_key) != keys.end();
  if (!trusted && trailer.station_certificate) {
    auto error = chain_error(store, tenant_id, {*trailer.station_certificate});
    if (certificate_public_key(*trailer.station_certificate) != trailer.station_key)
      throw ApiError{422, "bundle_signer_untrusted",
                     "the trailer's station certificate does not carry the station key"};
    if (!error.empty())
      throw ApiError{422, "bundle_signer_untrusted",
                     fmt::format("the bundle's station certificate does not chain to a factory CA registered with this "
                                 "tenant: {}",
                                 error)};
    trusted = true;
  }
  if (!trusted)
    throw ApiError{422, "bundle_signer_untrusted",
                   fmt::format("the bundle is signed by station key sha256:{}, which is not the key of a factory CA "
                               "registered with and owned by this tenant (register the station CA first, proven by its "
                               "key: kiln device ca add "
                               "CA.pem --key CA.key)",
                               fingerprint.substr(0, 16))};
  bool ok = false;
  try {
    ok = verify_signature(trailer.station_key, digest, HashAlg::sha256, trailer.signature);
  } catch (const Error&) {
    ok = false;
  }
  if (!ok)
    throw ApiError{422, "bundle_signature_invalid",
                   fmt::format("the bundle signature does not verify with station key sha256:{}: the bundle was edited "
                               "or truncated after export",
                               fingerprint.substr(0, 16))};
  if (const auto& head = trailer.ledger_head) {
    if (!verify_station_message(trailer.station_key,
                                as_bytes(ledger_head_message(head->ledger_id, head->rows, head->hash)),
                                head->signature))
      throw ApiError{
          422, "bundle_signature_invalid",
          fmt::format("the bundle's ledger head (ledger {}, {} rows) is not signed by station key sha256:{}: "
                      "it was edited after export",
                      head->ledger_id, head->rows, fingerprint.substr(0, 16))};
    if (!verify_station_message(trailer.station_key, as_bytes(ledger_chain_message(head->ledger_id, head->chain)),
                                head->chain_signature))
      throw ApiError{422, "bundle_signature_invalid",
                     fmt::format("the bundle's ledger chain (ledger {}) is not signed by station key sha256:{}: it was "
                                 "edited after export",
                                 head->ledger_id, fingerprint.substr(0, 16))};
  }
}

void advance_ledger_head(Store& store, std::int64_t tenant_id, const BundleTrailer& trailer) {
  std::string station = key_sha256(trailer.station_key);
  const auto& head = trailer.ledger_head;
  if (!head) {
    // A station that once sent its head always does (kiln exports it for every bound ledger): a bundle
    // without one had it stripped, and with it the proof that the ledger did not go back.
    if (auto seen = store.latest_ledger_head(tenant_id, station))
      throw ApiError{422, "ledger_head_missing",
                     fmt::format("the bundle carries no ledger head, but bundles from station key sha256:{} did "
                                 "(ledger {}, {} rows): its head was removed from the trailer; export the bundle again "
                                 "with 'kiln factory ledger export'",
                                 station.substr(0, 16), seen->ledger_id, seen->rows)};
    return;
  }
  // Keyed by the station key too: another station of the tenant naming this ledger_id in its own
  // (signed) bundles has another ledger, and cannot block this one's imports.
  if (auto known = store.find_ledger_head(tenant_id, station, head->ledger_id)) {
    if (head->rows < known->rows)
      throw ApiError{409, "ledger_rolled_back",
                     fmt::format("ledger {} has {} rows in this bundle, but a bundle with {} rows was imported from it "
                                 "at {}: rows were deleted from the station's ledger or it was restored from an older "
                                 "copy; nothing was imported (export the station's current ledger, and investigate)",
                                 head->ledger_id, head->rows, known->rows, known->imported_at)};
    if (head->chain[static_cast<std::size_t>(known->rows - 1)] != known->hash)
      throw ApiError{409, "ledger_rolled_back",
                     fmt::format("ledger {}: row {} in this bundle is not the row {} imported at {}: the ledger was "
                                 "rolled back and rewritten after that import; nothing was imported",
                                 head->ledger_id, known->rows, known->rows, known->imported_at)};
    if (head->rows == known->rows) return;  // the same head again: an idempotent re-import
  }
  store.save_ledger_head(tenant_id, station, LedgerHead{head->ledger_id, head->rows, head->hash, now_iso8601()});
}

}  // namespace kiln::service
