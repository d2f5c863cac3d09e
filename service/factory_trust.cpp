// Trust rooted in a tenant's registered factory CAs: proof-of-possession registration, one owner per CA
// key, X.509 chain checks for stations and bundle signers.
#include "service/factory_trust.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <map>
#include <memory>
#include <mutex>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/time.hpp"
#include "service/handlers.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
  void operator()(X509_STORE_CTX* s) const { X509_STORE_CTX_free(s); }
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};

ossl::Ptr<X509> parse_certificate(const std::string& der_or_pem) {
  ossl::Ptr<X509> cert;
  if (der_or_pem.starts_with("-----BEGIN")) {
    ossl::Ptr<BIO> bio(BIO_new_mem_buf(der_or_pem.data(), static_cast<int>(der_or_pem.size())));
    cert.reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(der_or_pem.data());
    cert.reset(d2i_X509(nullptr, &p, static_cast<long>(der_or_pem.size())));
  }
  ERR_clear_error();
  return cert;
}

Bytes spki(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  int len = key ? i2d_PUBKEY(key, nullptr) : 0;
  ERR_clear_error();
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_PUBKEY(key, &p);
  return der;
}

// A verification store holding the anchors (nullptr when none parses), made once per set of anchors and
// shared: every device check-in of a tenant verifies against the same few CAs, and with OpenSSL 3.0 parsing
// a certificate costs more than verifying a signature. An X509_STORE is safe to share between verifications.
std::shared_ptr<X509_STORE> anchor_store(const std::vector<std::string>& anchors_pem) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<X509_STORE>> made;
  std::string key;
  for (auto& pem : anchors_pem) key.append(pem).push_back('\0');
  std::lock_guard lock(mutex);
  if (auto it = made.find(key); it != made.end()) return it->second;
  std::shared_ptr<X509_STORE> store(X509_STORE_new(), X509_STORE_free);
  int anchors = 0;
  for (auto& pem : anchors_pem)
    if (auto ca = parse_certificate(pem); ca && X509_STORE_add_cert(store.get(), ca.get()) == 1) ++anchors;
  ERR_clear_error();
  if (anchors == 0) store.reset();
  else X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
  if (made.size() >= 1024) made.clear();  // sets of anchors that are no more (a CA added or revoked) go
  made.emplace(std::move(key), store);
  return store;
}

std::string verify_leaf(X509* leaf, const std::vector<std::string>& anchors_pem,
                        const std::vector<std::string>& chain_der) {
  auto store = anchor_store(anchors_pem);
  if (!store) return no_factory_ca_registered;
  std::unique_ptr<STACK_OF(X509), StoreFree> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < chain_der.size(); ++i)
    if (auto c = parse_certificate(chain_der[i])) sk_X509_push(untrusted.get(), c.release());
  std::unique_ptr<X509_STORE_CTX, StoreFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get());
  int ok = X509_verify_cert(ctx.get());
  std::string why = ok == 1 ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  ERR_clear_error();
  return why;
}

// Verifies the chain against the given anchors; "" when it holds.
std::string verify_against(const std::vector<std::string>& anchors_pem, const std::vector<std::string>& chain_der) {
  if (chain_der.empty()) return "no certificate";
  auto leaf = parse_certificate(chain_der[0]);
  if (!leaf) return "not an X.509 certificate";
  return verify_leaf(leaf.get(), anchors_pem, chain_der);
}

std::vector<std::string> trusted_anchors(Store& store, std::int64_t tenant_id, bool include_revoked) {
  auto anchors = store.owned_factory_ca_pems(tenant_id);
  if (include_revoked)
    for (auto& pem : store.revoked_factory_ca_pems(tenant_id)) anchors.push_back(pem);
  return anchors;
}

std::string key_sha256(ByteView spki) {
  return to_hex(digest(HashAlg::sha256, spki));
}

std::string fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  return to_hex(ByteView(md, len));
}

// The certificate of a challenge or registration request: a PEM X.509 certificate with a public key.
struct CaRequest {
  ossl::Ptr<X509> certificate;
  std::string pem;
  Bytes public_key;
  std::string key_sha256;
};

CaRequest parse_ca_request(const Json& body) {
  CaRequest r;
  r.pem = required_string(body, "certificate", 16384);
  if (!r.pem.starts_with("-----BEGIN"))
    throw ApiError{400, "invalid_request", "certificate is not a PEM X.509 certificate"};
  r.certificate = parse_certificate(r.pem);
  if (!r.certificate) throw ApiError{400, "invalid_request", "certificate is not a PEM X.509 certificate"};
  r.public_key = spki(r.certificate.get());
  if (r.public_key.empty()) throw ApiError{400, "invalid_request", "the certificate's public key cannot be read"};
  r.key_sha256 = key_sha256(r.public_key);
  return r;
}

