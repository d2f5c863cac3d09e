// Station ledger on SQLite: append with a hash chain, signed checkpoints, verify, export, stats, quota.
#include "provisioning/ledger.hpp"

#include <sqlite3.h>

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "provisioning/station_ca.hpp"

namespace kiln {

using Json = nlohmann::json;  // sorted keys: dump() is the canonical form the hash covers

namespace {

void close_db(sqlite3* db) { sqlite3_close_v2(db); }

struct StatementFree {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Statement = std::unique_ptr<sqlite3_stmt, StatementFree>;

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw Error(ExitCode::failure, fmt::format("ledger: {}: {}", what, sqlite3_errmsg(db)));
}

void exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(db, sql);
}

Statement prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) fail(db, "prepare");
  return Statement(stmt);
}

std::string column_text(sqlite3_stmt* s, int i) {
  auto* text = sqlite3_column_text(s, i);
  return text ? reinterpret_cast<const char*>(text) : std::string();
}

void bind_text(sqlite3_stmt* s, int i, const std::string& value) {
  sqlite3_bind_text(s, i, value.c_str(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
}

// Rolls back unless committed: an exception never leaves a half-written row or a held lock.
struct Transaction {
  sqlite3* db;
  bool done = false;
  explicit Transaction(sqlite3* d) : db(d) { exec(db, "BEGIN IMMEDIATE"); }
  void commit() {
    exec(db, "COMMIT");
    done = true;
  }
  ~Transaction() {
    if (!done) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
};

// Ed25519 signs the message itself; ECDSA signs its SHA-256 digest.
Bytes sign_message(const Signer& signer, ByteView message) {
  if (signer.type() == KeyType::ed25519) return signer.sign(message, HashAlg::sha256);
  return signer.sign(digest(HashAlg::sha256, message), HashAlg::sha256);
}

bool verify_message(ByteView public_key, ByteView message, ByteView signature) {
  if (public_key_type(public_key) == KeyType::ed25519)
    return verify_signature(public_key, message, HashAlg::sha256, signature);
  return verify_signature(public_key, digest(HashAlg::sha256, message), HashAlg::sha256, signature);
}

constexpr const char* genesis_hash = "0000000000000000000000000000000000000000000000000000000000000000";

}  // namespace

std::string utc_now_iso8601() {
  auto now = std::chrono::system_clock::now();
  auto seconds = std::chrono::system_clock::to_time_t(now);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buffer, millis);
}

std::string ledger_row_hash(const std::string& prev_hash, std::int64_t seq, const std::string& kind,
                            const std::string& content) {
  std::string text = fmt::format("{}\n{}\n{}\n{}", prev_hash, seq, kind, content);
  return to_hex(digest(HashAlg::sha256, as_bytes(text)));
}

Json to_json(const LedgerEntry& e) {
  Json steps = Json::array();
  for (const auto& s : e.steps) {
    Json step{{"step", s.step}, {"result", s.result}, {"duration_ms", s.duration_ms}};
    if (!s.error.empty()) step["error"] = s.error;
    steps.push_back(step);
  }
  Json out{{"uid", e.uid},
              {"result", e.result},
              {"failed_step", e.failed_step},
              {"error", e.error},
              {"public_key", e.device_public_key_pem},
              {"certificate", e.certificate_pem},
              {"serial", e.certificate_serial},
              {"certificate_issued", e.certificate_issued},
              {"product", e.product},
              {"profile_hash", e.profile_hash},
              {"station", e.station_id},
              {"operator", e.operator_name},
              {"final_state", e.final_state},
              {"started_at", e.started_at},
              {"finished_at", e.finished_at},
              {"steps", steps}};
  // Only rows with a firmware step carry these, so rows written before it hash as they did.
  if (!e.firmware_version.empty()) out["firmware_version"] = e.firmware_version;
  if (!e.firmware_sha256.empty()) out["firmware_sha256"] = e.firmware_sha256;
  if (e.manifest_sequence) out["manifest_sequence"] = *e.manifest_sequence;
  return out;
}

LedgerEntry ledger_entry_from_json(const Json& c) {
  LedgerEntry e;
  e.uid = c.value("uid", "");
  e.result = c.value("result", "");
  e.failed_step = c.value("failed_step", "");
  e.error = c.value("error", "");
  e.device_public_key_pem = c.value("public_key", "");
  e.certificate_pem = c.value("certificate", "");
  e.certificate_serial = c.value("serial", "");
  e.certificate_issued = c.value("certificate_issued", false);
  e.product = c.value("product", "");
  e.profile_hash = c.value("profile_hash", "");
  e.station_id = c.value("station", "");
  e.operator_name = c.value("operator", "");
  e.final_state = c.value("final_state", "");
  e.started_at = c.value("started_at", "");
  e.finished_at = c.value("finished_at", "");
  e.firmware_version = c.value("firmware_version", "");
  e.firmware_sha256 = c.value("firmware_sha256", "");
  if (c.contains("manifest_sequence") && c["manifest_sequence"].is_number_unsigned())
    e.manifest_sequence = c["manifest_sequence"].get<std::uint64_t>();
  if (c.contains("steps") && c["steps"].is_array())
    for (const auto& s : c["steps"])
      e.steps.push_back({s.value("step", ""), s.value("result", ""), s.value("duration_ms", std::int64_t{0}),
                         s.value("error", "")});
  return e;
}

Ledger::Ledger(const std::filesystem::path& path) : db_(nullptr, close_db) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  db_.reset(db);
  if (rc != SQLITE_OK)
    throw Error(ExitCode::failure, fmt::format("cannot open ledger {}: {}", path.string(), db ? sqlite3_errmsg(db) : "out of memory"));
  sqlite3_busy_timeout(db, 10000);
  // Switching to WAL needs a moment alone with the file: while another station opens the same
  // ledger, SQLite can answer SQLITE_BUSY without consulting the busy handler. Retry for a while.
  for (int attempt = 0;; ++attempt) {
    int pragma_rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (pragma_rc == SQLITE_OK) break;
    if ((pragma_rc != SQLITE_BUSY && pragma_rc != SQLITE_LOCKED) || attempt >= 200) fail(db, "PRAGMA journal_mode=WAL");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  exec(db, "PRAGMA synchronous=FULL");
  exec(db,
       "CREATE TABLE IF NOT EXISTS ledger ("
       " seq INTEGER PRIMARY KEY,"
       " kind TEXT NOT NULL,"          // 'unit' or 'checkpoint'
       " content TEXT NOT NULL,"       // canonical JSON (sorted keys)
       " prev_hash TEXT NOT NULL,"
       " hash TEXT NOT NULL,"
       " signature TEXT)");            // checkpoints: hex signature over the row hash
  // Certificates being issued right now, by any process sharing this ledger (the quota counts them).
  exec(db,
       "CREATE TABLE IF NOT EXISTS reservations ("
       " uid TEXT PRIMARY KEY,"
       " pid INTEGER NOT NULL,"
       " reserved_at TEXT NOT NULL)");
}

Ledger::~Ledger() = default;

std::int64_t Ledger::append_row(const std::string& kind, const std::string& content, const Signer* sign_with,
                                const std::string& consume_reservation) {
  sqlite3* db = db_.get();
  Transaction tx(db);
  std::int64_t seq = 1;
  std::string prev = genesis_hash;
  {
    auto last = prepare(db, "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1");
    if (sqlite3_step(last.get()) == SQLITE_ROW) {
      seq = sqlite3_column_int64(last.get(), 0) + 1;
      prev = column_text(last.get(), 1);
    }
  }
  std::string hash = ledger_row_hash(prev, seq, kind, content);
  std::string signature;
  if (sign_with) signature = to_hex(sign_message(*sign_with, from_hex(hash)));
  auto insert = prepare(db, "INSERT INTO ledger (seq, kind, content, prev_hash, hash, signature) VALUES (?,?,?,?,?,?)");
  sqlite3_bind_int64(insert.get(), 1, seq);
  bind_text(insert.get(), 2, kind);
  bind_text(insert.get(), 3, content);
  bind_text(insert.get(), 4, prev);
  bind_text(insert.get(), 5, hash);
  if (sign_with) bind_text(insert.get(), 6, signature);
  else sqlite3_bind_null(insert.get(), 6);
  if (sqlite3_step(insert.get()) != SQLITE_DONE) fail(db, "cannot append a row");
  if (!consume_reservation.empty()) {
    auto drop = prepare(db, "DELETE FROM reservations WHERE uid = ?");
    bind_text(drop.get(), 1, consume_reservation);
    if (sqlite3_step(drop.get()) != SQLITE_DONE) fail(db, "cannot consume a certificate reservation");
  }
  tx.commit();
  return seq;
}

std::int64_t Ledger::append(const LedgerEntry& entry) {
  std::lock_guard lock(mutex_);
  // The row that counts an issued certificate (or closes the unit) replaces its reservation atomically.
  bool consumes = entry.certificate_issued || entry.result == "provisioned";
  auto seq = append_row("unit", to_json(entry).dump(), nullptr, consumes ? entry.uid : std::string());
  if (signer_ && checkpoint_every_ > 0 && ++rows_since_checkpoint_ >= checkpoint_every_) {
    Json content{{"kind", "checkpoint"},
                 {"time", utc_now_iso8601()},
                 {"station_public_key", to_hex(signer_->public_key_der())}};
    append_row("checkpoint", content.dump(), signer_);
    rows_since_checkpoint_ = 0;
  }
  return seq;
}

void Ledger::checkpoint() {
  std::lock_guard lock(mutex_);
  if (!signer_) throw Error(ExitCode::failure, "ledger: no station key to sign a checkpoint with");
  auto last = prepare(db_.get(), "SELECT kind FROM ledger ORDER BY seq DESC LIMIT 1");
  if (sqlite3_step(last.get()) != SQLITE_ROW || column_text(last.get(), 0) == "checkpoint") return;
  last.reset();
  Json content{{"kind", "checkpoint"},
               {"time", utc_now_iso8601()},
               {"station_public_key", to_hex(signer_->public_key_der())}};
  append_row("checkpoint", content.dump(), signer_);
  rows_since_checkpoint_ = 0;
}

namespace {

std::int64_t count(sqlite3* db, const char* sql, const std::string& bound = {}) {
  auto q = prepare(db, sql);
  if (!bound.empty()) bind_text(q.get(), 1, bound);
  if (sqlite3_step(q.get()) != SQLITE_ROW) fail(db, "count");
  return sqlite3_column_int64(q.get(), 0);
}

constexpr const char* count_issued =
    "SELECT count(*) FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.certificate_issued') = 1";

}  // namespace

std::int64_t Ledger::certificates_issued() {
  std::lock_guard lock(mutex_);
  return count(db_.get(), count_issued);
}

std::int64_t Ledger::certificates_reserved() {
  std::lock_guard lock(mutex_);
  return count(db_.get(), "SELECT count(*) FROM reservations");
}

bool Ledger::records_certificate(const std::string& serial) {
  std::lock_guard lock(mutex_);
  return count(db_.get(),
               "SELECT count(*) FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.serial') = ?", serial) > 0;
}

void Ledger::reserve_certificate(const std::string& uid, std::optional<std::int64_t> quota) {
  std::lock_guard lock(mutex_);
  sqlite3* db = db_.get();
  // BEGIN IMMEDIATE takes the database's write lock before counting: two stations sharing this
  // file serialise here, so neither can pass the check on a count the other is about to change.
  Transaction tx(db);
  if (quota) {
    auto issued = count(db, count_issued);
    auto reserved = count(db, "SELECT count(*) FROM reservations WHERE uid != ?", uid);
    if (issued + reserved >= *quota)
      throw Error(ExitCode::conflict,
                  fmt::format("quota reached: {} of {} certificates issued by this station{}", issued, *quota,
                              reserved > 0 ? fmt::format(" ({} more being issued)", reserved) : std::string()),
                  "raise the quota in the station profile only with the product owner's approval");
  }
  auto insert = prepare(db, "INSERT OR REPLACE INTO reservations (uid, pid, reserved_at) VALUES (?, ?, ?)");
  bind_text(insert.get(), 1, uid);
  sqlite3_bind_int64(insert.get(), 2, static_cast<std::int64_t>(getpid()));
  bind_text(insert.get(), 3, utc_now_iso8601());
  if (sqlite3_step(insert.get()) != SQLITE_DONE) fail(db, "cannot reserve a certificate");
  tx.commit();
}

void Ledger::release_certificate(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto drop = prepare(db_.get(), "DELETE FROM reservations WHERE uid = ?");
  bind_text(drop.get(), 1, uid);
  if (sqlite3_step(drop.get()) != SQLITE_DONE) fail(db_.get(), "cannot release a certificate reservation");
}

std::optional<LedgerEntry> Ledger::latest_provisioned(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto q = prepare(db_.get(),
                   "SELECT content FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.uid') = ? "
                   "AND json_extract(content, '$.result') = 'provisioned' ORDER BY seq DESC LIMIT 1");
  bind_text(q.get(), 1, uid);
  if (sqlite3_step(q.get()) != SQLITE_ROW) return std::nullopt;
  return ledger_entry_from_json(Json::parse(column_text(q.get(), 0)));
}

std::optional<std::string> Ledger::latest_certificate(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto q = prepare(db_.get(),
                   "SELECT json_extract(content, '$.certificate') FROM ledger WHERE kind = 'unit' "
                   "AND json_extract(content, '$.uid') = ? AND json_extract(content, '$.certificate') != '' "
                   "ORDER BY seq DESC LIMIT 1");
  bind_text(q.get(), 1, uid);
  if (sqlite3_step(q.get()) != SQLITE_ROW) return std::nullopt;
  return column_text(q.get(), 0);
}

LedgerVerifyReport Ledger::verify(ByteView station_public_key) {
  std::lock_guard lock(mutex_);
  LedgerVerifyReport report;
  auto q = prepare(db_.get(), "SELECT seq, kind, content, prev_hash, hash, signature FROM ledger ORDER BY seq");
  std::string prev = genesis_hash;
  std::int64_t expected_seq = 1;
  std::set<std::string> uids;
  auto bad = [&](std::int64_t seq, std::string problem) {
    report.ok = false;
    report.bad_row = seq;
    report.problem = std::move(problem);
  };
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    std::int64_t seq = sqlite3_column_int64(q.get(), 0);
    std::string kind = column_text(q.get(), 1), content = column_text(q.get(), 2);
    std::string prev_hash = column_text(q.get(), 3), hash = column_text(q.get(), 4);
    ++report.rows;
    if (seq != expected_seq) {
      bad(seq, fmt::format("row {} follows row {}: row {} was deleted or rows were reordered", seq, expected_seq - 1,
                           expected_seq));
      break;
    }
    if (prev_hash != prev) {
      bad(seq, fmt::format("row {} does not link to row {} (previous hash differs): a row was deleted, "
                           "inserted or reordered", seq, seq - 1));
      break;
    }
    if (ledger_row_hash(prev_hash, seq, kind, content) != hash) {
      bad(seq, fmt::format("row {} was edited: its content no longer matches its hash", seq));
      break;
    }
    if (kind == "checkpoint") {
      Bytes key;
      try {
        key = from_hex(Json::parse(content).at("station_public_key").get<std::string>());
      } catch (const std::exception&) {
        bad(seq, fmt::format("checkpoint row {} names no station key", seq));
        break;
      }
      if (!station_public_key.empty() && !std::equal(key.begin(), key.end(), station_public_key.begin(),
                                                     station_public_key.end())) {
        bad(seq, fmt::format("checkpoint row {} is signed by a key that is not the station key", seq));
        break;
      }
      bool signed_ok = false;
      try {
        signed_ok = verify_message(key, from_hex(hash), from_hex(column_text(q.get(), 5)));
      } catch (const Error&) {
      }
      if (!signed_ok) {
        bad(seq, fmt::format("checkpoint row {}: signature does not verify with the station key", seq));
        break;
      }
      ++report.checkpoints;
      report.unsealed_rows = 0;
    } else if (kind == "unit") {
      try {
        uids.insert(Json::parse(content).at("uid").get<std::string>());
      } catch (const std::exception&) {
        bad(seq, fmt::format("row {} is not a unit record", seq));
        break;
      }
      ++report.unsealed_rows;
    } else {
      bad(seq, fmt::format("row {} has unknown kind '{}'", seq, kind));
      break;
    }
    prev = hash;
    ++expected_seq;
  }
  report.units = static_cast<std::int64_t>(uids.size());
  return report;
}

