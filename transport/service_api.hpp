// Typed client of the kiln-service API (docs/openapi.yaml): credentials, and one function per operation.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/deployment_states.hpp"
#include "signing/signer.hpp"
#include "transport/http_client.hpp"

namespace kiln::transport {

using Json = nlohmann::ordered_json;

// A station's TLS client certificate and key (PEM files): mutual TLS instead of a bearer token.
struct ClientCertificate {
  std::string certificate;
  std::string key;
  bool given() const { return !certificate.empty() || !key.empty(); }
};

struct Credentials {
  std::string service;  // https://HOST:PORT
  std::string token;
  std::string ca_file;  // pinned CA, optional
  ClientCertificate client;
  long stall_seconds = 30;
};

// $XDG_CONFIG_HOME/kiln/credentials (else ~/.config/kiln/credentials).
std::filesystem::path credentials_path();
// The credentials file, overridden field by field by KILN_SERVICE, KILN_TOKEN, KILN_CA_FILE and by
// `client` (--client-cert/--client-key). `configured_service` (the config file's "service") is used
// when neither names a service. Throws Error(authentication) when no service, or neither a token nor a
// client certificate, is known.
Credentials load_credentials(const std::optional<std::string>& configured_service = {},
                             const ClientCertificate& client = {});
// Checks a client certificate pair before use: both files given and readable, the key a PEM file that
// only its owner can read (0600) and not encrypted. Throws Error naming the file and what to do.
void check_client_certificate(const ClientCertificate& client);

class ServiceApi {
 public:
  explicit ServiceApi(const Credentials& credentials);
  Json get(const std::string& path);
  // POSTs carry a fresh idempotency key (reused across this call's retries) unless one is given.
  Json post(const std::string& path, const Json& body, std::string idempotency_key = {});
  Json patch(const std::string& path, const Json& body);
  Json remove(const std::string& path);
  HttpClient& http() { return http_; }

