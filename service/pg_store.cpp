// PostgreSQL backend of the Store: the schema, its versioned migrations, and every SQL statement of the
// service in PostgreSQL's dialect. Every value travels as a parameter ($1, $2, ...), never inside SQL text.
#include "service/pg_store.hpp"

#include <libpq-events.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <map>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "service/rollout_policy.hpp"
#include "service/sqlite_store.hpp"
#include "service/store_rules.hpp"

namespace kiln::service {
namespace {

// Advisory lock keys: one writer at a time (every process sharing the database), one migrator at a time.
constexpr std::int64_t write_lock_key = 0x6b696c6e00000001;
constexpr std::int64_t migration_lock_key = 0x6b696c6e00000002;

// One parameter of a statement: text (nullopt: SQL NULL) or bytes (bytea, sent binary).
struct Param {
  std::optional<std::string> value;
  bool binary = false;
  Param(std::nullopt_t) {}
  Param(const std::string& text) : value(text) {}
  Param(const char* text) : value(std::string(text)) {}
  Param(std::string_view text) : value(std::string(text)) {}
  Param(const std::optional<std::string>& text) : value(text) {}
  Param(std::int64_t number) : value(std::to_string(number)) {}
  Param(int number) : value(std::to_string(number)) {}
  Param(bool flag) : value(flag ? "1" : "0") {}
  Param(double number) : value(fmt::format("{}", number)) {}
  static Param bytes(std::string_view data) {
    Param p{std::string(data)};
    p.binary = true;
    return p;
  }
};

// A query's rows, as text (or, for binary queries, raw bytes).
class Result {
 public:
  explicit Result(PGresult* result) : result_(result, PQclear) {}
  int rows() const { return PQntuples(result_.get()); }
  bool empty() const { return rows() == 0; }
  int columns() const { return PQnfields(result_.get()); }
  // Out of range (a lookup that matched nothing): null.
  bool is_null(int row, int column) const {
    return row >= rows() || column >= PQnfields(result_.get()) || PQgetisnull(result_.get(), row, column) != 0;
  }
  std::string text(int row, int column) const {
    if (is_null(row, column)) return {};
    return std::string(PQgetvalue(result_.get(), row, column),
                       static_cast<std::size_t>(PQgetlength(result_.get(), row, column)));
  }
  std::optional<std::string> optional_text(int row, int column) const {
    if (is_null(row, column)) return std::nullopt;
    return text(row, column);
  }
  std::int64_t integer(int row, int column) const {
    if (is_null(row, column)) return 0;
    return std::strtoll(PQgetvalue(result_.get(), row, column), nullptr, 10);
  }
  double real(int row, int column) const {
    return is_null(row, column) ? 0 : std::strtod(PQgetvalue(result_.get(), row, column), nullptr);
  }
  bool boolean(int row, int column) const { return text(row, column) == "t"; }
  std::int64_t affected() const {
    const char* n = PQcmdTuples(result_.get());
    return n && *n ? std::strtoll(n, nullptr, 10) : 0;
  }

 private:
  std::unique_ptr<PGresult, void (*)(PGresult*)> result_;
};

// A row of a query's result, as the mappings both backends share read it (store_rules.hpp).
class PgRow final : public StoreRow {
 public:
  PgRow(const Result& q, int row) : q_(q), row_(row) {}
  int columns() const override { return q_.columns(); }
  bool is_null(int column) const override { return q_.is_null(row_, column); }
  std::string text(int column) const override { return q_.text(row_, column); }
  std::int64_t integer(int column) const override { return q_.integer(row_, column); }
  double real(int column) const override { return q_.real(row_, column); }
  // A boolean column reads "t" or "f"; an integer one a number.
  bool flag(int column) const override { return q_.boolean(row_, column) || integer(column) != 0; }

