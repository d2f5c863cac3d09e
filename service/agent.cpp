// Device agent endpoints over mutual TLS: the client certificate names an imported device, carries
// its imported public key, and chains to a factory CA its tenant registered.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/time.hpp"
#include "service/blob_file.hpp"
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

// The certificate's SubjectPublicKeyInfo as it is written in it, hex.
std::string certificate_spki_hex(X509* cert) {
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), nullptr);
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &p);
  return to_hex(der);
}

// The SubjectPublicKeyInfo of the certificate's key as OpenSSL writes it (what imports keep), hex.
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

// How stale a device's last_seen may be before a check-in writes it again (docs/service.md, "Last seen"):
// a check-in that changes nothing else costs no write when the device checked in less than this ago, or
// than the check-in interval the service gives agents when that is shorter.
constexpr std::int64_t last_seen_resolution_seconds = 60;

ApiError unauthenticated(const std::string& why) {
  return ApiError{401, "unauthenticated", "device certificate refused: " + why};
}

}  // namespace

Principal authenticate_device(Store& store, const std::vector<std::string>& chain_der) {
  if (chain_der.empty()) throw unauthenticated("this endpoint needs mutual TLS with the device certificate");
  auto leaf = parse_der(chain_der[0]);
  if (!leaf) throw unauthenticated("not an X.509 certificate");
  std::string uid = common_name(leaf.get());
  auto device = store.device_identity(uid);
  if (!device) throw unauthenticated(fmt::format("no device {} is registered", uid));
  std::int64_t tenant = device->tenant_id;
  // A transferred device still chains to the CA of the tenant that imported it (its new owner never
  // registered that CA).
  std::int64_t factory_tenant = device->factory_tenant_id;
  // As written in the certificate first (no OpenSSL 3 encoder, which costs more than the rest of a check-in's
  // key work); an equal key written otherwise (explicit curve parameters, a compressed point) as OpenSSL writes it.
  if (device->public_key != certificate_spki_hex(leaf.get()) && device->public_key != spki_hex(leaf.get()))
    throw unauthenticated(fmt::format("the certificate's key is not the key imported for {}", uid));

  // Units imported before their CA was revoked stay: their own certificates still chain to it.
  if (auto error = chain_error(store, factory_tenant, leaf.get(), chain_der, true); !error.empty()) {
    if (error == no_factory_ca_registered) throw unauthenticated("the device's tenant has registered no factory CA");
    throw unauthenticated(fmt::format("certificate of {} does not chain to a registered factory CA: {}", uid, error));
  }
  return Principal{tenant, Role::reader, uid, uid};
}

namespace {

Json image_entry(Call& call, const std::string& sha, const std::string& url) {
  auto image = call.store.find_image(call.who.tenant_id, sha);
  return Json{{"id", sha}, {"size", image ? image->size : 0}, {"url", url}};
}

// The deployment object of a check-in answer (docs/openapi.yaml, AgentDeployment). attempt: with a retry
// policy, the attempt this offer is for (the agent reports transient failures instead of retrying by itself).
Json offer(Call& call, const Deployment& row, int wave, const char* action, std::int64_t attempt = 0) {
  Json images = Json::array();
  for (auto& sha : row.images) {
    // An encrypted release goes to this device with the content key wrapped to its own key (when it has one).
    if (auto mine = device_image(call, sha))
      images.push_back(Json{{"id", mine->sha256}, {"size", mine->size}, {"url", "/v1/agent/images/" + sha + "/content"}});
    else
      images.push_back(image_entry(call, sha, "/v1/agent/images/" + sha + "/content"));
  }
  Json manifest =
      row.manifest ? image_entry(call, *row.manifest, "/v1/agent/deployments/" + row.id + "/manifest") : Json(nullptr);
  Json out = {{"id", row.id},         {"wave", wave},
              {"action", action},     {"sequence", row.sequence ? Json(*row.sequence) : Json(nullptr)},
              {"manifest", manifest}, {"images", images}};
  out["retry"] = attempt > 0 && row.policy.retry.retries > 0
                     ? Json{{"attempt", attempt}, {"attempts", row.policy.retry.retries + 1}}
                     : Json(nullptr);
  return out;
}

std::optional<std::string> device_group(Call& call) {
  auto device = call.store.device_identity(call.who.device_id);
  if (!device) return std::nullopt;
  return device->group_id;
}

std::optional<std::string> reported_status(Call& call, const std::string& deployment) {
  return call.store.reported_status(deployment, call.who.device_id);
}

// With a rate (RatePolicy): a device not yet offered the deployment is offered it (and recorded notified)
// only while fewer devices were notified than the rate allows by now.
bool may_notify(Call& call, const Deployment& row, const std::string& device) {
  if (row.policy.rate.base_per_minute <= 0) return true;
  if (call.store.reported_status(row.id, device)) return true;
  auto counts = admitted_counts(row, call.store.rollout_tally(row));
  auto now = unix_now();
  if (counts.admitted - counts.status.at(status_name(DeviceStatus::pending)) >=
      rate_allowance(row.policy.rate, row.rate_steps, now))
    return false;
  call.store.record_status(row.id, device, status_name(DeviceStatus::notified), "", now_iso8601(), std::nullopt);
  return true;
}

// Whether this device is offered the deployment at this check-in, and the attempt it is for: nullopt when
// not (not admitted, not started, waiting to retry or for a maintenance window, or held by the rate). A
// retrying device's next attempt starts here.
std::optional<std::int64_t> offer_attempt(Call& call, const Deployment& row) {
  auto& device = call.who.device_id;
  int wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device));
  DeviceProgress progress;
  if (!row.policy.windows.empty()) progress.time_zone = call.store.device_time_zone(device);
  auto mine = call.store.deployment_device(row.id, device);
  if (mine) {
    progress.status = mine->status ? parse_status(*mine->status) : std::nullopt;
    progress.attempt = mine->attempt;
    progress.retry_at = mine->retry_at;
  }
  auto now = unix_now();
  auto decision = offer_decision(row, wave, progress, now);
  if (decision.hold != Hold::none) return std::nullopt;
  if (decision.new_attempt) {
    call.store.record_status(row.id, device, status_name(DeviceStatus::notified),
                             fmt::format("attempt {} of {} offered", decision.attempt, row.policy.retry.retries + 1),
                             now_iso8601(), std::nullopt);
    call.store.set_attempt(row.id, device, decision.attempt, std::nullopt);
  } else if (!may_notify(call, row, device)) {
    return std::nullopt;
  }
  return decision.attempt;
}

