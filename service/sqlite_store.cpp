// SQLite backend of the Store: the schema, its versioned migrations, and every SQL statement of the service.
#include "service/sqlite_store.hpp"

#include <atomic>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "service/factory_trust.hpp"
#include "service/rollout_policy.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

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
  struct Column {
    const char* table;
    const char* name;
    const char* declaration;
  };
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
  for (const auto& column : added) {
    auto q = db.prepare(fmt::format("SELECT 1 FROM pragma_table_info('{}') WHERE name = ?", column.table));
    q.bind(1, column.name);
    if (!q.step()) db.exec(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", column.table, column.name, column.declaration));
  }
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
  struct Column {
    const char* table;
    const char* name;
    const char* declaration;
  };
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
  for (const auto& column : added) {
    auto q = db.prepare(fmt::format("SELECT 1 FROM pragma_table_info('{}') WHERE name = ?", column.table));
    q.bind(1, column.name);
    if (!q.step()) db.exec(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", column.table, column.name, column.declaration));
  }
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
  for (const char* name : {"policy", "progress"}) {
    auto q = db.prepare("SELECT 1 FROM pragma_table_info('deployments') WHERE name = ?");
    q.bind(1, name);
    if (!q.step()) db.exec(fmt::format("ALTER TABLE deployments ADD COLUMN {} TEXT NOT NULL DEFAULT ''", name));
  }
}

// Migration 7 (issue 15, retries and maintenance windows): the attempt each device is on for a deployment
// and when it may retry (unix seconds), and each device's own time zone. Idempotent, like migration 4.
void add_retries_and_zones(Db& db) {
  struct Column {
    const char* table;
    const char* name;
    const char* declaration;
  };
  static const Column added[] = {
      {"deployment_devices", "attempt", "INTEGER NOT NULL DEFAULT 1"},
      {"deployment_devices", "retry_at", "INTEGER"},
      {"devices", "time_zone", "TEXT"},
  };
  for (const auto& column : added) {
    auto q = db.prepare(fmt::format("SELECT 1 FROM pragma_table_info('{}') WHERE name = ?", column.table));
    q.bind(1, column.name);
    if (!q.step()) db.exec(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", column.table, column.name, column.declaration));
  }
}

// Migration 8 (issue 17, deletion and audit): the audit log, one row per write of a tenant, in log order.
void add_audit_log(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id INTEGER NOT NULL, "
      "at TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL, method TEXT NOT NULL, "
      "route TEXT NOT NULL, target TEXT NOT NULL, status INTEGER NOT NULL, request_id TEXT NOT NULL)");
  db.exec("CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant_id, id)");
}

// The schema's versions, oldest first: migration N brings a store from version N-1 to N, in one
// transaction. Append only: a released migration never changes. The version lives in PRAGMA user_version
// (0: a store from before versioned migrations, or a new file).
struct Migration {
  int version;
  void (*apply)(Db& db);
};
constexpr Migration migrations[] = {
    {1, baseline_schema},
    {2, add_deployment_tallies},
    {3, add_ledger_heads},
    {4, add_rollout_safety},
    {5, add_encrypted_delivery},
    {6, add_rollout_controls},
    {7, add_retries_and_zones},
    {8, add_audit_log},
};

int schema_version(Db& db) {
  auto q = db.prepare("PRAGMA user_version");
  q.step();
  return static_cast<int>(q.integer(0));
}

void migrate(Db& db, const std::string& path) {
  int current = schema_version(db);
  int latest = std::end(migrations)[-1].version;
  if (current > latest)
    throw Error(ExitCode::conflict,
                fmt::format("the store {} has schema version {}, newer than this kiln-service knows ({}): a newer "
                            "release wrote it, and an older one must not change it",
                            path, current, latest),
                "run the kiln-service release that wrote this store, or a newer one");
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


// Deployment tallies (table deployment_tallies): per deployment, wave 0 with status '' holds every device
// of the group; wave N with status '' the devices whose bucket falls in wave N; wave N with a status the
// devices of wave N whose last report for the deployment was that status.

std::vector<int> parse_waves(const std::string& text) {
  std::vector<int> waves;
  for (auto& w : nlohmann::json::parse(text)) waves.push_back(w.get<int>());
  return waves;
}

void add_tally(Db& db, const std::string& deployment_id, std::int64_t wave, const std::string& status,
               std::int64_t delta) {
  db.cached(
        "INSERT INTO deployment_tallies (deployment_id, wave, status, devices) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (deployment_id, wave, status) DO UPDATE SET devices = devices + excluded.devices")
      ->bind(1, deployment_id)
      .bind(2, wave)
      .bind(3, status)
      .bind(4, delta)
      .run();
}

void add_row(RolloutTally& t, std::int64_t wave, const std::string& status, std::int64_t devices) {
  if (wave == 0) {
    if (status.empty()) t.devices += devices;
    return;
  }
  if (wave < 0 || static_cast<std::size_t>(wave) > t.waves.size()) return;
  auto& w = t.waves[static_cast<std::size_t>(wave - 1)];
  if (status.empty())
    w.devices += devices;
  else if (devices != 0)
    w.reported[status] += devices;
}

void write_tally(Db& db, const std::string& deployment_id, const RolloutTally& t) {
  db.prepare("DELETE FROM deployment_tallies WHERE deployment_id = ?").bind(1, deployment_id).run();
  add_tally(db, deployment_id, 0, "", t.devices);
  for (std::size_t i = 0; i < t.waves.size(); ++i) {
    auto wave = static_cast<std::int64_t>(i + 1);
    add_tally(db, deployment_id, wave, "", t.waves[i].devices);
    for (auto& [status, n] : t.waves[i].reported) add_tally(db, deployment_id, wave, status, n);
  }
}

RolloutTally recount(Db& db, const Deployment& deployment) {
  RolloutTally t;
  t.waves.resize(deployment.waves.size());
  auto q = db.prepare(
      "SELECT d.id, dd.status FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = ? AND "
      "dd.device_id = d.id WHERE d.group_id = ?");
  q.bind(1, deployment.id).bind(2, deployment.group_id);
  while (q.step()) {
    ++t.devices;
    int wave = wave_of_bucket(deployment.waves, rollout_bucket(deployment.id, q.text(0)));
    if (wave == 0) continue;
    auto& w = t.waves[static_cast<std::size_t>(wave - 1)];
    ++w.devices;
    if (!q.is_null(1)) ++w.reported[q.text(1)];
  }
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
    add_tally(db, id, 0, "", delta);
    int wave = wave_of_bucket(waves, rollout_bucket(id, device_id));
    if (wave == 0) continue;
    add_tally(db, id, wave, "", delta);
    std::optional<std::string> reported;
    {
      auto status = db.cached("SELECT status FROM deployment_devices WHERE deployment_id = ? AND device_id = ?");
      status->bind(1, id).bind(2, device_id);
      if (status->step()) reported = status->text(0);
    }
    if (reported) add_tally(db, id, wave, *reported, delta);
  }
}

}  // namespace