 private:
  const Result& q_;
  int row_;
};

// Every row of `q`, mapped by `read`.
template <class T>
std::vector<T> all_rows(const Result& q, T (*read)(const StoreRow&)) {
  std::vector<T> out;
  for (int r = 0; r < q.rows(); ++r) out.push_back(read(PgRow(q, r)));
  return out;
}

// The first row of `q`, mapped by `read`; nullopt when it has none.
template <class T>
std::optional<T> first_row(const Result& q, T (*read)(const StoreRow&)) {
  if (q.empty()) return std::nullopt;
  return read(PgRow(q, 0));
}

// libpq's message on one line (it may span several, with tabs).
std::string trimmed(const char* message) {
  std::string text;
  for (const char* c = message ? message : ""; *c; ++c) {
    if (*c == '\n' || *c == '\t' || *c == '\r') {
      if (!text.empty() && text.back() != ' ') text += ' ';
    } else {
      text += *c;
    }
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

// A connection-level failure: the server went away, is shutting down or starting up.
bool connection_lost(PGconn* conn, const char* sqlstate) {
  if (PQstatus(conn) != CONNECTION_OK || !sqlstate) return true;
  std::string_view state(sqlstate);
  return state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03";
}

// The connection whose outermost unit is an Access::telemetry one on this thread (a unit never changes
// threads), and whether one of the telemetry writes it allows is running.
thread_local PGconn* telemetry_unit = nullptr;
thread_local bool telemetry_write = false;

// A telemetry write (PgStore::device_checked_in and the like): allowed in an Access::telemetry unit.
class TelemetryWrite {
 public:
  TelemetryWrite() { telemetry_write = true; }
  ~TelemetryWrite() { telemetry_write = false; }
  TelemetryWrite(const TelemetryWrite&) = delete;
  TelemetryWrite& operator=(const TelemetryWrite&) = delete;
};

// The SQL state and message of a failed statement, turned into the store's exceptions.
[[noreturn]] void fail(PGconn* conn, PGresult* result) {
  const char* sqlstate = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = trimmed(result && *PQresultErrorMessage(result) ? PQresultErrorMessage(result)
                                                                          : PQerrorMessage(conn));
  bool lost = connection_lost(conn, sqlstate);
  std::string state = sqlstate ? sqlstate : "";
  if (result) PQclear(result);
  if (lost)
    throw StoreUnavailable("the PostgreSQL store is unavailable: " + message,
                           "PostgreSQL is down or restarting: try again shortly");
  if (state == "23505") throw Error(ExitCode::conflict, "the store refused a duplicate: " + message);
  if (state.starts_with("22")) throw StoreRejected("the store refused a value: " + message);
  // A telemetry unit reads one snapshot; a row a writer changed after it began cannot be updated in it: the
  // request runs again in the write order, which waits for that writer.
  if ((state == "40001" || state == "40P01") && conn == telemetry_unit) throw WriteOrderNeeded();
  if (state == "40001" || state == "40P01")
    throw StoreUnavailable("the PostgreSQL store gave up a transaction: " + message, "try again");
  throw Error(ExitCode::failure, "the PostgreSQL store failed: " + message);
}

// Text PostgreSQL can hold: UTF-8 without NUL bytes.
bool storable_text(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == 0) return false;
    std::size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    std::uint32_t code = length == 1 ? c : c & (0x7f >> length);
    for (std::size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += length;
  }
  return true;
}

bool writes(std::string_view sql) {
  auto start = sql.find_first_not_of(" \n");
  if (start == std::string_view::npos) return false;
  sql.remove_prefix(start);
  return sql.starts_with("INSERT") || sql.starts_with("UPDATE") || sql.starts_with("DELETE");
}

// The statements prepared on one connection, by SQL text: each is parsed and planned once per session
// (PQprepare under a name of its own, "k1", "k2"...), then only executed (PQexecPrepared). The server forgets
// them when its session ends: a reconnect (PQreset) empties the cache, PQfinish frees it (libpq events).
struct Statements {
  std::unordered_map<std::string, std::string> names;
  std::uint64_t next = 1;
  std::vector<std::string> stale;  // forgotten inside a transaction: deallocated when the connection is idle
};
// Text built with variable parts is bounded (savepoint levels, count keys); past this, statements run unnamed.
constexpr std::size_t max_prepared = 512;

int statements_event(PGEventId event, void* info, void*) {
  try {
    if (event == PGEVT_REGISTER)
      return PQsetInstanceData(static_cast<PGEventRegister*>(info)->conn, statements_event, new Statements);
    if (event == PGEVT_CONNRESET) {
      auto* conn = static_cast<PGEventConnReset*>(info)->conn;
      if (auto* statements = static_cast<Statements*>(PQinstanceData(conn, statements_event)))
        statements->names.clear();
    }
    if (event == PGEVT_CONNDESTROY)
      delete static_cast<Statements*>(PQinstanceData(static_cast<PGEventConnDestroy*>(info)->conn, statements_event));
  } catch (...) {
    return 0;  // out of memory registering: the connection runs its statements unprepared
  }
  return 1;
}

// Runs `text`: prepared once on this connection (see Statements), else unnamed. A failed PQprepare's result
// is returned (the caller fails with it); nothing is cached then.
PGresult* execute(PGconn* conn, const std::string& text, const std::vector<const char*>& values,
                  const std::vector<int>& lengths, const std::vector<int>& formats, bool binary_result) {
  int count = static_cast<int>(values.size());
  auto* statements = static_cast<Statements*>(PQinstanceData(conn, statements_event));
  if (statements && !statements->stale.empty() && PQtransactionStatus(conn) == PQTRANS_IDLE) {
    for (const auto& name : statements->stale)
      if (PGresult* gone = PQexec(conn, ("DEALLOCATE " + name).c_str())) PQclear(gone);
    statements->stale.clear();
  }
  auto known = statements ? statements->names.find(text) : decltype(statements->names)::iterator{};
  if (statements && known == statements->names.end() && statements->names.size() < max_prepared) {
    std::string name = "k" + std::to_string(statements->next++);
    PGresult* prepared = PQprepare(conn, name.c_str(), text.c_str(), count, nullptr);
    if (!prepared || PQresultStatus(prepared) != PGRES_COMMAND_OK) return prepared;
    PQclear(prepared);
    known = statements->names.emplace(text, std::move(name)).first;
  }
  if (statements && known != statements->names.end())
    return PQexecPrepared(conn, known->second.c_str(), count, values.data(), lengths.data(), formats.data(),
                          binary_result ? 1 : 0);
  return PQexecParams(conn, text.c_str(), count, nullptr, values.data(), lengths.data(), formats.data(),
                      binary_result ? 1 : 0);
}

// A prepared statement the server can no longer run as prepared:
//  - its result columns changed type since it was prepared (ALTER by another instance's migration): SQLSTATE
//    0A000 raised by RevalidateCachedQuery (the function's name, unlike the message, is not translated);
//  - the server has none of this session's statements (26000: a pooler that does not keep sessions handed the
//    connection to another server session, or DISCARD ALL).
// Forgets it (all of them for 26000; the next run prepares afresh) and tells whether it was such an error.
bool forget_stale(PGconn* conn, const std::string& text, PGresult* result) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const char* function = result ? PQresultErrorField(result, PG_DIAG_SOURCE_FUNCTION) : nullptr;
  auto* statements = static_cast<Statements*>(PQinstanceData(conn, statements_event));
  if (!statements || !state) return false;
  if (std::string_view(state) == "26000") {
    if (statements->names.empty()) return false;
    statements->names.clear();
    statements->stale.clear();
    return true;
  }
  if (std::string_view(state) != "0A000" || !function || std::string_view(function) != "RevalidateCachedQuery")
    return false;
  auto known = statements->names.find(text);
  if (known == statements->names.end()) return false;
  statements->stale.push_back(known->second);  // deallocated now if idle, else when the transaction is over
  statements->names.erase(known);
  return true;
}

// Runs one statement with its parameters; throws the store's exceptions when it fails. A text value the
// store cannot hold (a NUL byte, bytes that are not UTF-8) is refused by a write; a read finds nothing
// (no stored text equals it).
Result run(PGconn* conn, std::string_view sql, std::initializer_list<Param> params = {}, bool binary_result = false) {
  if (conn == telemetry_unit && !telemetry_write && writes(sql)) throw WriteOrderNeeded();
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (auto& p : params) {
    if (p.value && !p.binary && !storable_text(*p.value)) {
      if (sql.starts_with("SELECT")) return Result(PQmakeEmptyPGresult(conn, PGRES_TUPLES_OK));
      throw StoreRejected("a text value holds a NUL byte or bytes that are not UTF-8, which the store cannot keep");
    }
    values.push_back(p.value ? p.value->c_str() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  std::string text(sql);
  PGresult* result = execute(conn, text, values, lengths, formats, binary_result);
  auto status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && forget_stale(conn, text, result)) {
    PQclear(result);
    // In a transaction the error aborted it: the request is tried again (as after a serialization failure).
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
      throw StoreUnavailable("a prepared statement of the PostgreSQL store could not run (its schema changed, or "
                             "the server session lost it)",
                             "try again; if this repeats, a connection pooler between kiln-service and PostgreSQL "
                             "must keep sessions (PgBouncer pool_mode = session, or max_prepared_statements)");
    result = execute(conn, text, values, lengths, formats, binary_result);
    status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  }
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(conn, result);
  return Result(result);
}

// Several statements without parameters (schema changes).
void run_script(PGconn* conn, const std::string& sql) {
  PGresult* result = PQexec(conn, sql.c_str());
  auto status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(conn, result);
  PQclear(result);
}

// Migration 1: the tables (the shape SQLite's schema version 1 has, in PostgreSQL's types).
void baseline_schema(PGconn* conn) {
  run_script(conn, R"sql(
CREATE TABLE tenants (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL);
CREATE TABLE tokens (hash TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL REFERENCES tenants(id), role TEXT NOT NULL,
  name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE products (id TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL REFERENCES tenants(id), name TEXT COLLATE "C" NOT NULL,
  description TEXT, created_at TEXT NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE device_groups (id TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL, product_id TEXT NOT NULL
  REFERENCES products(id), name TEXT COLLATE "C" NOT NULL, description TEXT, created_at TEXT NOT NULL,
  UNIQUE (product_id, name));
CREATE TABLE devices (id TEXT COLLATE "C" PRIMARY KEY, tenant_id BIGINT NOT NULL, product_id TEXT NOT NULL REFERENCES products(id),
  group_id TEXT REFERENCES device_groups(id), state TEXT NOT NULL, version TEXT, public_key TEXT NOT NULL,
  certificate TEXT, claimed INTEGER NOT NULL DEFAULT 0, claimed_at TEXT, last_seen TEXT, imported_at TEXT NOT NULL);
CREATE INDEX devices_by_tenant ON devices (tenant_id, id);
CREATE INDEX devices_by_version ON devices (tenant_id, version);
CREATE INDEX devices_by_tenant_group ON devices (tenant_id, group_id);
CREATE INDEX devices_by_group ON devices (group_id, id);
CREATE TABLE claim_challenges (nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL, tenant_id BIGINT NOT NULL,
  expires_at BIGINT NOT NULL);
CREATE TABLE images (tenant_id BIGINT NOT NULL, sha256 TEXT NOT NULL, name TEXT, size BIGINT NOT NULL,
  received BIGINT NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, manifest TEXT,
  PRIMARY KEY (tenant_id, sha256));
CREATE TABLE deployments (seq BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE, id TEXT PRIMARY KEY,
  tenant_id BIGINT NOT NULL, group_id TEXT NOT NULL REFERENCES device_groups(id), images TEXT NOT NULL,
  state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, manifest TEXT, sequence BIGINT,
  waves TEXT NOT NULL, wave INTEGER NOT NULL, wave_started_at BIGINT NOT NULL, step_after BIGINT NOT NULL,
  halt_on_failure DOUBLE PRECISION, halt_reason TEXT, failure_baseline BIGINT NOT NULL, previous TEXT);
CREATE INDEX deployments_by_group ON deployments (group_id);
CREATE TABLE factory_cas (seq BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE, tenant_id BIGINT NOT NULL,
  id TEXT NOT NULL, subject TEXT NOT NULL, pem TEXT NOT NULL, created_at TEXT NOT NULL,
  stations INTEGER NOT NULL DEFAULT 0, key_sha256 TEXT, PRIMARY KEY (tenant_id, id));
CREATE TABLE deployment_devices (deployment_id TEXT NOT NULL, device_id TEXT NOT NULL, status TEXT NOT NULL,
  detail TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (deployment_id, device_id));
CREATE TABLE import_parts (tenant_id BIGINT NOT NULL, import_id TEXT NOT NULL, part_offset BIGINT NOT NULL,
  body BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, import_id, part_offset));
CREATE TABLE idempotency (tenant_id BIGINT NOT NULL, key TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
  status INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL, request_sha256 TEXT,
  secret INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, key));
CREATE INDEX idempotency_by_age ON idempotency (created_at);
CREATE TABLE factory_ca_owners (key_sha256 TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE factory_ca_challenges (nonce TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL, key_sha256 TEXT NOT NULL,
  expires_at BIGINT NOT NULL);
)sql");
}

void add_deployment_tallies(PGconn* conn);

// Migration 3: the head of each station ledger last imported.
void add_ledger_heads(PGconn* conn) {
  run_script(conn,
             "CREATE TABLE ledger_heads (tenant_id BIGINT NOT NULL, station_key_sha256 TEXT NOT NULL, "
             "ledger_id TEXT NOT NULL, rows BIGINT NOT NULL, hash TEXT NOT NULL, imported_at TEXT NOT NULL, "
             "PRIMARY KEY (tenant_id, station_key_sha256, ledger_id))");
}

// Migration 4 (issue 15): what a product's boards trust (checked at deployment creation), what each device's
// agent last said it runs, what each device ran before a deployment (the exact revert target), and the
// halt threshold's minimum of executed devices. Idempotent, like SQLite's migration 4.
void add_rollout_safety(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE products ADD COLUMN IF NOT EXISTS boot_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE products ADD COLUMN IF NOT EXISTS manifest_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE products ADD COLUMN IF NOT EXISTS slot_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS sequence BIGINT;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS manifest_digest TEXT;
ALTER TABLE deployment_devices ADD COLUMN IF NOT EXISTS previous_manifest TEXT;
ALTER TABLE deployment_devices ADD COLUMN IF NOT EXISTS version_before TEXT;
ALTER TABLE deployment_devices ADD COLUMN IF NOT EXISTS started_at TEXT;
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS halt_min_executed BIGINT NOT NULL DEFAULT 0;
)sql");
}

// Migration 5 (issue 16): each device's image-encryption public key (from its bundle) and the encrypted
// releases as delivered to it (the content key wrapped to that key). Like SQLite's migration 5.
void add_encrypted_delivery(PGconn* conn) {
  run_script(conn, R"sql(
CREATE TABLE IF NOT EXISTS device_encryption_keys (device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_images (device_id TEXT NOT NULL, image TEXT NOT NULL, area TEXT NOT NULL,
  sha256 TEXT NOT NULL, size BIGINT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (device_id, image));
)sql");
}

// Migration 6 (issue 15, rollout controls): a deployment's controls as one JSON policy and the JSON progress
// of what they change, like SQLite's migration 6.
void add_rollout_controls(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS policy TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS progress TEXT NOT NULL DEFAULT '';
)sql");
}

// Migration 7 (issue 15, retries and maintenance windows): the attempt each device is on for a deployment
// and when it may retry (unix seconds), and each device's own time zone, like SQLite's migration 7.
void add_retries_and_zones(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE deployment_devices ADD COLUMN IF NOT EXISTS attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE deployment_devices ADD COLUMN IF NOT EXISTS retry_at BIGINT;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS time_zone TEXT;
)sql");
}

// Migration 8 (issue 17, revocation): tokens get an ID people name them by (never the hash) and a
// revocation time; devices and factory CAs a revocation time and reason, like SQLite's migration 8.
void add_revocation(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS id TEXT;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS revoked_at TEXT;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS revoked_at TEXT;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS revoked_reason TEXT;
ALTER TABLE factory_cas ADD COLUMN IF NOT EXISTS revoked_at TEXT;
ALTER TABLE factory_cas ADD COLUMN IF NOT EXISTS revoked_reason TEXT;
UPDATE tokens SET id = 'tok_' || substr(md5(hash || random()::text), 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_id ON tokens (id);
)sql");
}

// Migration 9 (issue 17, deletion and audit): the audit log, one row per write of a tenant, in log order.
// Like SQLite's migration 9.
void add_audit_log(PGconn* conn) {
  run_script(conn, R"sql(
CREATE TABLE IF NOT EXISTS audit_log (id BIGSERIAL PRIMARY KEY, tenant_id BIGINT NOT NULL, at TEXT NOT NULL,
  actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL,
  target TEXT NOT NULL, status INTEGER NOT NULL, request_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant_id, id);
)sql");
}

// Migration 10 (issue 17, M-of-N release policy): how many distinct manifest keys of a product must have
// signed a release. Like SQLite's migration 10.
void add_manifest_threshold(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE products ADD COLUMN IF NOT EXISTS manifest_threshold BIGINT NOT NULL DEFAULT 1;
)sql");
}

// ---- Migration 11 (issue 17, ownership transfer and unclaim), like SQLite's migration 11 ----
void add_device_transfers(PGconn* conn) {
  run_script(conn, R"sql(
CREATE TABLE IF NOT EXISTS device_transfers (id TEXT PRIMARY KEY, from_tenant_id BIGINT NOT NULL,
  to_tenant_id BIGINT NOT NULL, devices TEXT NOT NULL, payload_sha256 TEXT NOT NULL, public_key TEXT NOT NULL,
  expires_at BIGINT NOT NULL, created_at TEXT NOT NULL, redeemed_at TEXT);
ALTER TABLE devices ADD COLUMN IF NOT EXISTS factory_tenant_id BIGINT;
)sql");
}
// ---- end of migration 11 ----

// ---- Migration 12 (issue 17 item 2, key rotation), like SQLite's migration 12 ----
void add_trust_updates(PGconn* conn) {
  run_script(conn, R"sql(
CREATE TABLE IF NOT EXISTS trust_updates (product_id TEXT NOT NULL, version BIGINT NOT NULL, content TEXT NOT NULL,
  created_at TEXT NOT NULL, PRIMARY KEY (product_id, version));
)sql");
}
// ---- end of migration 12 ----

// ---- Migration 13 (issue 17 item 2, trust updates through deployments), like SQLite's migration 13 ----
void add_trust_deployments(PGconn* conn) {
  run_script(conn, R"sql(
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS trust_version BIGINT;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS trust_version BIGINT;
)sql");
}
// ---- end of migration 13 ----

// The schema's versions (KILN_STORE_MIGRATIONS), each in one transaction (PostgreSQL's schema changes are
// transactional: a migration killed half-way leaves nothing, and the next start runs it again). The version
// lives in table kiln_schema (no table: a new, empty database).
struct Migration {
  int version;
  void (*apply)(PGconn* conn);
};
#define KILN_MIGRATION(version, apply) Migration{version, apply},
constexpr Migration migrations[] = {KILN_STORE_MIGRATIONS(KILN_MIGRATION)};
#undef KILN_MIGRATION

int read_schema_version(PGconn* conn) {
  auto exists = run(conn, "SELECT to_regclass('kiln_schema') IS NOT NULL");
  if (!exists.boolean(0, 0)) return 0;
  auto q = run(conn, "SELECT version FROM kiln_schema WHERE id = 1");
  return q.empty() ? 0 : static_cast<int>(q.integer(0, 0));
}

// Deployment tallies (table deployment_tallies), as SqliteStore keeps them (store_rules.hpp).
void add_tally(PGconn* conn, const std::string& deployment_id, const TallyRow& row) {
  run(conn,
      "INSERT INTO deployment_tallies (deployment_id, wave, status, devices) VALUES ($1, $2, $3, $4) "
      "ON CONFLICT (deployment_id, wave, status) DO UPDATE SET devices = deployment_tallies.devices + "
      "excluded.devices",
      {deployment_id, row.wave, row.status, row.devices});
}

void write_tally(PGconn* conn, const std::string& deployment_id, const RolloutTally& t) {
  run(conn, "DELETE FROM deployment_tallies WHERE deployment_id = $1", {deployment_id});
  for (const auto& row : tally_rows(t)) add_tally(conn, deployment_id, row);
}

RolloutTally recount(PGconn* conn, const Deployment& deployment) {
  auto t = empty_tally(deployment.waves);
  auto q = run(conn,
               "SELECT d.id, dd.status FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = $1 AND "
               "dd.device_id = d.id WHERE d.group_id = $2",
               {deployment.id, deployment.group_id});
  for (int row = 0; row < q.rows(); ++row) count_device(t, deployment, q.text(row, 0), q.optional_text(row, 1));
  return t;
}

// A device joins (+1) or leaves (-1) a group: every deployment of the group counts it, and what it reported.
void count_member(PGconn* conn, const std::string& device_id, const std::string& group_id, std::int64_t delta) {
  auto q = run(conn, "SELECT id, waves FROM deployments WHERE group_id = $1", {group_id});
  for (int row = 0; row < q.rows(); ++row) {
    auto id = q.text(row, 0);
    int wave = device_wave(id, parse_waves(q.text(row, 1)), device_id);
    std::optional<std::string> reported;
    if (wave != 0)
      reported = run(conn, "SELECT status FROM deployment_devices WHERE deployment_id = $1 AND device_id = $2",
                     {id, device_id})
                     .optional_text(0, 0);
    for (const auto& change : membership_rows(wave, reported, delta)) add_tally(conn, id, change);
  }
}

// Many devices join (+1) or leave (-1) one group at once (a batch assign): what count_member does for each, with
// one read of their reports per deployment and one upsert per changed tally row, not statements per device.
void count_members(PGconn* conn, const std::vector<std::string>& device_ids, const std::string& group_id,
                   std::int64_t delta) {
  if (device_ids.empty()) return;
  auto ids = nlohmann::json(device_ids).dump();
  auto q = run(conn, "SELECT id, waves FROM deployments WHERE group_id = $1", {group_id});
  for (int row = 0; row < q.rows(); ++row) {
    auto id = q.text(row, 0);
    auto waves = parse_waves(q.text(row, 1));
    std::unordered_map<std::string, std::string> reported;
    auto r = run(conn,
                 "SELECT device_id, status FROM deployment_devices WHERE deployment_id = $1 AND device_id IN (SELECT "
                 "json_array_elements_text($2::json))",
                 {id, ids});
    for (int i = 0; i < r.rows(); ++i)
      if (auto status = r.optional_text(i, 1)) reported.emplace(r.text(i, 0), *status);
    std::map<std::pair<std::int64_t, std::string>, std::int64_t> sums;
    for (const auto& device : device_ids) {
      int wave = device_wave(id, waves, device);
      std::optional<std::string> status;
      if (auto it = reported.find(device); wave != 0 && it != reported.end()) status = it->second;
      for (const auto& change : membership_rows(wave, status, delta)) sums[{change.wave, change.status}] += change.devices;
    }
    for (const auto& [key, devices] : sums)
      if (devices != 0) add_tally(conn, id, TallyRow{key.first, key.second, devices});
  }
}

constexpr const char* deployment_first_columns =
    "SELECT d.id, d.group_id, p.name || '/' || g.name, d.images, d.manifest, d.sequence, d.waves, d.wave, "
    "d.wave_started_at, d.step_after, d.halt_on_failure, d.halt_reason, d.failure_baseline, d.previous, "
    "d.state, d.created_at, d.updated_at";
// The columns as migrations 1..3 know them (migration 2 reads deployments before migration 4 adds columns).
const std::string deployment_columns_v1 = deployment_select(deployment_first_columns, false);
const std::string deployment_columns = deployment_select(deployment_first_columns, true);

// Migration 2: tallies kept as reports arrive, counted once for the deployments a store already holds.
void add_deployment_tallies(PGconn* conn) {
  run_script(conn,
             "CREATE TABLE deployment_tallies (deployment_id TEXT NOT NULL, wave INTEGER NOT NULL, "
             "status TEXT NOT NULL, devices BIGINT NOT NULL, PRIMARY KEY (deployment_id, wave, status))");
  for (const auto& d : all_rows(run(conn, deployment_columns_v1), read_deployment))
    write_tally(conn, d.id, recount(conn, d));
}

void migrate(PGconn* conn, const std::string& url, int target) {
  int latest = std::end(migrations)[-1].version;
  if (target <= 0 || target > latest) target = latest;
  while (true) {
    run(conn, "BEGIN");
    try {
      run(conn, "SELECT pg_advisory_xact_lock($1)", {migration_lock_key});
      run_script(conn,
                 "CREATE TABLE IF NOT EXISTS kiln_schema (id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "version INTEGER NOT NULL)");
      int current = read_schema_version(conn);
      check_schema_not_newer(redact_store_url(url), current, latest);
      if (current >= target) {
        run(conn, "COMMIT");
        return;
      }
      // The first migration above the current version (versions increase; they need not be consecutive).
      const auto& migration = *std::find_if(std::begin(migrations), std::end(migrations),
                                            [&](const Migration& m) { return m.version > current; });
      migration.apply(conn);
      run(conn,
          "INSERT INTO kiln_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = "
          "excluded.version",
          {migration.version});
      run(conn, "COMMIT");
    } catch (...) {
      PGresult* undo = PQexec(conn, "ROLLBACK");
      if (undo) PQclear(undo);
      throw;
    }
  }
}

std::string read_password_file(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    throw Error(ExitCode::not_found, "cannot read the store password file " + path);
  if ((info.st_mode & 077) != 0)
    throw Error(ExitCode::authentication,
                fmt::format("the store password file {} is readable by others (mode {:o})", path, info.st_mode & 0777),
                "chmod 600 " + path);
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  if (!in && !in.eof()) throw Error(ExitCode::failure, "cannot read the store password file " + path);
  std::string password = s.str();
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  return password;
}

std::atomic<std::uint64_t> next_store_id{1};

}  // namespace