constexpr std::int64_t ca_challenge_seconds = 300;

}  // namespace

std::optional<CertificateFacts> certificate_facts(const std::string& der_or_pem) {
  auto cert = parse_certificate(der_or_pem);
  if (!cert) return std::nullopt;
  CertificateFacts facts{spki(cert.get()), {}};
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buf, sizeof buf);
  ERR_clear_error();
  facts.common_name = buf;
  return facts;
}

Bytes certificate_public_key(const std::string& der_or_pem) {
  auto cert = parse_certificate(der_or_pem);
  return cert ? spki(cert.get()) : Bytes{};
}

std::string certificate_common_name(const std::string& der_or_pem) {
  auto cert = parse_certificate(der_or_pem);
  if (!cert) return {};
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buf, sizeof buf);
  return buf;
}

std::vector<Bytes> factory_ca_keys(Store& store, std::int64_t tenant_id) {
  std::vector<Bytes> keys;
  for (auto& pem : store.owned_factory_ca_pems(tenant_id))
    if (auto key = certificate_public_key(pem); !key.empty()) keys.push_back(std::move(key));
  return keys;
}

std::string chain_error(Store& store, std::int64_t tenant_id, const std::vector<std::string>& chain_der,
                        bool include_revoked) {
  return verify_against(trusted_anchors(store, tenant_id, include_revoked), chain_der);
}

std::string chain_error(Store& store, std::int64_t tenant_id, X509* leaf, const std::vector<std::string>& chain_der,
                        bool include_revoked) {
  return verify_leaf(leaf, trusted_anchors(store, tenant_id, include_revoked), chain_der);
}

std::optional<FactoryCaRecord> revoked_factory_ca(Store& store, std::int64_t tenant_id,
                                                  const std::vector<std::string>& chain, ByteView key) {
  if (store.revoked_factory_ca_pems(tenant_id).empty()) return std::nullopt;
  for (auto& ca : store.list_factory_cas(tenant_id)) {
    if (!ca.revoked_at || !ca.usable) continue;
    if (!key.empty() && certificate_public_key(ca.pem) == Bytes(key.begin(), key.end())) return ca;
    if (!chain.empty() && verify_against({ca.pem}, chain).empty()) return ca;
  }
  return std::nullopt;
}

std::optional<FactoryCaRecord> revoked_station_ca(Store& store, const std::vector<std::string>& chain_der) {
  for (auto& [tenant, pems] : store.revoked_station_ca_pems()) {
    if (!verify_against(pems, chain_der).empty()) continue;
    for (auto& ca : store.list_factory_cas(tenant))
      if (ca.revoked_at && ca.stations && verify_against({ca.pem}, chain_der).empty()) return ca;
  }
  return std::nullopt;
}

FactoryCaRecord find_factory_ca(Store& store, std::int64_t tenant_id, const std::string& ref) {
  auto all = store.list_factory_cas(tenant_id);
  std::vector<FactoryCaRecord> found;
  for (auto& ca : all)
    if (ca.id == ref) return ca;
  bool hex = ref.size() >= 8 && ref.find_first_not_of("0123456789abcdef") == std::string::npos;
  for (auto& ca : all) {
    if (hex && ca.id.starts_with(ref)) {
      found.push_back(ca);
      continue;
    }
    auto facts = certificate_facts(ca.pem);
    if (facts && facts->common_name == ref) found.push_back(ca);
  }
  if (found.empty()) throw ApiError{404, "not_found", fmt::format("factory CA {} not found", ref)};
  if (found.size() > 1)
    throw ApiError{409, "ambiguous",
                   fmt::format("{} factory CAs match '{}': name one by its ID (kiln device ca list)", found.size(), ref)};
  return found.front();
}

std::optional<Station> find_station(Store& store, const std::vector<std::string>& chain_der, std::string& why) {
  // Only CAs registered for stations: device certificates chain to the device CAs, and a device
  // (imported or not yet) must never act as a station.
  auto by_tenant = store.owned_station_ca_pems();
  std::string name = chain_der.empty() ? std::string() : certificate_common_name(chain_der[0]);
  std::vector<std::int64_t> tenants;
  std::string last_error = "no tenant has registered a station CA (kiln device ca add --stations)";
  for (auto& [tenant, pems] : by_tenant) {
    auto error = verify_against(pems, chain_der);
    if (error.empty())
      tenants.push_back(tenant);
    else
      last_error = error;
  }
  if (tenants.size() == 1) return Station{tenants.front(), name};
  why = tenants.empty()
            ? fmt::format("client certificate CN={} does not chain to a station CA registered with any tenant ({})",
                          name, last_error)
            : fmt::format("client certificate CN={} chains to factory CAs of several tenants: use a token", name);
  return std::nullopt;
}

