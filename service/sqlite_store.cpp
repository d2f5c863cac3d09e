// SQLite backend of the Store: the schema, its versioned migrations, and every SQL statement of the service.
#include "service/sqlite_store.hpp"

#include <atomic>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "service/factory_trust.hpp"
#include "service/rollout_policy.hpp"
#include "service/store_rules.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

// A row of a stepped statement, as the mappings both backends share read it (store_rules.hpp).
class SqliteRow final : public StoreRow {
 public:
  explicit SqliteRow(const Statement& q) : q_(q) {}
  int columns() const override { return q_.column_count(); }
  bool is_null(int column) const override { return q_.is_null(column); }
  std::string text(int column) const override { return q_.text(column); }
  std::int64_t integer(int column) const override { return q_.integer(column); }
  double real(int column) const override { return q_.real(column); }

 private:
  const Statement& q_;
};

// Every row of `q`, mapped by `read`.
template <class T>
std::vector<T> all_rows(Statement& q, T (*read)(const StoreRow&)) {
  std::vector<T> out;
  while (q.step()) out.push_back(read(SqliteRow(q)));
  return out;
}

// The first row of `q`, mapped by `read`; nullopt when it has none.
template <class T>
std::optional<T> first_row(Statement& q, T (*read)(const StoreRow&)) {
  if (!q.step()) return std::nullopt;
  return read(SqliteRow(q));
}

// Fills factory_cas.key_sha256 and factory_ca_owners for rows registered before ownership existed: the
// earliest registration of a key (created_at, then insertion order) owns it. Idempotent.
void adopt_factory_ca_owners(Db& db) {
  std::vector<std::pair<std::int64_t, std::string>> pending;  // rowid, pem
  auto q = db.prepare("SELECT rowid, pem FROM factory_cas WHERE key_sha256 IS NULL");
  while (q.step()) pending.emplace_back(q.integer(0), q.text(1));
  for (auto& [rowid, pem] : pending)
    if (auto key = certificate_public_key(pem); !key.empty())
      db.prepare("UPDATE factory_cas SET key_sha256 = ? WHERE rowid = ?")
          .bind(1, to_hex(digest(HashAlg::sha256, key)))
          .bind(2, rowid)
          .run();
  // INSERT OR IGNORE in registration order: the first tenant to have registered a key keeps it.
  db.exec(
      "INSERT OR IGNORE INTO factory_ca_owners (key_sha256, tenant_id, created_at) SELECT key_sha256, tenant_id, "
      "created_at FROM factory_cas WHERE key_sha256 IS NOT NULL ORDER BY created_at, rowid");
}

// A column a migration adds, and the helper that adds each one its table does not have yet (migrations that
// add columns are idempotent: a store whose user_version was reset keeps its columns).
struct Column {
  const char* table;
  const char* name;
  const char* declaration;
};