// URLs.

bool is_postgresql_url(const std::string& location) {
  return location.starts_with("postgresql://") || location.starts_with("postgres://");
}

std::string redact_store_url(const std::string& url) {
  if (!is_postgresql_url(url)) return url;
  auto scheme = url.find("://") + 3;
  auto at = url.find('@', scheme);
  auto slash = url.find('/', scheme);
  std::string out = url;
  if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
    auto colon = url.find(':', scheme);
    if (colon != std::string::npos && colon < at) out = url.substr(0, colon + 1) + "***" + url.substr(at);
  }
  // A password among the query parameters.
  auto q = out.find("password=");
  if (q != std::string::npos) {
    auto end = out.find('&', q);
    out = out.substr(0, q) + "password=***" + (end == std::string::npos ? "" : out.substr(end));
  }
  return out;
}

void check_store_url(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (!options) {
    std::string why = trimmed(error);
    PQfreemem(error);
    throw Error(ExitCode::usage, "the store URL is not a libpq connection URI: " + why,
                "e.g. postgresql://kiln@db.example.com:5432/kiln or postgresql:///kiln?host=/run/postgresql");
  }
  bool password = false;
  for (auto* o = options; o->keyword; ++o)
    if (std::string_view(o->keyword) == "password" && o->val && *o->val) password = true;
  PQconninfoFree(options);
  if (password)
    throw Error(ExitCode::usage,
                "the store URL holds a password: kiln-service never takes one on the command line (it would show "
                "in ps and in shell history)",
                "remove it from the URL and give it in KILN_STORE_PASSWORD or PGPASSWORD, or in a 0600 file "
                "(--store-password-file FILE, or PGPASSFILE)");
}

std::unique_ptr<Store> open_store(const std::string& location, const std::string& password_file) {
  if (is_postgresql_url(location)) return std::make_unique<PgStore>(location, PgStoreOptions{password_file, 0});
  return std::make_unique<SqliteStore>(location);
}

