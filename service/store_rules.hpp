// What the two Store backends (SqliteStore, PgStore) share besides the Store seam: the SELECT lists both
// dialects read alike and the mapping of their rows to the store's structs, the JSON text of array columns,
// and the bookkeeping of deployment tallies (table deployment_tallies). Each backend keeps only its SQL and
// how it reads a row of its own driver (a StoreRow).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/store.hpp"

namespace kiln::service {

// One row of a query's result, as a backend's driver gives it. A NULL reads as "" (text) or 0 (numbers).
class StoreRow {
 public:
  virtual ~StoreRow() = default;
  virtual int columns() const = 0;
  virtual bool is_null(int column) const = 0;
  virtual std::string text(int column) const = 0;
  virtual std::int64_t integer(int column) const = 0;
  virtual double real(int column) const = 0;
  // A truth value: a non-zero integer (or PostgreSQL's boolean true).
  virtual bool flag(int column) const { return integer(column) != 0; }
  std::optional<std::string> optional_text(int column) const;
  std::optional<std::int64_t> optional_integer(int column) const;
};

// SELECT lists both dialects read alike, each with the mapping of its rows (column i of the list is column
// i of the row); the backends append their WHERE and ORDER BY.
extern const char* const product_columns;
Product read_product(const StoreRow& row);
extern const char* const group_columns;
Group read_group(const StoreRow& row);
extern const char* const device_columns;
DeviceView read_device(const StoreRow& row);
extern const char* const image_columns;
ImageRecord read_image(const StoreRow& row);
// Registrations that count (the tenant owns the CA's key): tenant_id, pem.
extern const char* const owned_cas;
// ledger_id, rows, hash, imported_at.
LedgerHead read_ledger_head(const StoreRow& row);
// method, path, status, body, request_sha256, secret.
IdempotencyRecord read_idempotency(const StoreRow& row);
// id, subject, pem, stations, key_sha256, usable (owned), created_at, revoked_at, revoked_reason.
FactoryCaRecord read_factory_ca(const StoreRow& row);
// id, sequence, manifest_digest.
DeviceFirmware read_device_firmware(const StoreRow& row);
// id, status, detail, updated_at, version, previous_manifest, version_before, started_at, last_seen, attempt,
// retry_at, time_zone.
DeploymentDevice read_deployment_device(const StoreRow& row);
// id, group_id, "Product/Group", images, manifest, sequence, waves, wave, wave_started_at, step_after,
// halt_on_failure, halt_reason, failure_baseline, previous, state, created_at, updated_at; from schema
// version 4 halt_min_executed, from version 6 policy and progress, from version 13 trust_version (rows of
// older stores stop before them).
Deployment read_deployment(const StoreRow& row);
// The SELECT of read_deployment from a dialect's list of its first 17 columns (`d` the deployment, `g` its
// group, `p` the group's product); with `later_columns` those of schema versions 4, 6 and 13 follow.
std::string deployment_select(std::string_view first_columns, bool later_columns);

// The schema's migrations, oldest first: migration N brings a store from version N-1 to N, in one transaction.
// Each backend defines a function of each name for its own connection and builds its table with this list,
// so both stores know the same versions (a step one of them lacks does not compile). Append only: a
// released migration never changes.
#define KILN_STORE_MIGRATIONS(MIGRATION) \
  MIGRATION(1, baseline_schema)          \
  MIGRATION(2, add_deployment_tallies)   \
  MIGRATION(3, add_ledger_heads)         \
  MIGRATION(4, add_rollout_safety)       \
  MIGRATION(5, add_encrypted_delivery)   \
  MIGRATION(6, add_rollout_controls)     \
  MIGRATION(7, add_retries_and_zones)    \
  MIGRATION(8, add_revocation)           \
  MIGRATION(9, add_audit_log)            \
  MIGRATION(10, add_manifest_threshold)  \
  MIGRATION(11, add_device_transfers)    \
  MIGRATION(12, add_trust_updates)       \
  MIGRATION(13, add_trust_deployments)

// Refuses (Error conflict) a store whose schema version is newer than this release's latest: a newer
// release wrote it, and an older one must not change it. `store` names it (a path, a redacted URL).
void check_schema_not_newer(const std::string& store, int current, int latest);

// The column devices are counted by.
const char* device_count_column(DeviceCountKey by);
// Counted by an id (group, product) that the answer names instead ("Product/Group", product name).
bool count_key_is_id(DeviceCountKey by);

// Array columns hold JSON text.
std::string json_array(const std::vector<std::string>& values);
std::string json_array(const std::vector<int>& values);
std::vector<std::string> parse_string_array(const std::string& text);
std::vector<int> parse_waves(const std::string& text);

// Deployment tallies (table deployment_tallies): per deployment, wave 0 with status "" holds every device of
// the group; wave N with status "" the devices whose bucket falls in wave N; wave N with a status the devices
// of wave N whose last report for the deployment was that status. A row's devices are added to what the
// table holds (negative: taken away).
struct TallyRow {
  std::int64_t wave = 0;
  std::string status;
  std::int64_t devices = 0;
  bool operator==(const TallyRow&) const = default;
};

// A tally with no device yet, with as many waves as the deployment has.
RolloutTally empty_tally(const std::vector<int>& waves);
// Adds a stored row to `tally` (rows of waves the deployment does not have are passed over).
void add_tally_row(RolloutTally& tally, const TallyRow& row);
// The rows that hold `tally` (what a recount writes).
std::vector<TallyRow> tally_rows(const RolloutTally& tally);
// A device of the group counted into `tally` (a recount), with the status it last reported, if any.
void count_device(RolloutTally& tally, const Deployment& deployment, const std::string& device_id,
                  const std::optional<std::string>& status);
// The wave of the deployment a device falls in (0: none).
int device_wave(const std::string& deployment_id, const std::vector<int>& waves, const std::string& device_id);
// A device in wave `wave` (0: none) that last reported `reported` joins (+1) or leaves (-1) the group.
std::vector<TallyRow> membership_rows(int wave, const std::optional<std::string>& reported, std::int64_t delta);
// A device of the group in wave `wave` (0: none) reports `status` after `previous`.
std::vector<TallyRow> report_rows(int wave, const std::optional<std::string>& previous, const std::string& status);

}  // namespace kiln::service
