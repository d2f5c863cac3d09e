// The service's one store seam: every record the handlers keep, as domain operations over plain structs.
// Backends (SqliteStore today) hold all SQL; handlers, rollout rules and agent endpoints hold none.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "service/rollout.hpp"

namespace kiln::service {

struct TokenRecord {
  std::int64_t tenant_id = 0;
  std::string role, name;
  std::string id;  // "tok_" + 16 hex digits: how people name it (never its secret nor its hash)
};

// A token as listed (kiln token list): never its secret nor its hash.
struct TokenInfo {
  std::string id, name, role, created_at;
  std::optional<std::string> revoked_at;
};

struct IdempotencyRecord {
  std::string method, path;
  int status = 0;
  std::string body;
  std::optional<std::string> request_sha256;  // null for keys stored before request hashes
  bool secret = false;                         // the answer held a secret: its body is not stored
};

// A product and what its boards trust: deployments are checked against these before any device sees them.
struct Product {
  std::string id, name, description, created_at;
  std::vector<std::string> boot_keys;      // hex DER SubjectPublicKeyInfo of each MCUboot boot key
  std::vector<std::string> manifest_keys;  // hex DER SubjectPublicKeyInfo of each SUIT manifest key
  std::int64_t slot_size = 0;              // bytes of an image slot; 0: default_slot_size
  std::int64_t manifest_threshold = 1;     // M: distinct manifest keys a release needs (1 <= M <= N when N > 0)
};
// The slot size of a product that names none: kiln-board-emu's slot (16 MiB).
constexpr std::int64_t default_slot_size = std::int64_t{16} << 20;

struct Group {
  std::string id, product_id, product, name, description, created_at;  // product: the product's name
};

// A device as listed and shown.
struct DeviceView {
  std::string id, product;
  std::optional<std::string> group;  // "Product/Group"
  std::string state;
  std::optional<std::string> version;
  bool claimed = false;
  std::optional<std::string> last_seen;
  std::string imported_at;
  std::optional<std::string> time_zone;  // IANA name its maintenance windows are read in (unset: the deployment's)
  std::optional<std::string> revoked_at, revoked_reason;  // kiln device revoke: its certificate is refused
  std::optional<std::int64_t> trust_version;  // the trust version its agent last reported (null: never)
};

// What authentication, claims and agents need of a device.
struct DeviceIdentity {
  std::int64_t tenant_id = 0;
  std::string public_key;  // hex of the DER SubjectPublicKeyInfo
  std::optional<std::string> group_id;
  std::optional<std::string> certificate;  // PEM, as imported
  std::optional<std::string> revoked_at, revoked_reason;
  bool claimed = false;
  // The tenant whose factory CA the device's certificate chains to: the importing tenant, kept across
  // ownership transfers (the new owner never registered that CA).
  std::int64_t factory_tenant_id = 0;
};

// A device-transfer voucher as the service keeps it (issue 17): single use, expiring.
struct TransferVoucherRecord {
  std::string id;
  std::int64_t from_tenant_id = 0, to_tenant_id = 0;
  std::vector<std::string> devices;
  std::string payload_sha256;  // hex SHA-256 of the signed bytes (service/transfer_voucher.hpp)
  std::string public_key;      // hex DER SubjectPublicKeyInfo of the key that signed it
  std::int64_t expires_at = 0;  // unix seconds
  std::string created_at;
  std::optional<std::string> redeemed_at;
};

// Device selection of list and count (empty fields: no condition). Times compare in the stored form.
struct DeviceFilter {
  std::int64_t tenant_id = 0;
  std::optional<std::string> group_id, product_id, state, version, seen_before, seen_after;
  std::optional<bool> claimed;
};

enum class DeviceCountKey { version, state, group, product };
struct DeviceCount {
  std::optional<std::string> key;  // the value; for group and product the "Product/Group" or product name
  std::int64_t count = 0;
};

// One unit of an import. The upsert never changes a device of another tenant or one holding another key.
struct ImportedDevice {
  std::string id;
  std::int64_t tenant_id = 0;
  std::string product_id, group_id, state;
  std::optional<std::string> version;
  std::string public_key;  // hex
  std::optional<std::string> certificate, last_seen;
  std::string imported_at;
};

struct ImageRecord {
  std::string sha256, name;
  std::int64_t size = 0, received = 0;
  bool complete = false;
  std::string created_at;
  std::optional<std::string> manifest;  // the SUIT manifest linked at upload
};

// An encrypted release as delivered to one device (docs/encrypted-delivery.md): the release image with its
// unprotected TLV area replaced by `area` (the content key wrapped to the device's image-encryption key).
struct DeviceImage {
  std::string device_id, image;  // image: the release's SHA-256
  std::string area;              // hex of the device's unprotected TLV area
  std::string sha256;            // hex SHA-256 of the device's image
  std::int64_t size = 0;
  std::string created_at;
};

struct FactoryCaChallenge {
  std::int64_t tenant_id = 0;
  std::string key_sha256;
  std::int64_t expires_at = 0;
};

// The head of a station's ledger as last imported (ledger_head of its bundle trailer).
struct LedgerHead {
  std::string ledger_id;
  std::int64_t rows = 0;
  std::string hash, imported_at;
};

struct FactoryCaRecord {
  std::string id, subject, pem;
  bool stations = false;
  std::optional<std::string> key_sha256;
  bool usable = false;  // the tenant owns the CA's key
  std::string created_at;
  std::optional<std::string> revoked_at, revoked_reason;  // kiln device ca revoke
};

// A deployment as stored: its rollout (rollout.hpp) and what it delivers.
struct Deployment : Rollout {
  std::int64_t tenant_id = 0;       // set by load_deployment: whose audit log records the rules' halts
  std::string id, group_id, group;  // group: "Product/Group"
  std::vector<std::string> images;
  std::optional<std::string> manifest;
  std::optional<std::int64_t> sequence;
  // A trust deployment (docs/key-rotation.md) carries the product's trust update of this version (and every
  // earlier one, for boards behind) instead of images and a manifest; nullopt: a release.
  std::optional<std::int64_t> trust_version;
  std::optional<std::string> previous;
  std::string created_at, updated_at;
};

// One device of a deployment's group and what it last reported for the deployment.
struct DeploymentDevice {
  std::string id;
  std::optional<std::string> status;  // nullopt: nothing reported
  std::string detail, updated_at, version;
  // Kept from the device's first report for the deployment: the manifest digest and version it ran
  // before (as its last check-in said), and when it started.
  std::optional<std::string> previous_manifest, version_before;
  std::string started_at;
  std::string last_seen;  // the device's last check-in ("" never)
  std::int64_t attempt = 1;               // the attempt it is on (retries of transient failures)
  std::optional<std::int64_t> retry_at;   // retrying: not offered again before (unix seconds)
  std::optional<std::string> time_zone;   // the device's own zone (maintenance windows)
};

// What a device's agent last said it runs (check-in): SUIT sequence number and manifest digest.
struct DeviceFirmware {
  std::string id;
  std::optional<std::int64_t> sequence;
  std::optional<std::string> manifest_digest;
};

// One write as the audit log keeps it (docs/service.md, GET /v1/audit).
struct AuditEntry {
  std::int64_t id = 0;  // given by the store, increasing: the order of the log and its paging cursor
  std::string at;       // UTC ISO 8601, the stored form
  std::string actor;    // token name ("station:NAME" for stations) or the device UID of an agent
  std::string role;     // admin, operator, factory, reader or device
  std::string action;   // "image.delete", "deployment.create", ...
  std::string method, route, target;  // route: the pattern ("/v1/images/{}"); target: the ID acted on ("" none)
  int status = 0;                     // the HTTP status answered
  std::string request_id;
};

// Selection of the audit log (empty fields: no condition). since/until: inclusive, in the stored form.
struct AuditFilter {
  std::int64_t tenant_id = 0;
  std::optional<std::string> actor, action, target, since, until;
};

// The store cannot be reached now (connection lost, database down or restarting): the request may be
// retried later (HTTP 503 with Retry-After); at start, kiln-service exits with ExitCode::service.
class StoreUnavailable : public Error {
 public:
  explicit StoreUnavailable(std::string message, std::string hint = {})
      : Error(ExitCode::service, std::move(message), std::move(hint)) {}
};

// The store refused a value of the request (text PostgreSQL cannot hold: a NUL byte, invalid UTF-8):
// the request is bad (HTTP 400).
class StoreRejected : public Error {
 public:
  explicit StoreRejected(std::string message) : Error(ExitCode::usage, std::move(message)) {}
};

// A write other than a device's telemetry in an Access::telemetry unit: roll the unit back and run it again with
// Access::write. Not an Error: it never reaches a client.
class WriteOrderNeeded : public std::exception {
 public:
  const char* what() const noexcept override { return "a telemetry unit tried a write that needs the write order"; }
};

class Store {
 public:
  virtual ~Store() = default;