// A connection of the pool, and the units of work open on it (0: none).
struct PgStore::Connection {
  explicit Connection(PGconn* c) : conn(c) {}
  ~Connection() { PQfinish(conn); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  PGconn* conn;
  int depth = 0;
  bool relaxed = false;  // the open transaction commits with synchronous_commit off (an Access::telemetry unit)
};

// A held connection (held_connection.hpp) and its libpq handle.
class PgStore::Use : public HeldConnection<PgStore> {
 public:
  using HeldConnection::HeldConnection;
  PGconn* conn() { return connection().conn; }
};

PgStore::Connection& PgStore::current() { return Use::current(id_); }

PGconn* PgStore::connect() {
  std::string password;
  if (!options_.password_file.empty())
    password = read_password_file(options_.password_file);
  else if (const char* env = std::getenv("KILN_STORE_PASSWORD"))
    password = env;
  // connect_timeout first: the URL's own value, if it has one, wins.
  std::vector<const char*> keys = {"connect_timeout", "fallback_application_name", "dbname"};
  std::vector<const char*> values = {"10", "kiln-service", url_.c_str()};
  if (!password.empty()) {
    keys.push_back("password");
    values.push_back(password.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
  if (!conn) throw StoreUnavailable("cannot reach the PostgreSQL store " + redact_store_url(url_) + ": out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    throw StoreUnavailable("cannot reach the PostgreSQL store " + redact_store_url(url_) + ": " + why,
                           "is PostgreSQL running, and are the URL, user and password right?");
  }
  // Messages of the server stay out of the service's output.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  // Its prepared statements (no cache if this fails: they run unprepared).
  PQregisterEventProc(conn, statements_event, "kiln statements", nullptr);
  return conn;
}

// At most max_open_connections at once (PostgreSQL's max_connections is 100 by default, shared by every
// instance): a request beyond waits for one to be released.
PgStore::Connection* PgStore::acquire() {
  return pool_.acquire([&] { return new Connection(connect()); });
}

void PgStore::release(Connection* connection) {
  // A broken or busy connection never returns to the pool: it is closed.
  pool_.release(connection, connection->depth == 0 && PQstatus(connection->conn) == CONNECTION_OK &&
                                PQtransactionStatus(connection->conn) == PQTRANS_IDLE);
}

// The outermost unit of a connection is a transaction (writes: READ COMMITTED holding the store's write
// lock, so writers run one at a time as with SQLite; reads: a REPEATABLE READ READ ONLY snapshot); inner
// units are savepoints, so a failed inner unit undoes only its part.
class PgStore::PgTransaction final : public Store::Transaction {
 public:
  PgTransaction(PgStore& store, Access access)
      : use_(store), store_(store), connection_(store.current()), level_(connection_.depth) {
    if (level_ == 0) {
      // A telemetry unit reads one snapshot too (its statements agree with each other without the write lock).
      const char* begin = access == Access::read        ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                          : access == Access::telemetry ? "BEGIN ISOLATION LEVEL REPEATABLE READ"
                                                        : "BEGIN ISOLATION LEVEL READ COMMITTED";
      try {
        run(connection_.conn, begin);
      } catch (const StoreUnavailable&) {
        // A pooled connection the server dropped (a restart since it was last used): connect again once.
        PQreset(connection_.conn);
        if (PQstatus(connection_.conn) != CONNECTION_OK) throw;
        PQsetNoticeProcessor(connection_.conn, [](void*, const char*) {}, nullptr);
        run(connection_.conn, begin);
      }
      telemetry_unit = access == Access::telemetry ? connection_.conn : nullptr;
      connection_.relaxed = access == Access::telemetry;
      try {
        // A write unit takes the write order. A telemetry unit writes only a device's own telemetry: its commit
        // need not wait for the disk (SET LOCAL: this transaction only).
        if (access == Access::write) run(connection_.conn, "SELECT pg_advisory_xact_lock($1)", {write_lock_key});
        if (access == Access::telemetry) run(connection_.conn, "SET LOCAL synchronous_commit = off");
      } catch (...) {
        rollback();
        throw;
      }
    } else {
      run(connection_.conn, fmt::format("SAVEPOINT unit_{}", level_));
    }
    ++connection_.depth;
  }
  ~PgTransaction() override {
    if (done_) return;
    --connection_.depth;
    if (level_ == 0)
      rollback();
    else
      quiet(fmt::format("ROLLBACK TO SAVEPOINT unit_{0}; RELEASE SAVEPOINT unit_{0}", level_));
  }
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;
  void commit() override {
    if (level_ == 0) {
      // A statement that failed (its error is the request's answer) aborted the transaction: COMMIT then
      // rolls it back, as PostgreSQL does.
      --connection_.depth;
      done_ = true;
      if (telemetry_unit == connection_.conn) telemetry_unit = nullptr;
      run(connection_.conn, "COMMIT");
      if (connection_.relaxed) ++store_.relaxed_commits_;
    } else {
      run(connection_.conn, fmt::format("RELEASE SAVEPOINT unit_{}", level_));
      --connection_.depth;
      done_ = true;
    }
  }

 private:
  void rollback() {
    if (telemetry_unit == connection_.conn) telemetry_unit = nullptr;
    quiet("ROLLBACK");
  }
  void quiet(const std::string& sql) {
    if (PQstatus(connection_.conn) != CONNECTION_OK) return;
    PGresult* r = PQexec(connection_.conn, sql.c_str());
    if (r) PQclear(r);
  }

  Use use_;
  PgStore& store_;
  Connection& connection_;
  int level_;
  bool done_ = false;
};

std::unique_ptr<Store::Transaction> PgStore::begin(Access access) {
  return std::make_unique<PgTransaction>(*this, access);
}

void PgStore::require_write_order() {
  if (!telemetry_unit) return;  // no telemetry unit on this thread (nor a connection to look at)
  Use use(*this);
  if (use.conn() == telemetry_unit) throw WriteOrderNeeded();
}

PgStore::PgStore(const std::string& url, PgStoreOptions options)
    : url_(url), options_(std::move(options)), id_(next_store_id++),
      pool_(max_idle_connections, max_open_connections) {
  check_store_url(url_);
  Use use(*this);
  migrate(use.conn(), url_, options_.migrate_to);
}

PgStore::~PgStore() = default;

int PgStore::schema_version() {
  Use use(*this);
  return read_schema_version(use.conn());
}
int PgStore::latest_schema_version() { return std::end(migrations)[-1].version; }

// Tenants and tokens.

std::int64_t PgStore::create_tenant(const std::string& name, const std::string& now) {
  Use use(*this);
  return run(use.conn(), "INSERT INTO tenants (name, created_at) VALUES ($1, $2) RETURNING id", {name, now})
      .integer(0, 0);
}

std::optional<std::int64_t> PgStore::find_tenant(const std::string& name) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT id FROM tenants WHERE name = $1", {name});
  if (q.empty()) return std::nullopt;
  return q.integer(0, 0);
}

std::string PgStore::tenant_name(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT name FROM tenants WHERE id = $1", {tenant_id});
  return q.empty() ? "" : q.text(0, 0);
}

void PgStore::add_token(const std::string& hash, const TokenRecord& token, const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO tokens (hash, tenant_id, role, name, created_at, id) VALUES ($1, $2, $3, $4, $5, $6)",
      {hash, token.tenant_id, token.role, token.name, now, token.id});
}

std::optional<TokenRecord> PgStore::find_token(const std::string& hash) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT tenant_id, role, name, id FROM tokens WHERE hash = $1 AND revoked_at IS NULL",
               {hash});
  if (q.empty()) return std::nullopt;
  return TokenRecord{q.integer(0, 0), q.text(0, 1), q.text(0, 2), q.text(0, 3)};
}

std::vector<TokenInfo> PgStore::list_tokens(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id, name, role, created_at, revoked_at FROM tokens WHERE tenant_id = $1 ORDER BY created_at, "
               "id COLLATE \"C\"",
               {tenant_id});
  std::vector<TokenInfo> out;
  for (int r = 0; r < q.rows(); ++r)
    out.push_back({q.text(r, 0), q.text(r, 1), q.text(r, 2), q.text(r, 3), q.optional_text(r, 4)});
  return out;
}

bool PgStore::revoke_token(std::int64_t tenant_id, const std::string& id, const std::string& now) {
  Use use(*this);
  auto q = run(use.conn(),
               "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
               {now, tenant_id, id});
  return q.affected() > 0;
}

// Idempotency keys.

void PgStore::forget_idempotency_before(const std::string& oldest) {
  Use use(*this);
  run(use.conn(), "DELETE FROM idempotency WHERE created_at < $1", {oldest});
}

std::optional<IdempotencyRecord> PgStore::find_idempotency(std::int64_t tenant_id, const std::string& key,
                                                           const std::string& oldest) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT method, path, status, body, request_sha256, secret FROM idempotency WHERE tenant_id = $1 AND "
               "key = $2 AND created_at >= $3",
               {tenant_id, key, oldest});
  return first_row(q, read_idempotency);
}

void PgStore::remember_idempotency(std::int64_t tenant_id, const std::string& key, const IdempotencyRecord& record,
                                   const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO idempotency (tenant_id, key, method, path, status, body, created_at, request_sha256, secret) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, key) DO UPDATE SET method = "
      "excluded.method, path = excluded.path, status = excluded.status, body = excluded.body, created_at = "
      "excluded.created_at, request_sha256 = excluded.request_sha256, secret = excluded.secret",
      {tenant_id, key, record.method, record.path, record.status, record.body, now, record.request_sha256,
       record.secret});
}

// Products and groups.

std::optional<Product> PgStore::find_product(std::int64_t tenant_id, const std::string& ref) {
  Use use(*this);
  auto q = run(use.conn(),
               std::string(product_columns) + "WHERE tenant_id = $1 AND (id = $2 OR name = $2) ORDER BY id = $2 DESC LIMIT 1",
               {tenant_id, ref});
  return first_row(q, read_product);
}

bool PgStore::product_name_taken(std::int64_t tenant_id, const std::string& name) {
  Use use(*this);
  return !run(use.conn(), "SELECT 1 FROM products WHERE tenant_id = $1 AND name = $2", {tenant_id, name}).empty();
}

void PgStore::insert_product(std::int64_t tenant_id, const Product& product) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO products (id, tenant_id, name, description, created_at, boot_keys, manifest_keys, slot_size, "
      "manifest_threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
      {product.id, tenant_id, product.name, product.description, product.created_at,
       json_array(product.boot_keys), json_array(product.manifest_keys), product.slot_size,
       product.manifest_threshold});
}

void PgStore::update_product_trust(const Product& product) {
  Use use(*this);
  run(use.conn(),
      "UPDATE products SET boot_keys = $1, manifest_keys = $2, slot_size = $3, manifest_threshold = $4 WHERE id = $5",
      {json_array(product.boot_keys), json_array(product.manifest_keys), product.slot_size,
       product.manifest_threshold, product.id});
}

std::vector<Product> PgStore::list_products(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(product_columns) + "WHERE tenant_id = $1 ORDER BY name COLLATE \"C\"",
               {tenant_id});
  return all_rows(q, read_product);
}