std::int64_t Ledger::export_bundle(const std::filesystem::path& out, const Signer& station_signer) {
  std::lock_guard lock(mutex_);
  // Newest successful row per UID, in ledger order.
  auto q = prepare(db_.get(),
                   "SELECT content, hash, seq FROM ledger WHERE seq IN (SELECT max(seq) FROM ledger WHERE kind = 'unit' "
                   "AND json_extract(content, '$.result') = 'provisioned' GROUP BY json_extract(content, '$.uid')) "
                   "ORDER BY seq");
  AtomicFile file(out, 0644);
  Hasher hasher(HashAlg::sha256);
  std::int64_t units = 0;
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    auto c = Json::parse(column_text(q.get(), 0));
    nlohmann::ordered_json unit{{"uid", c.value("uid", "")},
                                {"product", c.value("product", "")},
                                {"state", "provisioned"},
                                {"certificate", c.value("certificate", "")},
                                {"public_key", c.value("public_key", "")},
                                {"serial", c.value("serial", "")},
                                {"station", c.value("station", "")},
                                {"profile_hash", c.value("profile_hash", "")},
                                {"provisioned_at", c.value("finished_at", "")},
                                {"ledger_seq", sqlite3_column_int64(q.get(), 2)},
                                {"ledger_hash", column_text(q.get(), 1)}};
    // The firmware it left the line with (kiln device import reads `version`).
    if (c.contains("firmware_version")) unit["version"] = c["firmware_version"];
    if (c.contains("manifest_sequence")) unit["manifest_sequence"] = c["manifest_sequence"];
    std::string line = unit.dump() + "\n";
    hasher.update(as_bytes(line));
    file.write(line);
    ++units;
  }
  Bytes bundle_digest = hasher.finish();
  // ECDSA signs the digest; Ed25519 signs the digest bytes as its message.
  Bytes signature = station_signer.sign(bundle_digest, HashAlg::sha256);
  nlohmann::ordered_json trailer{{"bundle_signature", to_hex(signature)},
                                 {"algorithm", std::string(key_type_name(station_signer.type())) + "-sha256"},
                                 {"signed", "sha256 of every preceding line, newlines included"},
                                 {"bundle_sha256", to_hex(bundle_digest)},
                                 {"units", units},
                                 {"station_public_key", public_key_pem(station_signer.public_key_der())}};
  file.write(trailer.dump() + "\n");
  file.commit();
  return units;
}

