// Trust rooted in a tenant's registered factory CAs: X.509 chain checks for stations and bundle signers.
#include "service/factory_trust.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <map>

#include <fmt/format.h>

#include "signing/openssl_ptr.hpp"

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

// Verifies the chain against the given anchors; "" when it holds.
std::string verify_against(const std::vector<std::string>& anchors_pem, const std::vector<std::string>& chain_der) {
  if (chain_der.empty()) return "no certificate";
  auto leaf = parse_certificate(chain_der[0]);
  if (!leaf) return "not an X.509 certificate";
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  int anchors = 0;
  for (auto& pem : anchors_pem)
    if (auto ca = parse_certificate(pem); ca && X509_STORE_add_cert(store.get(), ca.get()) == 1) ++anchors;
  ERR_clear_error();
  if (anchors == 0) return no_factory_ca_registered;
  X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
  std::unique_ptr<STACK_OF(X509), StoreFree> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < chain_der.size(); ++i)
    if (auto c = parse_certificate(chain_der[i])) sk_X509_push(untrusted.get(), c.release());
  std::unique_ptr<X509_STORE_CTX, StoreFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get());
  int ok = X509_verify_cert(ctx.get());
  std::string why = ok == 1 ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  ERR_clear_error();
  return why;
}

std::vector<std::string> tenant_ca_pems(Db& db, std::int64_t tenant_id) {
  std::vector<std::string> out;
  auto q = db.prepare("SELECT pem FROM factory_cas WHERE tenant_id = ?");
  q.bind(1, tenant_id);
  while (q.step()) out.push_back(q.text(0));
  return out;
}

}  // namespace

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

std::vector<Bytes> factory_ca_keys(Db& db, std::int64_t tenant_id) {
  std::vector<Bytes> keys;
  for (auto& pem : tenant_ca_pems(db, tenant_id))
    if (auto key = certificate_public_key(pem); !key.empty()) keys.push_back(std::move(key));
  return keys;
}

std::string chain_error(Db& db, std::int64_t tenant_id, const std::vector<std::string>& chain_der) {
  return verify_against(tenant_ca_pems(db, tenant_id), chain_der);
}

std::optional<Station> find_station(Db& db, const std::vector<std::string>& chain_der, std::string& why) {
  // Only CAs registered for stations: device certificates chain to the device CAs, and a device
  // (imported or not yet) must never act as a station.
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  auto q = db.prepare("SELECT tenant_id, pem FROM factory_cas WHERE stations != 0 ORDER BY tenant_id");
  while (q.step()) by_tenant[q.integer(0)].push_back(q.text(1));
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

}  // namespace kiln::service