void PgStore::delete_product(const std::string& product_id) {
  Use use(*this);
  auto* c = use.conn();
  run(c,
      "DELETE FROM deployment_tallies WHERE deployment_id IN (SELECT d.id FROM deployments d JOIN device_groups g "
      "ON g.id = d.group_id WHERE g.product_id = $1)",
      {product_id});
  run(c,
      "DELETE FROM deployment_devices WHERE deployment_id IN (SELECT d.id FROM deployments d JOIN device_groups g "
      "ON g.id = d.group_id WHERE g.product_id = $1)",
      {product_id});
  run(c, "DELETE FROM deployments WHERE group_id IN (SELECT id FROM device_groups WHERE product_id = $1)",
      {product_id});
  run(c, "DELETE FROM device_groups WHERE product_id = $1", {product_id});
  run(c, "DELETE FROM products WHERE id = $1", {product_id});
}

std::optional<Group> PgStore::find_group(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(group_columns) + "WHERE g.id = $1 AND g.tenant_id = $2", {id, tenant_id});
  return first_row(q, read_group);
}

std::optional<Group> PgStore::find_group_by_name(const std::string& product_id, const std::string& name) {
  Use use(*this);
  auto q = run(use.conn(), std::string(group_columns) + "WHERE g.product_id = $1 AND g.name = $2", {product_id, name});
  return first_row(q, read_group);
}

void PgStore::insert_group(std::int64_t tenant_id, const Group& group) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO device_groups (id, tenant_id, product_id, name, description, created_at) VALUES ($1, $2, $3, $4, "
      "$5, $6)",
      {group.id, tenant_id, group.product_id, group.name, group.description, group.created_at});
}

std::vector<Group> PgStore::list_groups(std::int64_t tenant_id, const std::optional<std::string>& product_id) {
  Use use(*this);
  std::string sql = std::string(group_columns) + "WHERE g.tenant_id = $1 AND ($2::text IS NULL OR g.product_id = $2) "
                    "ORDER BY p.name COLLATE \"C\", g.name COLLATE \"C\"";
  auto q = run(use.conn(), sql, {tenant_id, product_id});
  return all_rows(q, read_group);
}

void PgStore::update_group(const std::string& id, const std::optional<std::string>& name,
                           const std::optional<std::string>& description) {
  Use use(*this);
  if (name) run(use.conn(), "UPDATE device_groups SET name = $1 WHERE id = $2", {*name, id});
  if (description) run(use.conn(), "UPDATE device_groups SET description = $1 WHERE id = $2", {*description, id});
}

void PgStore::delete_group(const std::string& group_id) {
  Use use(*this);
  auto* c = use.conn();
  run(c, "DELETE FROM deployment_tallies WHERE deployment_id IN (SELECT id FROM deployments WHERE group_id = $1)",
      {group_id});
  run(c, "DELETE FROM deployment_devices WHERE deployment_id IN (SELECT id FROM deployments WHERE group_id = $1)",
      {group_id});
  run(c, "DELETE FROM deployments WHERE group_id = $1", {group_id});
  run(c, "DELETE FROM device_groups WHERE id = $1", {group_id});
}

std::int64_t PgStore::devices_in_product(const std::string& product_id) {
  Use use(*this);
  return run(use.conn(), "SELECT count(*) FROM devices WHERE product_id = $1", {product_id}).integer(0, 0);
}

std::int64_t PgStore::devices_in_group(const std::string& group_id) {
  Use use(*this);
  return run(use.conn(), "SELECT count(*) FROM devices WHERE group_id = $1", {group_id}).integer(0, 0);
}

// Devices.

namespace {

// A filter's WHERE clause: $1 is the tenant; each optional condition has its parameter, NULL when unused
// (so the statement's text and parameter count do not depend on the filter).
constexpr const char* filter_where =
    "WHERE d.tenant_id = $1 AND ($2::text IS NULL OR d.group_id = $2) AND ($3::text IS NULL OR d.product_id = $3) "
    "AND ($4::text IS NULL OR d.state = $4) AND ($5::text IS NULL OR d.version = $5) "
    "AND ($6::text IS NULL OR d.last_seen < $6) AND ($7::text IS NULL OR d.last_seen > $7) "
    "AND ($8::int IS NULL OR d.claimed = $8) ";

std::optional<std::string> claimed_param(const DeviceFilter& f) {
  if (!f.claimed) return std::nullopt;
  return std::string(*f.claimed ? "1" : "0");
}

}  // namespace

std::optional<DeviceView> PgStore::find_device(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(device_columns) + "WHERE d.id = $1 AND d.tenant_id = $2", {id, tenant_id});
  return first_row(q, read_device);
}

std::vector<DeviceView> PgStore::find_devices(std::int64_t tenant_id, const std::vector<std::string>& ids) {
  Use use(*this);
  auto q = run(use.conn(),
               std::string(device_columns) +
                   "WHERE d.id IN (SELECT json_array_elements_text($1::json)) AND d.tenant_id = $2",
               {nlohmann::json(ids).dump(), tenant_id});
  return all_rows(q, read_device);
}

std::optional<DeviceIdentity> PgStore::device_identity(const std::string& id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT tenant_id, public_key, group_id, certificate, revoked_at, revoked_reason, claimed, "
               "coalesce(factory_tenant_id, tenant_id) FROM devices WHERE id = $1",
               {id});
  if (q.empty()) return std::nullopt;
  return DeviceIdentity{q.integer(0, 0),        q.text(0, 1),           q.optional_text(0, 2),
                        q.optional_text(0, 3), q.optional_text(0, 4), q.optional_text(0, 5),
                        q.integer(0, 6) != 0,  q.integer(0, 7)};
}

std::vector<DeviceView> PgStore::list_devices(const DeviceFilter& f, const std::optional<std::string>& after,
                                              std::int64_t limit) {
  Use use(*this);
  auto q = run(use.conn(),
               std::string(device_columns) + filter_where +
                   "AND ($9::text IS NULL OR d.id > $9 COLLATE \"C\") ORDER BY d.id COLLATE \"C\" LIMIT $10",
               {f.tenant_id, f.group_id, f.product_id, f.state, f.version, f.seen_before, f.seen_after,
                claimed_param(f), after, limit});
  return all_rows(q, read_device);
}

std::vector<DeviceCount> PgStore::count_devices(const DeviceFilter& f, DeviceCountKey by) {
  Use use(*this);
  auto q = run(use.conn(),
               fmt::format("SELECT {0}, count(*) FROM devices d {1} GROUP BY {0} ORDER BY 2 DESC",
                           device_count_column(by), filter_where),
               {f.tenant_id, f.group_id, f.product_id, f.state, f.version, f.seen_before, f.seen_after,
                claimed_param(f)});
  std::vector<DeviceCount> out;
  for (int r = 0; r < q.rows(); ++r) {
    DeviceCount c{q.optional_text(r, 0), q.integer(r, 1)};
    if (c.key && count_key_is_id(by)) {
      auto name = run(use.conn(),
                      by == DeviceCountKey::group ? "SELECT p.name || '/' || g.name FROM device_groups g JOIN products "
                                                    "p ON p.id = g.product_id WHERE g.id = $1"
                                                  : "SELECT name FROM products WHERE id = $1",
                      {*c.key});
      if (!name.empty()) c.key = name.text(0, 0);
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
std::optional<DeviceGroup> device_group(PGconn* conn, const std::string& id) {
  auto q = run(conn, "SELECT group_id FROM devices WHERE id = $1", {id});
  if (q.empty()) return std::nullopt;
  return DeviceGroup{q.optional_text(0, 0)};
}

}  // namespace

bool PgStore::upsert_device(const ImportedDevice& device) {
  Use use(*this);
  auto before = device_group(use.conn(), device.id);
  auto q = run(use.conn(),
               "INSERT INTO devices (id, tenant_id, product_id, group_id, state, version, public_key, certificate, "
               "last_seen, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
               "ON CONFLICT (id) DO UPDATE SET product_id = excluded.product_id, group_id = COALESCE(devices.group_id, excluded.group_id), "
               "state = excluded.state, version = excluded.version, certificate = excluded.certificate "
               "WHERE devices.tenant_id = excluded.tenant_id AND devices.public_key = excluded.public_key",
               {device.id, device.tenant_id, device.product_id, device.group_id, device.state, device.version,
                device.public_key, device.certificate, device.last_seen, device.imported_at});
  if (q.affected() == 0) return false;
  // A device imported again keeps the group it was put in (kiln device assign); only a new device, or one
  // whose group was deleted, joins the bundle's group.
  if (!before || !before->group_id) count_member(use.conn(), device.id, device.group_id, 1);
  return true;
}

bool PgStore::group_of_device_product(const std::string& device_id, const std::string& group_id) {
  Use use(*this);
  return !run(use.conn(),
              "SELECT 1 FROM devices d JOIN device_groups g ON g.product_id = d.product_id WHERE d.id = $1 AND "
              "g.id = $2",
              {device_id, group_id})
              .empty();
}

void PgStore::revoke_device(const std::string& device_id, const std::string& reason, const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "UPDATE devices SET state = 'revoked', revoked_reason = CASE WHEN revoked_at IS NULL THEN $1 ELSE "
      "revoked_reason END, revoked_at = coalesce(revoked_at, $2) WHERE id = $3",
      {reason, now, device_id});
}

void PgStore::set_device_group(const std::string& device_id, const std::string& group_id) {
  Use use(*this);
  auto before = device_group(use.conn(), device_id);
  run(use.conn(), "UPDATE devices SET group_id = $1 WHERE id = $2", {group_id, device_id});
  if (before && before->group_id != group_id) {
    if (before->group_id) count_member(use.conn(), device_id, *before->group_id, -1);
    count_member(use.conn(), device_id, group_id, 1);
  }
}

void PgStore::set_devices_group(const std::vector<std::string>& device_ids, const std::string& group_id) {
  Use use(*this);
  auto ids = nlohmann::json(device_ids).dump();
  // Who moves, from where (locked until the unit ends); then one UPDATE for all of them.
  auto q = run(use.conn(),
               "SELECT id, group_id FROM devices WHERE id IN (SELECT json_array_elements_text($1::json)) AND "
               "group_id IS DISTINCT FROM $2 FOR UPDATE",
               {ids, group_id});
  std::vector<std::pair<std::string, std::optional<std::string>>> moving;
  for (int row = 0; row < q.rows(); ++row) moving.emplace_back(q.text(row, 0), q.optional_text(row, 1));
  if (moving.empty()) return;
  run(use.conn(), "UPDATE devices SET group_id = $1 WHERE id IN (SELECT json_array_elements_text($2::json))",
      {group_id, ids});
  // The groups involved that have deployments: only their tallies change, device by device.
  std::set<std::string> groups = {group_id};
  for (const auto& [id, from] : moving)
    if (from) groups.insert(*from);
  auto deployed = run(use.conn(),
                      "SELECT DISTINCT group_id FROM deployments WHERE group_id IN (SELECT "
                      "json_array_elements_text($1::json))",
                      {nlohmann::json(groups).dump()});
  std::set<std::string> counted;
  for (int row = 0; row < deployed.rows(); ++row) counted.insert(deployed.text(row, 0));
  std::map<std::string, std::vector<std::string>> leaving;  // group -> its devices that move out
  std::vector<std::string> joining;
  for (const auto& [id, from] : moving) {
    if (from && counted.count(*from)) leaving[*from].push_back(id);
    joining.push_back(id);
  }
  for (const auto& [from, ids_from] : leaving) count_members(use.conn(), ids_from, from, -1);
  if (counted.count(group_id)) count_members(use.conn(), joining, group_id, 1);
}

void PgStore::mark_claimed(const std::string& device_id, const std::string& now) {
  Use use(*this);
  run(use.conn(), "UPDATE devices SET claimed = 1, claimed_at = coalesce(claimed_at, $1) WHERE id = $2",
      {now, device_id});
}

void PgStore::unclaim_device(const std::string& device_id) {
  Use use(*this);
  auto before = device_group(use.conn(), device_id);
  run(use.conn(), "UPDATE devices SET claimed = 0, group_id = NULL WHERE id = $1", {device_id});
  if (before && before->group_id) count_member(use.conn(), device_id, *before->group_id, -1);
}

void PgStore::transfer_device(const std::string& device_id, std::int64_t tenant_id, const std::string& product_id,
                              const std::string& now) {
  Use use(*this);
  auto before = device_group(use.conn(), device_id);
  run(use.conn(),
      "UPDATE devices SET factory_tenant_id = coalesce(factory_tenant_id, tenant_id), tenant_id = $1, "
      "product_id = $2, claimed = 1, claimed_at = $3, group_id = NULL WHERE id = $4",
      {tenant_id, product_id, now, device_id});
  if (before && before->group_id) count_member(use.conn(), device_id, *before->group_id, -1);
}

void PgStore::add_trust_update(const std::string& product_id, std::int64_t version, const std::string& update_base64,
                               const std::string& now) {
  Use use(*this);
  run(use.conn(), "INSERT INTO trust_updates (product_id, version, content, created_at) VALUES ($1, $2, $3, $4)",
      {product_id, version, update_base64, now});
}

std::vector<std::pair<std::int64_t, std::string>> PgStore::trust_updates_after(const std::string& product_id,
                                                                              std::int64_t after_version) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT version, content FROM trust_updates WHERE product_id = $1 AND version > $2 ORDER BY version",
               {product_id, after_version});
  std::vector<std::pair<std::int64_t, std::string>> out;
  for (int row = 0; row < q.rows(); ++row) out.emplace_back(q.integer(row, 0), q.text(row, 1));
  return out;
}