LedgerStats Ledger::stats() {
  std::lock_guard lock(mutex_);
  LedgerStats s;
  auto q = prepare(db_.get(), "SELECT content FROM ledger WHERE kind = 'unit' ORDER BY seq");
  std::set<std::string> attempted, provisioned;
  std::map<std::string, std::int64_t> failures;
  std::string first_start, last_finish;
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    auto e = ledger_entry_from_json(Json::parse(column_text(q.get(), 0)));
    ++s.attempts;
    attempted.insert(e.uid);
    if (e.result == "provisioned") provisioned.insert(e.uid);
    else {
      ++s.failed_attempts;
      ++failures[e.failed_step.empty() ? "unknown" : e.failed_step];
    }
    if (e.certificate_issued) ++s.certificates_issued;
    if (first_start.empty() || e.started_at < first_start) first_start = e.started_at;
    if (e.finished_at > last_finish) last_finish = e.finished_at;
  }
  s.certificates_reserved = count(db_.get(), "SELECT count(*) FROM reservations");
  s.units_attempted = static_cast<std::int64_t>(attempted.size());
  s.units_provisioned = static_cast<std::int64_t>(provisioned.size());
  s.yield = attempted.empty() ? 0 : static_cast<double>(provisioned.size()) / static_cast<double>(attempted.size());
  for (auto& [step, count] : failures) s.failures_per_step.emplace_back(step, count);
  auto parse_time = [](const std::string& text) -> double {
    std::tm tm{};
    if (text.size() < 19 || !strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
    double millis = text.size() >= 23 ? std::stod(text.substr(20, 3)) / 1000.0 : 0;
    return static_cast<double>(timegm(&tm)) + millis;
  };
  double span = parse_time(last_finish) - parse_time(first_start);
  if (span > 0) s.units_per_hour = static_cast<double>(s.units_provisioned) * 3600.0 / span;
  return s;
}

}  // namespace kiln