  // A unit of work: what a handler does between begin() and commit() is applied together or not at all
  // (destroyed without commit: rolled back), isolated from other requests. The service runs every request
  // in one (reads: a consistent snapshot; writes: one writer at a time); a handler's units nest inside it
  // and undo only their own part when they fail.
  class Transaction {
   public:
    virtual ~Transaction() = default;
    virtual void commit() = 0;
  };
  // read: a consistent snapshot. write: one writer at a time (the store's write order). telemetry: a snapshot
  // that does not take the write order and may write only a device's own telemetry (device_checked_in,
  // record_device_firmware, record_device_trust_version; its device row may still be locked by a writer for a
  // moment); any other write, or a telemetry row a writer changed after the snapshot, throws WriteOrderNeeded,
  // so that an agent check-in deciding nothing does not queue behind writers. A telemetry unit's commit need not
  // wait until it is on disk: a crash may lose the last fraction of a second of check-ins, never corrupt anything
  // (PostgreSQL: SET LOCAL synchronous_commit = off). A store whose writers queue anyway (SQLite, in WAL mode with
  // synchronous=NORMAL, which never waits per commit) takes it as write.
  enum class Access { read, write, telemetry };
  virtual std::unique_ptr<Transaction> begin(Access access = Access::write) = 0;
  // Said before costly work that leads to a write other than telemetry: in a telemetry unit that write would
  // throw WriteOrderNeeded, so this throws it now and the work is done once, in the write order. Does nothing
  // in any other unit (and in SQLite, which has no telemetry unit).
  virtual void require_write_order() {}