std::int64_t PgStore::trust_version(const std::string& product_id) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT COALESCE(MAX(version), 0) FROM trust_updates WHERE product_id = $1", {product_id});
  return q.integer(0, 0);
}

void PgStore::add_transfer_voucher(const TransferVoucherRecord& v) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO device_transfers (id, from_tenant_id, to_tenant_id, devices, payload_sha256, public_key, "
      "expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
      {v.id, v.from_tenant_id, v.to_tenant_id, nlohmann::json(v.devices).dump(), v.payload_sha256, v.public_key,
       v.expires_at, v.created_at});
}

std::optional<TransferVoucherRecord> PgStore::find_transfer_voucher(const std::string& id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id, from_tenant_id, to_tenant_id, devices, payload_sha256, public_key, expires_at, created_at, "
               "redeemed_at FROM device_transfers WHERE id = $1",
               {id});
  if (q.empty()) return std::nullopt;
  TransferVoucherRecord v;
  v.id = q.text(0, 0);
  v.from_tenant_id = q.integer(0, 1);
  v.to_tenant_id = q.integer(0, 2);
  v.devices = nlohmann::json::parse(q.text(0, 3)).get<std::vector<std::string>>();
  v.payload_sha256 = q.text(0, 4);
  v.public_key = q.text(0, 5);
  v.expires_at = q.integer(0, 6);
  v.created_at = q.text(0, 7);
  v.redeemed_at = q.optional_text(0, 8);
  return v;
}

bool PgStore::take_transfer_voucher(const std::string& id, const std::string& now) {
  Use use(*this);
  // One statement: of two racing accepts, only one changes the row.
  return run(use.conn(), "UPDATE device_transfers SET redeemed_at = $1 WHERE id = $2 AND redeemed_at IS NULL",
             {now, id})
             .affected() == 1;
}

bool PgStore::device_checked_in(const std::string& device_id, const std::string& now, const std::string& stale_before,
                                const std::optional<std::string>& version, const std::optional<std::string>& state) {
  Use use(*this);
  TelemetryWrite telemetry;
  return run(use.conn(),
             "UPDATE devices SET last_seen = $1, version = coalesce($2, version), state = coalesce($3, state) "
             "WHERE id = $4 AND (last_seen IS NULL OR last_seen < $5 OR version IS DISTINCT FROM coalesce($2, version) "
             "OR state IS DISTINCT FROM coalesce($3, state))",
             {now, version, state, device_id, stale_before})
             .affected() > 0;
}

bool PgStore::commit_durable() {
  Use use(*this);
  return run(use.conn(), "SHOW synchronous_commit").text(0, 0) != "off";
}

std::int64_t PgStore::prepared_statements() {
  Use use(*this);
  // Not through run(): this statement stays out of the count.
  PGresult* q = PQexec(use.conn(), "SELECT count(*) FROM pg_prepared_statements");
  std::int64_t count = PQresultStatus(q) == PGRES_TUPLES_OK ? std::strtoll(PQgetvalue(q, 0, 0), nullptr, 10) : -1;
  PQclear(q);
  return count;
}

void PgStore::record_device_firmware(const std::string& device_id, const std::optional<std::int64_t>& sequence,
                                     const std::optional<std::string>& manifest_digest) {
  Use use(*this);
  TelemetryWrite telemetry;
  std::optional<std::string> number;
  if (sequence) number = std::to_string(*sequence);
  run(use.conn(),
      "UPDATE devices SET sequence = coalesce($1::bigint, sequence), manifest_digest = coalesce($2, "
      "manifest_digest) WHERE id = $3 AND (sequence IS DISTINCT FROM coalesce($1::bigint, sequence) OR "
      "manifest_digest IS DISTINCT FROM coalesce($2, manifest_digest))",
      {number, manifest_digest, device_id});
}

void PgStore::record_device_trust_version(const std::string& device_id, std::int64_t version) {
  Use use(*this);
  TelemetryWrite telemetry;
  run(use.conn(), "UPDATE devices SET trust_version = $1 WHERE id = $2 AND trust_version IS DISTINCT FROM $1",
      {version, device_id});
}

void PgStore::set_device_encryption_key(const std::string& device_id, const std::string& public_key) {
  Use use(*this);
  if (device_encryption_key(device_id) == std::optional<std::string>(public_key)) return;
  run(use.conn(), "DELETE FROM device_images WHERE device_id = $1", {device_id});
  run(use.conn(),
      "INSERT INTO device_encryption_keys (device_id, public_key) VALUES ($1, $2) "
      "ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key",
      {device_id, public_key});
}

std::optional<std::string> PgStore::device_encryption_key(const std::string& device_id) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT public_key FROM device_encryption_keys WHERE device_id = $1", {device_id});
  if (q.empty()) return std::nullopt;
  return q.text(0, 0);
}

std::optional<DeviceImage> PgStore::find_device_image(const std::string& device_id, const std::string& image) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT area, sha256, size, created_at FROM device_images WHERE device_id = $1 AND image = $2",
               {device_id, image});
  if (q.empty()) return std::nullopt;
  return DeviceImage{device_id, image, q.text(0, 0), q.text(0, 1), q.integer(0, 2), q.text(0, 3)};
}

void PgStore::save_device_image(const DeviceImage& image) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO device_images (device_id, image, area, sha256, size, created_at) VALUES ($1, $2, $3, $4, $5, $6) "
      "ON CONFLICT (device_id, image) DO UPDATE SET area = excluded.area, sha256 = excluded.sha256, "
      "size = excluded.size, created_at = excluded.created_at",
      {image.device_id, image.image, image.area, image.sha256, image.size, image.created_at});
}

std::vector<DeviceFirmware> PgStore::group_firmware(const std::string& group_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id, sequence, manifest_digest FROM devices WHERE group_id = $1 ORDER BY id COLLATE \"C\"",
               {group_id});
  return all_rows(q, read_device_firmware);
}

void PgStore::add_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                  std::int64_t expires_at, std::int64_t now) {
  Use use(*this);
  run(use.conn(), "DELETE FROM claim_challenges WHERE expires_at < $1", {now});
  run(use.conn(), "INSERT INTO claim_challenges (nonce, device_id, tenant_id, expires_at) VALUES ($1, $2, $3, $4)",
      {nonce, device_id, tenant_id, expires_at});
}

bool PgStore::take_claim_challenge(const std::string& nonce, const std::string& device_id, std::int64_t tenant_id,
                                   std::int64_t now) {
  Use use(*this);
  // One statement: of two racing claims with one nonce, only one deletes the row.
  return !run(use.conn(),
              "DELETE FROM claim_challenges WHERE nonce = $1 AND device_id = $2 AND tenant_id = $3 AND "
              "expires_at >= $4 RETURNING 1",
              {nonce, device_id, tenant_id, now})
              .empty();
}

// Staged imports.

void PgStore::forget_import_parts_before(std::int64_t oldest) {
  Use use(*this);
  run(use.conn(), "DELETE FROM import_parts WHERE created_at < $1", {oldest});
}

std::int64_t PgStore::import_received(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  return run(use.conn(),
             "SELECT coalesce(sum(octet_length(body)), 0) FROM import_parts WHERE tenant_id = $1 AND import_id = $2",
             {tenant_id, import_id})
      .integer(0, 0);
}

void PgStore::add_import_part(std::int64_t tenant_id, const std::string& import_id, std::int64_t offset,
                              std::string_view body, std::int64_t now) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO import_parts (tenant_id, import_id, part_offset, body, created_at) VALUES ($1, $2, $3, $4, $5)",
      {tenant_id, import_id, offset, Param::bytes(body), now});
}