// The offer of an install to this device at check-in, or null.
Json install_offer(Call& call, const Deployment& row) {
  auto attempt = offer_attempt(call, row);
  if (!attempt) return nullptr;
  return offer(call, row, wave_of_bucket(row.waves, rollout_bucket(row.id, call.who.device_id)), "install", *attempt);
}

// The group's trust deployment at check-in (docs/key-rotation.md). A device that reports the deployment's
// trust version (or above) has it: installed. One behind that the deployment admits now is handed every
// missing version up to the deployment's, in order (it applies them one by one); its agent reports a refusal.
void trust_offer(Call& call, const std::string& group, std::int64_t reported, Json& reply) {
  auto id = call.store.newest_trust_deployment(call.who.tenant_id, group);
  if (!id) return;
  auto row = load_deployment(call.store, call.who.tenant_id, *id);
  evaluate_deployment(call.store, row, true);
  if (!is_open(row.state) && row.state != DeploymentState::completed) return;
  auto& device = call.who.device_id;
  auto stored = call.store.reported_status(row.id, device);
  auto status = stored ? parse_status(*stored) : std::nullopt;
  if (status && (left_deployment(*status) || status == DeviceStatus::installed)) return;
  if (reported >= *row.trust_version) {
    int wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device));
    if (!status && (wave == 0 || wave > row.wave)) return;  // not admitted: it counts once its wave opens
    call.store.record_status(row.id, device, status_name(DeviceStatus::installed),
                             fmt::format("trust version {}", reported), now_iso8601(), std::nullopt);
    evaluate_deployment(call.store, row);
    return;
  }
  if (row.state == DeploymentState::paused || row.state == DeploymentState::halted) return;
  if (status && is_failure_status(*status)) return;  // refused: handed again only by a new deployment
  if (!offer_attempt(call, row)) return;
  auto device_row = call.store.find_device(call.who.tenant_id, device);
  auto product = device_row ? call.store.find_product(call.who.tenant_id, device_row->product) : std::nullopt;
  if (!product) return;
  reply["trust_deployment"] = row.id;
  reply["trust_updates"] = trust_updates_between(call, product->id, reported, *row.trust_version);
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
  std::optional<std::int64_t> sequence;
  if (auto it = body.find("sequence"); it != body.end() && it->is_number_unsigned()) {
    if (it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      throw ApiError{400, "invalid_request", "field 'sequence' is too large"};
    sequence = static_cast<std::int64_t>(it->get<std::uint64_t>());
  }
  // The trust version the board runs (docs/key-rotation.md); absent: an agent that knows no trust updates.
  std::optional<std::int64_t> trust_version;
  if (auto it = body.find("trust_version"); it != body.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      throw ApiError{400, "invalid_request", "field 'trust_version' must be a non-negative integer"};
    trust_version = static_cast<std::int64_t>(it->get<std::uint64_t>());
  }
  auto& device = call.who.device_id;
  auto tx = call.store.begin();
  // Telemetry: written when it changed, and last seen at most once per resolution.
  auto now = unix_now();
  auto resolution = std::min<std::int64_t>(last_seen_resolution_seconds, call.config.check_in_after);
  call.store.device_checked_in(device, iso8601(now), iso8601(now - resolution), version, state);
  if (sequence || manifest_digest) call.store.record_device_firmware(device, sequence, manifest_digest);

  Json deployment = nullptr;
  auto group = device_group(call);
  std::optional<std::string> newest;
  if (group) newest = call.store.newest_deployment(call.who.tenant_id, *group, false);
  if (newest) {
    auto row = load_deployment(call.store, call.who.tenant_id, *newest);
    evaluate_deployment(call.store, row, true);
    if (row.state == DeploymentState::active || row.state == DeploymentState::completed) {
      deployment = install_offer(call, row);
    } else if (row.state == DeploymentState::aborted) {
      // Back to exactly what it ran before, for a device running an aborted deployment (the newest release
      // deployments of the group that were aborted, newest first).
      auto all = call.store.list_deployments(call.who.tenant_id, *group);
      for (auto it = all.rbegin(); it != all.rend() && deployment.is_null(); ++it) {
        if (it->trust_version) continue;
        if (it->state != DeploymentState::aborted) break;
        auto target = revert_target(call.store, call.who.tenant_id, *it, device);
        if (!runs_aborted(call.store, *it, device, manifest_digest, target)) continue;
        if (target.to && target.to->manifest)
          deployment = offer(call, *target.to, 0, "revert");
        break;
      }
    }
  }
  Json reply{{"device", device}, {"check_in_after", call.config.check_in_after}, {"deployment", deployment}};
  if (trust_version) {
    call.store.record_device_trust_version(device, *trust_version);
    if (group) trust_offer(call, *group, *trust_version, reply);
  }
  tx->commit();
  return {200, reply};
}

