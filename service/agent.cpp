// Device agent endpoints over mutual TLS: the client certificate names an imported device, carries
// its imported public key, and chains to a factory CA its tenant registered.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/factory_trust.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

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

ApiError unauthenticated(const std::string& why) {
  return ApiError{401, "unauthenticated", "device certificate refused: " + why};
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

  if (auto error = chain_error(db, tenant, chain_der); !error.empty()) {
    if (error == no_factory_ca_registered) throw unauthenticated("the device's tenant has registered no factory CA");
    throw unauthenticated(fmt::format("certificate of {} does not chain to a registered factory CA: {}", uid, error));
  }
  return Principal{tenant, Role::reader, uid, uid};
}

namespace {

Json image_entry(Call& call, const std::string& sha, const std::string& url) {
  auto size = call.db.prepare("SELECT size FROM images WHERE tenant_id = ? AND sha256 = ?");
  size.bind(1, call.who.tenant_id).bind(2, sha);
  return Json{{"id", sha}, {"size", size.step() ? size.integer(0) : 0}, {"url", url}};
}

// The deployment object of a check-in answer (docs/openapi.yaml, AgentDeployment).
Json offer(Call& call, const DeploymentRow& row, int wave, const char* action) {
  Json images = Json::array();
  for (auto& image : row.images) {
    auto sha = image.get<std::string>();
    images.push_back(image_entry(call, sha, "/v1/agent/images/" + sha + "/content"));
  }
  Json manifest =
      row.manifest ? image_entry(call, *row.manifest, "/v1/agent/deployments/" + row.id + "/manifest") : Json(nullptr);
  return Json{{"id", row.id},         {"wave", wave},
              {"action", action},     {"sequence", row.sequence ? Json(*row.sequence) : Json(nullptr)},
              {"manifest", manifest}, {"images", images}};
}

std::optional<std::string> device_group(Call& call) {
  auto q = call.db.prepare("SELECT group_id FROM devices WHERE id = ?");
  q.bind(1, call.who.device_id);
  if (!q.step()) return std::nullopt;
  return q.optional_text(0);
}

std::optional<std::string> reported_status(Call& call, const std::string& deployment) {
  auto q = call.db.prepare("SELECT status FROM deployment_devices WHERE deployment_id = ? AND device_id = ?");
  q.bind(1, deployment).bind(2, call.who.device_id);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

bool is_sha256_hex(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

Reply agent_check_in(Call& call) {
  auto body = call.request.body.empty() ? Json::object() : parse_object(call.request.body);
  auto version = optional_string(body, "version", 64);
  auto state = optional_string(body, "state", 32);
  if (auto it = body.find("sequence"); it != body.end() && !it->is_null() && !it->is_number_unsigned())
    throw ApiError{400, "invalid_request", "field 'sequence' must be a non-negative integer"};
  auto manifest_digest = optional_string(body, "manifest_digest", 64);
  if (manifest_digest && !is_sha256_hex(*manifest_digest))
    throw ApiError{400, "invalid_request",
                   "field 'manifest_digest' must be 64 lower-case hex digits (SHA-256) or null"};
  auto& device = call.who.device_id;
  call.db
      .prepare(
          "UPDATE devices SET last_seen = ?, version = coalesce(?, version), state = coalesce(?, state) WHERE id = ?")
      .bind(1, now_iso8601())
      .bind_optional(2, version)
      .bind_optional(3, state)
      .bind(4, device)
      .run();

  Json deployment = nullptr;
  auto group = device_group(call);
  std::optional<std::string> newest;
  if (group) {
    auto q =
        call.db.prepare("SELECT id FROM deployments WHERE group_id = ? AND tenant_id = ? ORDER BY rowid DESC LIMIT 1");
    q.bind(1, *group).bind(2, call.who.tenant_id);
    if (q.step()) newest = q.text(0);
  }
  if (newest) {
    auto row = load_deployment(call.db, call.who.tenant_id, *newest);
    evaluate_deployment(call.db, row, true);
    if (row.state == "active" || row.state == "completed") {
      int wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device));
      if (wave > 0 && wave <= row.wave) deployment = offer(call, row, wave, "install");
    } else if (row.state == "aborted" && row.previous) {
      // Back to the previous deployment, for devices running the aborted one: the installed envelope says so,
      // or (for an agent that reports no digest) the status it reported.
      bool running = manifest_digest ? (row.manifest && *manifest_digest == *row.manifest)
                                     : reported_status(call, row.id) == std::optional<std::string>("installed");
      if (running) {
        auto previous = load_deployment(call.db, call.who.tenant_id, *row.previous);
        if (previous.manifest) deployment = offer(call, previous, 0, "revert");
      }
    }
  }
  return {200, Json{{"device", device}, {"check_in_after", call.config.check_in_after}, {"deployment", deployment}}};
}

Response agent_deployment_manifest(Call& call) {
  auto row = load_deployment(call.db, call.who.tenant_id, call.params[0]);
  auto group = device_group(call);
  if (!group || *group != row.group_id)
    throw ApiError{404, "not_found", fmt::format("deployment {} is not for this device's group", row.id)};
  if (!row.manifest) throw ApiError{404, "not_found", fmt::format("deployment {} has no manifest", row.id)};
  Response response;
  response.content_type = "application/cbor";
  try {
    auto bytes = read_file(blob_path(call.config, call.who.tenant_id, *row.manifest));
    response.body.assign(bytes.begin(), bytes.end());
  } catch (const Error&) {
    throw ApiError{500, "internal", fmt::format("cannot read the content of manifest {}", *row.manifest)};
  }
  return response;
}

Reply agent_report_status(Call& call) {
  auto body = parse_object(call.request.body);
  auto deployment = required_string(body, "deployment", 64);
  auto status = required_string(body, "status", 32);
  auto& known = agent_statuses();
  if (std::find(known.begin(), known.end(), status) == known.end())
    throw ApiError{
        400, "invalid_request",
        "status must be downloading, verifying, installing, testing, installed, failed, rolled_back or refused"};
  auto version = optional_string(body, "version", 64);
  auto detail = optional_string(body, "detail", 1024);
  auto row = load_deployment(call.db, call.who.tenant_id, deployment);
  auto group = device_group(call);
  if ((!group || *group != row.group_id) && !reported_status(call, deployment))
    throw ApiError{404, "not_found", fmt::format("deployment {} is not for this device's group", deployment)};
  call.db
      .prepare(
          "INSERT INTO deployment_devices (deployment_id, device_id, status, detail, updated_at) VALUES (?, ?, ?, ?, "
          "?) "
          "ON CONFLICT (deployment_id, device_id) DO UPDATE SET status = excluded.status, "
          "detail = excluded.detail, updated_at = excluded.updated_at")
      .bind(1, deployment)
      .bind(2, call.who.device_id)
      .bind(3, status)
      .bind(4, detail.value_or(""))
      .bind(5, now_iso8601())
      .run();
  if (version && status == "installed")
    call.db.prepare("UPDATE devices SET version = ? WHERE id = ?").bind(1, *version).bind(2, call.who.device_id).run();
  evaluate_deployment(call.db, row);
  return {200, Json{{"deployment", deployment}, {"device", call.who.device_id}, {"status", status}}};
}

}  // namespace kiln::service
