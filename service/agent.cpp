// Device agent endpoints over mutual TLS: the client certificate names an imported device, carries
// its imported public key, and chains to a factory CA its tenant registered.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <fmt/format.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
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

ossl::Ptr<X509> parse_der(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  return ossl::Ptr<X509>(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::string spki_hex(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  int len = key ? i2d_PUBKEY(key, nullptr) : 0;
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_PUBKEY(key, &p);
  return to_hex(der);
}

std::string common_name(X509* cert) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

std::string fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  return to_hex(ByteView(md, len));
}

ApiError unauthenticated(const std::string& why) { return ApiError{401, "unauthenticated", "device certificate refused: " + why}; }

std::uint32_t rollout_bucket(const std::string& deployment, const std::string& device) {
  Bytes h = digest(HashAlg::sha256, as_bytes(deployment + ":" + device));
  return static_cast<std::uint32_t>((h[0] << 8) | h[1]) % 100;
}

}  // namespace

Principal authenticate_device(Db& db, const std::vector<std::string>& chain_der) {
  if (chain_der.empty()) throw unauthenticated("this endpoint needs mutual TLS with the device certificate");
  auto leaf = parse_der(chain_der[0]);
  if (!leaf) throw unauthenticated("not an X.509 certificate");
  std::string uid = common_name(leaf.get());
  auto q = db.prepare("SELECT tenant_id, public_key FROM devices WHERE id = ?");
  q.bind(1, uid);
  if (!q.step()) throw unauthenticated(fmt::format("no device {} is registered", uid));
  std::int64_t tenant = q.integer(0);
  if (q.text(1) != spki_hex(leaf.get()))
    throw unauthenticated(fmt::format("the certificate's key is not the key imported for {}", uid));

  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  auto cas = db.prepare("SELECT pem FROM factory_cas WHERE tenant_id = ?");
  cas.bind(1, tenant);
  int anchors = 0;
  while (cas.step()) {
    std::string pem = cas.text(0);
    ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    ossl::Ptr<X509> ca(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (ca && X509_STORE_add_cert(store.get(), ca.get()) == 1) ++anchors;
  }
  if (anchors == 0) throw unauthenticated("the device's tenant has registered no factory CA");
  X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
  std::unique_ptr<STACK_OF(X509), StoreFree> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < chain_der.size(); ++i)
    if (auto c = parse_der(chain_der[i])) sk_X509_push(untrusted.get(), c.release());
  std::unique_ptr<X509_STORE_CTX, StoreFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get());
  if (X509_verify_cert(ctx.get()) != 1)
    throw unauthenticated(fmt::format("certificate of {} does not chain to a registered factory CA: {}", uid,
                                      X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  return Principal{tenant, Role::reader, uid, uid};
}

Reply register_factory_ca(Call& call) {
  auto body = parse_object(call.request.body);
  auto pem = required_string(body, "certificate", 16384);
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<X509> ca(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!ca) throw ApiError{400, "invalid_request", "certificate is not a PEM X.509 certificate"};
  auto id = fingerprint(ca.get());
  char subject[512] = {};
  X509_NAME_oneline(X509_get_subject_name(ca.get()), subject, sizeof subject);
  call.db.prepare("INSERT OR IGNORE INTO factory_cas (tenant_id, id, subject, pem, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, call.who.tenant_id)
      .bind(2, id)
      .bind(3, subject)
      .bind(4, pem)
      .bind(5, now_iso8601())
      .run();
  return {201, Json{{"id", id}, {"subject", subject}}};
}

Reply list_factory_cas(Call& call) {
  auto q = call.db.prepare("SELECT id, subject, created_at FROM factory_cas WHERE tenant_id = ? ORDER BY created_at");
  q.bind(1, call.who.tenant_id);
  Json items = Json::array();
  while (q.step()) items.push_back(Json{{"id", q.text(0)}, {"subject", q.text(1)}, {"created_at", q.text(2)}});
  return {200, Json{{"items", items}}};
}

Reply agent_check_in(Call& call) {
  auto body = call.request.body.empty() ? Json::object() : parse_object(call.request.body);
  auto version = optional_string(body, "version", 64);
  auto state = optional_string(body, "state", 32);
  auto& device = call.who.device_id;
  call.db.prepare("UPDATE devices SET last_seen = ?, version = coalesce(?, version), state = coalesce(?, state) WHERE id = ?")
      .bind(1, now_iso8601())
      .bind_optional(2, version)
      .bind_optional(3, state)
      .bind(4, device)
      .run();
  auto q = call.db.prepare(
      "SELECT dep.id, dep.images, dep.rollout FROM deployments dep JOIN devices d ON d.group_id = dep.group_id "
      "WHERE d.id = ? AND dep.state = 'active' ORDER BY dep.created_at DESC, dep.id");
  q.bind(1, device);
  Json deployment = nullptr;
  while (q.step()) {
    if (rollout_bucket(q.text(0), device) >= static_cast<std::uint32_t>(q.integer(2))) continue;
    Json images = Json::array();
    for (auto& image : Json::parse(q.text(1))) {
      auto size = call.db.prepare("SELECT size FROM images WHERE tenant_id = ? AND sha256 = ?");
      size.bind(1, call.who.tenant_id).bind(2, image.get<std::string>());
      images.push_back(Json{{"id", image},
                            {"size", size.step() ? size.integer(0) : 0},
                            {"url", "/v1/agent/images/" + image.get<std::string>() + "/content"}});
    }
    deployment = Json{{"id", q.text(0)}, {"images", images}};
    break;
  }
  return {200, Json{{"device", device}, {"deployment", deployment}}};
}

Reply agent_report_status(Call& call) {
  auto body = parse_object(call.request.body);
  auto deployment = required_string(body, "deployment", 64);
  auto status = required_string(body, "status", 32);
  static const char* const known[] = {"downloading", "installing", "installed", "failed", "rolled_back"};
  if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return status == k; }) == std::end(known))
    throw ApiError{400, "invalid_request", "status must be downloading, installing, installed, failed or rolled_back"};
  auto exists = call.db.prepare("SELECT 1 FROM deployments WHERE id = ? AND tenant_id = ?");
  exists.bind(1, deployment).bind(2, call.who.tenant_id);
  if (!exists.step()) throw ApiError{404, "not_found", fmt::format("deployment {} not found", deployment)};
  call.db.prepare("INSERT INTO deployment_devices (deployment_id, device_id, status, detail, updated_at) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (deployment_id, device_id) DO UPDATE SET status = excluded.status, "
                  "detail = excluded.detail, updated_at = excluded.updated_at")
      .bind(1, deployment)
      .bind(2, call.who.device_id)
      .bind(3, status)
      .bind(4, optional_string(body, "detail", 1024).value_or(""))
      .bind(5, now_iso8601())
      .run();
  return {200, Json{{"deployment", deployment}, {"device", call.who.device_id}, {"status", status}}};
}

}  // namespace kiln::service