template <std::size_t N>
void add_missing_columns(Db& db, const Column (&added)[N]) {
  for (const auto& column : added) {
    auto q = db.prepare(fmt::format("SELECT 1 FROM pragma_table_info('{}') WHERE name = ?", column.table));
    q.bind(1, column.name);
    if (!q.step()) db.exec(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", column.table, column.name, column.declaration));
  }
}

// Migration 1: the schema as releases before versioned migrations left it, created or completed in place
// (every statement is idempotent, so a store of any earlier release arrives at the same tables).
void baseline_schema(Db& db) {
  db.exec(R"sql(
CREATE TABLE IF NOT EXISTS tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
  role TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL, description TEXT, created_at TEXT NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS device_groups (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  product_id TEXT NOT NULL REFERENCES products(id), name TEXT NOT NULL, description TEXT,
  created_at TEXT NOT NULL, UNIQUE (product_id, name));
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  product_id TEXT NOT NULL REFERENCES products(id), group_id TEXT REFERENCES device_groups(id),
  state TEXT NOT NULL, version TEXT, public_key TEXT NOT NULL, certificate TEXT,
  claimed INTEGER NOT NULL DEFAULT 0, claimed_at TEXT, last_seen TEXT, imported_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS devices_by_tenant ON devices (tenant_id, id);
CREATE INDEX IF NOT EXISTS devices_by_version ON devices (tenant_id, version);
CREATE INDEX IF NOT EXISTS devices_by_group ON devices (tenant_id, group_id);
CREATE TABLE IF NOT EXISTS claim_challenges (nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL,
  tenant_id INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (tenant_id INTEGER NOT NULL, sha256 TEXT NOT NULL, name TEXT,
  size INTEGER NOT NULL, received INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, PRIMARY KEY (tenant_id, sha256));
CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  group_id TEXT NOT NULL REFERENCES device_groups(id), images TEXT NOT NULL, rollout INTEGER NOT NULL,
  state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS factory_cas (tenant_id INTEGER NOT NULL, id TEXT NOT NULL, subject TEXT NOT NULL,
  pem TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS deployment_devices (deployment_id TEXT NOT NULL, device_id TEXT NOT NULL,
  status TEXT NOT NULL, detail TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (deployment_id, device_id));
CREATE TABLE IF NOT EXISTS import_parts (tenant_id INTEGER NOT NULL, import_id TEXT NOT NULL, offset INTEGER NOT NULL,
  body BLOB NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, import_id, offset));
CREATE TABLE IF NOT EXISTS idempotency (tenant_id INTEGER NOT NULL, key TEXT NOT NULL, method TEXT NOT NULL,
  path TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, key));
CREATE TABLE IF NOT EXISTS factory_ca_owners (key_sha256 TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS factory_ca_challenges (nonce TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  key_sha256 TEXT NOT NULL, expires_at INTEGER NOT NULL);
)sql");
  // Columns added after the first release: existing databases gain them on start.
  static const Column added[] = {
      {"factory_cas", "stations", "INTEGER NOT NULL DEFAULT 0"},  // also authenticates station certificates
      {"images", "manifest", "TEXT"},  // the SUIT manifest uploaded with this image
      {"deployments", "manifest", "TEXT"},
      {"deployments", "sequence", "INTEGER"},
      {"deployments", "waves", "TEXT"},  // JSON array of cumulative percentages
      {"deployments", "wave", "INTEGER"},
      {"deployments", "wave_started_at", "INTEGER"},
      {"deployments", "step_after", "INTEGER"},
      {"deployments", "halt_on_failure", "REAL"},
      {"deployments", "halt_reason", "TEXT"},
      {"deployments", "failure_baseline", "INTEGER"},
      {"deployments", "previous", "TEXT"},
      {"factory_cas", "key_sha256", "TEXT"},      // SHA-256 of the CA's SubjectPublicKeyInfo (factory_ca_owners)
      {"idempotency", "request_sha256", "TEXT"},  // method, target and body of the first request
      {"idempotency", "secret", "INTEGER NOT NULL DEFAULT 0"},  // its answer held a secret: not stored
  };
  add_missing_columns(db, added);
  db.exec("CREATE INDEX IF NOT EXISTS deployments_by_group ON deployments (group_id)");
  db.exec("CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at)");
  adopt_factory_ca_owners(db);
  // Earlier versions stored token answers, secret included, for replays: forget them (secure_delete
  // overwrites the freed pages; the checkpoint after the migrations empties the WAL that held them).
  db.exec("DELETE FROM idempotency WHERE path = '/v1/tokens' AND secret = 0");
}

void add_deployment_tallies(Db& db);

// Migration 3: the head of each station ledger last imported (stores that ran a service with ledger heads
// before versioned migrations already hold the table).
void add_ledger_heads(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS ledger_heads (tenant_id INTEGER NOT NULL, station_key_sha256 TEXT NOT NULL, "
      "ledger_id TEXT NOT NULL, rows INTEGER NOT NULL, hash TEXT NOT NULL, imported_at TEXT NOT NULL, "
      "PRIMARY KEY (tenant_id, station_key_sha256, ledger_id))");
}

// Migration 4 (issue 15): what a product's boards trust (checked at deployment creation), what each device's
// agent last said it runs, what each device ran before a deployment (the exact revert target), and the
// halt threshold's minimum of executed devices.
void add_rollout_safety(Db& db) {
  static const Column added[] = {
      {"products", "boot_keys", "TEXT NOT NULL DEFAULT '[]'"},  // JSON array of hex DER SPKI
      {"products", "manifest_keys", "TEXT NOT NULL DEFAULT '[]'"},
      {"products", "slot_size", "INTEGER NOT NULL DEFAULT 0"},  // 0: default_slot_size
      {"devices", "sequence", "INTEGER"},                       // as the agent last reported
      {"devices", "manifest_digest", "TEXT"},
      {"deployment_devices", "previous_manifest", "TEXT"},  // the device's manifest before this deployment
      {"deployment_devices", "version_before", "TEXT"},
      {"deployment_devices", "started_at", "TEXT"},
      {"deployments", "halt_min_executed", "INTEGER NOT NULL DEFAULT 0"},
  };
  // Idempotent, like migration 1: a store whose user_version was reset keeps its columns.
  add_missing_columns(db, added);
}

// Migration 5 (issue 16): each device's image-encryption public key (from its bundle) and the encrypted
// releases as delivered to it (the content key wrapped to that key). Tables of their own: additive.
void add_encrypted_delivery(Db& db) {
  db.exec("CREATE TABLE IF NOT EXISTS device_encryption_keys (device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL)");
  db.exec(
      "CREATE TABLE IF NOT EXISTS device_images (device_id TEXT NOT NULL, image TEXT NOT NULL, area TEXT NOT NULL, "
      "sha256 TEXT NOT NULL, size INTEGER NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (device_id, image))");
}

// Migration 6 (issue 15, rollout controls): a deployment's controls as one JSON policy (wave conditions,
// abort criteria, ...; rollout_policy.hpp), and the JSON progress of what they change as it rolls out.
void add_rollout_controls(Db& db) {
  static const Column added[] = {
      {"deployments", "policy", "TEXT NOT NULL DEFAULT ''"},
      {"deployments", "progress", "TEXT NOT NULL DEFAULT ''"},
  };
  add_missing_columns(db, added);
}

// Migration 7 (issue 15, retries and maintenance windows): the attempt each device is on for a deployment
// and when it may retry (unix seconds), and each device's own time zone. Idempotent, like migration 4.
void add_retries_and_zones(Db& db) {
  static const Column added[] = {
      {"deployment_devices", "attempt", "INTEGER NOT NULL DEFAULT 1"},
      {"deployment_devices", "retry_at", "INTEGER"},
      {"devices", "time_zone", "TEXT"},
  };
  add_missing_columns(db, added);
}

// Migration 8 (issue 17, revocation): tokens get an ID people name them by (never the hash) and a
// revocation time; devices and factory CAs a revocation time and reason. Idempotent, like migration 4.
void add_revocation(Db& db) {
  static const Column added[] = {
      {"tokens", "id", "TEXT"},
      {"tokens", "revoked_at", "TEXT"},
      {"devices", "revoked_at", "TEXT"},
      {"devices", "revoked_reason", "TEXT"},
      {"factory_cas", "revoked_at", "TEXT"},
      {"factory_cas", "revoked_reason", "TEXT"},
  };
  add_missing_columns(db, added);
  db.exec("UPDATE tokens SET id = 'tok_' || lower(hex(randomblob(8))) WHERE id IS NULL");
  db.exec("CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_id ON tokens (id)");
}

// Migration 9 (issue 17, deletion and audit): the audit log, one row per write of a tenant, in log order.
void add_audit_log(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL, "
      "at TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL, method TEXT NOT NULL, "
      "route TEXT NOT NULL, target TEXT NOT NULL, status INTEGER NOT NULL, request_id TEXT NOT NULL)");
  db.exec("CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant_id, id)");
}

// Migration 10 (issue 17, M-of-N release policy): how many distinct manifest keys of a product must have
// signed a release. Idempotent, like migration 4.
void add_manifest_threshold(Db& db) {
  static const Column added[] = {{"products", "manifest_threshold", "INTEGER NOT NULL DEFAULT 1"}};
  add_missing_columns(db, added);
}

// ---- Migration 11 (issue 17, ownership transfer and unclaim) ----
// Single-use transfer vouchers (id, issuer and receiver, devices as a JSON array, digest of the signed
// bytes, expiry in unix seconds, redemption time), and each device's factory tenant: the tenant whose
// factory CA its certificate chains to, set when a transfer first moves it (NULL: its tenant).
void add_device_transfers(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS device_transfers (id TEXT PRIMARY KEY, from_tenant_id INTEGER NOT NULL, "
      "to_tenant_id INTEGER NOT NULL, devices TEXT NOT NULL, payload_sha256 TEXT NOT NULL, "
      "public_key TEXT NOT NULL, expires_at INTEGER NOT NULL, created_at TEXT NOT NULL, redeemed_at TEXT)");
  static const Column added[] = {{"devices", "factory_tenant_id", "INTEGER"}};
  add_missing_columns(db, added);
}
// ---- end of migration 11 ----

// ---- Migration 12 (issue 17 item 2, key rotation): every accepted trust update of a product ----
void add_trust_updates(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS trust_updates (product_id TEXT NOT NULL, version INTEGER NOT NULL, "
      "content TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (product_id, version))");
}
// ---- end of migration 12 ----

// ---- Migration 13 (issue 17 item 2, trust updates through deployments) ----
// A deployment may carry a trust update (its version; NULL: a release), and each device keeps the trust
// version its agent last reported. Idempotent, like migration 4.
void add_trust_deployments(Db& db) {
  static const Column added[] = {
      {"deployments", "trust_version", "INTEGER"},
      {"devices", "trust_version", "INTEGER"},
  };
  add_missing_columns(db, added);
}
// ---- end of migration 13 ----

// The schema's versions (KILN_STORE_MIGRATIONS), each in one transaction. The version lives in PRAGMA
// user_version (0: a store from before versioned migrations, or a new file).
struct Migration {
  int version;
  void (*apply)(Db& db);
};
#define KILN_MIGRATION(version, apply) Migration{version, apply},
constexpr Migration migrations[] = {KILN_STORE_MIGRATIONS(KILN_MIGRATION)};
#undef KILN_MIGRATION

int schema_version(Db& db) {
  auto q = db.prepare("PRAGMA user_version");
  q.step();
  return static_cast<int>(q.integer(0));
}

void migrate(Db& db, const std::string& path) {
  int current = schema_version(db);
  int latest = std::end(migrations)[-1].version;
  check_schema_not_newer(path, current, latest);
  if (current == latest) return;
  for (const auto& migration : migrations) {
    if (migration.version <= current) continue;
    Transaction tx(db);
    migration.apply(db);
    db.exec(fmt::format("PRAGMA user_version = {}", migration.version));
    tx.commit();
  }
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

// Deployment tallies (table deployment_tallies; store_rules.hpp says what its rows hold).

void add_tally(Db& db, const std::string& deployment_id, const TallyRow& row) {
  db.cached(
        "INSERT INTO deployment_tallies (deployment_id, wave, status, devices) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (deployment_id, wave, status) DO UPDATE SET devices = devices + excluded.devices")
      ->bind(1, deployment_id)
      .bind(2, row.wave)
      .bind(3, row.status)
      .bind(4, row.devices)
      .run();
}

void write_tally(Db& db, const std::string& deployment_id, const RolloutTally& t) {
  db.prepare("DELETE FROM deployment_tallies WHERE deployment_id = ?").bind(1, deployment_id).run();
  for (const auto& row : tally_rows(t)) add_tally(db, deployment_id, row);
}

RolloutTally recount(Db& db, const Deployment& deployment) {
  auto t = empty_tally(deployment.waves);
  auto q = db.prepare(
      "SELECT d.id, dd.status FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = ? AND "
      "dd.device_id = d.id WHERE d.group_id = ?");
  q.bind(1, deployment.id).bind(2, deployment.group_id);
  while (q.step()) count_device(t, deployment, q.text(0), q.optional_text(1));
  return t;
}

// A device joins (+1) or leaves (-1) a group: every deployment of the group counts it, and what it reported.
void count_member(Db& db, const std::string& device_id, const std::string& group_id, std::int64_t delta) {
  std::vector<std::pair<std::string, std::vector<int>>> deployments;
  {
    auto q = db.cached("SELECT id, coalesce(waves, '[' || rollout || ']') FROM deployments WHERE group_id = ?");
    q->bind(1, group_id);
    while (q->step()) deployments.emplace_back(q->text(0), parse_waves(q->text(1)));
  }
  for (auto& [id, waves] : deployments) {
    int wave = device_wave(id, waves, device_id);
    std::optional<std::string> reported;
    if (wave != 0) {
      auto status = db.cached("SELECT status FROM deployment_devices WHERE deployment_id = ? AND device_id = ?");
      status->bind(1, id).bind(2, device_id);
      if (status->step()) reported = status->text(0);
    }
    for (const auto& row : membership_rows(wave, reported, delta)) add_tally(db, id, row);
  }
}

}  // namespace

// A connection of the pool, and the units of work open on it (0: none).
struct SqliteStore::Connection {
  explicit Connection(const std::string& path) : db(path) {}
  Db db;
  int depth = 0;
};

SqliteStore::Connection& SqliteStore::current() { return Use::current(id_); }
Db& SqliteStore::db() { return current().db; }

SqliteStore::Connection* SqliteStore::acquire() {
  // ":memory:" is one database per connection: every thread shares the one connection, one at a time.
  return pool_.acquire([&] { return new Connection(path_); });
}

void SqliteStore::release(Connection* connection) { pool_.release(connection, connection->depth == 0); }

// The outermost unit of a connection is a SQLite transaction (writes: BEGIN IMMEDIATE, the write lock at
// once; reads: a snapshot of the WAL); inner units are savepoints, so a failed inner unit undoes only its part.
class SqliteStore::SqliteTransaction final : public Store::Transaction {
 public:
  SqliteTransaction(SqliteStore& store, Access access)
      : use_(store), connection_(store.current()), level_(connection_.depth), read_only_(access == Access::read),
        turns_(level_ == 0 && !read_only_ ? &store.write_turns_ : nullptr) {
    if (level_ == 0) {
      // Writers of this process go in turn (service/write_turns.hpp), as long as SQLite would wait for one.
      if (turns_ && !turns_->acquire(std::chrono::milliseconds(busy_timeout_ms)))
        throw StoreUnavailable("the database is busy with other writes", "send the request again");
      // A read unit cannot write: SQLite refuses it (a GET never writes, whatever a handler tries).
      if (read_only_) connection_.db.exec_cached("PRAGMA query_only = ON");
      try {
        connection_.db.exec_cached(read_only_ ? "BEGIN" : "BEGIN IMMEDIATE");
      } catch (...) {
        end_turn();
        writable_again();
        throw;
      }
    } else {
      connection_.db.exec(fmt::format("SAVEPOINT unit_{}", level_));
    }
    ++connection_.depth;
  }
  ~SqliteTransaction() override {
    if (done_) return;
    --connection_.depth;
    auto* raw = connection_.db.raw();
    if (level_ == 0) {
      sqlite3_exec(raw, "ROLLBACK", nullptr, nullptr, nullptr);
      end_turn();
      writable_again();
    } else {
      auto undo = fmt::format("ROLLBACK TO unit_{0}; RELEASE unit_{0}", level_);
      sqlite3_exec(raw, undo.c_str(), nullptr, nullptr, nullptr);
    }
  }
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  void commit() override {
    if (level_ == 0 && sqlite3_get_autocommit(connection_.db.raw())) {
      // SQLite ended the transaction itself: it rolls back on some errors (SQLITE_BUSY, IOERR, FULL, NOMEM)
      // that a handler may have answered and gone on from. Nothing of the unit holds as one: say so, as a
      // store that cannot serve the request now (503, Retry-After), not "cannot commit" as a 500.
      --connection_.depth;
      done_ = true;
      end_turn();
      writable_again();
      throw StoreUnavailable("the database rolled back this request's transaction before it could be committed",
                             "send the request again");
    }
    if (level_ == 0)
      connection_.db.exec_cached("COMMIT");
    else
      connection_.db.exec(fmt::format("RELEASE unit_{}", level_));
    --connection_.depth;
    done_ = true;
    if (level_ == 0) {
      end_turn();
      writable_again();
    }
  }

 private:
  void end_turn() {
    if (turns_) turns_->release();
    turns_ = nullptr;
  }
  // The connection goes back to the pool able to write.
  void writable_again() {
    if (!read_only_) return;
    try {
      connection_.db.exec_cached("PRAGMA query_only = OFF");
    } catch (...) {  // cannot fail in practice; a destructor must not throw
    }
  }

  Use use_;
  Connection& connection_;
  int level_;
  bool read_only_;
  WriteTurns* turns_;
  bool done_ = false;
};

std::unique_ptr<Store::Transaction> SqliteStore::begin(Access access) {
  return std::make_unique<SqliteTransaction>(*this, access);
}

namespace {
std::atomic<std::uint64_t> next_store_id{1};
}  // namespace

SqliteStore::SqliteStore(const std::string& path)
    : path_(path), shared_(path.empty() || path == ":memory:" || path.starts_with("file::memory:")),
      id_(next_store_id++), pool_(max_idle_connections, shared_ ? 1 : 0) {
  Use use(*this);
  migrate(db(), path);
}

SqliteStore::~SqliteStore() = default;

int SqliteStore::schema_version() {
  Use use(*this);
  return kiln::service::schema_version(db());
}
int SqliteStore::latest_schema_version() { return std::end(migrations)[-1].version; }

// Tenants and tokens.

std::int64_t SqliteStore::create_tenant(const std::string& name, const std::string& now) {
  Use use(*this);
  db().prepare("INSERT INTO tenants (name, created_at) VALUES (?, ?)").bind(1, name).bind(2, now).run();
  return sqlite3_last_insert_rowid(db().raw());
}

std::optional<std::int64_t> SqliteStore::find_tenant(const std::string& name) {
  Use use(*this);
  auto q = db().prepare("SELECT id FROM tenants WHERE name = ?");
  q.bind(1, name);
  if (!q.step()) return std::nullopt;
  return q.integer(0);
}

std::string SqliteStore::tenant_name(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare("SELECT name FROM tenants WHERE id = ?");
  q.bind(1, tenant_id);
  return q.step() ? q.text(0) : "";
}

void SqliteStore::add_token(const std::string& hash, const TokenRecord& token, const std::string& now) {
  Use use(*this);
  db().prepare("INSERT INTO tokens (hash, tenant_id, role, name, created_at, id) VALUES (?, ?, ?, ?, ?, ?)")
      .bind(1, hash)
      .bind(2, token.tenant_id)
      .bind(3, token.role)
      .bind(4, token.name)
      .bind(5, now)
      .bind(6, token.id)
      .run();
}

std::optional<TokenRecord> SqliteStore::find_token(const std::string& hash) {
  Use use(*this);
  auto q = db().prepare("SELECT tenant_id, role, name, id FROM tokens WHERE hash = ? AND revoked_at IS NULL");
  q.bind(1, hash);
  if (!q.step()) return std::nullopt;
  return TokenRecord{q.integer(0), q.text(1), q.text(2), q.text(3)};
}

std::vector<TokenInfo> SqliteStore::list_tokens(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT id, name, role, created_at, revoked_at FROM tokens WHERE tenant_id = ? ORDER BY created_at, rowid");
  q.bind(1, tenant_id);
  std::vector<TokenInfo> out;
  while (q.step()) out.push_back({q.text(0), q.text(1), q.text(2), q.text(3), q.optional_text(4)});
  return out;
}

bool SqliteStore::revoke_token(std::int64_t tenant_id, const std::string& id, const std::string& now) {
  Use use(*this);
  db().prepare("UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE tenant_id = ? AND id = ?")
      .bind(1, now)
      .bind(2, tenant_id)
      .bind(3, id)
      .run();
  return db().changes() > 0;
}

// Idempotency keys.

void SqliteStore::forget_idempotency_before(const std::string& oldest) {
  Use use(*this);
  db().prepare("DELETE FROM idempotency WHERE created_at < ?").bind(1, oldest).run();
}

std::optional<IdempotencyRecord> SqliteStore::find_idempotency(std::int64_t tenant_id, const std::string& key,
                                                               const std::string& oldest) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT method, path, status, body, request_sha256, secret FROM idempotency WHERE tenant_id = ? AND key = ? "
      "AND created_at >= ?");
  q.bind(1, tenant_id).bind(2, key).bind(3, oldest);
  return first_row(q, read_idempotency);
}