 private:
  HttpClient http_;
};

// login: checks the token with whoami, then writes the credentials file (0600). Returns whoami.
Json login(const Credentials& credentials);
// logout: removes the credentials file; false if there was none.
bool logout();
Json whoami(ServiceApi& api);

// What a product's boards trust: PEM public keys, how many distinct manifest keys must sign a release (M of
// N) and the image slot size (bytes); empty/0: unchanged.
struct ProductTrust {
  std::vector<std::string> boot_keys, manifest_keys;
  std::int64_t manifest_threshold = 0;
  std::int64_t slot_size = 0;
};
Json create_product(ServiceApi& api, const std::string& name, const std::string& description,
                    const ProductTrust& trust = {});
Json update_product(ServiceApi& api, const std::string& ref, const ProductTrust& trust);
// A signed trust update (docs/key-rotation.md) for the product `ref`: checked by the service against the product's
// current keys and trust version, then handed to its devices at check-in.
Json publish_trust_update(ServiceApi& api, const std::string& ref, ByteView update);
Json list_trust_updates(ServiceApi& api, const std::string& ref);
Json list_products(ServiceApi& api);
Json show_product(ServiceApi& api, const std::string& ref);
Json delete_product(ServiceApi& api, const std::string& ref);

// Groups are named by ID or "Product/Group".
Json create_group(ServiceApi& api, const std::string& product, const std::string& name, const std::string& description);
Json list_groups(ServiceApi& api, const std::optional<std::string>& product);
Json show_group(ServiceApi& api, const std::string& ref);
Json update_group(ServiceApi& api, const std::string& ref, const std::optional<std::string>& name,
                  const std::optional<std::string>& description);
Json delete_group(ServiceApi& api, const std::string& ref);

struct DeviceFilter {
  std::optional<std::string> group, product, state, version, seen_before, seen_after;
  std::optional<bool> claimed;
};
// Matching devices, page by page (constant memory): `each` sees one device at a time. Starts after
// `cursor` when given and stops after `limit` devices when non-zero; returns the cursor to continue
// from when devices remain (nullopt at the end of the list).
struct DevicePage {
  std::optional<std::string> cursor;
  std::uint64_t limit = 0;
};
std::optional<std::string> list_devices(ServiceApi& api, const DeviceFilter& filter,
                                        const std::function<void(const Json&)>& each, int page_size = 1000,
                                        const DevicePage& page = {});
Json count_devices(ServiceApi& api, const std::string& by, const DeviceFilter& filter);
Json show_device(ServiceApi& api, const std::string& id);
Json assign_device(ServiceApi& api, const std::string& id, const std::string& group);
// POST /v1/devices/assign: up to assign_batch_size devices to `group`, all or none; the answer's "devices"
// holds each moved device as `device show` gives it.
Json assign_device_batch(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group);
// The most devices the service moves in one POST /v1/devices/assign.
constexpr std::size_t assign_batch_size = 1000;
// The device's own time zone for maintenance windows (nullopt: none, the deployment's applies).
Json update_device(ServiceApi& api, const std::string& id, const std::optional<std::string>& time_zone);
// Sends a signed JSON-lines ledger bundle (docs/ledger-bundle.md) byte for byte: one request up to
// 4 MiB, else parts of an import the service checks and applies when the trailer arrives. `progress`
// gets units sent.
Json import_devices(ServiceApi& api, const std::filesystem::path& bundle,
                    const std::function<void(std::uint64_t units)>& progress = {});
// Challenge, sign, claim. `sign` gets the exact challenge message and returns the device's signature
// (ECDSA: DER over SHA-256 of the message; Ed25519: over the message).
Json claim_device(ServiceApi& api, const std::string& id, const std::function<Bytes(const std::string& message)>& sign);
Json claim_challenge(ServiceApi& api, const std::string& id);
// Claims each device in turn; a failure does not stop the others. One row per device:
// {"uid", "result": "claimed"|"failed", "error": message|null, "exit_code": N|null}.
Json claim_devices(ServiceApi& api, const std::vector<std::string>& ids,
                   const std::function<Bytes(const std::string& id, const std::string& message)>& sign);
// Device UIDs from a file: one per line ('#' comments and blank lines ignored), or JSON lines with "uid"
// or "id" (ledger export, device list -o jsonl). Duplicates are dropped, order is kept.
std::vector<std::string> read_device_ids(const std::filesystem::path& file);
// The same from the file's text (`name` is used in messages); throws Error(failure) naming the line.
std::vector<std::string> parse_device_ids(const std::string& text, const std::string& name);
Json claim_with_signature(ServiceApi& api, const std::string& id, const std::string& nonce, ByteView signature);

// The signature a key holder makes over a service challenge message (claims, CA registration): ECDSA and
// RSA over the message's SHA-256, Ed25519 over the message itself.
Bytes sign_message(const Signer& key, std::string_view message);

// Factory CAs: device certificates for the agent endpoints must chain to one of them. A CA is registered
// with proof that the caller holds its private key: the service issues a single-use challenge, `ca_key`
// signs it. Throws Error(verification_failed) before any request when `ca_key` is not the certificate's
// key. `stations`: certificates chained to this CA may also authenticate factory stations (mutual TLS).
Json register_factory_ca(ServiceApi& api, const std::filesystem::path& certificate_pem, const Signer& ca_key,
                         bool stations = false);
Json list_factory_cas(ServiceApi& api);

// Revocation (docs/security.md). A device: its certificate is refused from now on and it leaves the
// deployments it has not finished. A factory CA (ID, ID prefix or subject CN): imports and station logins
// under it are refused. reason: empty for none.
Json revoke_device(ServiceApi& api, const std::string& id, const std::string& reason);
Json revoke_factory_ca(ServiceApi& api, const std::string& ref, const std::string& reason);
// The tenant's tokens (IDs, names, roles; never a secret); a token by ID or name, refused from its next request.
Json list_tokens(ServiceApi& api);
Json revoke_token(ServiceApi& api, const std::string& ref);

// Content-addressed, resumable upload; an image the service already has costs one request.
// `progress` gets (bytes confirmed by the service, total).
Json upload_image(ServiceApi& api, const std::filesystem::path& file,
                  const std::function<void(std::uint64_t, std::uint64_t)>& progress = {}, std::size_t chunk_size = 1 << 20);
Json list_images(ServiceApi& api);
Json show_image(ServiceApi& api, const std::string& id);
// Downloads to `out` + ".part", resuming with Range after a cut (in this call and across calls), checks
// the SHA-256 and only then renames to `out`: `out` never holds a partial image.
Json download_image(ServiceApi& api, const std::string& id, const std::filesystem::path& out);

// Deletes an image or manifest (refused, Error(conflict), while an unfinished deployment uses it).
Json delete_image(ServiceApi& api, const std::string& id);

// Records the SUIT manifest made for an image, so deployments of the image carry it by default.
Json link_image_manifest(ServiceApi& api, const std::string& image, const std::string& manifest);

struct DeploymentRequest {
  std::string group;
  std::vector<std::string> images;
  std::optional<std::string> manifest;       // default: the manifest linked to the image
  std::optional<Bytes> trust_update;         // a signed trust update instead of images (a trust deployment)
  std::vector<int> waves = {100};            // cumulative percentages, one per wave
  std::optional<std::int64_t> step_after;    // seconds between waves
  std::optional<double> halt_on_failure;     // percentage of admitted devices; unset: the service's default
  bool halt_never = false;                   // no halt threshold (said explicitly)
  std::optional<std::int64_t> halt_min_executed;
  bool dry_run = false;                      // check and plan only: nothing is created
  Json controls = Json::object();            // rollout controls, as the API takes them (wave_success, ...)
};
Json create_deployment(ServiceApi& api, const DeploymentRequest& request);
Json list_deployments(ServiceApi& api, const std::optional<std::string>& group);
Json show_deployment(ServiceApi& api, const std::string& id);
// The admitted devices with their wave and last status; status: pending, failures or an agent status.
Json list_deployment_devices(ServiceApi& api, const std::string& id, const std::optional<std::string>& status);
// action: pause, resume or abort.
Json change_deployment(ServiceApi& api, const std::string& id, const std::string& action);
// A deployment view's "state", parsed once here; Error(service) for a state this kiln does not know (a newer
// service), so nothing reads an unknown state as some other one.
DeploymentState deployment_state(const Json& deployment);
// True for the states a deployment never leaves by itself: completed, halted, aborted, superseded.
bool deployment_settled(const Json& deployment);
// Polls the deployment every `interval_ms` and calls `on_change` with each new view (the first one
// too) until it settles; returns the last view. Ctrl-C throws Error(interrupted).
Json watch_deployment(ServiceApi& api, const std::string& id, int interval_ms,
                      const std::function<void(const Json&)>& on_change);
// The events between two polls of a deployment and its devices (GET /devices items): one object per
// state change, {"event", "deployment", "state", "at", ...}: "watching" (the first poll), "wave_opened",
// "device_state", "halted", "resumed", "paused", "completed", "aborted", "superseded". `before` null: the
// first poll.
std::vector<Json> deployment_events(const Json& before, const Json& before_devices, const Json& after,
                                    const Json& after_devices, const std::string& at);
// watch_deployment, polling the devices too, calling `on_event` for each event as it is seen.
Json watch_deployment_events(ServiceApi& api, const std::string& id, int interval_ms,
                             const std::function<void(const Json&)>& on_event);
// Deletes a finished (completed, aborted, superseded) deployment; Error(conflict) otherwise.
Json delete_deployment(ServiceApi& api, const std::string& id);

// The audit log (admin): entries in log order matching the filter (empty fields: any), page by page;
// stops after `limit` entries when non-zero.
struct AuditFilter {
  std::optional<std::string> actor, action, target, since, until;
};
void list_audit(ServiceApi& api, const AuditFilter& filter, std::uint64_t limit,
                const std::function<void(const Json&)>& each);

// Every device of the deployment's group: final state, versions before and after, failure reason, timings.
Json deployment_report(ServiceApi& api, const std::string& id);

}  // namespace kiln::transport