  // Tenants and tokens.
  virtual std::int64_t create_tenant(const std::string& name, const std::string& now) = 0;
  virtual std::optional<std::int64_t> find_tenant(const std::string& name) = 0;
  virtual std::string tenant_name(std::int64_t tenant_id) = 0;
  virtual void add_token(const std::string& hash, const TokenRecord& token, const std::string& now) = 0;
  // A live token (a revoked one is not found).
  virtual std::optional<TokenRecord> find_token(const std::string& hash) = 0;
  // The tenant's tokens, revoked ones included, in creation order.
  virtual std::vector<TokenInfo> list_tokens(std::int64_t tenant_id) = 0;
  // Marks the token revoked (its first revocation time stays); false when the tenant has no such token.
  virtual bool revoke_token(std::int64_t tenant_id, const std::string& id, const std::string& now) = 0;

  // Idempotency keys (times in the stored ISO form).
  virtual void forget_idempotency_before(const std::string& oldest) = 0;
  virtual std::optional<IdempotencyRecord> find_idempotency(std::int64_t tenant_id, const std::string& key,
                                                            const std::string& oldest) = 0;
  virtual void remember_idempotency(std::int64_t tenant_id, const std::string& key, const IdempotencyRecord& record,
                                    const std::string& now) = 0;