void SqliteStore::remember_idempotency(std::int64_t tenant_id, const std::string& key,
                                       const IdempotencyRecord& record, const std::string& now) {
  Use use(*this);
  db().prepare(
        "INSERT OR REPLACE INTO idempotency (tenant_id, key, method, path, status, body, created_at, "
        "request_sha256, secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, tenant_id)
      .bind(2, key)
      .bind(3, record.method)
      .bind(4, record.path)
      .bind(5, static_cast<std::int64_t>(record.status))
      .bind(6, record.body)
      .bind(7, now)
      .bind_optional(8, record.request_sha256)
      .bind(9, std::int64_t{record.secret ? 1 : 0})
      .run();
}

// Products and groups.

std::optional<Product> SqliteStore::find_product(std::int64_t tenant_id, const std::string& ref) {
  Use use(*this);
  auto q = db().prepare(std::string(product_columns) + "WHERE tenant_id = ? AND (id = ? OR name = ?)");
  q.bind(1, tenant_id).bind(2, ref).bind(3, ref);
  return first_row(q, read_product);
}

bool SqliteStore::product_name_taken(std::int64_t tenant_id, const std::string& name) {
  Use use(*this);
  auto q = db().prepare("SELECT 1 FROM products WHERE tenant_id = ? AND name = ?");
  q.bind(1, tenant_id).bind(2, name);
  return q.step();
}

void SqliteStore::insert_product(std::int64_t tenant_id, const Product& product) {
  Use use(*this);
  db().prepare(
        "INSERT INTO products (id, tenant_id, name, description, created_at, boot_keys, manifest_keys, slot_size, "
        "manifest_threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, product.id)
      .bind(2, tenant_id)
      .bind(3, product.name)
      .bind(4, product.description)
      .bind(5, product.created_at)
      .bind(6, json_array(product.boot_keys))
      .bind(7, json_array(product.manifest_keys))
      .bind(8, product.slot_size)
      .bind(9, product.manifest_threshold)
      .run();
}

void SqliteStore::update_product_trust(const Product& product) {
  Use use(*this);
  db().prepare("UPDATE products SET boot_keys = ?, manifest_keys = ?, slot_size = ?, manifest_threshold = ? WHERE id = ?")
      .bind(1, json_array(product.boot_keys))
      .bind(2, json_array(product.manifest_keys))
      .bind(3, product.slot_size)
      .bind(4, product.manifest_threshold)
      .bind(5, product.id)
      .run();
}

std::vector<Product> SqliteStore::list_products(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare(std::string(product_columns) + "WHERE tenant_id = ? ORDER BY name");
  q.bind(1, tenant_id);
  return all_rows(q, read_product);
}

void SqliteStore::delete_product(const std::string& product_id) {
  Use use(*this);
  db().prepare(
        "DELETE FROM deployment_tallies WHERE deployment_id IN (SELECT d.id FROM deployments d JOIN device_groups g "
        "ON g.id = d.group_id WHERE g.product_id = ?)")
      .bind(1, product_id)
      .run();
  db().prepare(
        "DELETE FROM deployment_devices WHERE deployment_id IN (SELECT d.id FROM deployments d JOIN device_groups g "
        "ON g.id = d.group_id WHERE g.product_id = ?)")
      .bind(1, product_id)
      .run();
  db().prepare("DELETE FROM deployments WHERE group_id IN (SELECT id FROM device_groups WHERE product_id = ?)")
      .bind(1, product_id)
      .run();
  db().prepare("DELETE FROM device_groups WHERE product_id = ?").bind(1, product_id).run();
  db().prepare("DELETE FROM products WHERE id = ?").bind(1, product_id).run();
}

std::optional<Group> SqliteStore::find_group(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = db().prepare(std::string(group_columns) + "WHERE g.id = ? AND g.tenant_id = ?");
  q.bind(1, id).bind(2, tenant_id);
  return first_row(q, read_group);
}

std::optional<Group> SqliteStore::find_group_by_name(const std::string& product_id, const std::string& name) {
  Use use(*this);
  auto q = db().prepare(std::string(group_columns) + "WHERE g.product_id = ? AND g.name = ?");
  q.bind(1, product_id).bind(2, name);
  return first_row(q, read_group);
}

void SqliteStore::insert_group(std::int64_t tenant_id, const Group& group) {
  Use use(*this);
  db().prepare(
        "INSERT INTO device_groups (id, tenant_id, product_id, name, description, created_at) VALUES (?, ?, ?, ?, ?, "
        "?)")
      .bind(1, group.id)
      .bind(2, tenant_id)
      .bind(3, group.product_id)
      .bind(4, group.name)
      .bind(5, group.description)
      .bind(6, group.created_at)
      .run();
}

std::vector<Group> SqliteStore::list_groups(std::int64_t tenant_id, const std::optional<std::string>& product_id) {
  Use use(*this);
  std::string sql = std::string(group_columns) + "WHERE g.tenant_id = ?";
  if (product_id) sql += " AND g.product_id = ?";
  sql += " ORDER BY p.name, g.name";
  auto q = db().prepare(sql);
  q.bind(1, tenant_id);
  if (product_id) q.bind(2, *product_id);
  return all_rows(q, read_group);
}

void SqliteStore::update_group(const std::string& id, const std::optional<std::string>& name,
                               const std::optional<std::string>& description) {
  Use use(*this);
  if (name) db().prepare("UPDATE device_groups SET name = ? WHERE id = ?").bind(1, *name).bind(2, id).run();
  if (description)
    db().prepare("UPDATE device_groups SET description = ? WHERE id = ?").bind(1, *description).bind(2, id).run();
}

void SqliteStore::delete_group(const std::string& group_id) {
  Use use(*this);
  db().prepare("DELETE FROM deployment_tallies WHERE deployment_id IN (SELECT id FROM deployments WHERE group_id = ?)")
      .bind(1, group_id)
      .run();
  db().prepare("DELETE FROM deployment_devices WHERE deployment_id IN (SELECT id FROM deployments WHERE group_id = ?)")
      .bind(1, group_id)
      .run();
  db().prepare("DELETE FROM deployments WHERE group_id = ?").bind(1, group_id).run();
  db().prepare("DELETE FROM device_groups WHERE id = ?").bind(1, group_id).run();
}

std::int64_t SqliteStore::devices_in_product(const std::string& product_id) {
  Use use(*this);
  auto q = db().prepare("SELECT count(*) FROM devices WHERE product_id = ?");
  q.bind(1, product_id);
  q.step();
  return q.integer(0);
}

std::int64_t SqliteStore::devices_in_group(const std::string& group_id) {
  Use use(*this);
  auto q = db().prepare("SELECT count(*) FROM devices WHERE group_id = ?");
  q.bind(1, group_id);
  q.step();
  return q.integer(0);
}

// Devices.

namespace {

// The WHERE clause of a filter; ?1 is the tenant, the texts follow from ?2.
struct FilterSql {
  std::string where;
  std::vector<std::string> binds;
};

FilterSql filter_sql(const DeviceFilter& f) {
  FilterSql out;
  out.where = "WHERE d.tenant_id = ?1";
  auto add = [&](const char* clause, const std::optional<std::string>& value) {
    if (!value) return;
    out.binds.push_back(*value);
    out.where += fmt::format(" AND {} ?{}", clause, out.binds.size() + 1);
  };
  add("d.group_id =", f.group_id);
  add("d.product_id =", f.product_id);
  add("d.state =", f.state);
  add("d.version =", f.version);
  add("d.last_seen <", f.seen_before);
  add("d.last_seen >", f.seen_after);
  if (f.claimed) out.where += *f.claimed ? " AND d.claimed = 1" : " AND d.claimed = 0";
  return out;
}

void bind_filter(Statement& q, const DeviceFilter& f, const FilterSql& sql) {
  q.bind(1, f.tenant_id);
  for (std::size_t i = 0; i < sql.binds.size(); ++i) q.bind(static_cast<int>(i + 2), sql.binds[i]);
}

}  // namespace

std::optional<DeviceView> SqliteStore::find_device(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = db().prepare(std::string(device_columns) + "WHERE d.id = ? AND d.tenant_id = ?");
  q.bind(1, id).bind(2, tenant_id);
  return first_row(q, read_device);
}

// A query per device: in-process, about as cheap as one for all.
std::vector<DeviceView> SqliteStore::find_devices(std::int64_t tenant_id, const std::vector<std::string>& ids) {
  Use use(*this);
  std::vector<DeviceView> out;
  for (const auto& id : ids)
    if (auto device = find_device(tenant_id, id)) out.push_back(std::move(*device));
  return out;
}

std::optional<DeviceIdentity> SqliteStore::device_identity(const std::string& id) {
  Use use(*this);
  auto q = db().cached(
      "SELECT tenant_id, public_key, group_id, certificate, revoked_at, revoked_reason, claimed, "
      "coalesce(factory_tenant_id, tenant_id) FROM devices WHERE id = ?");
  q->bind(1, id);
  if (!q->step()) return std::nullopt;
  return DeviceIdentity{q->integer(0),        q->text(1),           q->optional_text(2), q->optional_text(3),
                        q->optional_text(4), q->optional_text(5), q->integer(6) != 0,  q->integer(7)};
}

std::vector<DeviceView> SqliteStore::list_devices(const DeviceFilter& filter, const std::optional<std::string>& after,
                                                  std::int64_t limit) {
  Use use(*this);
  auto sql = filter_sql(filter);
  std::string text = std::string(device_columns) + sql.where;
  if (after) text += fmt::format(" AND d.id > ?{}", sql.binds.size() + 2);
  text += fmt::format(" ORDER BY d.id LIMIT {}", limit);
  auto q = db().prepare(text);
  bind_filter(q, filter, sql);
  if (after) q.bind(static_cast<int>(sql.binds.size() + 2), *after);
  return all_rows(q, read_device);
}

std::vector<DeviceCount> SqliteStore::count_devices(const DeviceFilter& filter, DeviceCountKey by) {
  Use use(*this);
  auto sql = filter_sql(filter);
  auto q = db().prepare(fmt::format("SELECT {0}, count(*) FROM devices d {1} GROUP BY {0} ORDER BY 2 DESC",
                                    device_count_column(by), sql.where));
  bind_filter(q, filter, sql);
  std::vector<DeviceCount> out;
  while (q.step()) {
    DeviceCount c{q.optional_text(0), q.integer(1)};
    if (c.key && count_key_is_id(by)) {
      auto name = db().prepare(by == DeviceCountKey::group
                                  ? "SELECT p.name || '/' || g.name FROM device_groups g JOIN products p ON p.id = "
                                    "g.product_id WHERE g.id = ?"
                                  : "SELECT name FROM products WHERE id = ?");
      name.bind(1, *c.key);
      if (name.step()) c.key = name.text(0);
    }
    out.push_back(std::move(c));
  }
  return out;
}

namespace {

// The group a device is in (the columns of every schema version: upserts run at any version in tests).
struct DeviceGroup {
  std::optional<std::string> group_id;
};
std::optional<DeviceGroup> device_group(Db& db, const std::string& id) {
  auto q = db.cached("SELECT group_id FROM devices WHERE id = ?");
  q->bind(1, id);
  if (!q->step()) return std::nullopt;
  return DeviceGroup{q->optional_text(0)};
}

}  // namespace

bool SqliteStore::upsert_device(const ImportedDevice& device) {
  Use use(*this);
  auto before = device_group(db(), device.id);
  auto q = db().cached(
      "INSERT INTO devices (id, tenant_id, product_id, group_id, state, version, public_key, certificate, last_seen, "
      "imported_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
      "ON CONFLICT(id) DO UPDATE SET product_id = excluded.product_id, group_id = COALESCE(devices.group_id, excluded.group_id), "
      "state = excluded.state, version = excluded.version, certificate = excluded.certificate "
      "WHERE devices.tenant_id = excluded.tenant_id AND devices.public_key = excluded.public_key");
  q->bind(1, device.id)
      .bind(2, device.tenant_id)
      .bind(3, device.product_id)
      .bind(4, device.group_id)
      .bind(5, device.state)
      .bind_optional(6, device.version)
      .bind(7, device.public_key)
      .bind_optional(8, device.certificate)
      .bind_optional(9, device.last_seen)
      .bind(10, device.imported_at);
  q->run();
  if (db().changes() == 0) return false;
  // A device imported again keeps the group it was put in (kiln device assign); only a new device, or one
  // whose group was deleted, joins the bundle's group.
  if (!before || !before->group_id) count_member(db(), device.id, device.group_id, 1);
  return true;
}

bool SqliteStore::group_of_device_product(const std::string& device_id, const std::string& group_id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT 1 FROM devices d JOIN device_groups g ON g.product_id = d.product_id WHERE d.id = ? AND g.id = ?");
  q.bind(1, device_id).bind(2, group_id);
  return q.step();
}

void SqliteStore::set_device_group(const std::string& device_id, const std::string& group_id) {
  Use use(*this);
  auto before = device_group(db(), device_id);
  db().prepare("UPDATE devices SET group_id = ? WHERE id = ?").bind(1, group_id).bind(2, device_id).run();
  if (before && before->group_id != group_id) {
    if (before->group_id) count_member(db(), device_id, *before->group_id, -1);
    count_member(db(), device_id, group_id, 1);
  }
}

// In-process statements cost little: each device moves as set_device_group moves it, in the caller's unit.
void SqliteStore::set_devices_group(const std::vector<std::string>& device_ids, const std::string& group_id) {
  Use use(*this);
  for (const auto& id : device_ids) set_device_group(id, group_id);
}

void SqliteStore::mark_claimed(const std::string& device_id, const std::string& now) {
  Use use(*this);
  db().prepare("UPDATE devices SET claimed = 1, claimed_at = coalesce(claimed_at, ?) WHERE id = ?")
      .bind(1, now)
      .bind(2, device_id)
      .run();
}

void SqliteStore::unclaim_device(const std::string& device_id) {
  Use use(*this);
  auto before = device_group(db(), device_id);
  db().prepare("UPDATE devices SET claimed = 0, group_id = NULL WHERE id = ?").bind(1, device_id).run();
  if (before && before->group_id) count_member(db(), device_id, *before->group_id, -1);
}

void SqliteStore::transfer_device(const std::string& device_id, std::int64_t tenant_id, const std::string& product_id,
                                  const std::string& now) {
  Use use(*this);
  auto before = device_group(db(), device_id);
  db().prepare(
        "UPDATE devices SET factory_tenant_id = coalesce(factory_tenant_id, tenant_id), tenant_id = ?, "
        "product_id = ?, claimed = 1, claimed_at = ?, group_id = NULL WHERE id = ?")
      .bind(1, tenant_id)
      .bind(2, product_id)
      .bind(3, now)
      .bind(4, device_id)
      .run();
  if (before && before->group_id) count_member(db(), device_id, *before->group_id, -1);
}

void SqliteStore::add_trust_update(const std::string& product_id, std::int64_t version,
                                   const std::string& update_base64, const std::string& now) {
  Use use(*this);
  db().prepare("INSERT INTO trust_updates (product_id, version, content, created_at) VALUES (?, ?, ?, ?)")
      .bind(1, product_id)
      .bind(2, version)
      .bind(3, update_base64)
      .bind(4, now)
      .run();
}

std::vector<std::pair<std::int64_t, std::string>> SqliteStore::trust_updates_after(const std::string& product_id,
                                                                                  std::int64_t after_version) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT version, content FROM trust_updates WHERE product_id = ? AND version > ? ORDER BY version");
  q.bind(1, product_id);
  q.bind(2, after_version);
  std::vector<std::pair<std::int64_t, std::string>> out;
  while (q.step()) out.emplace_back(q.integer(0), q.text(1));
  return out;
}

std::int64_t SqliteStore::trust_version(const std::string& product_id) {
  Use use(*this);
  auto q = db().prepare("SELECT COALESCE(MAX(version), 0) FROM trust_updates WHERE product_id = ?");
  q.bind(1, product_id);
  q.step();
  return q.integer(0);
}

void SqliteStore::add_transfer_voucher(const TransferVoucherRecord& v) {
  Use use(*this);
  db().prepare(
        "INSERT INTO device_transfers (id, from_tenant_id, to_tenant_id, devices, payload_sha256, public_key, "
        "expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, v.id)
      .bind(2, v.from_tenant_id)
      .bind(3, v.to_tenant_id)
      .bind(4, nlohmann::json(v.devices).dump())
      .bind(5, v.payload_sha256)
      .bind(6, v.public_key)
      .bind(7, v.expires_at)
      .bind(8, v.created_at)
      .run();
}

std::optional<TransferVoucherRecord> SqliteStore::find_transfer_voucher(const std::string& id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT id, from_tenant_id, to_tenant_id, devices, payload_sha256, public_key, expires_at, created_at, "
      "redeemed_at FROM device_transfers WHERE id = ?");
  q.bind(1, id);
  if (!q.step()) return std::nullopt;
  TransferVoucherRecord v;
  v.id = q.text(0);
  v.from_tenant_id = q.integer(1);
  v.to_tenant_id = q.integer(2);
  v.devices = nlohmann::json::parse(q.text(3)).get<std::vector<std::string>>();
  v.payload_sha256 = q.text(4);
  v.public_key = q.text(5);
  v.expires_at = q.integer(6);
  v.created_at = q.text(7);
  v.redeemed_at = q.optional_text(8);
  return v;
}

bool SqliteStore::take_transfer_voucher(const std::string& id, const std::string& now) {
  Use use(*this);
  // One statement: of two racing accepts, only one changes the row.
  db().prepare("UPDATE device_transfers SET redeemed_at = ? WHERE id = ? AND redeemed_at IS NULL")
      .bind(1, now)
      .bind(2, id)
      .run();
  return db().changes() == 1;
}

void SqliteStore::revoke_device(const std::string& device_id, const std::string& reason, const std::string& now) {
  Use use(*this);
  db().prepare(
        "UPDATE devices SET state = 'revoked', revoked_reason = CASE WHEN revoked_at IS NULL THEN ? ELSE "
        "revoked_reason END, revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
      .bind(1, reason)
      .bind(2, now)
      .bind(3, device_id)
      .run();
}

bool SqliteStore::device_checked_in(const std::string& device_id, const std::string& now,
                                    const std::string& stale_before, const std::optional<std::string>& version,
                                    const std::optional<std::string>& state) {
  Use use(*this);
  auto q = db().cached(
      "UPDATE devices SET last_seen = ?1, version = coalesce(?2, version), state = coalesce(?3, state) WHERE id = ?4 "
      "AND (last_seen IS NULL OR last_seen < ?5 OR version IS NOT coalesce(?2, version) OR "
      "state IS NOT coalesce(?3, state))");
  q->bind(1, now).bind_optional(2, version).bind_optional(3, state).bind(4, device_id).bind(5, stale_before);
  q->run();
  return db().changes() > 0;
}

void SqliteStore::record_device_firmware(const std::string& device_id, const std::optional<std::int64_t>& sequence,
                                         const std::optional<std::string>& manifest_digest) {
  Use use(*this);
  auto q = db().prepare(
      "UPDATE devices SET sequence = coalesce(?1, sequence), manifest_digest = coalesce(?2, manifest_digest) WHERE id = ?3 "
      "AND (sequence IS NOT coalesce(?1, sequence) OR manifest_digest IS NOT coalesce(?2, manifest_digest))");
  if (sequence)
    q.bind(1, *sequence);
  else
    q.bind_null(1);
  q.bind_optional(2, manifest_digest).bind(3, device_id).run();
}

void SqliteStore::record_device_trust_version(const std::string& device_id, std::int64_t version) {
  Use use(*this);
  db().prepare("UPDATE devices SET trust_version = ?1 WHERE id = ?2 AND trust_version IS NOT ?1")
      .bind(1, version)
      .bind(2, device_id)
      .run();
}

void SqliteStore::set_device_encryption_key(const std::string& device_id, const std::string& public_key) {
  Use use(*this);
  if (device_encryption_key(device_id) == std::optional<std::string>(public_key)) return;
  auto forget = db().prepare("DELETE FROM device_images WHERE device_id = ?");
  forget.bind(1, device_id).run();
  auto q = db().prepare(
      "INSERT INTO device_encryption_keys (device_id, public_key) VALUES (?1, ?2) "
      "ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key");
  q.bind(1, device_id).bind(2, public_key).run();
}

std::optional<std::string> SqliteStore::device_encryption_key(const std::string& device_id) {
  Use use(*this);
  auto q = db().prepare("SELECT public_key FROM device_encryption_keys WHERE device_id = ?");
  q.bind(1, device_id);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

std::optional<DeviceImage> SqliteStore::find_device_image(const std::string& device_id, const std::string& image) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT area, sha256, size, created_at FROM device_images WHERE device_id = ? AND image = ?");
  q.bind(1, device_id).bind(2, image);
  if (!q.step()) return std::nullopt;
  return DeviceImage{device_id, image, q.text(0), q.text(1), q.integer(2), q.text(3)};
}

void SqliteStore::save_device_image(const DeviceImage& image) {
  Use use(*this);
  auto q = db().prepare(
      "INSERT INTO device_images (device_id, image, area, sha256, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT(device_id, image) DO UPDATE SET area = excluded.area, sha256 = excluded.sha256, "
      "size = excluded.size, created_at = excluded.created_at");
  q.bind(1, image.device_id)
      .bind(2, image.image)
      .bind(3, image.area)
      .bind(4, image.sha256)
      .bind(5, image.size)
      .bind(6, image.created_at)
      .run();
}

std::vector<DeviceFirmware> SqliteStore::group_firmware(const std::string& group_id) {
  Use use(*this);
  auto q = db().prepare("SELECT id, sequence, manifest_digest FROM devices WHERE group_id = ? ORDER BY id");
  q.bind(1, group_id);
  return all_rows(q, read_device_firmware);
}

void SqliteStore::add_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                      std::int64_t expires_at, std::int64_t now) {
  Use use(*this);
  db().prepare("DELETE FROM claim_challenges WHERE expires_at < ?").bind(1, now).run();
  db().prepare("INSERT INTO claim_challenges (nonce, device_id, tenant_id, expires_at) VALUES (?, ?, ?, ?)")
      .bind(1, nonce)
      .bind(2, device_id)
      .bind(3, tenant_id)
      .bind(4, expires_at)
      .run();
}

bool SqliteStore::take_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                       std::int64_t now) {
  Use use(*this);
  auto q = db().prepare("SELECT expires_at FROM claim_challenges WHERE nonce = ? AND device_id = ? AND tenant_id = ?");
  q.bind(1, nonce).bind(2, device_id).bind(3, tenant_id);
  if (!q.step() || q.integer(0) < now) return false;
  db().prepare("DELETE FROM claim_challenges WHERE nonce = ?").bind(1, nonce).run();
  return true;
}