std::vector<std::int64_t> PgStore::import_part_offsets(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  auto offsets = run(use.conn(),
                     "SELECT part_offset FROM import_parts WHERE tenant_id = $1 AND import_id = $2 ORDER BY part_offset",
                     {tenant_id, import_id});
  std::vector<std::int64_t> out;
  for (int r = 0; r < offsets.rows(); ++r) out.push_back(offsets.integer(r, 0));
  return out;
}

std::optional<std::string> PgStore::import_part(std::int64_t tenant_id, const std::string& import_id,
                                                std::int64_t offset) {
  Use use(*this);
  auto part = run(use.conn(), "SELECT body FROM import_parts WHERE tenant_id = $1 AND import_id = $2 AND part_offset = $3",
                  {tenant_id, import_id, offset}, true);
  if (part.empty()) return std::nullopt;
  return part.text(0, 0);
}

void PgStore::delete_import(std::int64_t tenant_id, const std::string& import_id) {
  Use use(*this);
  run(use.conn(), "DELETE FROM import_parts WHERE tenant_id = $1 AND import_id = $2", {tenant_id, import_id});
}

// Factory CAs.

std::vector<std::string> PgStore::owned_factory_ca_pems(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(owned_cas) + "WHERE c.tenant_id = $1 AND c.revoked_at IS NULL ORDER BY c.seq",
               {tenant_id});
  std::vector<std::string> out;
  for (int r = 0; r < q.rows(); ++r) out.push_back(q.text(r, 1));
  return out;
}

std::map<std::int64_t, std::vector<std::string>> PgStore::owned_station_ca_pems() {
  Use use(*this);
  auto q = run(use.conn(), std::string(owned_cas) +
                               "WHERE c.stations != 0 AND c.revoked_at IS NULL ORDER BY c.tenant_id, c.seq");
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  for (int r = 0; r < q.rows(); ++r) by_tenant[q.integer(r, 0)].push_back(q.text(r, 1));
  return by_tenant;
}

std::vector<std::string> PgStore::revoked_factory_ca_pems(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(),
               std::string(owned_cas) + "WHERE c.tenant_id = $1 AND c.revoked_at IS NOT NULL ORDER BY c.seq",
               {tenant_id});
  std::vector<std::string> out;
  for (int r = 0; r < q.rows(); ++r) out.push_back(q.text(r, 1));
  return out;
}

std::map<std::int64_t, std::vector<std::string>> PgStore::revoked_station_ca_pems() {
  Use use(*this);
  auto q = run(use.conn(), std::string(owned_cas) +
                               "WHERE c.stations != 0 AND c.revoked_at IS NOT NULL ORDER BY c.tenant_id, c.seq");
  std::map<std::int64_t, std::vector<std::string>> by_tenant;
  for (int r = 0; r < q.rows(); ++r) by_tenant[q.integer(r, 0)].push_back(q.text(r, 1));
  return by_tenant;
}

bool PgStore::revoke_factory_ca(std::int64_t tenant_id, const std::string& id, const std::string& reason,
                                const std::string& now) {
  Use use(*this);
  auto q = run(use.conn(),
               "UPDATE factory_cas SET revoked_reason = CASE WHEN revoked_at IS NULL THEN $1 ELSE revoked_reason "
               "END, revoked_at = coalesce(revoked_at, $2) WHERE tenant_id = $3 AND id = $4",
               {reason, now, tenant_id, id});
  return q.affected() > 0;
}

void PgStore::add_factory_ca_challenge(const std::string& nonce, const FactoryCaChallenge& challenge,
                                       std::int64_t now) {
  Use use(*this);
  run(use.conn(), "DELETE FROM factory_ca_challenges WHERE expires_at < $1", {now});
  run(use.conn(),
      "INSERT INTO factory_ca_challenges (nonce, tenant_id, key_sha256, expires_at) VALUES ($1, $2, $3, $4)",
      {nonce, challenge.tenant_id, challenge.key_sha256, challenge.expires_at});
}

std::optional<FactoryCaChallenge> PgStore::take_factory_ca_challenge(const std::string& nonce) {
  Use use(*this);
  auto q = run(use.conn(),
               "DELETE FROM factory_ca_challenges WHERE nonce = $1 RETURNING tenant_id, key_sha256, expires_at",
               {nonce});
  if (q.empty()) return std::nullopt;
  return FactoryCaChallenge{q.integer(0, 0), q.text(0, 1), q.integer(0, 2)};
}

std::int64_t PgStore::claim_factory_ca_key(const std::string& key_sha256, std::int64_t tenant_id,
                                           const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO factory_ca_owners (key_sha256, tenant_id, created_at) VALUES ($1, $2, $3) "
      "ON CONFLICT (key_sha256) DO NOTHING",
      {key_sha256, tenant_id, now});
  auto owner = run(use.conn(), "SELECT tenant_id FROM factory_ca_owners WHERE key_sha256 = $1", {key_sha256});
  return owner.empty() ? 0 : owner.integer(0, 0);
}

bool PgStore::register_factory_ca(std::int64_t tenant_id, const FactoryCaRecord& ca) {
  Use use(*this);
  // Registering again may widen the CA to stations; it never narrows a registration silently.
  auto q = run(use.conn(),
               "INSERT INTO factory_cas (tenant_id, id, subject, pem, created_at, stations, key_sha256) VALUES ($1, "
               "$2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, id) DO UPDATE SET stations = "
               "GREATEST(factory_cas.stations, excluded.stations) RETURNING stations",
               {tenant_id, ca.id, ca.subject, ca.pem, ca.created_at, ca.stations, ca.key_sha256});
  return !q.empty() && q.integer(0, 0) != 0;
}

std::vector<FactoryCaRecord> PgStore::list_factory_cas(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT c.id, c.subject, c.pem, c.stations, c.key_sha256, o.tenant_id IS NOT NULL, c.created_at, "
               "c.revoked_at, c.revoked_reason FROM factory_cas c LEFT JOIN factory_ca_owners o ON o.key_sha256 = c.key_sha256 AND o.tenant_id = "
               "c.tenant_id WHERE c.tenant_id = $1 ORDER BY c.created_at, c.seq",
               {tenant_id});
  return all_rows(q, read_factory_ca);
}

// Ledger heads.

std::optional<LedgerHead> PgStore::find_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                                                    const std::string& ledger_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT ledger_id, rows, hash, imported_at FROM ledger_heads WHERE tenant_id = $1 AND "
               "station_key_sha256 = $2 AND ledger_id = $3",
               {tenant_id, station_key_sha256, ledger_id});
  return first_row(q, read_ledger_head);
}

std::optional<LedgerHead> PgStore::latest_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT ledger_id, rows, hash, imported_at FROM ledger_heads WHERE tenant_id = $1 AND "
               "station_key_sha256 = $2 ORDER BY imported_at DESC LIMIT 1",
               {tenant_id, station_key_sha256});
  return first_row(q, read_ledger_head);
}

void PgStore::save_ledger_head(std::int64_t tenant_id, const std::string& station_key_sha256,
                               const LedgerHead& head) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO ledger_heads (tenant_id, ledger_id, station_key_sha256, rows, hash, imported_at) VALUES ($1, $2, "
      "$3, $4, $5, $6) ON CONFLICT (tenant_id, station_key_sha256, ledger_id) DO UPDATE SET rows = excluded.rows, "
      "hash = excluded.hash, imported_at = excluded.imported_at",
      {tenant_id, head.ledger_id, station_key_sha256, head.rows, head.hash, head.imported_at});
}

// Images.

std::optional<ImageRecord> PgStore::find_image(std::int64_t tenant_id, const std::string& sha256) {
  Use use(*this);
  auto q = run(use.conn(), std::string(image_columns) + "WHERE tenant_id = $1 AND sha256 = $2", {tenant_id, sha256});
  return first_row(q, read_image);
}

void PgStore::insert_image(std::int64_t tenant_id, const ImageRecord& image) {
  Use use(*this);
  std::optional<std::string> name;
  if (!image.name.empty()) name = image.name;
  run(use.conn(), "INSERT INTO images (tenant_id, sha256, name, size, created_at) VALUES ($1, $2, $3, $4, $5)",
      {tenant_id, image.sha256, name, image.size, image.created_at});
}

std::vector<ImageRecord> PgStore::list_images(std::int64_t tenant_id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(image_columns) + "WHERE tenant_id = $1 ORDER BY created_at, sha256",
               {tenant_id});
  return all_rows(q, read_image);
}

void PgStore::record_upload(std::int64_t tenant_id, const std::string& sha256, std::int64_t received, bool complete) {
  Use use(*this);
  run(use.conn(), "UPDATE images SET received = $1, complete = $2 WHERE tenant_id = $3 AND sha256 = $4",
      {received, complete, tenant_id, sha256});
}

void PgStore::link_manifest(std::int64_t tenant_id, const std::string& image, const std::string& manifest) {
  Use use(*this);
  run(use.conn(), "UPDATE images SET manifest = $1 WHERE tenant_id = $2 AND sha256 = $3", {manifest, tenant_id, image});
}

// Deployments.

std::optional<Deployment> PgStore::find_deployment(std::int64_t tenant_id, const std::string& id) {
  Use use(*this);
  auto q = run(use.conn(), std::string(deployment_columns) + "WHERE d.id = $1 AND d.tenant_id = $2", {id, tenant_id});
  return first_row(q, read_deployment);
}

std::optional<std::string> PgStore::newest_deployment(std::int64_t tenant_id, const std::string& group_id,
                                                      bool skip_aborted) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id FROM deployments WHERE group_id = $1 AND tenant_id = $2 AND trust_version IS NULL AND (NOT "
               "$3::boolean OR state != 'aborted') ORDER BY seq DESC LIMIT 1",
               {group_id, tenant_id, std::string(skip_aborted ? "true" : "false")});
  if (q.empty()) return std::nullopt;
  return q.text(0, 0);
}

std::optional<std::string> PgStore::newest_trust_deployment(std::int64_t tenant_id, const std::string& group_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id FROM deployments WHERE group_id = $1 AND tenant_id = $2 AND trust_version IS NOT NULL ORDER "
               "BY seq DESC LIMIT 1",
               {group_id, tenant_id});
  if (q.empty()) return std::nullopt;
  return q.text(0, 0);
}

std::vector<Deployment> PgStore::list_deployments(std::int64_t tenant_id, const std::optional<std::string>& group_id) {
  Use use(*this);
  auto q = run(use.conn(),
               std::string(deployment_columns) +
                   "WHERE d.tenant_id = $1 AND ($2::text IS NULL OR d.group_id = $2) ORDER BY d.seq",
               {tenant_id, group_id});
  return all_rows(q, read_deployment);
}