  // Products and groups. A product `ref` is its ID or name.
  virtual std::optional<Product> find_product(std::int64_t tenant_id, const std::string& ref) = 0;
  virtual bool product_name_taken(std::int64_t tenant_id, const std::string& name) = 0;
  virtual void insert_product(std::int64_t tenant_id, const Product& product) = 0;
  virtual std::vector<Product> list_products(std::int64_t tenant_id) = 0;
  // Removes the product with its groups and their deployments (the caller checked it has no devices).
  virtual void delete_product(const std::string& product_id) = 0;
  // Replaces the product's boot keys, manifest keys and slot size.
  virtual void update_product_trust(const Product& product) = 0;
  virtual std::optional<Group> find_group(std::int64_t tenant_id, const std::string& id) = 0;
  virtual std::optional<Group> find_group_by_name(const std::string& product_id, const std::string& name) = 0;
  virtual void insert_group(std::int64_t tenant_id, const Group& group) = 0;
  virtual std::vector<Group> list_groups(std::int64_t tenant_id, const std::optional<std::string>& product_id) = 0;
  virtual void update_group(const std::string& id, const std::optional<std::string>& name,
                            const std::optional<std::string>& description) = 0;
  virtual void delete_group(const std::string& group_id) = 0;
  virtual std::int64_t devices_in_product(const std::string& product_id) = 0;
  virtual std::int64_t devices_in_group(const std::string& group_id) = 0;

  // Devices.
  virtual std::optional<DeviceView> find_device(std::int64_t tenant_id, const std::string& id) = 0;
  // The tenant's devices among `ids` (any order; an unknown or another tenant's ID is left out): one query for a
  // batch (POST /v1/devices/assign).
  virtual std::vector<DeviceView> find_devices(std::int64_t tenant_id, const std::vector<std::string>& ids) = 0;
  // Any tenant's device: authentication looks devices up before it knows the tenant.
  virtual std::optional<DeviceIdentity> device_identity(const std::string& id) = 0;
  // Devices in ID order after `after`, at most `limit`.
  virtual std::vector<DeviceView> list_devices(const DeviceFilter& filter, const std::optional<std::string>& after,
                                               std::int64_t limit) = 0;
  virtual std::vector<DeviceCount> count_devices(const DeviceFilter& filter, DeviceCountKey by) = 0;
  // False when nothing changed: the UID belongs to another tenant or holds another key.
  virtual bool upsert_device(const ImportedDevice& device) = 0;
  virtual bool group_of_device_product(const std::string& device_id, const std::string& group_id) = 0;
  virtual void set_device_group(const std::string& device_id, const std::string& group_id) = 0;
  // The devices (existing ones, checked by the caller) to `group_id` at once, each counted by its old and new group's
  // deployments as set_device_group counts it; a few statements for the batch, not a few per device, when neither
  // group has deployments (POST /v1/devices/assign).
  virtual void set_devices_group(const std::vector<std::string>& device_ids, const std::string& group_id) = 0;
  // The device's own time zone for maintenance windows (nullopt: none, the deployment's applies).
  virtual void set_device_time_zone(const std::string& device_id, const std::optional<std::string>& zone) = 0;
  virtual std::optional<std::string> device_time_zone(const std::string& device_id) = 0;
  virtual void mark_claimed(const std::string& device_id, const std::string& now) = 0;
  // Ownership (issue 17). unclaim: claimed = 0 and no group (it leaves its group's tallies), same tenant.
  // transfer: the device moves to `tenant_id` and its product `product_id` (the same name there), claimed at
  // `now`, in no group; factory_tenant_id keeps the tenant whose factory CA vouched for it.
  virtual void unclaim_device(const std::string& device_id) = 0;
  virtual void transfer_device(const std::string& device_id, std::int64_t tenant_id, const std::string& product_id,
                               const std::string& now) = 0;
  // Trust updates (issue 17 item 2, docs/key-rotation.md): every accepted update of a product, kept so that a
  // board that was offline catches up in order. `update_base64`: the signed CBOR, base64.
  virtual void add_trust_update(const std::string& product_id, std::int64_t version, const std::string& update_base64,
                                const std::string& now) = 0;
  // The product's updates above `after_version`, in version order: (version, update_base64).
  virtual std::vector<std::pair<std::int64_t, std::string>> trust_updates_after(const std::string& product_id,
                                                                               std::int64_t after_version) = 0;
  // The highest accepted version (0: none).
  virtual std::int64_t trust_version(const std::string& product_id) = 0;
  // The trust version the device's agent reported at check-in (device show; a trust deployment's success).
  virtual void record_device_trust_version(const std::string& device_id, std::int64_t version) = 0;
  virtual void add_transfer_voucher(const TransferVoucherRecord& voucher) = 0;
  virtual std::optional<TransferVoucherRecord> find_transfer_voucher(const std::string& id) = 0;
  // Marks the voucher redeemed at `now` when it was not: true for exactly one of two racing accepts.
  virtual bool take_transfer_voucher(const std::string& id, const std::string& now) = 0;
  // Revokes the device (state revoked; a second revocation keeps the first time and reason). Imports never
  // bring a revoked device back.
  virtual void revoke_device(const std::string& device_id, const std::string& reason, const std::string& now) = 0;
  // A check-in: version and state when given, and last seen now. Written only when the version or state
  // changes or the stored last seen is before `stale_before` (or none): a device checking in more often
  // than that costs no write (docs/service.md, "Last seen"). True when it wrote.
  virtual bool device_checked_in(const std::string& device_id, const std::string& now, const std::string& stale_before,
                                 const std::optional<std::string>& version, const std::optional<std::string>& state) = 0;

