// The PostgreSQL backend of the Store seam (libpq): a pool of connections, the schema and its versioned
// migrations, every SQL statement. Write units of work take the store's write lock (a transaction-scoped
// advisory lock, so writers are serialised across every process sharing the database, as SQLite's one
// writer); read units run on a REPEATABLE READ READ ONLY snapshot beside them. A lost connection or a
// database that is down or restarting throws StoreUnavailable (HTTP 503); the pool reconnects by itself.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "service/held_connection.hpp"
#include "service/store.hpp"

namespace kiln::service {

struct PgStoreOptions {
  // A file (mode 0600 or stricter) holding the password; else KILN_STORE_PASSWORD, else libpq's own
  // PGPASSWORD / PGPASSFILE / ~/.pgpass.
  std::string password_file;
  // Tests: migrate no further than this schema version (0: the latest).
  int migrate_to = 0;
};

class PgStore final : public Store {
 public:
  // Connects to the database of the libpq connection URI and brings its schema up to this binary's
  // version (one transaction per migration, under an advisory lock: instances starting together migrate
  // once). A store written by a newer release is refused: Error, ExitCode::conflict. A database that
  // cannot be reached: StoreUnavailable (ExitCode::service).
  explicit PgStore(const std::string& url, PgStoreOptions options = {});
  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;
  int schema_version();
  static int latest_schema_version();

  std::unique_ptr<Transaction> begin(Access access = Access::write) override;

  std::int64_t create_tenant(const std::string& name, const std::string& now) override;
  std::optional<std::int64_t> find_tenant(const std::string& name) override;
  std::string tenant_name(std::int64_t tenant_id) override;
  void add_token(const std::string& hash, const TokenRecord& token, const std::string& now) override;
  std::optional<TokenRecord> find_token(const std::string& hash) override;
  std::vector<TokenInfo> list_tokens(std::int64_t tenant_id) override;
  bool revoke_token(std::int64_t tenant_id, const std::string& id, const std::string& now) override;

  void forget_idempotency_before(const std::string& oldest) override;
  std::optional<IdempotencyRecord> find_idempotency(std::int64_t tenant_id, const std::string& key,
                                                    const std::string& oldest) override;
  void remember_idempotency(std::int64_t tenant_id, const std::string& key, const IdempotencyRecord& record,
                            const std::string& now) override;

  std::optional<Product> find_product(std::int64_t tenant_id, const std::string& ref) override;
  bool product_name_taken(std::int64_t tenant_id, const std::string& name) override;
  void insert_product(std::int64_t tenant_id, const Product& product) override;
  std::vector<Product> list_products(std::int64_t tenant_id) override;
  void delete_product(const std::string& product_id) override;
  void update_product_trust(const Product& product) override;
  std::optional<Group> find_group(std::int64_t tenant_id, const std::string& id) override;
  std::optional<Group> find_group_by_name(const std::string& product_id, const std::string& name) override;
  void insert_group(std::int64_t tenant_id, const Group& group) override;
  std::vector<Group> list_groups(std::int64_t tenant_id, const std::optional<std::string>& product_id) override;
  void update_group(const std::string& id, const std::optional<std::string>& name,
                    const std::optional<std::string>& description) override;
  void delete_group(const std::string& group_id) override;
  std::int64_t devices_in_product(const std::string& product_id) override;
  std::int64_t devices_in_group(const std::string& group_id) override;

  std::optional<DeviceView> find_device(std::int64_t tenant_id, const std::string& id) override;
  std::optional<DeviceIdentity> device_identity(const std::string& id) override;
  std::vector<DeviceView> list_devices(const DeviceFilter& filter, const std::optional<std::string>& after,
                                       std::int64_t limit) override;
  std::vector<DeviceCount> count_devices(const DeviceFilter& filter, DeviceCountKey by) override;
  bool upsert_device(const ImportedDevice& device) override;
  bool group_of_device_product(const std::string& device_id, const std::string& group_id) override;
  void set_device_group(const std::string& device_id, const std::string& group_id) override;
  void set_device_time_zone(const std::string& device_id, const std::optional<std::string>& zone) override;
  std::optional<std::string> device_time_zone(const std::string& device_id) override;
  void mark_claimed(const std::string& device_id, const std::string& now) override;
  void unclaim_device(const std::string& device_id) override;
  void transfer_device(const std::string& device_id, std::int64_t tenant_id, const std::string& product_id,
                               const std::string& now) override;
  void add_transfer_voucher(const TransferVoucherRecord& voucher) override;
  std::optional<TransferVoucherRecord> find_transfer_voucher(const std::string& id) override;
  bool take_transfer_voucher(const std::string& id, const std::string& now) override;
  void revoke_device(const std::string& device_id, const std::string& reason, const std::string& now) override;
  void device_checked_in(const std::string& device_id, const std::string& now,
                         const std::optional<std::string>& version, const std::optional<std::string>& state) override;
  void record_device_firmware(const std::string& device_id, const std::optional<std::int64_t>& sequence,
                              const std::optional<std::string>& manifest_digest) override;
  std::vector<DeviceFirmware> group_firmware(const std::string& group_id) override;
  void set_device_encryption_key(const std::string& device_id, const std::string& public_key) override;
  std::optional<std::string> device_encryption_key(const std::string& device_id) override;
  std::optional<DeviceImage> find_device_image(const std::string& device_id, const std::string& image) override;
  void save_device_image(const DeviceImage& image) override;