// Staged imports.

void SqliteStore::forget_import_parts_before(std::int64_t oldest) {
  Use use(*this);
  db().prepare("DELETE FROM import_parts WHERE created_at < ?").bind(1, oldest).run();
}

std::int64_t SqliteStore::import_received(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT coalesce(sum(length(CAST(body AS BLOB))), 0) FROM import_parts WHERE tenant_id = ? AND import_id = ?");
  q.bind(1, tenant_id).bind(2, import_id);
  q.step();
  return q.integer(0);
}

void SqliteStore::add_import_part(std::int64_t tenant_id, const std::string& import_id, std::int64_t offset,
                                  std::string_view body, std::int64_t now) {
  Use use(*this);
  db().prepare("INSERT INTO import_parts (tenant_id, import_id, offset, body, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, tenant_id)
      .bind(2, import_id)
      .bind(3, offset)
      .bind(4, body)
      .bind(5, now)
      .run();
}

std::vector<std::int64_t> SqliteStore::import_part_offsets(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  std::vector<std::int64_t> out;
  auto q = db().prepare("SELECT offset FROM import_parts WHERE tenant_id = ? AND import_id = ? ORDER BY offset");
  q.bind(1, tenant_id).bind(2, import_id);
  while (q.step()) out.push_back(q.integer(0));
  return out;
}

std::optional<std::string> SqliteStore::import_part(std::int64_t tenant_id, const std::string& import_id,
                                                    std::int64_t offset) {
  Use use(*this);
  auto q = db().prepare("SELECT body FROM import_parts WHERE tenant_id = ? AND import_id = ? AND offset = ?");
  q.bind(1, tenant_id).bind(2, import_id).bind(3, offset);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

void SqliteStore::delete_import(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  db().prepare("DELETE FROM import_parts WHERE tenant_id = ? AND import_id = ?").bind(1, tenant_id).bind(2, import_id).run();
}

// Factory CAs.

std::vector<std::string> SqliteStore::owned_factory_ca_pems(std::int64_t tenant_id) {
  Use use(*this);
  std::vector<std::string> out;
  auto q = db().prepare(std::string(owned_cas) + "WHERE c.tenant_id = ? AND c.revoked_at IS NULL");
  q.bind(1, tenant_id);
  while (q.step()) out.push_back(q.text(1));
  return out;
}

std::map<std::int64_t, std::vector<std::string>> SqliteStore::owned_station_ca_pems() {
  Use use(*this);
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  auto q = db().prepare(std::string(owned_cas) + "WHERE c.stations != 0 AND c.revoked_at IS NULL ORDER BY c.tenant_id");
  while (q.step()) by_tenant[q.integer(0)].push_back(q.text(1));
  return by_tenant;
}

std::vector<std::string> SqliteStore::revoked_factory_ca_pems(std::int64_t tenant_id) {
  Use use(*this);
  std::vector<std::string> out;
  auto q = db().prepare(std::string(owned_cas) + "WHERE c.tenant_id = ? AND c.revoked_at IS NOT NULL");
  q.bind(1, tenant_id);
  while (q.step()) out.push_back(q.text(1));
  return out;
}

std::map<std::int64_t, std::vector<std::string>> SqliteStore::revoked_station_ca_pems() {
  Use use(*this);
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  auto q = db().prepare(std::string(owned_cas) +
                        "WHERE c.stations != 0 AND c.revoked_at IS NOT NULL ORDER BY c.tenant_id");
  while (q.step()) by_tenant[q.integer(0)].push_back(q.text(1));
  return by_tenant;
}

bool SqliteStore::revoke_factory_ca(std::int64_t tenant_id, const std::string& id, const std::string& reason,
                                    const std::string& now) {
  Use use(*this);
  db().prepare(
        "UPDATE factory_cas SET revoked_reason = CASE WHEN revoked_at IS NULL THEN ? ELSE revoked_reason END, "
        "revoked_at = coalesce(revoked_at, ?) WHERE tenant_id = ? AND id = ?")
      .bind(1, reason)
      .bind(2, now)
      .bind(3, tenant_id)
      .bind(4, id)
      .run();
  return db().changes() > 0;
}

void SqliteStore::add_factory_ca_challenge(const std::string& nonce, const FactoryCaChallenge& challenge,
                                           std::int64_t now) {
  Use use(*this);
  db().prepare("DELETE FROM factory_ca_challenges WHERE expires_at < ?").bind(1, now).run();
  db().prepare("INSERT INTO factory_ca_challenges (nonce, tenant_id, key_sha256, expires_at) VALUES (?, ?, ?, ?)")
      .bind(1, nonce)
      .bind(2, challenge.tenant_id)
      .bind(3, challenge.key_sha256)
      .bind(4, challenge.expires_at)
      .run();
}

std::optional<FactoryCaChallenge> SqliteStore::take_factory_ca_challenge(const std::string& nonce) {
  Use use(*this);
  auto q = db().prepare("SELECT tenant_id, key_sha256, expires_at FROM factory_ca_challenges WHERE nonce = ?");
  q.bind(1, nonce);
  std::optional<FactoryCaChallenge> out;
  if (q.step()) out = FactoryCaChallenge{q.integer(0), q.text(1), q.integer(2)};
  db().prepare("DELETE FROM factory_ca_challenges WHERE nonce = ?").bind(1, nonce).run();
  return out;
}

std::int64_t SqliteStore::claim_factory_ca_key(const std::string& key_sha256, std::int64_t tenant_id,
                                               const std::string& now) {
  Use use(*this);
  db().prepare("INSERT OR IGNORE INTO factory_ca_owners (key_sha256, tenant_id, created_at) VALUES (?, ?, ?)")
      .bind(1, key_sha256)
      .bind(2, tenant_id)
      .bind(3, now)
      .run();
  auto owner = db().prepare("SELECT tenant_id FROM factory_ca_owners WHERE key_sha256 = ?");
  owner.bind(1, key_sha256);
  return owner.step() ? owner.integer(0) : 0;
}

std::optional<LedgerHead> SqliteStore::find_ledger_head(std::int64_t tenant_id,
                                                        const std::string& station_key_sha256,
                                                        const std::string& ledger_id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT ledger_id, rows, hash, imported_at FROM ledger_heads "
      "WHERE tenant_id = ? AND station_key_sha256 = ? AND ledger_id = ?");
  q.bind(1, tenant_id).bind(2, station_key_sha256).bind(3, ledger_id);
  return first_row(q, read_ledger_head);
}

std::optional<LedgerHead> SqliteStore::latest_ledger_head(std::int64_t tenant_id,
                                                          const std::string& station_key_sha256) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT ledger_id, rows, hash, imported_at FROM ledger_heads WHERE tenant_id = ? AND station_key_sha256 = ? "
      "ORDER BY imported_at DESC LIMIT 1");
  q.bind(1, tenant_id).bind(2, station_key_sha256);
  return first_row(q, read_ledger_head);
}

