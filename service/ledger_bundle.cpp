// Ledger-bundle trailer: parse it, then check digest, unit count, signer trust and signature.
#include "service/ledger_bundle.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"
#include "service/factory_trust.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

ApiError bad_trailer(const std::string& why) {
  return ApiError{400, "invalid_request", "bundle signature trailer: " + why};
}

Bytes hex_field(const Json& line, const char* name, std::size_t max_length) {
  auto it = line.find(name);
  if (it == line.end() || !it->is_string()) throw bad_trailer(fmt::format("'{}' must be a hex string", name));
  auto text = it->get<std::string>();
  if (text.empty() || text.size() > max_length) throw bad_trailer(fmt::format("'{}' has a wrong length", name));
  try {
    return from_hex(text);
  } catch (const Error&) {
    throw bad_trailer(fmt::format("'{}' is not hex", name));
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

  std::string fingerprint = to_hex(kiln::digest(HashAlg::sha256, trailer.station_key));
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
}

}  // namespace kiln::service