void PgStore::insert_deployment(std::int64_t tenant_id, const Deployment& d, const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "UPDATE deployments SET state = 'superseded', updated_at = $1 WHERE group_id = $2 AND state IN "
      "('active', 'paused', 'halted') AND (trust_version IS NULL) = $3::boolean",
      {now, d.group_id, std::string(d.trust_version ? "false" : "true")});
  std::optional<std::string> sequence, halt;
  if (d.sequence) sequence = std::to_string(*d.sequence);
  if (d.halt_on_failure) halt = fmt::format("{}", *d.halt_on_failure);
  std::optional<std::string> trust;
  if (d.trust_version) trust = std::to_string(*d.trust_version);
  run(use.conn(),
      "INSERT INTO deployments (id, tenant_id, group_id, images, state, created_at, updated_at, manifest, sequence, "
      "waves, wave, wave_started_at, step_after, halt_on_failure, failure_baseline, previous, halt_min_executed, "
      "policy, progress, trust_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
      "$17, $18, $19, $20::bigint)",
      {d.id, tenant_id, d.group_id, json_array(d.images), state_name(d.state), d.created_at, d.updated_at, d.manifest,
       sequence, json_array(d.waves), d.wave, d.wave_started_at, d.step_after, halt, d.failure_baseline, d.previous,
       d.halt_min_executed, policy_text(d.policy), progress_text(d), trust});
  write_tally(use.conn(), d.id, recount(use.conn(), d));
}

void PgStore::save_rollout(const std::string& deployment_id, const Rollout& r, const std::string& now) {
  Use use(*this);
  run(use.conn(),
      "UPDATE deployments SET state = $1, wave = $2, wave_started_at = $3, halt_reason = $4, failure_baseline = $5, "
      "updated_at = $6, progress = $7 WHERE id = $8",
      {state_name(r.state), r.wave, r.wave_started_at, r.halt_reason, r.failure_baseline, now, progress_text(r),
       deployment_id});
}

RolloutTally PgStore::recount_rollout_tally(const Deployment& deployment) {
  Use use(*this);
  return recount(use.conn(), deployment);
}

RolloutTally PgStore::rollout_tally(const Deployment& deployment) {
  Use use(*this);
  auto t = empty_tally(deployment.waves);
  auto q = run(use.conn(), "SELECT wave, status, devices FROM deployment_tallies WHERE deployment_id = $1",
               {deployment.id});
  for (int r = 0; r < q.rows(); ++r) add_tally_row(t, {q.integer(r, 0), q.text(r, 1), q.integer(r, 2)});
  return t;
}

std::map<std::string, RolloutTally> PgStore::rollout_tallies(std::int64_t tenant_id,
                                                             const std::optional<std::string>& group_id) {
  Use use(*this);
  std::map<std::string, RolloutTally> out;
  auto deployments = run(use.conn(),
                         "SELECT id, waves FROM deployments WHERE tenant_id = $1 AND ($2::text IS NULL OR group_id = $2)",
                         {tenant_id, group_id});
  for (int r = 0; r < deployments.rows(); ++r)
    out[deployments.text(r, 0)] = empty_tally(parse_waves(deployments.text(r, 1)));
  auto q = run(use.conn(),
               "SELECT t.deployment_id, t.wave, t.status, t.devices FROM deployment_tallies t JOIN deployments d ON "
               "d.id = t.deployment_id WHERE d.tenant_id = $1 AND ($2::text IS NULL OR d.group_id = $2)",
               {tenant_id, group_id});
  for (int r = 0; r < q.rows(); ++r)
    if (auto it = out.find(q.text(r, 0)); it != out.end())
      add_tally_row(it->second, {q.integer(r, 1), q.text(r, 2), q.integer(r, 3)});
  return out;
}

void PgStore::for_each_deployment_device(const Deployment& deployment,
                                         const std::function<void(const DeploymentDevice&)>& each) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT d.id, dd.status, coalesce(dd.detail, ''), coalesce(dd.updated_at, ''), coalesce(d.version, ''), "
               "dd.previous_manifest, dd.version_before, coalesce(dd.started_at, ''), coalesce(d.last_seen, ''), "
               "coalesce(dd.attempt, 1), dd.retry_at, d.time_zone "
               "FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = $1 AND dd.device_id = d.id "
               "WHERE d.group_id = $2 ORDER BY d.id COLLATE \"C\"",
               {deployment.id, deployment.group_id});
  for (int r = 0; r < q.rows(); ++r) each(read_deployment_device(PgRow(q, r)));
}

std::optional<DeploymentDevice> PgStore::deployment_device(const std::string& deployment_id,
                                                           const std::string& device_id) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT dd.device_id, dd.status, coalesce(dd.detail, ''), dd.updated_at, coalesce(d.version, ''), "
               "dd.previous_manifest, dd.version_before, coalesce(dd.started_at, ''), coalesce(d.last_seen, ''), "
               "dd.attempt, dd.retry_at, d.time_zone FROM deployment_devices dd JOIN devices d ON d.id = dd.device_id "
               "WHERE dd.deployment_id = $1 AND dd.device_id = $2",
               {deployment_id, device_id});
  return first_row(q, read_deployment_device);
}

std::optional<std::string> PgStore::deployment_with_manifest(std::int64_t tenant_id, const std::string& group_id,
                                                            const std::string& manifest) {
  Use use(*this);
  auto q = run(use.conn(),
               "SELECT id FROM deployments WHERE tenant_id = $1 AND group_id = $2 AND manifest = $3 "
               "ORDER BY seq DESC LIMIT 1",
               {tenant_id, group_id, manifest});
  if (q.empty()) return std::nullopt;
  return q.text(0, 0);
}

std::optional<std::string> PgStore::reported_status(const std::string& deployment_id, const std::string& device_id) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT status FROM deployment_devices WHERE deployment_id = $1 AND device_id = $2",
               {deployment_id, device_id});
  if (q.empty()) return std::nullopt;
  return q.text(0, 0);
}

void PgStore::record_status(const std::string& deployment_id, const std::string& device_id, const std::string& status,
                            const std::string& detail, const std::string& now,
                            const std::optional<std::string>& installed_version) {
  Use use(*this);
  auto* c = use.conn();
  // The tally follows the device's last status, while the device is in the deployment's group.
  auto previous = reported_status(deployment_id, device_id);
  auto where = run(c,
                   "SELECT d.waves FROM deployments d JOIN devices v ON v.group_id = d.group_id WHERE d.id = $1 AND "
                   "v.id = $2",
                   {deployment_id, device_id});
  if (!where.empty()) {
    int wave = device_wave(deployment_id, parse_waves(where.text(0, 0)), device_id);
    for (const auto& row : report_rows(wave, previous, status)) add_tally(c, deployment_id, row);
  }
  run(c,
      "INSERT INTO deployment_devices (deployment_id, device_id, status, detail, updated_at, previous_manifest, "
      "version_before, started_at) SELECT $1::text, $2::text, $3::text, $4::text, $5::text, manifest_digest, version, "
      "$5::text FROM devices WHERE id = $2 ON CONFLICT (deployment_id, device_id) DO UPDATE SET status = "
      "excluded.status, detail = excluded.detail, updated_at = excluded.updated_at",
      {deployment_id, device_id, status, detail, now});
  if (installed_version) run(c, "UPDATE devices SET version = $1 WHERE id = $2", {*installed_version, device_id});
}

void PgStore::set_attempt(const std::string& deployment_id, const std::string& device_id, std::int64_t attempt,
                          const std::optional<std::int64_t>& retry_at) {
  Use use(*this);
  std::optional<std::string> at;
  if (retry_at) at = std::to_string(*retry_at);
  run(use.conn(), "UPDATE deployment_devices SET attempt = $1, retry_at = $2::bigint WHERE deployment_id = $3 AND device_id = $4",
      {attempt, at, deployment_id, device_id});
}

std::optional<std::string> PgStore::device_time_zone(const std::string& device_id) {
  Use use(*this);
  auto q = run(use.conn(), "SELECT time_zone FROM devices WHERE id = $1", {device_id});
  if (q.empty()) return std::nullopt;
  return q.optional_text(0, 0);
}

void PgStore::set_device_time_zone(const std::string& device_id, const std::optional<std::string>& zone) {
  Use use(*this);
  run(use.conn(), "UPDATE devices SET time_zone = $1 WHERE id = $2", {zone, device_id});
}

void PgStore::delete_image(std::int64_t tenant_id, const std::string& sha256) {
  Use use(*this);
  auto* c = use.conn();
  run(c, "DELETE FROM device_images WHERE image = $1 AND device_id IN (SELECT id FROM devices WHERE tenant_id = $2)",
      {sha256, tenant_id});
  run(c, "UPDATE images SET manifest = NULL WHERE tenant_id = $1 AND manifest = $2", {tenant_id, sha256});
  run(c, "DELETE FROM images WHERE tenant_id = $1 AND sha256 = $2", {tenant_id, sha256});
}

void PgStore::delete_deployment(const std::string& deployment_id) {
  Use use(*this);
  auto* c = use.conn();
  run(c, "DELETE FROM deployment_tallies WHERE deployment_id = $1", {deployment_id});
  run(c, "DELETE FROM deployment_devices WHERE deployment_id = $1", {deployment_id});
  run(c, "DELETE FROM deployments WHERE id = $1", {deployment_id});
}

void PgStore::add_audit(std::int64_t tenant_id, const AuditEntry& e) {
  Use use(*this);
  run(use.conn(),
      "INSERT INTO audit_log (tenant_id, at, actor, role, action, method, route, target, status, request_id) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
      {tenant_id, e.at, e.actor, e.role, e.action, e.method, e.route, e.target, e.status, e.request_id});
}

std::vector<AuditEntry> PgStore::list_audit(const AuditFilter& f, const std::optional<std::int64_t>& after,
                                            std::int64_t limit) {
  Use use(*this);
  std::optional<std::string> after_text;
  if (after) after_text = std::to_string(*after);
  auto q = run(use.conn(),
               "SELECT id, at, actor, role, action, method, route, target, status, request_id FROM audit_log "
               "WHERE tenant_id = $1 AND ($2::text IS NULL OR actor = $2) AND ($3::text IS NULL OR action = $3) "
               "AND ($4::text IS NULL OR target = $4) AND ($5::text IS NULL OR at COLLATE \"C\" >= $5) "
               "AND ($6::text IS NULL OR at COLLATE \"C\" <= $6) AND ($7::bigint IS NULL OR id > $7) "
               "ORDER BY id LIMIT $8",
               {f.tenant_id, f.actor, f.action, f.target, f.since, f.until, after_text, limit});
  std::vector<AuditEntry> out;
  for (int r = 0; r < q.rows(); ++r)
    out.push_back(AuditEntry{q.integer(r, 0), q.text(r, 1), q.text(r, 2), q.text(r, 3), q.text(r, 4), q.text(r, 5),
                             q.text(r, 6), q.text(r, 7), static_cast<int>(q.integer(r, 8)), q.text(r, 9)});
  return out;
}

}  // namespace kiln::service