void SqliteStore::save_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                                   const LedgerHead& head) {
  Use use(*this);
  db().prepare(
        "INSERT INTO ledger_heads (tenant_id, ledger_id, station_key_sha256, rows, hash, imported_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, station_key_sha256, ledger_id) DO UPDATE SET "
        "rows = excluded.rows, hash = excluded.hash, imported_at = excluded.imported_at")
      .bind(1, tenant_id)
      .bind(2, head.ledger_id)
      .bind(3, station_key_sha256)
      .bind(4, head.rows)
      .bind(5, head.hash)
      .bind(6, head.imported_at)
      .run();
}

bool SqliteStore::register_factory_ca(std::int64_t tenant_id, const FactoryCaRecord& ca) {
  Use use(*this);
  // Registering again may widen the CA to stations; it never narrows a registration silently.
  db().prepare(
        "INSERT INTO factory_cas (tenant_id, id, subject, pem, created_at, stations, key_sha256) VALUES (?, ?, ?, ?, "
        "?, ?, ?) ON CONFLICT (tenant_id, id) DO UPDATE SET stations = max(stations, excluded.stations)")
      .bind(1, tenant_id)
      .bind(2, ca.id)
      .bind(3, ca.subject)
      .bind(4, ca.pem)
      .bind(5, ca.created_at)
      .bind(6, std::int64_t{ca.stations ? 1 : 0})
      .bind_optional(7, ca.key_sha256)
      .run();
  auto q = db().prepare("SELECT stations FROM factory_cas WHERE tenant_id = ? AND id = ?");
  q.bind(1, tenant_id).bind(2, ca.id);
  return q.step() && q.integer(0) != 0;
}