// A connection of the pool, and the units of work open on it (0: none).
struct SqliteStore::Connection {
  explicit Connection(const std::string& path) : db(path) {}
  Db db;
  int depth = 0;
};

thread_local std::map<std::uint64_t, std::pair<SqliteStore::Connection*, int>> SqliteStore::held_;

// Holds a connection for this thread while any store call or unit of work on it runs: the calls of one
// request (one thread) share the connection and so its transaction.
class SqliteStore::Use {
 public:
  explicit Use(SqliteStore& store) : store_(store) {
    auto& slot = held_[store_.id_];
    if (slot.second++ == 0) {
      try {
        slot.first = store_.acquire();
      } catch (...) {
        held_.erase(store_.id_);
        throw;
      }
    }
  }
  ~Use() {
    auto it = held_.find(store_.id_);
    if (--it->second.second == 0) {
      store_.release(it->second.first);
      held_.erase(it);
    }
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

 private:
  SqliteStore& store_;
};

SqliteStore::Connection& SqliteStore::current() { return *held_.at(id_).first; }
Db& SqliteStore::db() { return current().db; }

SqliteStore::Connection* SqliteStore::acquire() {
  std::unique_lock lock(pool_mutex_);
  // ":memory:" is one database per connection: every thread shares the one connection, one at a time.
  pool_free_.wait(lock, [&] { return !idle_.empty() || !shared_ || open_ == 0; });
  if (!idle_.empty()) {
    auto* connection = idle_.back().release();
    idle_.pop_back();
    return connection;
  }
  ++open_;
  lock.unlock();
  try {
    return new Connection(path_);
  } catch (...) {
    lock.lock();
    --open_;
    pool_free_.notify_one();
    throw;
  }
}

void SqliteStore::release(Connection* connection) {
  std::unique_ptr<Connection> owned(connection);
  std::lock_guard lock(pool_mutex_);
  if (owned->depth != 0 || (!shared_ && idle_.size() >= max_idle_connections)) {
    --open_;  // closed as `owned` goes
    return;
  }
  idle_.push_back(std::move(owned));
  pool_free_.notify_one();
}

// The outermost unit of a connection is a SQLite transaction (writes: BEGIN IMMEDIATE, the write lock at
// once; reads: a snapshot of the WAL); inner units are savepoints, so a failed inner unit undoes only its part.
class SqliteStore::SqliteTransaction final : public Store::Transaction {
 public:
  SqliteTransaction(SqliteStore& store, Access access)
      : use_(store), connection_(store.current()), level_(connection_.depth), read_only_(access == Access::read) {
    if (level_ == 0) {
      // A read unit cannot write: SQLite refuses it (a GET never writes, whatever a handler tries).
      if (read_only_) connection_.db.exec("PRAGMA query_only = ON");
      try {
        connection_.db.exec(read_only_ ? "BEGIN" : "BEGIN IMMEDIATE");
      } catch (...) {
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
      writable_again();
    } else {
      auto undo = fmt::format("ROLLBACK TO unit_{0}; RELEASE unit_{0}", level_);
      sqlite3_exec(raw, undo.c_str(), nullptr, nullptr, nullptr);
    }
  }
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;
  void commit() override {
    connection_.db.exec(level_ == 0 ? std::string("COMMIT") : fmt::format("RELEASE unit_{}", level_));
    --connection_.depth;
    done_ = true;
    if (level_ == 0) writable_again();
  }

 private:
  // The connection goes back to the pool able to write.
  void writable_again() {
    if (read_only_) sqlite3_exec(connection_.db.raw(), "PRAGMA query_only = OFF", nullptr, nullptr, nullptr);
  }

  Use use_;
  Connection& connection_;
  int level_;
  bool read_only_;
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
      id_(next_store_id++) {
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
  db().prepare("INSERT INTO tokens (hash, tenant_id, role, name, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, hash)
      .bind(2, token.tenant_id)
      .bind(3, token.role)
      .bind(4, token.name)
      .bind(5, now)
      .run();
}

std::optional<TokenRecord> SqliteStore::find_token(const std::string& hash) {
  Use use(*this);
  auto q = db().prepare("SELECT tenant_id, role, name FROM tokens WHERE hash = ?");
  q.bind(1, hash);
  if (!q.step()) return std::nullopt;
  return TokenRecord{q.integer(0), q.text(1), q.text(2)};
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
  if (!q.step()) return std::nullopt;
  return IdempotencyRecord{q.text(0), q.text(1), static_cast<int>(q.integer(2)), q.text(3), q.optional_text(4),
                           q.integer(5) != 0};
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

namespace {

constexpr const char* product_columns =
    "SELECT id, name, coalesce(description, ''), created_at, boot_keys, manifest_keys, slot_size FROM products ";

std::vector<std::string> string_array(const std::string& text) {
  std::vector<std::string> out;
  for (auto& v : nlohmann::json::parse(text)) out.push_back(v.get<std::string>());
  return out;
}

Product read_product(Statement& q) {
  Product p{q.text(0), q.text(1), q.text(2), q.text(3), string_array(q.text(4)), string_array(q.text(5)),
            q.integer(6)};
  return p;
}

constexpr const char* group_columns =
    "SELECT g.id, g.product_id, p.name, g.name, coalesce(g.description, ''), g.created_at FROM device_groups g "
    "JOIN products p ON p.id = g.product_id ";

Group read_group(Statement& q) { return {q.text(0), q.text(1), q.text(2), q.text(3), q.text(4), q.text(5)}; }

}  // namespace

std::optional<Product> SqliteStore::find_product(std::int64_t tenant_id, const std::string& ref) {
  Use use(*this);
  auto q = db().prepare(std::string(product_columns) + "WHERE tenant_id = ? AND (id = ? OR name = ?)");
  q.bind(1, tenant_id).bind(2, ref).bind(3, ref);
  if (!q.step()) return std::nullopt;
  return read_product(q);
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
        "INSERT INTO products (id, tenant_id, name, description, created_at, boot_keys, manifest_keys, slot_size) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, product.id)
      .bind(2, tenant_id)
      .bind(3, product.name)
      .bind(4, product.description)
      .bind(5, product.created_at)
      .bind(6, nlohmann::json(product.boot_keys).dump())
      .bind(7, nlohmann::json(product.manifest_keys).dump())
      .bind(8, product.slot_size)
      .run();
}

void SqliteStore::update_product_trust(const Product& product) {
  Use use(*this);
  db().prepare("UPDATE products SET boot_keys = ?, manifest_keys = ?, slot_size = ? WHERE id = ?")
      .bind(1, nlohmann::json(product.boot_keys).dump())
      .bind(2, nlohmann::json(product.manifest_keys).dump())
      .bind(3, product.slot_size)
      .bind(4, product.id)
      .run();
}

std::vector<Product> SqliteStore::list_products(std::int64_t tenant_id) {
  Use use(*this);
  auto q = db().prepare(std::string(product_columns) + "WHERE tenant_id = ? ORDER BY name");
  q.bind(1, tenant_id);
  std::vector<Product> out;
  while (q.step()) out.push_back(read_product(q));
  return out;
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
  if (!q.step()) return std::nullopt;
  return read_group(q);
}

std::optional<Group> SqliteStore::find_group_by_name(const std::string& product_id, const std::string& name) {
  Use use(*this);
  auto q = db().prepare(std::string(group_columns) + "WHERE g.product_id = ? AND g.name = ?");
  q.bind(1, product_id).bind(2, name);
  if (!q.step()) return std::nullopt;
  return read_group(q);
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
  std::vector<Group> out;
  while (q.step()) out.push_back(read_group(q));
  return out;
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

constexpr const char* device_columns =
    "SELECT d.id, p.name, g.name, d.state, d.version, d.claimed, d.last_seen, d.imported_at, d.time_zone "
    "FROM devices d JOIN products p ON p.id = d.product_id LEFT JOIN device_groups g ON g.id = d.group_id ";

DeviceView read_device(Statement& q) {
  DeviceView d;
  d.id = q.text(0);
  d.product = q.text(1);
  if (!q.is_null(2)) d.group = q.text(1) + "/" + q.text(2);
  d.state = q.text(3);
  d.version = q.optional_text(4);
  d.claimed = q.integer(5) != 0;
  d.last_seen = q.optional_text(6);
  d.imported_at = q.text(7);
  d.time_zone = q.optional_text(8);
  return d;
}

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
  if (!q.step()) return std::nullopt;
  return read_device(q);
}

std::optional<DeviceIdentity> SqliteStore::device_identity(const std::string& id) {
  Use use(*this);
  auto q = db().cached("SELECT tenant_id, public_key, group_id FROM devices WHERE id = ?");
  q->bind(1, id);
  if (!q->step()) return std::nullopt;
  return DeviceIdentity{q->integer(0), q->text(1), q->optional_text(2)};
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
  std::vector<DeviceView> out;
  while (q.step()) out.push_back(read_device(q));
  return out;
}

std::vector<DeviceCount> SqliteStore::count_devices(const DeviceFilter& filter, DeviceCountKey by) {
  Use use(*this);
  const char* column = by == DeviceCountKey::version ? "d.version"
                       : by == DeviceCountKey::state ? "d.state"
                       : by == DeviceCountKey::group ? "d.group_id"
                                                     : "d.product_id";
  auto sql = filter_sql(filter);
  auto q = db().prepare(
      fmt::format("SELECT {0}, count(*) FROM devices d {1} GROUP BY {0} ORDER BY 2 DESC", column, sql.where));
  bind_filter(q, filter, sql);
  std::vector<DeviceCount> out;
  while (q.step()) {
    DeviceCount c{q.optional_text(0), q.integer(1)};
    if (c.key && (by == DeviceCountKey::group || by == DeviceCountKey::product)) {
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

bool SqliteStore::upsert_device(const ImportedDevice& device) {
  Use use(*this);
  auto before = device_identity(device.id);
  auto q = db().cached(
      "INSERT INTO devices (id, tenant_id, product_id, group_id, state, version, public_key, certificate, last_seen, "
      "imported_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
      "ON CONFLICT(id) DO UPDATE SET product_id = excluded.product_id, group_id = excluded.group_id, "
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
  if (!before || before->group_id != device.group_id) {
    if (before && before->group_id) count_member(db(), device.id, *before->group_id, -1);
    count_member(db(), device.id, device.group_id, 1);
  }
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
  auto before = device_identity(device_id);
  db().prepare("UPDATE devices SET group_id = ? WHERE id = ?").bind(1, group_id).bind(2, device_id).run();
  if (before && before->group_id != group_id) {
    if (before->group_id) count_member(db(), device_id, *before->group_id, -1);
    count_member(db(), device_id, group_id, 1);
  }
}

void SqliteStore::mark_claimed(const std::string& device_id, const std::string& now) {
  Use use(*this);
  db().prepare("UPDATE devices SET claimed = 1, claimed_at = coalesce(claimed_at, ?) WHERE id = ?")
      .bind(1, now)
      .bind(2, device_id)
      .run();
}

void SqliteStore::device_checked_in(const std::string& device_id, const std::string& now,
                                    const std::optional<std::string>& version,
                                    const std::optional<std::string>& state) {
  Use use(*this);
  db().prepare("UPDATE devices SET last_seen = ?, version = coalesce(?, version), state = coalesce(?, state) WHERE id = ?")
      .bind(1, now)
      .bind_optional(2, version)
      .bind_optional(3, state)
      .bind(4, device_id)
      .run();
}

void SqliteStore::record_device_firmware(const std::string& device_id, const std::optional<std::int64_t>& sequence,
                                         const std::optional<std::string>& manifest_digest) {
  Use use(*this);
  auto q = db().prepare(
      "UPDATE devices SET sequence = coalesce(?, sequence), manifest_digest = coalesce(?, manifest_digest) WHERE id = ?");
  if (sequence)
    q.bind(1, *sequence);
  else
    q.bind_null(1);
  q.bind_optional(2, manifest_digest).bind(3, device_id).run();
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
  std::vector<DeviceFirmware> out;
  while (q.step()) {
    DeviceFirmware f{q.text(0), std::nullopt, q.optional_text(2)};
    if (!q.is_null(1)) f.sequence = q.integer(1);
    out.push_back(std::move(f));
  }
  return out;
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

void SqliteStore::for_each_import_part(std::int64_t tenant_id, const std::string& import_id,
                                       const std::function<void(const std::string&)>& each) {
  Use use(*this);
  auto q = db().prepare("SELECT body FROM import_parts WHERE tenant_id = ? AND import_id = ? ORDER BY offset");
  q.bind(1, tenant_id).bind(2, import_id);
  while (q.step()) each(q.text(0));
}

void SqliteStore::delete_import(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  db().prepare("DELETE FROM import_parts WHERE tenant_id = ? AND import_id = ?").bind(1, tenant_id).bind(2, import_id).run();
}

// Factory CAs.

namespace {

// Registrations that count: the tenant owns the CA's key.
constexpr const char* owned_cas =
    "SELECT c.tenant_id, c.pem FROM factory_cas c JOIN factory_ca_owners o ON o.key_sha256 = c.key_sha256 AND "
    "o.tenant_id = c.tenant_id ";

}  // namespace

std::vector<std::string> SqliteStore::owned_factory_ca_pems(std::int64_t tenant_id) {
  Use use(*this);
  std::vector<std::string> out;
  auto q = db().prepare(std::string(owned_cas) + "WHERE c.tenant_id = ?");
  q.bind(1, tenant_id);
  while (q.step()) out.push_back(q.text(1));
  return out;
}

std::map<std::int64_t, std::vector<std::string>> SqliteStore::owned_station_ca_pems() {
  Use use(*this);
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  auto q = db().prepare(std::string(owned_cas) + "WHERE c.stations != 0 ORDER BY c.tenant_id");
  while (q.step()) by_tenant[q.integer(0)].push_back(q.text(1));
  return by_tenant;
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
  if (!q.step()) return std::nullopt;
  return LedgerHead{q.text(0), q.integer(1), q.text(2), q.text(3)};
}

std::optional<LedgerHead> SqliteStore::latest_ledger_head(std::int64_t tenant_id,
                                                          const std::string& station_key_sha256) {
  Use use(*this);
  auto q = db().prepare(
      "SELECT ledger_id, rows, hash, imported_at FROM ledger_heads WHERE tenant_id = ? AND station_key_sha256 = ? "
      "ORDER BY imported_at DESC LIMIT 1");
  q.bind(1, tenant_id).bind(2, station_key_sha256);
  if (!q.step()) return std::nullopt;
  return LedgerHead{q.text(0), q.integer(1), q.text(2), q.text(3)};
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
      "SELECT c.id, c.subject, c.pem, c.stations, c.key_sha256, o.tenant_id IS NOT NULL, c.created_at FROM "
      "factory_cas c LEFT JOIN factory_ca_owners o ON o.key_sha256 = c.key_sha256 AND o.tenant_id = c.tenant_id "
      "WHERE c.tenant_id = ? ORDER BY c.created_at");
  q.bind(1, tenant_id);
  std::vector<FactoryCaRecord> out;
  while (q.step())
    out.push_back({q.text(0), q.text(1), q.text(2), q.integer(3) != 0, q.optional_text(4), q.integer(5) != 0,
                   q.text(6)});
  return out;
}

// Images.

namespace {

constexpr const char* image_columns =
    "SELECT sha256, coalesce(name, ''), size, received, complete, created_at, manifest FROM images ";

ImageRecord read_image(Statement& q) {
  return {q.text(0), q.text(1), q.integer(2), q.integer(3), q.integer(4) != 0, q.text(5), q.optional_text(6)};
}

}  // namespace

std::optional<ImageRecord> SqliteStore::find_image(std::int64_t tenant_id, const std::string& sha256) {
  Use use(*this);
  auto q = db().prepare(std::string(image_columns) + "WHERE tenant_id = ? AND sha256 = ?");
  q.bind(1, tenant_id).bind(2, sha256);
  if (!q.step()) return std::nullopt;
  return read_image(q);
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
  std::vector<ImageRecord> out;
  while (q.step()) out.push_back(read_image(q));
  return out;
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

#define KILN_DEPLOYMENT_COLUMNS_V1                                                                            \
  "SELECT d.id, d.group_id, p.name || '/' || g.name, d.images, d.manifest, d.sequence, coalesce(d.waves, "     \
  "'[' || d.rollout || ']'), coalesce(d.wave, 1), coalesce(d.wave_started_at, strftime('%s', d.created_at)), " \
  "coalesce(d.step_after, 0), d.halt_on_failure, d.halt_reason, coalesce(d.failure_baseline, 0), d.previous, " \
  "d.state, d.created_at, d.updated_at"
#define KILN_DEPLOYMENT_FROM \
  " FROM deployments d JOIN device_groups g ON g.id = d.group_id JOIN products p ON p.id = g.product_id "
// The columns as migrations 1..3 know them (migration 2 reads deployments before migration 4 adds columns).
constexpr const char* deployment_columns_v1 = KILN_DEPLOYMENT_COLUMNS_V1 KILN_DEPLOYMENT_FROM;
constexpr const char* deployment_columns =
    KILN_DEPLOYMENT_COLUMNS_V1 ", d.halt_min_executed, d.policy, d.progress" KILN_DEPLOYMENT_FROM;
#undef KILN_DEPLOYMENT_COLUMNS_V1
#undef KILN_DEPLOYMENT_FROM

// Integer arrays and string arrays are stored as JSON text.
std::vector<std::string> parse_string_array(const std::string& text) {
  std::vector<std::string> out;
  for (auto& v : nlohmann::json::parse(text)) out.push_back(v.get<std::string>());
  return out;
}

Deployment read_deployment(Statement& q) {
  Deployment row;
  row.id = q.text(0);
  row.group_id = q.text(1);
  row.group = q.text(2);
  row.images = parse_string_array(q.text(3));
  row.manifest = q.optional_text(4);
  if (!q.is_null(5)) row.sequence = q.integer(5);
  for (auto& w : nlohmann::json::parse(q.text(6))) row.waves.push_back(w.get<int>());
  row.wave = static_cast<int>(q.integer(7));
  row.wave_started_at = q.integer(8);
  row.step_after = q.integer(9);
  if (!q.is_null(10)) row.halt_on_failure = q.real(10);
  row.halt_reason = q.optional_text(11);
  row.failure_baseline = q.integer(12);
  row.previous = q.optional_text(13);
  row.state = q.text(14);
  row.created_at = q.text(15);
  row.updated_at = q.text(16);
  if (q.column_count() > 17) row.halt_min_executed = q.integer(17);
  if (q.column_count() > 19) {
    row.policy = policy_from_text(q.text(18));
    read_progress(row, q.text(19));
  }
  return row;
}

// Migration 2: tallies kept as reports arrive, counted once for the deployments a store already holds.
void add_deployment_tallies(Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS deployment_tallies (deployment_id TEXT NOT NULL, wave INTEGER NOT NULL, status TEXT NOT NULL, "
      "devices INTEGER NOT NULL, PRIMARY KEY (deployment_id, wave, status))");
  std::vector<Deployment> all;
  auto q = db.prepare(deployment_columns_v1);
  while (q.step()) all.push_back(read_deployment(q));
  for (auto& d : all) write_tally(db, d.id, recount(db, d));
}

}  // namespace

std::optional<Deployment> SqliteStore::find_deployment(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = db().prepare(std::string(deployment_columns) + "WHERE d.id = ? AND d.tenant_id = ?");
  q.bind(1, id).bind(2, tenant_id);
  if (!q.step()) return std::nullopt;
  return read_deployment(q);
}

std::optional<std::string> SqliteStore::newest_deployment(std::int64_t tenant_id, const std::string& group_id,
                                                          bool skip_aborted) {
  Use use(*this);
  auto q = db().prepare(fmt::format("SELECT id FROM deployments WHERE group_id = ? AND tenant_id = ? {} ORDER BY rowid "
                                   "DESC LIMIT 1",
                                   skip_aborted ? "AND state != 'aborted'" : ""));
  q.bind(1, group_id).bind(2, tenant_id);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

std::vector<Deployment> SqliteStore::list_deployments(std::int64_t tenant_id,
                                                      const std::optional<std::string>& group_id) {
  Use use(*this);
  std::string sql = std::string(deployment_columns) + "WHERE d.tenant_id = ?";
  if (group_id) sql += " AND d.group_id = ?";
  auto q = db().prepare(sql + " ORDER BY d.rowid");
  q.bind(1, tenant_id);
  if (group_id) q.bind(2, *group_id);
  std::vector<Deployment> out;
  while (q.step()) out.push_back(read_deployment(q));
  return out;
}

void SqliteStore::insert_deployment(std::int64_t tenant_id, const Deployment& d, const std::string& now) {
  Use use(*this);
  db().prepare(
        "UPDATE deployments SET state = 'superseded', updated_at = ? WHERE group_id = ? AND state IN "
        "('active', 'paused', 'halted')")
      .bind(1, now)
      .bind(2, d.group_id)
      .run();
  auto insert = db().prepare(
      "INSERT INTO deployments (id, tenant_id, group_id, images, rollout, state, created_at, updated_at, manifest, "
      "sequence, waves, wave, wave_started_at, step_after, halt_on_failure, failure_baseline, previous, "
      "halt_min_executed, policy, progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.bind(1, d.id)
      .bind(2, tenant_id)
      .bind(3, d.group_id)
      .bind(4, nlohmann::json(d.images).dump())
      .bind(5, std::int64_t{d.waves.back()})
      .bind(6, d.state)
      .bind(7, d.created_at)
      .bind(8, d.updated_at)
      .bind_optional(9, d.manifest);
  if (d.sequence)
    insert.bind(10, *d.sequence);
  else
    insert.bind_null(10);
  insert.bind(11, nlohmann::json(d.waves).dump())
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
      .bind(20, progress_text(d))
      .run();
  write_tally(db(), d.id, recount_rollout_tally(d));
}

void SqliteStore::save_rollout(const std::string& deployment_id, const Rollout& r, const std::string& now) {
  Use use(*this);
  db().prepare(
        "UPDATE deployments SET state = ?, wave = ?, wave_started_at = ?, halt_reason = ?, failure_baseline = ?, "
        "updated_at = ?, progress = ? WHERE id = ?")
      .bind(1, r.state)
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
  RolloutTally t;
  t.waves.resize(deployment.waves.size());
  auto q = db().prepare("SELECT wave, status, devices FROM deployment_tallies WHERE deployment_id = ?");
  q.bind(1, deployment.id);
  while (q.step()) add_row(t, q.integer(0), q.text(1), q.integer(2));
  return t;
}

std::map<std::string, RolloutTally> SqliteStore::rollout_tallies(std::int64_t tenant_id,
                                                                 const std::optional<std::string>& group_id) {
  Use use(*this);
  std::map<std::string, RolloutTally> out;
  for (auto& d : list_deployments(tenant_id, group_id)) out[d.id].waves.resize(d.waves.size());
  std::string sql =
      "SELECT t.deployment_id, t.wave, t.status, t.devices FROM deployment_tallies t JOIN deployments d ON d.id = "
      "t.deployment_id WHERE d.tenant_id = ?";
  if (group_id) sql += " AND d.group_id = ?";
  auto q = db().prepare(sql);
  q.bind(1, tenant_id);
  if (group_id) q.bind(2, *group_id);
  while (q.step())
    if (auto it = out.find(q.text(0)); it != out.end()) add_row(it->second, q.integer(1), q.text(2), q.integer(3));
  return out;
}

namespace {

// The columns of for_each_deployment_device and deployment_device, in that order.
DeploymentDevice read_deployment_device(Statement& q) {
  std::optional<std::int64_t> retry_at;
  if (!q.is_null(10)) retry_at = q.integer(10);
  return DeploymentDevice{q.text(0), q.optional_text(1), q.text(2),         q.text(3),     q.text(4),
                          q.optional_text(5), q.optional_text(6), q.text(7), q.text(8), q.integer(9),
                          retry_at,   q.optional_text(11)};
}

}  // namespace

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
  while (q.step()) each(read_deployment_device(q));
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
  if (!q->step()) return std::nullopt;
  return read_deployment_device(*q.operator->());
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
    int wave = wave_of_bucket(parse_waves(where.text(0)), rollout_bucket(deployment_id, device_id));
    if (wave > 0) {
      if (previous) add_tally(db(), deployment_id, wave, *previous, -1);
      add_tally(db(), deployment_id, wave, status, 1);
    }
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