std::string factory_ca_proof_message(std::int64_t tenant_id, const std::string& key_sha256, const std::string& nonce) {
  return fmt::format("kiln-factory-ca-v1:{}:{}:{}", tenant_id, key_sha256, nonce);
}

Reply factory_ca_challenge(Call& call) {
  auto ca = parse_ca_request(parse_object(call.request.body));
  auto nonce = random_hex(16);
  auto now = unix_now();
  call.store.add_factory_ca_challenge(nonce, {call.who.tenant_id, ca.key_sha256, now + ca_challenge_seconds}, now);
  return {201, Json{{"nonce", nonce},
                    {"key_sha256", ca.key_sha256},
                    {"message", factory_ca_proof_message(call.who.tenant_id, ca.key_sha256, nonce)},
                    {"expires_in", ca_challenge_seconds}}};
}

Reply register_factory_ca(Call& call) {
  auto body = parse_object(call.request.body);
  auto ca = parse_ca_request(body);
  bool stations = false;
  if (auto it = body.find("stations"); it != body.end()) {
    if (!it->is_boolean()) throw ApiError{400, "invalid_request", "field 'stations' must be true or false"};
    stations = it->get<bool>();
  }
  auto nonce = optional_string(body, "nonce", 64);
  auto signature_hex = optional_string(body, "signature", 2048);
  if (!nonce || !signature_hex || nonce->empty() || signature_hex->empty())
    throw ApiError{422, "proof_required",
                   "registering a factory CA needs proof that you hold its private key: sign the message of POST "
                   "/v1/factory-cas/challenge and send 'nonce' and 'signature' (kiln device ca add CERT --key KEYREF)"};
  Bytes signature = hex_signature(*signature_hex);

  // A challenge is used once, whatever the outcome: a failed proof cannot be retried with it.
  auto challenge = call.store.take_factory_ca_challenge(*nonce);
  bool live = challenge && challenge->tenant_id == call.who.tenant_id && challenge->key_sha256 == ca.key_sha256 &&
              challenge->expires_at >= unix_now();
  if (!live)
    throw ApiError{422, "challenge_unknown",
                   "no live challenge with this nonce for this certificate (challenges expire after 5 minutes, serve "
                   "once, and belong to one tenant and one CA key): ask POST /v1/factory-cas/challenge again"};
  if (!verify_message_signature(ca.public_key, factory_ca_proof_message(call.who.tenant_id, ca.key_sha256, *nonce),
                                signature))
    throw ApiError{422, "proof_invalid",
                   "the challenge signature does not verify with the certificate's public key: the key that signed "
                   "it is not this CA's private key"};

  // One owner per CA key. Only a key holder gets this far, and the answer never says who owns it.
  if (call.store.claim_factory_ca_key(ca.key_sha256, call.who.tenant_id, now_iso8601()) != call.who.tenant_id)
    throw ApiError{409, "ca_unavailable",
                   "this CA's key is already registered on this service and cannot be registered again: a factory "
                   "CA belongs to one tenant (give each tenant its own CA)"};

  auto id = fingerprint(ca.certificate.get());
  char subject[512] = {};
  X509_NAME_oneline(X509_get_subject_name(ca.certificate.get()), subject, sizeof subject);
  // Registering again may widen the CA to stations; it never narrows a registration silently.
  FactoryCaRecord record{id, subject, ca.pem, stations, ca.key_sha256, true, now_iso8601(), {}, {}};
  bool serves_stations = call.store.register_factory_ca(call.who.tenant_id, record);
  return {201,
          Json{{"id", id}, {"subject", subject}, {"key_sha256", ca.key_sha256}, {"stations", serves_stations}}};
}

Reply list_factory_cas(Call& call) {
  Json items = Json::array();
  for (auto& ca : call.store.list_factory_cas(call.who.tenant_id))
    items.push_back(Json{{"id", ca.id},
                         {"subject", ca.subject},
                         {"stations", ca.stations},
                         {"key_sha256", ca.key_sha256 ? Json(*ca.key_sha256) : Json(nullptr)},
                         {"usable", ca.usable},
                         {"created_at", ca.created_at},
                         {"revoked_at", ca.revoked_at ? Json(*ca.revoked_at) : Json(nullptr)},
                         {"revoked_reason", ca.revoked_at && ca.revoked_reason && !ca.revoked_reason->empty()
                                                ? Json(*ca.revoked_reason)
                                                : Json(nullptr)}});
  return {200, Json{{"items", items}}};
}

}  // namespace kiln::service