std::vector<FactoryCaRecord> SqliteStore::list_factory_cas(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT c.id, c.subject, c.pem, c.stations, c.key_sha256, o.tenant_id IS NOT NULL, c.created_at, "
      "c.revoked_at, c.revoked_reason FROM factory_cas c LEFT JOIN factory_ca_owners o ON o.key_sha256 = c.key_sha256 AND o.tenant_id = c.tenant_id "
      "WHERE c.tenant_id = ? ORDER BY c.created_at");
  q.bind(1, tenant_id);
  return all_rows(q, read_factory_ca);
}

// Images.

std::optional<ImageRecord> SqliteStore::find_image(std::int64_t tenant_id, const std::string& sha256) {
  Use use(*this);
  auto q = db().prepare(std::string(image_columns) + "WHERE tenant_id = ? AND sha256 = ?");
  q.bind(1, tenant_id).bind(2, sha256);
  return first_row(q, read_image);
}

void SqliteStore::insert_image(std::int64_t tenant_id, const ImageRecord& image) {
  Use use(*this);
  std::optional<std::string> name;
  if (!image.name.empty()) name = image.name;
  db().prepare("INSERT INTO images (tenant_id, sha256, name, size, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, tenant_id)
      .bind(2, image.sha256)
      .bind_optional(3, name)
      .bind(4, image.size)
      .bind(5, image.created_at)
      .run();
}

std::vector<ImageRecord> SqliteStore::list_images(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare(std::string(image_columns) + "WHERE tenant_id = ? ORDER BY created_at, sha256");
  q.bind(1, tenant_id);
  return all_rows(q, read_image);
}

void SqliteStore::record_upload(std::int64_t tenant_id, const std::string& sha256, std::int64_t received,
                                bool complete) {
  Use use(*this);
  db().prepare("UPDATE images SET received = ?, complete = ? WHERE tenant_id = ? AND sha256 = ?")
      .bind(1, received)
      .bind(2, std::int64_t{complete ? 1 : 0})
      .bind(3, tenant_id)
      .bind(4, sha256)
      .run();
}

void SqliteStore::link_manifest(std::int64_t tenant_id, const std::string& image, const std::string& manifest) {
  Use use(*this);
  db().prepare("UPDATE images SET manifest = ? WHERE tenant_id = ? AND sha256 = ?")
      .bind(1, manifest)
      .bind(2, tenant_id)
      .bind(3, image)
      .run();
}

// Deployments.

namespace {

// Rows of releases before waves and halts had their columns read with the defaults they meant.
constexpr const char* deployment_first_columns =
    "SELECT d.id, d.group_id, p.name || '/' || g.name, d.images, d.manifest, d.sequence, coalesce(d.waves, "
    "'[' || d.rollout || ']'), coalesce(d.wave, 1), coalesce(d.wave_started_at, strftime('%s', d.created_at)), "
    "coalesce(d.step_after, 0), d.halt_on_failure, d.halt_reason, coalesce(d.failure_baseline, 0), d.previous, "
    "d.state, d.created_at, d.updated_at";
// The columns as migrations 1..3 know them (migration 2 reads deployments before migration 4 adds columns).
const std::string deployment_columns_v1 = deployment_select(deployment_first_columns, false);
const std::string deployment_columns = deployment_select(deployment_first_columns, true);

// Migration 2: tallies kept as reports arrive, counted once for the deployments a store already holds.
void add_deployment_tallies(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS deployment_tallies (deployment_id TEXT NOT NULL, wave INTEGER NOT NULL, status TEXT NOT NULL, "
      "devices INTEGER NOT NULL, PRIMARY KEY (deployment_id, wave, status))");
  auto q = db.prepare(deployment_columns_v1);
  auto all = all_rows(q, read_deployment);
  for (auto& d : all) write_tally(db, d.id, recount(db, d));
}

}  // namespace

std::optional<Deployment> SqliteStore::find_deployment(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = db().prepare(std::string(deployment_columns) + "WHERE d.id = ? AND d.tenant_id = ?");
  q.bind(1, id).bind(2, tenant_id);
  return first_row(q, read_deployment);
}

std::optional<std::string> SqliteStore::newest_deployment(std::int64_t tenant_id, const std::string& group_id,
                                                          bool skip_aborted) {
  Use use(*this);
  // Every check-in asks: prepared once per connection, one statement for both kinds of question.
  auto q = db().cached("SELECT id FROM deployments WHERE group_id = ?1 AND tenant_id = ?2 AND trust_version IS NULL "
                       "AND (?3 = 0 OR state != 'aborted') ORDER BY rowid DESC LIMIT 1");
  q->bind(1, group_id).bind(2, tenant_id).bind(3, static_cast<std::int64_t>(skip_aborted ? 1 : 0));
  if (!q->step()) return std::nullopt;
  return q->text(0);
}

std::optional<std::string> SqliteStore::newest_trust_deployment(std::int64_t tenant_id, const std::string& group_id) {
  Use use(*this);
  auto q = db().cached(
      "SELECT id FROM deployments WHERE group_id = ? AND tenant_id = ? AND trust_version IS NOT NULL ORDER BY rowid "
      "DESC LIMIT 1");
  q->bind(1, group_id).bind(2, tenant_id);
  if (!q->step()) return std::nullopt;
  return q->text(0);
}

std::vector<Deployment> SqliteStore::list_deployments(std::int64_t tenant_id,
                                                      const std::optional<std::string>& group_id) {
  Use use(*this);
  std::string sql = std::string(deployment_columns) + "WHERE d.tenant_id = ?";
  if (group_id) sql += " AND d.group_id = ?";
  auto q = db().prepare(sql + " ORDER BY d.rowid");
  q.bind(1, tenant_id);
  if (group_id) q.bind(2, *group_id);
  return all_rows(q, read_deployment);
}

void SqliteStore::insert_deployment(std::int64_t tenant_id, const Deployment& d, const std::string& now) {
  Use use(*this);
  db().prepare(
        "UPDATE deployments SET state = 'superseded', updated_at = ? WHERE group_id = ? AND state IN "
        "('active', 'paused', 'halted') AND (trust_version IS NULL) = ?")
      .bind(1, now)
      .bind(2, d.group_id)
      .bind(3, std::int64_t{d.trust_version ? 0 : 1})
      .run();
  auto insert = db().prepare(
      "INSERT INTO deployments (id, tenant_id, group_id, images, rollout, state, created_at, updated_at, manifest, "
      "sequence, waves, wave, wave_started_at, step_after, halt_on_failure, failure_baseline, previous, "
      "halt_min_executed, policy, progress, trust_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
      "?, ?, ?, ?)");
  insert.bind(1, d.id)
      .bind(2, tenant_id)
      .bind(3, d.group_id)
      .bind(4, json_array(d.images))
      .bind(5, std::int64_t{d.waves.back()})
      .bind(6, state_name(d.state))
      .bind(7, d.created_at)
      .bind(8, d.updated_at)
      .bind_optional(9, d.manifest);
  if (d.sequence)
    insert.bind(10, *d.sequence);
  else
    insert.bind_null(10);
  insert.bind(11, json_array(d.waves))
      .bind(12, std::int64_t{d.wave})
      .bind(13, d.wave_started_at)
      .bind(14, d.step_after);
  if (d.halt_on_failure)
    insert.bind(15, *d.halt_on_failure);
  else
    insert.bind_null(15);
  insert.bind(16, d.failure_baseline)
      .bind_optional(17, d.previous)
      .bind(18, d.halt_min_executed)
      .bind(19, policy_text(d.policy))
      .bind(20, progress_text(d));
  if (d.trust_version)
    insert.bind(21, *d.trust_version);
  else
    insert.bind_null(21);
  insert.run();
  write_tally(db(), d.id, recount_rollout_tally(d));
}

void SqliteStore::save_rollout(const std::string& deployment_id, const Rollout& r, const std::string& now) {
  Use use(*this);
  db().prepare(
          "UPDATE deployments SET state = ?, wave = ?, wave_started_at = ?, halt_reason = ?, failure_baseline = ?, "
          "updated_at = ?, progress = ? WHERE id = ?")
      .bind(1, state_name(r.state))
      .bind(2, std::int64_t{r.wave})
      .bind(3, r.wave_started_at)
      .bind_optional(4, r.halt_reason)
      .bind(5, r.failure_baseline)
      .bind(6, now)
      .bind(7, progress_text(r))
      .bind(8, deployment_id)
      .run();
}

RolloutTally SqliteStore::recount_rollout_tally(const Deployment& deployment) {
  Use use(*this);
  return recount(db(), deployment);
}

RolloutTally SqliteStore::rollout_tally(const Deployment& deployment) {
  Use use(*this);
  auto t = empty_tally(deployment.waves);
  auto q = db().prepare("SELECT wave, status, devices FROM deployment_tallies WHERE deployment_id = ?");
  q.bind(1, deployment.id);
  while (q.step()) add_tally_row(t, {q.integer(0), q.text(1), q.integer(2)});
  return t;
}

std::map<std::string, RolloutTally> SqliteStore::rollout_tallies(std::int64_t tenant_id,
                                                                 const std::optional<std::string>& group_id) {
  Use use(*this);
  std::map<std::string, RolloutTally> out;
  for (auto& d : list_deployments(tenant_id, group_id)) out[d.id] = empty_tally(d.waves);
  std::string sql =
      "SELECT t.deployment_id, t.wave, t.status, t.devices FROM deployment_tallies t JOIN deployments d ON d.id = "
      "t.deployment_id WHERE d.tenant_id = ?";
  if (group_id) sql += " AND d.group_id = ?";
  auto q = db().prepare(sql);
  q.bind(1, tenant_id);
  if (group_id) q.bind(2, *group_id);
  while (q.step())
    if (auto it = out.find(q.text(0)); it != out.end())
      add_tally_row(it->second, {q.integer(1), q.text(2), q.integer(3)});
  return out;
}

void SqliteStore::for_each_deployment_device(const Deployment& deployment,
                                             const std::function<void(const DeploymentDevice&)>& each) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT d.id, dd.status, coalesce(dd.detail, ''), coalesce(dd.updated_at, ''), coalesce(d.version, ''), "
      "dd.previous_manifest, dd.version_before, coalesce(dd.started_at, ''), coalesce(d.last_seen, ''), "
      "coalesce(dd.attempt, 1), dd.retry_at, d.time_zone "
      "FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = ? AND dd.device_id = d.id "
      "WHERE d.group_id = ? ORDER BY d.id");
  q.bind(1, deployment.id).bind(2, deployment.group_id);
  while (q.step()) each(read_deployment_device(SqliteRow(q)));
}

