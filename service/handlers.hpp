// What route handlers share: the authenticated call, API errors, and request-field validation.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/time.hpp"
#include "service/api.hpp"
#include "service/rollout.hpp"
#include "service/store.hpp"

namespace kiln::service {

using Json = nlohmann::ordered_json;

// Thrown by handlers; becomes {"error":{"code":..., "message":...}} with this HTTP status.
struct ApiError {
  int status;
  std::string code;
  std::string message;
};

struct Principal {
  std::int64_t tenant_id = 0;
  Role role = Role::reader;
  std::string token_name;
  std::string device_id;  // set for agent calls (mutual TLS), empty for tokens
};

struct Call {
  Store& store;
  const ServiceConfig& config;
  const Request& request;
  Principal who;
  std::vector<std::string> params;  // the {} segments of the route, percent-decoded
  std::map<std::string, std::string> query;

  std::optional<std::string> query_value(const std::string& name) const;
};

struct Reply {
  int status = 200;
  Json body;
};

// Request body as a JSON object, or ApiError 400 naming the parse error.
Json parse_object(const std::string& body);
std::string required_string(const Json& object, const char* field, std::size_t max_length = 256);
std::optional<std::string> optional_string(const Json& object, const char* field, std::size_t max_length = 4096);
// Field 'devices': an array of 1 to `max` device UIDs, each taken once in first-seen order (a repeat is
// ignored); ApiError 400 otherwise.
std::vector<std::string> device_ids_field(const Json& object, std::size_t max);
// Timestamps (now_iso8601, iso8601, normalize_timestamp) are core/time.hpp's: the one form they are
// stored and compared in. A client's malformed time is answered 400 naming the field.
// The query parameter `name` as a normalized time; ApiError 400 naming it when malformed.
std::optional<std::string> timestamp_query(const Call& call, const std::string& name);
std::string random_id(const char* prefix);
// A device as device list and show give it.
Json device_json(const DeviceView& device);
// Hex of `count` random bytes (nonces); ApiError 500 when the generator fails.
std::string random_hex(std::size_t count);
// Checks a signature a key holder made over a challenge `message` (ECDSA/RSA: over its SHA-256; Ed25519:
// over the message itself, as Signer::sign takes it). False for a bad signature or an unusable key.
bool verify_message_signature(ByteView public_key_der, std::string_view message, ByteView signature);

// Catalog: products and groups.
Reply create_product(Call& call);
Reply list_products(Call& call);
Reply show_product(Call& call);
Reply delete_product(Call& call);
// PATCH /v1/products/{}: boot_keys, manifest_keys (PEM public keys), slot_size.
Reply update_product(Call& call);
Reply create_group(Call& call);
Reply list_groups(Call& call);
Reply show_group(Call& call);
Reply update_group(Call& call);
Reply delete_group(Call& call);
// Resolves a group by ID or "Product/Group" within the caller's tenant; ApiError 404 if none.
std::string resolve_group_id(Call& call, const std::string& ref);
std::string resolve_product_id(Call& call, const std::string& ref);

// Devices.
Reply import_devices(Call& call);
Reply list_devices(Call& call);
Reply count_devices(Call& call);
Reply show_device(Call& call);
Reply assign_device(Call& call);
// POST /v1/devices/assign: many devices to one group, all or none (docs/openapi.yaml).
Reply assign_devices(Call& call);
// PATCH /v1/devices/{}: the device's own time zone for maintenance windows ({"time_zone": "Europe/Berlin"|null}).
Reply update_device(Call& call);
Reply claim_challenge(Call& call);
// Revocation (revocation.cpp, docs/security.md). POST /v1/devices/{}/revoke {"reason"}: the device's certificate
// is refused from now on and it leaves the deployments it has not finished (status revoked). Idempotent.
Reply revoke_device(Call& call);
// GET /v1/tokens: the tenant's tokens (never a secret nor a hash). DELETE /v1/tokens/{ID or name}: revoked from
// its next request on; the tenant's last live admin token cannot be revoked (409).
Reply list_tokens(Call& call);
Reply revoke_token(Call& call);
// POST /v1/factory-cas/{ID or name}/revoke {"reason"}: imports and station logins under the CA are refused.
Reply revoke_factory_ca(Call& call);
// ApiError 403 (device_revoked) naming the device, when it is revoked; else the device's tenant as the store
// says now (a transfer moves it: read on every agent call, like the revocation).
std::optional<std::int64_t> refuse_revoked_device(Store& store, const ServiceConfig& config,
                                                  const std::string& device_id);
// Ownership (transfer.cpp, docs/security.md "Ownership transfer"). POST /v1/devices/{}/unclaim: the device
// is unclaimed and leaves its group; its unfinished deployments record it `unclaimed`.
Reply unclaim_device(Call& call);
// POST /v1/device-transfers {"to_tenant", "devices", "expires_in"}: a signed, single-use voucher.
Reply create_transfer(Call& call);
// POST /v1/device-transfers/challenge {"voucher"}: the voucher checked, one challenge per device.
Reply transfer_challenge(Call& call);
// POST /v1/device-transfers/accept {"voucher", "proofs": [{"device", "nonce", "signature"}]}: every device
// moves to the caller's tenant, or none does.
Reply accept_transfer(Call& call);
// The bytes a device signs to prove possession of its key in a transfer.
std::string transfer_message(const std::string& voucher_id, const std::string& device_id, const std::string& nonce);
Reply claim_device(Call& call);
// The bytes a device signs to be claimed (see docs/openapi.yaml, ClaimChallenge).
std::string claim_message(const std::string& device_id, const std::string& nonce);

// Proof that a device holds its key (claim, transfer). A challenge: a fresh nonce kept for the device for five
// minutes, and the message it signs (`message` of the nonce).
Json possession_challenge(Call& call, const std::string& device_id,
                          const std::function<std::string(const std::string& nonce)>& message);
// The proof: the live challenge `nonce` of the device is spent, and `signature` verifies over `message` with the
// device's imported public key. Else ApiError 409 challenge_unknown (`unknown`) or 422 signature_invalid (`bad`).
void require_possession(Call& call, const std::string& device_id, const std::string& nonce, ByteView signature,
                        const std::string& message, const std::string& unknown, const std::string& bad);
// A hex signature field (400 when it is not hex).
Bytes hex_signature(const std::string& hex);

// Images.
Reply create_image(Call& call);
Reply list_images(Call& call);
Reply show_image(Call& call);
Reply upload_image_chunk(Call& call);
Response download_image(Call& call);
// DELETE /v1/images/{}: an image or manifest no unfinished deployment uses; its content file goes too.
Reply delete_image(Call& call);
// One range of a Range header ("bytes=A-B", "bytes=A-", "bytes=-N") clamped to `size`; nullopt when malformed
// or unsatisfiable.
std::optional<std::pair<std::int64_t, std::int64_t>> byte_range(const std::string& header, std::int64_t size);
// Content streamed from its files as the answer to a GET: the whole of it (200), the one range its Range
// header asks for (206 with Content-Range), or 416 when that range is malformed or past the end.
Response content_response(const Call& call, StreamedBody whole);

// Encrypted releases delivered per device (delivery.cpp, docs/encrypted-delivery.md).
// The release image `sha` as this device gets it: the content key wrapped to its own image-encryption key,
// when the service has a delivery key that opens the release and the device an image-encryption key.
// Made once per device and release and kept in the store. nullopt: the release goes out as uploaded.
std::optional<DeviceImage> device_image(Call& call, const std::string& sha);
// GET /v1/agent/images/{sha}/content: the device's own image when it has one, else the release.
Response agent_download_image(Call& call);

// Agent endpoints (mutual TLS) and the factory CAs their certificates chain to.
Principal authenticate_device(Store& store, const std::vector<std::string>& chain_der);
// POST /v1/factory-cas/challenge: a single-use nonce the CA's key signs to register it.
Reply factory_ca_challenge(Call& call);
Reply register_factory_ca(Call& call);
Reply list_factory_cas(Call& call);
Reply agent_check_in(Call& call);
// Trust updates (service/trust_updates.cpp, docs/key-rotation.md).
Reply publish_trust_update(Call& call);
Reply list_trust_updates(Call& call);
// Checks a trust update against the product's trust in force (product, version above, M-of-N of its manifest
// keys, boot keys known); with `record`, records it and the product's keys follow. ApiError 422
// trust_update_refused with the reason otherwise, nothing changed.
// Returns the update's version.
std::int64_t register_trust_update(Call& call, Product& product, ByteView bytes, bool record);
// The version a trust deployment of `bytes` carries: a new update, checked (and recorded with `record`) as
// register_trust_update does, or the product's newest recorded one sent again (deployed to another group).
// ApiError 422 for anything else (older, a conflicting update of the same version, malformed).
std::int64_t deployable_trust_version(Call& call, Product& product, ByteView bytes, bool record);
// The product's recorded updates above `installed` up to `target`, in version order (at most 16):
// [{version, update (base64)}].
Json trust_updates_between(Call& call, const std::string& product_id, std::int64_t installed, std::int64_t target);
Reply agent_report_status(Call& call);
Response agent_deployment_manifest(Call& call);

// Deployments.
Reply create_deployment(Call& call);
Reply list_deployments(Call& call);
Reply show_deployment(Call& call);
Reply pause_deployment(Call& call);
Reply resume_deployment(Call& call);
Reply abort_deployment(Call& call);
// DELETE /v1/deployments/{}: a finished deployment with its device rows.
Reply delete_deployment(Call& call);
// The unfinished deployments of the tenant that deliver the image or manifest `sha`, as "ID (state)".
std::vector<std::string> unfinished_deployments_using(Call& call, const std::string& sha);
// GET /v1/deployments/{}/devices[?status=S]: the admitted devices, their wave and last status.
Reply list_deployment_devices(Call& call);
// GET /v1/deployments/{}/report: every device of the group with its final state, versions, failure and timings.
Reply deployment_report(Call& call);
// POST /v1/images/{}/manifest: records the SUIT manifest uploaded for an image (kiln image upload --manifest).
Reply link_image_manifest(Call& call);

// ApiError 404 when the tenant has no such deployment.
Deployment load_deployment(Store& store, std::int64_t tenant_id, const std::string& id);
// Halts, opens the next wave or completes an active deployment as its time and device reports say
// (decide_rollout) and stores the change. Check-ins pass only_when_a_wave_is_due (halting and completion
// change only with status reports, which evaluate fully). False when it did not look (nothing stored).
bool evaluate_deployment(Store& store, Deployment& row, bool only_when_a_wave_is_due = false);
// The device leaves the open deployments of its group that it has not finished (installed, failed, or left
// already): each records `status` (revoked or unclaimed) with `detail`, its history kept; then `leave` runs
// (the revocation, unclaim or move to another tenant, in the caller's transaction), and each deployment left
// is evaluated again without the device. Revoke, unclaim and transfer all end a device's part this way.
// Returns the IDs of the deployments left.
std::vector<std::string> leave_open_deployments(Store& store, std::int64_t tenant_id, const std::string& device_id,
                                                DeviceStatus status, const std::string& detail,
                                                const std::function<void()>& leave);
// Where a device that took an aborted deployment goes back to: the deployment carrying exactly the manifest
// it ran before (as its agent reported at its first status for the aborted one), or, when its agent reports
// no digest, the one it last reported installed before. `to` unset: nothing to go back to, `reason` says why
// (empty: it ran the same manifest before, nothing to revert).
struct RevertTarget {
  std::optional<Deployment> to;
  std::string reason;
};
RevertTarget revert_target(Store& store, std::int64_t tenant_id, const Deployment& aborted, const std::string& device);
// True when the device still runs the aborted deployment's release: its manifest digest says so, or (an
// agent that reports none) it reported it installed and did not report its revert target installed since.
bool runs_aborted(Store& store, const Deployment& aborted, const std::string& device,
                  const std::optional<std::string>& manifest_digest, const RevertTarget& target);
// The audit log (audit.cpp): the action a route stands for ("image.delete", "deployment.pause", ...).
std::string audit_action(const std::string& method, const std::string& pattern);
// GET /v1/audit: the tenant's entries in log order; filters actor, action, target, since, until; cursor paging.
Reply list_audit(Call& call);

// Where the content of a complete image or manifest blob lives.
std::filesystem::path blob_path(const ServiceConfig& config, std::int64_t tenant_id, const std::string& sha);

}  // namespace kiln::service