  void add_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                           std::int64_t expires_at, std::int64_t now) override;
  bool take_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                            std::int64_t now) override;

  void forget_import_parts_before(std::int64_t oldest) override;
  std::int64_t import_received(std::int64_t tenant_id, const std::string& import_id) override;
  void add_import_part(std::int64_t tenant_id, const std::string& import_id, std::int64_t offset,
                       std::string_view body, std::int64_t now) override;
  void for_each_import_part(std::int64_t tenant_id, const std::string& import_id,
                            const std::function<void(const std::string&)>& each) override;
  void delete_import(std::int64_t tenant_id, const std::string& import_id) override;

  std::vector<std::string> owned_factory_ca_pems(std::int64_t tenant_id) override;
  std::vector<std::string> revoked_factory_ca_pems(std::int64_t tenant_id) override;
  std::map<std::int64_t, std::vector<std::string>> revoked_station_ca_pems() override;
  bool revoke_factory_ca(std::int64_t tenant_id, const std::string& id, const std::string& reason,
                         const std::string& now) override;
  std::map<std::int64_t, std::vector<std::string>> owned_station_ca_pems() override;
  void add_factory_ca_challenge(const std::string& nonce, const FactoryCaChallenge& challenge,
                                std::int64_t now) override;
  std::optional<FactoryCaChallenge> take_factory_ca_challenge(const std::string& nonce) override;
  std::int64_t claim_factory_ca_key(const std::string& key_sha256, std::int64_t tenant_id,
                                    const std::string& now) override;
  bool register_factory_ca(std::int64_t tenant_id, const FactoryCaRecord& ca) override;
  std::vector<FactoryCaRecord> list_factory_cas(std::int64_t tenant_id) override;

  std::optional<LedgerHead> find_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                                             const std::string& ledger_id) override;
  std::optional<LedgerHead> latest_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256) override;
  void save_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                        const LedgerHead& head) override;

  std::optional<ImageRecord> find_image(std::int64_t tenant_id, const std::string& sha256) override;
  void insert_image(std::int64_t tenant_id, const ImageRecord& image) override;
  std::vector<ImageRecord> list_images(std::int64_t tenant_id) override;
  void record_upload(std::int64_t tenant_id, const std::string& sha256, std::int64_t received, bool complete) override;
  void link_manifest(std::int64_t tenant_id, const std::string& image, const std::string& manifest) override;

  std::optional<Deployment> find_deployment(std::int64_t tenant_id, const std::string& id) override;
  std::optional<std::string> newest_deployment(std::int64_t tenant_id, const std::string& group_id,
                                               bool skip_aborted) override;
  std::vector<Deployment> list_deployments(std::int64_t tenant_id, const std::optional<std::string>& group_id) override;
  void insert_deployment(std::int64_t tenant_id, const Deployment& deployment, const std::string& now) override;
  void save_rollout(const std::string& deployment_id, const Rollout& rollout, const std::string& now) override;
  RolloutTally rollout_tally(const Deployment& deployment) override;
  std::map<std::string, RolloutTally> rollout_tallies(std::int64_t tenant_id,
                                                      const std::optional<std::string>& group_id) override;
  void for_each_deployment_device(const Deployment& deployment,
                                  const std::function<void(const DeploymentDevice&)>& each) override;
  std::optional<std::string> reported_status(const std::string& deployment_id, const std::string& device_id) override;
  std::optional<DeploymentDevice> deployment_device(const std::string& deployment_id,
                                                    const std::string& device_id) override;
  std::optional<std::string> deployment_with_manifest(std::int64_t tenant_id, const std::string& group_id,
                                                      const std::string& manifest) override;
  void record_status(const std::string& deployment_id, const std::string& device_id, const std::string& status,
                     const std::string& detail, const std::string& now,
                     const std::optional<std::string>& installed_version) override;
  void set_attempt(const std::string& deployment_id, const std::string& device_id, std::int64_t attempt,
                   const std::optional<std::int64_t>& retry_at) override;
  void delete_image(std::int64_t tenant_id, const std::string& sha256) override;
  void delete_deployment(const std::string& deployment_id) override;
  void add_audit(std::int64_t tenant_id, const AuditEntry& entry) override;
  std::vector<AuditEntry> list_audit(const AuditFilter& filter, const std::optional<std::int64_t>& after,
                                     std::int64_t limit) override;

  // The tally counted afresh from every device of the group (what rollout_tally keeps up to date).
  RolloutTally recount_rollout_tally(const Deployment& deployment);

 private:
  struct Connection;
  friend class HeldConnection<PgStore>;
  class Use;
  class PgTransaction;
  Connection& current();
  Connection* acquire();
  void release(Connection* connection);
  PGconn* connect();

  static constexpr std::size_t max_idle_connections = 16;
  static constexpr int max_open_connections = 32;
  std::string url_;
  PgStoreOptions options_;
  std::uint64_t id_;
  ConnectionPool<Connection> pool_;
};

}  // namespace kiln::service