std::optional<DeploymentDevice> SqliteStore::deployment_device(const std::string& deployment_id,
                                                               const std::string& device_id) {
  Use use(*this);
  auto q = db().cached(
      "SELECT dd.device_id, dd.status, coalesce(dd.detail, ''), dd.updated_at, coalesce(d.version, ''), "
      "dd.previous_manifest, dd.version_before, coalesce(dd.started_at, ''), coalesce(d.last_seen, ''), "
      "dd.attempt, dd.retry_at, d.time_zone FROM deployment_devices dd "
      "JOIN devices d ON d.id = dd.device_id WHERE dd.deployment_id = ? AND dd.device_id = ?");
  q->bind(1, deployment_id).bind(2, device_id);
  return first_row(*q.operator->(), read_deployment_device);
}

std::optional<std::string> SqliteStore::deployment_with_manifest(std::int64_t tenant_id, const std::string& group_id,
                                                                const std::string& manifest) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT id FROM deployments WHERE tenant_id = ? AND group_id = ? AND manifest = ? ORDER BY rowid DESC LIMIT 1");
  q.bind(1, tenant_id).bind(2, group_id).bind(3, manifest);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

std::optional<std::string> SqliteStore::reported_status(const std::string& deployment_id,
                                                        const std::string& device_id) {
  Use use(*this);
  auto q = db().cached("SELECT status FROM deployment_devices WHERE deployment_id = ? AND device_id = ?");
  q->bind(1, deployment_id).bind(2, device_id);
  if (!q->step()) return std::nullopt;
  return q->text(0);
}