Response agent_deployment_manifest(Call& call) {
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  auto group = device_group(call);
  if (!group || *group != row.group_id)
    throw ApiError{404, "not_found", fmt::format("deployment {} is not for this device's group", row.id)};
  if (!row.manifest) throw ApiError{404, "not_found", fmt::format("deployment {} has no manifest", row.id)};
  Response response;
  response.content_type = "application/cbor";
  response.stream = StreamedBody::of_file(BlobFile::open(blob_path(call.config, call.who.tenant_id, *row.manifest)));
  return response;
}

Reply agent_report_status(Call& call) {
  auto body = parse_object(call.request.body);
  auto deployment = required_string(body, "deployment", 64);
  auto text = required_string(body, "status", 32);
  auto status = parse_status(text);
  if (!status || !is_agent_status(*status))
    throw ApiError{400, "invalid_request",
                   fmt::format("status must be one of {}", fmt::join(agent_statuses(), ", "))};
  auto version = optional_string(body, "version", 64);
  auto detail = optional_string(body, "detail", 1024);
  // A failure a later attempt may not have (docs/openapi.yaml AgentStatusReport.reason).
  std::optional<TransientReason> reason;
  if (auto why = optional_string(body, "reason", 32)) {
    reason = parse_transient_reason(*why);
    if (!reason || status != DeviceStatus::failed)
      throw ApiError{400, "invalid_request",
                     "field 'reason' must be download_interrupted or power_loss, with status failed"};
  }
  // The report, the device's version and the rollout decision it leads to commit together.
  auto tx = call.store.begin();
  auto row = load_deployment(call.store, call.who.tenant_id, deployment);
  auto group = device_group(call);
  auto reported = reported_status(call, deployment);
  if ((!group || *group != row.group_id) && !reported)
    throw ApiError{404, "not_found", fmt::format("deployment {} is not for this device's group", deployment)};
  // A device that left the deployment (unclaimed, moved to another tenant) does not report itself back into it:
  // its terminal status stays, and the deployment's counts with it.
  if (reported && left_deployment(*reported))
    throw ApiError{404, "not_found",
                   fmt::format("device {} left deployment {} ({}): it reports no more for it", call.who.device_id,
                               deployment, *reported)};
  // A trust deployment's devices succeed by the trust version their check-ins report; the agent reports only
  // why it could not apply an update.
  if (row.trust_version && status != DeviceStatus::refused && status != DeviceStatus::failed)
    throw ApiError{400, "invalid_request",
                   fmt::format("deployment {} carries a trust update: a device reports refused or failed for it (it "
                               "succeeds by reporting trust_version at check-in)",
                               deployment)};
  if (status == DeviceStatus::failed) {
    // With retries, a transient failure waits and tries again; the last attempt's failure is the failure.
    auto mine = call.store.deployment_device(deployment, call.who.device_id);
    auto attempt = mine ? mine->attempt : 1;
    auto outcome = after_failure(row.policy.retry, reason, detail.value_or(""), attempt, unix_now());
    call.store.record_status(deployment, call.who.device_id, status_name(outcome.status), outcome.detail,
                             now_iso8601(), std::nullopt);
    call.store.set_attempt(deployment, call.who.device_id, attempt, outcome.retry_at);
  } else {
    call.store.record_status(deployment, call.who.device_id, status_name(*status), detail.value_or(""), now_iso8601(),
                             status == DeviceStatus::installed ? version : std::nullopt);
  }
  evaluate_deployment(call.store, row);
  tx->commit();
  return {200, Json{{"deployment", deployment}, {"device", call.who.device_id}, {"status", text}}};
}

}  // namespace kiln::service