  // What the device's agent reported running at check-in (each field only when given).
  virtual void record_device_firmware(const std::string& device_id, const std::optional<std::int64_t>& sequence,
                                      const std::optional<std::string>& manifest_digest) = 0;
  // The firmware every device of the group last reported, in ID order.
  virtual std::vector<DeviceFirmware> group_firmware(const std::string& group_id) = 0;

  // The device's image-encryption public key (hex DER SPKI) from its bundle, and what was delivered with it.
  // A new key forgets the device's delivered images (they were wrapped to the old key).
  virtual void set_device_encryption_key(const std::string& device_id, const std::string& public_key) = 0;
  virtual std::optional<std::string> device_encryption_key(const std::string& device_id) = 0;
  virtual std::optional<DeviceImage> find_device_image(const std::string& device_id, const std::string& image) = 0;
  virtual void save_device_image(const DeviceImage& image) = 0;

  // Claim challenges (expiry in unix seconds; expired ones are dropped when a new one is added).
  virtual void add_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                   std::int64_t expires_at, std::int64_t now) = 0;
  // Consumes a live challenge; false (and nothing consumed) when there is none.
  virtual bool take_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                    std::int64_t now) = 0;

  // Staged parts of a large import (created_at in unix seconds).
  virtual void forget_import_parts_before(std::int64_t oldest) = 0;
  virtual std::int64_t import_received(std::int64_t tenant_id, const std::string& import_id) = 0;
  virtual void add_import_part(std::int64_t tenant_id, const std::string& import_id, std::int64_t offset,
                               std::string_view body, std::int64_t now) = 0;
  // The byte offsets of an import's staged parts, in order; one part's body (nullopt: no such part). A part is
  // at most a request body: callers take one at a time, never the whole import at once.
  virtual std::vector<std::int64_t> import_part_offsets(std::int64_t tenant_id, const std::string& import_id) = 0;
  virtual std::optional<std::string> import_part(std::int64_t tenant_id, const std::string& import_id,
                                                 std::int64_t offset) = 0;
  virtual void delete_import(std::int64_t tenant_id, const std::string& import_id) = 0;

  // Factory CAs: registrations, their owners (one tenant per CA key) and registration challenges.
  // owned_*: the CAs that are not revoked; revoked_factory_ca_pems: the owned CAs that are.
  virtual std::vector<std::string> owned_factory_ca_pems(std::int64_t tenant_id) = 0;
  virtual std::map<std::int64_t, std::vector<std::string>> owned_station_ca_pems() = 0;
  virtual std::vector<std::string> revoked_factory_ca_pems(std::int64_t tenant_id) = 0;
  // Every owned station CA that is revoked, by tenant (to say why a station login is refused).
  virtual std::map<std::int64_t, std::vector<std::string>> revoked_station_ca_pems() = 0;
  // Marks the tenant's CA revoked (the first time and reason stay); false when it has no such CA.
  virtual bool revoke_factory_ca(std::int64_t tenant_id, const std::string& id, const std::string& reason,
                                 const std::string& now) = 0;
  virtual void add_factory_ca_challenge(const std::string& nonce, const FactoryCaChallenge& challenge,
                                        std::int64_t now) = 0;
  // Removes the challenge whatever it holds and returns it.
  virtual std::optional<FactoryCaChallenge> take_factory_ca_challenge(const std::string& nonce) = 0;
  // Makes `tenant_id` the owner of the key unless it has one; returns the owner.
  virtual std::int64_t claim_factory_ca_key(const std::string& key_sha256, std::int64_t tenant_id,
                                            const std::string& now) = 0;
  // Registers (or widens to stations) a CA; returns whether it now serves stations.
  virtual bool register_factory_ca(std::int64_t tenant_id, const FactoryCaRecord& ca) = 0;
  virtual std::vector<FactoryCaRecord> list_factory_cas(std::int64_t tenant_id) = 0;

  // Ledger heads last imported, per tenant, station key (SHA-256 of its SubjectPublicKeyInfo, hex) and ledger.
  virtual std::optional<LedgerHead> find_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                                                     const std::string& ledger_id) = 0;
  // The head imported last from the station, whatever its ledger.
  virtual std::optional<LedgerHead> latest_ledger_head(std::int64_t tenant_id,
                                                       const std::string& station_key_sha256) = 0;
  // Remembers the head (replacing the one of the same ledger).
  virtual void save_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                                const LedgerHead& head) = 0;

  // Images and manifests (blobs of a tenant, content-addressed).
  virtual std::optional<ImageRecord> find_image(std::int64_t tenant_id, const std::string& sha256) = 0;
  virtual void insert_image(std::int64_t tenant_id, const ImageRecord& image) = 0;
  virtual std::vector<ImageRecord> list_images(std::int64_t tenant_id) = 0;
  virtual void record_upload(std::int64_t tenant_id, const std::string& sha256, std::int64_t received,
                             bool complete) = 0;
  virtual void link_manifest(std::int64_t tenant_id, const std::string& image, const std::string& manifest) = 0;

  // Deployments.
  virtual std::optional<Deployment> find_deployment(std::int64_t tenant_id, const std::string& id) = 0;
  // The newest release deployment of the group (skip_aborted: the newest that was not aborted). Trust
  // deployments are a track of their own: newest_trust_deployment.
  virtual std::optional<std::string> newest_deployment(std::int64_t tenant_id, const std::string& group_id,
                                                       bool skip_aborted) = 0;
  // The newest trust deployment of the group, whatever its state.
  virtual std::optional<std::string> newest_trust_deployment(std::int64_t tenant_id, const std::string& group_id) = 0;
  // In creation order.
  virtual std::vector<Deployment> list_deployments(std::int64_t tenant_id,
                                                   const std::optional<std::string>& group_id) = 0;
  // Supersedes the group's running deployments of the same kind (releases or trust updates) and adds this one.
  virtual void insert_deployment(std::int64_t tenant_id, const Deployment& deployment, const std::string& now) = 0;
  // Stores the rollout part (state, wave, halt) of the deployment.
  virtual void save_rollout(const std::string& deployment_id, const Rollout& rollout, const std::string& now) = 0;
  // The group's devices by wave and what they reported for the deployment. Tallies are kept as devices
  // report, join or leave the group (in the same unit of work): reading one counts nothing.
  virtual RolloutTally rollout_tally(const Deployment& deployment) = 0;
  // The tallies of the tenant's deployments (of one group), by deployment ID, in one read.
  virtual std::map<std::string, RolloutTally> rollout_tallies(std::int64_t tenant_id,
                                                              const std::optional<std::string>& group_id) = 0;
  // Every device of the deployment's group with what it reported, in ID order.
  virtual void for_each_deployment_device(const Deployment& deployment,
                                          const std::function<void(const DeploymentDevice&)>& each) = 0;
  virtual std::optional<std::string> reported_status(const std::string& deployment_id,
                                                     const std::string& device_id) = 0;
  // What one device reported for the deployment (nullopt: nothing).
  virtual std::optional<DeploymentDevice> deployment_device(const std::string& deployment_id,
                                                            const std::string& device_id) = 0;
  // The newest deployment of the group carrying this manifest (a revert target).
  virtual std::optional<std::string> deployment_with_manifest(std::int64_t tenant_id, const std::string& group_id,
                                                              const std::string& manifest) = 0;
  // An agent's status report; its first one for a deployment also keeps the manifest digest and version the
  // device reported last (previous_manifest, version_before) and the time (started_at). `installed_version` (with status installed) becomes the device's version.
  virtual void record_status(const std::string& deployment_id, const std::string& device_id,
                             const std::string& status, const std::string& detail, const std::string& now,
                             const std::optional<std::string>& installed_version) = 0;
  // The attempt a device is on for the deployment and, while it waits to retry, when it may be offered the
  // release again (its row exists: record_status came first).
  virtual void set_attempt(const std::string& deployment_id, const std::string& device_id, std::int64_t attempt,
                           const std::optional<std::int64_t>& retry_at) = 0;

  // Deletion. The image's row with what refers to it (its devices' encrypted copies, manifest links to it);
  // the caller checked that no unfinished deployment uses it and removes its content file.
  virtual void delete_image(std::int64_t tenant_id, const std::string& sha256) = 0;
  // The deployment with its device rows and tallies (the caller checked that it is finished).
  virtual void delete_deployment(const std::string& deployment_id) = 0;

  // The audit log: one entry per write (in the unit of work of the write it records).
  virtual void add_audit(std::int64_t tenant_id, const AuditEntry& entry) = 0;
  // Entries in log order after the entry `after`, at most `limit`.
  virtual std::vector<AuditEntry> list_audit(const AuditFilter& filter, const std::optional<std::int64_t>& after,
                                             std::int64_t limit) = 0;
};

// Where a store lives: a PostgreSQL connection URI (postgresql://... or postgres://...) or a SQLite file
// (":memory:" in tests).
bool is_postgresql_url(const std::string& location);
// Opens the store (PgStore or SqliteStore). password_file: PgStoreOptions::password_file.
std::unique_ptr<Store> open_store(const std::string& location, const std::string& password_file = {});
// The URL with any password replaced by "***": what messages and logs may show.
std::string redact_store_url(const std::string& url);
// Refuses (Error, ExitCode::usage) a PostgreSQL URL that holds a password (argv shows in ps and shell
// history) or that libpq cannot parse.
void check_store_url(const std::string& url);

}  // namespace kiln::service