void SqliteStore::record_status(const std::string& deployment_id, const std::string& device_id,
                                const std::string& status, const std::string& detail, const std::string& now,
                                const std::optional<std::string>& installed_version) {
  Use use(*this);
  // The tally follows the device's last status, while the device is in the deployment's group.
  auto previous = reported_status(deployment_id, device_id);
  auto where = db().prepare(
      "SELECT coalesce(d.waves, '[' || d.rollout || ']') FROM deployments d JOIN devices v ON v.group_id = "
      "d.group_id WHERE d.id = ? AND v.id = ?");
  where.bind(1, deployment_id).bind(2, device_id);
  if (where.step()) {
    int wave = device_wave(deployment_id, parse_waves(where.text(0)), device_id);
    for (const auto& row : report_rows(wave, previous, status)) add_tally(db(), deployment_id, row);
  }
  db().prepare(
        "INSERT INTO deployment_devices (deployment_id, device_id, status, detail, updated_at, previous_manifest, "
        "version_before, started_at) SELECT ?1, ?2, ?3, ?4, ?5, manifest_digest, version, ?5 FROM devices WHERE id = ?2 "
        "ON CONFLICT (deployment_id, device_id) DO UPDATE SET status = excluded.status, "
        "detail = excluded.detail, updated_at = excluded.updated_at")
      .bind(1, deployment_id)
      .bind(2, device_id)
      .bind(3, status)
      .bind(4, detail)
      .bind(5, now)
      .run();
  if (installed_version)
    db().prepare("UPDATE devices SET version = ? WHERE id = ?").bind(1, *installed_version).bind(2, device_id).run();
}

void SqliteStore::set_attempt(const std::string& deployment_id, const std::string& device_id, std::int64_t attempt,
                              const std::optional<std::int64_t>& retry_at) {
  Use use(*this);
  auto q = db().prepare("UPDATE deployment_devices SET attempt = ?, retry_at = ? WHERE deployment_id = ? AND device_id = ?");
  q.bind(1, attempt);
  if (retry_at)
    q.bind(2, *retry_at);
  else
    q.bind_null(2);
  q.bind(3, deployment_id).bind(4, device_id).run();
}

std::optional<std::string> SqliteStore::device_time_zone(const std::string& device_id) {
  Use use(*this);
  auto q = db().cached("SELECT time_zone FROM devices WHERE id = ?");
  q->bind(1, device_id);
  if (!q->step()) return std::nullopt;
  return q->optional_text(0);
}

void SqliteStore::set_device_time_zone(const std::string& device_id, const std::optional<std::string>& zone) {
  Use use(*this);
  db().prepare("UPDATE devices SET time_zone = ? WHERE id = ?").bind_optional(1, zone).bind(2, device_id).run();
}

void SqliteStore::delete_image(std::int64_t tenant_id, const std::string& sha256) {
  Use use(*this);
  db().prepare("DELETE FROM device_images WHERE image = ? AND device_id IN (SELECT id FROM devices WHERE tenant_id = ?)")
      .bind(1, sha256)
      .bind(2, tenant_id)
      .run();
  db().prepare("UPDATE images SET manifest = NULL WHERE tenant_id = ? AND manifest = ?").bind(1, tenant_id).bind(2, sha256).run();
  db().prepare("DELETE FROM images WHERE tenant_id = ? AND sha256 = ?").bind(1, tenant_id).bind(2, sha256).run();
}

void SqliteStore::delete_deployment(const std::string& deployment_id) {
  Use use(*this);
  db().prepare("DELETE FROM deployment_tallies WHERE deployment_id = ?").bind(1, deployment_id).run();
  db().prepare("DELETE FROM deployment_devices WHERE deployment_id = ?").bind(1, deployment_id).run();
  db().prepare("DELETE FROM deployments WHERE id = ?").bind(1, deployment_id).run();
}

void SqliteStore::add_audit(std::int64_t tenant_id, const AuditEntry& e) {
  Use use(*this);
  db().prepare(
        "INSERT INTO audit_log (tenant_id, at, actor, role, action, method, route, target, status, request_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, tenant_id)
      .bind(2, e.at)
      .bind(3, e.actor)
      .bind(4, e.role)
      .bind(5, e.action)
      .bind(6, e.method)
      .bind(7, e.route)
      .bind(8, e.target)
      .bind(9, std::int64_t{e.status})
      .bind(10, e.request_id)
      .run();
}

std::vector<AuditEntry> SqliteStore::list_audit(const AuditFilter& f, const std::optional<std::int64_t>& after,
                                                std::int64_t limit) {
  Use use(*this);
  std::string sql =
      "SELECT id, at, actor, role, action, method, route, target, status, request_id FROM audit_log WHERE tenant_id = ?";
  std::vector<std::string> texts;
  auto add = [&](const char* condition, const std::optional<std::string>& value) {
    if (!value) return;
    sql += fmt::format(" AND {} ?", condition);
    texts.push_back(*value);
  };
  add("actor =", f.actor);
  add("action =", f.action);
  add("target =", f.target);
  add("at >=", f.since);
  add("at <=", f.until);
  if (after) sql += " AND id > ?";
  sql += " ORDER BY id LIMIT ?";
  auto q = db().prepare(sql);
  int index = 1;
  q.bind(index++, f.tenant_id);
  for (auto& text : texts) q.bind(index++, text);
  if (after) q.bind(index++, *after);
  q.bind(index, limit);
  std::vector<AuditEntry> out;
  while (q.step())
    out.push_back(AuditEntry{q.integer(0), q.text(1), q.text(2), q.text(3), q.text(4), q.text(5), q.text(6), q.text(7),
                             static_cast<int>(q.integer(8)), q.text(9)});
  return out;
}

}  // namespace kiln::service
