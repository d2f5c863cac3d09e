// Station ledger on SQLite: append with a hash chain, signed checkpoints, verify, export, stats, quota.
#include "provisioning/ledger.hpp"

#include <openssl/rand.h>

#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/sqlite.hpp"
#include "core/time.hpp"
#include "provisioning/station_ca.hpp"

namespace kiln {

using Json = nlohmann::json;  // sorted keys: dump() is the canonical form the hash covers

namespace {

constexpr const char* genesis_hash = "0000000000000000000000000000000000000000000000000000000000000000";

}  // namespace

std::string ledger_row_hash(const std::string& prev_hash, std::int64_t seq, const std::string& kind,
                            const std::string& content) {
  std::string text = fmt::format("{}\n{}\n{}\n{}", prev_hash, seq, kind, content);
  return to_hex(digest(HashAlg::sha256, as_bytes(text)));
}

Json to_json(const LedgerEntry& e) {
  Json steps = Json::array();
  for (const auto& s : e.steps) {
    Json step{{"step", s.step}, {"result", step_status_name(s.result)}, {"duration_ms", s.duration_ms}};
    if (!s.error.empty()) step["error"] = s.error;
    steps.push_back(step);
  }
  Json out{{"uid", e.uid},
              {"result", board_status_name(e.result)},
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
  if (!e.encryption_public_key_pem.empty()) out["encryption_key"] = e.encryption_public_key_pem;
  if (e.reprovision) {
    out["reprovision"] = true;
    out["replaces_serial"] = e.replaces_serial;
  }
  return out;
}

namespace {

// A row's result as the enum; the chain covers the text, so an unknown one is a ledger this version cannot read.
template <typename Status>
Status status_from(const Json& row, std::optional<Status> (*parse)(std::string_view)) {
  auto text = row.value("result", "");
  if (auto status = parse(text)) return *status;
  throw Error(ExitCode::failure, fmt::format("ledger row {}: unknown result '{}'", row.value("uid", "?"), text),
              "the ledger was written by a newer kiln, or edited: read it with that kiln, or run 'kiln factory ledger verify'");
}

}  // namespace

LedgerEntry ledger_entry_from_json(const Json& c) {
  LedgerEntry e;
  e.uid = c.value("uid", "");
  e.result = status_from(c, parse_board_status);
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
  e.encryption_public_key_pem = c.value("encryption_key", "");
  if (c.contains("manifest_sequence") && c["manifest_sequence"].is_number_unsigned())
    e.manifest_sequence = c["manifest_sequence"].get<std::uint64_t>();
  e.reprovision = c.value("reprovision", false);
  e.replaces_serial = c.value("replaces_serial", "");
  if (c.contains("steps") && c["steps"].is_array())
    for (const auto& s : c["steps"])
      e.steps.push_back({s.value("step", ""), status_from(s, parse_step_status), s.value("duration_ms", std::int64_t{0}),
                         s.value("error", "")});
  return e;
}

// Stations sharing one ledger file wait up to 10 s for each other's appends.
Ledger::Ledger(const std::filesystem::path& path)
    : db_(std::make_unique<sqlite::Db>(path.string(), sqlite::Options{.label = "ledger", .busy_timeout_ms = 10000})),
      path_(path.string()) {
  auto& db = *db_;
  db.exec("PRAGMA synchronous=FULL");
  db.exec(
       "CREATE TABLE IF NOT EXISTS ledger ("
       " seq INTEGER PRIMARY KEY,"
       " kind TEXT NOT NULL,"          // 'unit' or 'checkpoint'
       " content TEXT NOT NULL,"       // canonical JSON (sorted keys)
       " prev_hash TEXT NOT NULL,"
       " hash TEXT NOT NULL,"
       " signature TEXT)");            // checkpoints: hex signature over the row hash
  // The signed head: the last row's sequence number and hash, signed by the station key in the
  // same transaction as every append. Deleting rows from the end no longer matches it.
  db.exec(
       "CREATE TABLE IF NOT EXISTS head ("
       " id INTEGER PRIMARY KEY CHECK (id = 1),"
       " seq INTEGER NOT NULL,"
       " hash TEXT NOT NULL,"
       " signature TEXT NOT NULL)");
  // Certificates being issued right now, by any process sharing this ledger (the quota counts them).
  db.exec(
       "CREATE TABLE IF NOT EXISTS reservations ("
       " uid TEXT PRIMARY KEY,"
       " pid INTEGER NOT NULL,"
       " reserved_at TEXT NOT NULL)");
}

Ledger::~Ledger() = default;

namespace {

struct StationRow {
  std::int64_t seq = 0;
  Bytes public_key;
  std::string ledger_id;
};

// The row that binds the ledger to its station key (the first one; verify refuses a second).
std::optional<StationRow> read_station_row(sqlite::Db& db) {
  auto q = db.prepare("SELECT seq, content FROM ledger WHERE kind = 'station' ORDER BY seq LIMIT 1");
  if (!q.step()) return std::nullopt;
  StationRow row;
  row.seq = q.integer(0);
  try {
    auto content = Json::parse(q.text(1));
    row.public_key = from_hex(content.at("station_public_key").get<std::string>());
    row.ledger_id = content.at("ledger_id").get<std::string>();
  } catch (const std::exception&) {
    throw Error(ExitCode::verification_failed, fmt::format("ledger: row {} (station binding) is malformed", row.seq),
                "kiln factory ledger verify names what is wrong");
  }
  return row;
}

// Station keys named by checkpoints, for ledgers written before the station row existed.
std::set<std::string> checkpoint_keys(sqlite::Db& db) {
  std::set<std::string> keys;
  auto q = db.prepare("SELECT DISTINCT json_extract(content, '$.station_public_key') FROM ledger WHERE kind = 'checkpoint'");
  while (q.step()) keys.insert(q.text(0));
  return keys;
}

std::string key_fingerprint(ByteView public_key) { return to_hex(digest(HashAlg::sha256, public_key)).substr(0, 16); }

Error foreign_ledger(const std::string& path, ByteView owner, ByteView ours) {
  return Error(ExitCode::conflict,
               fmt::format("ledger {} belongs to another station key (sha256 {}…); this station's key is sha256 {}…: "
                           "it would append rows its owner cannot verify",
                           path, key_fingerprint(owner), key_fingerprint(ours)),
               "give this station its own ledger: kiln factory init --ledger PATH, or set station.ledger in the "
               "profile (each station key keeps its own ledger)");
}

}  // namespace

std::optional<Bytes> Ledger::station_public_key() {
  std::lock_guard lock(mutex_);
  if (auto row = read_station_row(*db_)) return row->public_key;
  auto keys = checkpoint_keys(*db_);
  if (keys.empty()) return std::nullopt;
  return from_hex(*keys.begin());
}

void Ledger::set_station_signer(const Signer* signer, int checkpoint_every) {
  std::lock_guard lock(mutex_);
  signer_ = nullptr;
  checkpoint_every_ = checkpoint_every;
  if (!signer) return;
  auto& db = *db_;
  Bytes ours = signer->public_key_der();
  sqlite::Transaction tx(db);
  if (auto row = read_station_row(db)) {
    if (row->public_key != ours) throw foreign_ledger(path_, row->public_key, ours);
    ledger_id_ = row->ledger_id;
  } else {
    // A new ledger, or one written before station rows: bind it now, unless another key signed it.
    for (const auto& key : checkpoint_keys(db))
      if (from_hex(key) != ours) throw foreign_ledger(path_, from_hex(key), ours);
    Bytes id(16);
    if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) throw Error(ExitCode::failure, "no randomness");
    ledger_id_ = to_hex(id);
    Json content{{"kind", "station"},
                 {"ledger_id", ledger_id_},
                 {"station_public_key", to_hex(ours)},
                 {"created_at", now_iso8601_millis()}};
    signer_ = signer;  // insert_row signs the head with it
    try {
      insert_row("station", content.dump(), signer);
    } catch (...) {
      signer_ = nullptr;
      throw;
    }
  }
  tx.commit();
  signer_ = signer;
}

std::int64_t Ledger::insert_row(const std::string& kind, const std::string& content, const Signer* sign_with) {
  auto& db = *db_;
  if (!signer_) throw Error(ExitCode::failure, "ledger: no station key is bound to this ledger (set_station_signer)");
  std::int64_t seq = 1;
  std::string prev = genesis_hash;
  {
    auto last = db.prepare("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1");
    if (last.step()) {
      seq = last.integer(0) + 1;
      prev = last.text(1);
    }
  }
  std::string hash = ledger_row_hash(prev, seq, kind, content);
  std::string signature;
  if (sign_with) signature = to_hex(sign_station_message(*sign_with, from_hex(hash)));
  auto insert = db.prepare("INSERT INTO ledger (seq, kind, content, prev_hash, hash, signature) VALUES (?,?,?,?,?,?)");
  insert.bind(1, seq);
  insert.bind(2, kind);
  insert.bind(3, content);
  insert.bind(4, prev);
  insert.bind(5, hash);
  if (sign_with) insert.bind(6, signature);
  else insert.bind_null(6);
  insert.run();
  // The head moves with the row, in the same transaction: both or neither are durable.
  std::string head_signature = to_hex(sign_station_message(*signer_, as_bytes(ledger_head_message(ledger_id_, seq, hash))));
  auto head = db.prepare("INSERT OR REPLACE INTO head (id, seq, hash, signature) VALUES (1, ?, ?, ?)");
  head.bind(1, seq);
  head.bind(2, hash);
  head.bind(3, head_signature);
  head.run();
  return seq;
}

std::int64_t Ledger::append_row(const std::string& kind, const std::string& content, const Signer* sign_with,
                                const std::string& consume_reservation) {
  auto& db = *db_;
  sqlite::Transaction tx(db);
  auto seq = insert_row(kind, content, sign_with);
  if (!consume_reservation.empty()) {
    auto drop = db.prepare("DELETE FROM reservations WHERE uid = ?");
    drop.bind(1, consume_reservation);
    drop.run();
  }
  tx.commit();
  return seq;
}

std::int64_t Ledger::append(const LedgerEntry& entry) {
  std::lock_guard lock(mutex_);
  // The row that counts an issued certificate (or closes the unit) replaces its reservation atomically.
  bool consumes = entry.certificate_issued || entry.result == BoardStatus::provisioned;
  auto seq = append_row("unit", to_json(entry).dump(), nullptr, consumes ? entry.uid : std::string());
  if (signer_ && checkpoint_every_ > 0 && ++rows_since_checkpoint_ >= checkpoint_every_) {
    Json content{{"kind", "checkpoint"},
                 {"time", now_iso8601_millis()},
                 {"station_public_key", to_hex(signer_->public_key_der())}};
    append_row("checkpoint", content.dump(), signer_);
    rows_since_checkpoint_ = 0;
  }
  return seq;
}

void Ledger::checkpoint() {
  std::lock_guard lock(mutex_);
  if (!signer_) throw Error(ExitCode::failure, "ledger: no station key to sign a checkpoint with");
  {
    auto last = db_->prepare("SELECT kind FROM ledger ORDER BY seq DESC LIMIT 1");
    if (!last.step() || last.text(0) == "checkpoint") return;
  }
  Json content{{"kind", "checkpoint"},
               {"time", now_iso8601_millis()},
               {"station_public_key", to_hex(signer_->public_key_der())}};
  append_row("checkpoint", content.dump(), signer_);
  rows_since_checkpoint_ = 0;
}

namespace {

std::int64_t count(sqlite::Db& db, const char* sql, const std::string& bound = {}) {
  auto q = db.prepare(sql);
  if (!bound.empty()) q.bind(1, bound);
  if (!q.step()) db.fail("count");
  return q.integer(0);
}

constexpr const char* count_issued =
    "SELECT count(*) FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.certificate_issued') = 1";

}  // namespace

std::int64_t Ledger::certificates_issued() {
  std::lock_guard lock(mutex_);
  return count(*db_, count_issued);
}

std::int64_t Ledger::certificates_reserved() {
  std::lock_guard lock(mutex_);
  return count(*db_, "SELECT count(*) FROM reservations");
}

bool Ledger::records_certificate(const std::string& serial) {
  std::lock_guard lock(mutex_);
  return count(*db_,
               "SELECT count(*) FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.serial') = ?", serial) > 0;
}

void Ledger::reserve_certificate(const std::string& uid, std::optional<std::int64_t> quota) {
  std::lock_guard lock(mutex_);
  auto& db = *db_;
  // BEGIN IMMEDIATE takes the database's write lock before counting: two stations sharing this
  // file serialise here, so neither can pass the check on a count the other is about to change.
  sqlite::Transaction tx(db);
  if (quota) {
    auto issued = count(db, count_issued);
    auto reserved = count(db, "SELECT count(*) FROM reservations WHERE uid != ?", uid);
    if (issued + reserved >= *quota)
      throw Error(ExitCode::conflict,
                  fmt::format("quota reached: {} of {} certificates issued by this station{}", issued, *quota,
                              reserved > 0 ? fmt::format(" ({} more being issued)", reserved) : std::string()),
                  "raise the quota in the station profile only with the product owner's approval");
  }
  auto insert = db.prepare("INSERT OR REPLACE INTO reservations (uid, pid, reserved_at) VALUES (?, ?, ?)");
  insert.bind(1, uid);
  insert.bind(2, static_cast<std::int64_t>(getpid()));
  insert.bind(3, now_iso8601_millis());
  insert.run();
  tx.commit();
}

void Ledger::release_certificate(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto drop = db_->prepare("DELETE FROM reservations WHERE uid = ?");
  drop.bind(1, uid);
  drop.run();
}

std::optional<LedgerEntry> Ledger::latest_provisioned(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto q = db_->prepare("SELECT content FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.uid') = ? "
                   "AND json_extract(content, '$.result') = ? ORDER BY seq DESC LIMIT 1");
  q.bind(1, uid);
  q.bind(2, std::string(board_status_name(BoardStatus::provisioned)));
  if (!q.step()) return std::nullopt;
  return ledger_entry_from_json(Json::parse(q.text(0)));
}

std::optional<std::string> Ledger::latest_certificate(const std::string& uid) {
  std::lock_guard lock(mutex_);
  auto q = db_->prepare("SELECT json_extract(content, '$.certificate') FROM ledger WHERE kind = 'unit' "
                   "AND json_extract(content, '$.uid') = ? AND json_extract(content, '$.certificate') != '' "
                   "ORDER BY seq DESC LIMIT 1");
  q.bind(1, uid);
  if (!q.step()) return std::nullopt;
  return q.text(0);
}

LedgerVerifyReport Ledger::verify(ByteView station_public_key) {
  std::lock_guard lock(mutex_);
  LedgerVerifyReport report;
  auto q = db_->prepare("SELECT seq, kind, content, prev_hash, hash, signature FROM ledger ORDER BY seq");
  std::string prev = genesis_hash;
  std::int64_t expected_seq = 1;
  std::set<std::string> uids;
  Bytes expected_key(station_public_key.begin(), station_public_key.end());  // empty: the station row's
  auto bad = [&](std::int64_t seq, std::string problem) {
    report.ok = false;
    report.bad_row = seq;
    report.problem = std::move(problem);
  };
  // A signed row (station binding or checkpoint): names its key, which must be the station key.
  auto signed_row = [&](std::int64_t seq, const std::string& what, const std::string& content, const std::string& hash,
                        const std::string& signature, Bytes& key) {
    try {
      key = from_hex(Json::parse(content).at("station_public_key").get<std::string>());
    } catch (const std::exception&) {
      bad(seq, fmt::format("{} row {} names no station key", what, seq));
      return false;
    }
    if (!expected_key.empty() && key != expected_key) {
      bad(seq, fmt::format("{} row {} is signed by a key that is not the station key (sha256 {}…)", what, seq,
                           key_fingerprint(key)));
      return false;
    }
    bool signed_ok = false;
    try {
      signed_ok = verify_station_message(key, from_hex(hash), from_hex(signature));
    } catch (const Error&) {
    }
    if (!signed_ok) bad(seq, fmt::format("{} row {}: signature does not verify with the station key", what, seq));
    return signed_ok;
  };
  while (q.step()) {
    std::int64_t seq = q.integer(0);
    std::string kind = q.text(1), content = q.text(2);
    std::string prev_hash = q.text(3), hash = q.text(4);
    std::string signature = q.text(5);
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
    if (kind == "station") {
      if (!report.ledger_id.empty()) {
        bad(seq, fmt::format("row {} binds the ledger to a station a second time", seq));
        break;
      }
      Bytes key;
      if (!signed_row(seq, "station", content, hash, signature, key)) break;
      try {
        report.ledger_id = Json::parse(content).at("ledger_id").get<std::string>();
      } catch (const std::exception&) {
      }
      if (report.ledger_id.empty()) {
        bad(seq, fmt::format("station row {} names no ledger id", seq));
        break;
      }
      expected_key = key;
      report.unsealed_rows = 0;
    } else if (kind == "checkpoint") {
      Bytes key;
      if (!signed_row(seq, "checkpoint", content, hash, signature, key)) break;
      ++report.checkpoints;
      report.unsealed_rows = 0;
    } else if (kind == "unit") {
      try {
        auto unit = Json::parse(content);
        uids.insert(unit.at("uid").get<std::string>());
        if (unit.value("reprovision", false)) ++report.reprovisions;
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
  if (!report.ok) return report;

  // Where the ledger ends: the signed head must name the last row. Rows deleted from the end
  // (with or without their checkpoint) leave a head that names a row that is gone.
  std::int64_t last_seq = expected_seq - 1;
  auto h = db_->prepare("SELECT seq, hash, signature FROM head WHERE id = 1");
  bool has_head = h.step();
  if (report.ledger_id.empty()) {
    // Unbound: written before station rows (or emptied). Rows after the last checkpoint carry no signature.
    // A head is only written once a station row exists: a head without one means the rows were deleted,
    // every one of them included (an empty ledger with a head is a truncated ledger, not a new one).
    report.unverified_rows = report.unsealed_rows;
    if (has_head)
      bad(std::max<std::int64_t>(last_seq, 1),
          last_seq > 0 ? "the ledger has a signed head but no station row: its station binding was deleted"
                       : fmt::format("the ledger has no rows left but a signed head that covers {} rows: every row, "
                                     "its station binding included, was deleted",
                                     h.integer(0)));
    return report;
  }
  if (!has_head) {
    bad(last_seq + 1, fmt::format("the ledger's signed head is missing: rows after row {} may have been deleted "
                                  "(truncated) together with it",
                                  last_seq));
    return report;
  }
  std::int64_t head_seq = h.integer(0);
  std::string head_hash = h.text(1), head_signature = h.text(2);
  bool head_signed = false;
  try {
    head_signed = verify_station_message(expected_key, as_bytes(ledger_head_message(report.ledger_id, head_seq, head_hash)),
                                 from_hex(head_signature));
  } catch (const Error&) {
  }
  if (!head_signed) {
    bad(last_seq, "the ledger head's signature does not verify with the station key: the head was forged or edited");
  } else if (head_seq > last_seq) {
    bad(last_seq + 1, fmt::format("the ledger ends at row {} but its signed head covers {} rows: rows {} to {} were "
                                  "deleted from its end (truncated)",
                                  last_seq, head_seq, last_seq + 1, head_seq));
  } else if (head_seq < last_seq) {
    bad(head_seq + 1, fmt::format("rows {} to {} follow the signed head: they were added without the station key",
                                  head_seq + 1, last_seq));
  } else if (head_hash != prev) {
    bad(last_seq, fmt::format("row {} is not the row the signed head covers: the end of the ledger was replaced",
                              last_seq));
  } else {
    report.head_verified = true;
    report.unverified_rows = 0;
  }
  return report;
}

LedgerHead Ledger::head() {
  std::lock_guard lock(mutex_);
  LedgerHead out;
  if (auto row = read_station_row(*db_)) out.ledger_id = row->ledger_id;
  auto h = db_->prepare("SELECT seq, hash, signature FROM head WHERE id = 1");
  if (h.step()) {
    out.rows = h.integer(0);
    out.hash = h.text(1);
    out.signature = h.text(2);
  }
  return out;
}

std::int64_t Ledger::export_bundle(const std::filesystem::path& out, const Signer& station_signer) {
  std::lock_guard lock(mutex_);
  // One read snapshot: units, head and chain agree even while another station appends to the file.
  sqlite::ReadTransaction snapshot(*db_);
  // Newest successful row per UID, in ledger order.
  auto q = db_->prepare("SELECT content, hash, seq FROM ledger WHERE seq IN (SELECT max(seq) FROM ledger WHERE kind = 'unit' "
                   "AND json_extract(content, '$.result') = ? GROUP BY json_extract(content, '$.uid')) "
                   "ORDER BY seq");
  q.bind(1, std::string(board_status_name(BoardStatus::provisioned)));
  // UIDs this station certified more than once (one pass, not one query per unit).
  std::map<std::string, std::int64_t> certified_more_than_once;
  {
    auto twice = db_->prepare("SELECT json_extract(content, '$.uid'), count(DISTINCT json_extract(content, '$.serial')) "
                         "FROM ledger WHERE kind = 'unit' AND json_extract(content, '$.serial') != '' "
                         "GROUP BY json_extract(content, '$.uid') HAVING count(DISTINCT json_extract(content, '$.serial')) > 1");
    while (twice.step())
      certified_more_than_once[twice.text(0)] = twice.integer(1);
  }
  AtomicFile file(out, 0644);
  Hasher hasher(HashAlg::sha256);
  std::int64_t units = 0;
  while (q.step()) {
    auto c = Json::parse(q.text(0));
    nlohmann::ordered_json unit{{"uid", c.value("uid", "")},
                                {"product", c.value("product", "")},
                                {"state", std::string(board_status_name(BoardStatus::provisioned))},
                                {"certificate", c.value("certificate", "")},
                                {"public_key", c.value("public_key", "")},
                                {"serial", c.value("serial", "")},
                                {"station", c.value("station", "")},
                                {"profile_hash", c.value("profile_hash", "")},
                                {"provisioned_at", c.value("finished_at", "")},
                                {"ledger_seq", q.integer(2)},
                                {"ledger_hash", q.text(1)}};
    // The firmware it left the line with (kiln device import reads `version`).
    if (c.contains("firmware_version")) unit["version"] = c["firmware_version"];
    if (c.contains("manifest_sequence")) unit["manifest_sequence"] = c["manifest_sequence"];
    // Its image-encryption public key: the service wraps content keys to it (docs/encrypted-delivery.md).
    if (c.contains("encryption_key")) unit["encryption_key"] = c["encryption_key"];
    // A UID this station certified more than once (an explicit --reprovision): the service must
    // not take the new key silently (revoke or unclaim the unit first).
    if (auto it = certified_more_than_once.find(c.value("uid", "")); it != certified_more_than_once.end()) {
      unit["reprovisioned"] = true;
      unit["certificates_issued"] = it->second;
    }
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
  // The ledger's signed head at export time (how many rows the station had written and the last
  // row's hash) and the hash of every row up to it, signed now: the service remembers the head it
  // imported and refuses a later bundle of the same ledger_id that does not extend it (fewer rows, or
  // another hash at the remembered row), which is a ledger truncated or rolled back to an older copy.
  auto station = read_station_row(*db_);
  auto h = db_->prepare("SELECT seq, hash, signature FROM head WHERE id = 1");
  if (station && h.step()) {
    std::int64_t rows = h.integer(0);
    std::string head_hash = h.text(1);
    std::vector<std::string> chain;
    auto hashes = db_->prepare("SELECT hash FROM ledger WHERE seq <= ? ORDER BY seq");
    hashes.bind(1, rows);
    while (hashes.step()) chain.push_back(hashes.text(0));
    if (static_cast<std::int64_t>(chain.size()) != rows || chain.empty() || chain.back() != head_hash)
      throw Error(ExitCode::verification_failed,
                  fmt::format("ledger: its rows do not end where its signed head says (row {})", rows),
                  "kiln factory ledger verify names what is wrong");
    auto chain_signature =
        to_hex(sign_station_message(station_signer, as_bytes(ledger_chain_message(station->ledger_id, chain))));
    trailer["ledger_head"] = nlohmann::ordered_json{{"ledger_id", station->ledger_id},
                                                    {"rows", rows},
                                                    {"hash", head_hash},
                                                    {"signature", h.text(2)},
                                                    {"signed", "kiln ledger head v1\\n<ledger_id>\\n<rows>\\n<hash>"},
                                                    {"chain", chain},
                                                    {"chain_signature", chain_signature}};
  }
  file.write(trailer.dump() + "\n");
  file.commit();
  return units;
}

LedgerStats Ledger::stats() {
  std::lock_guard lock(mutex_);
  LedgerStats s;
  auto q = db_->prepare("SELECT content FROM ledger WHERE kind = 'unit' ORDER BY seq");
  std::set<std::string> attempted, provisioned;
  std::map<std::string, std::int64_t> failures;
  std::string first_start, last_finish;
  while (q.step()) {
    auto e = ledger_entry_from_json(Json::parse(q.text(0)));
    ++s.attempts;
    attempted.insert(e.uid);
    if (e.result == BoardStatus::provisioned) provisioned.insert(e.uid);
    else {
      ++s.failed_attempts;
      ++failures[e.failed_step.empty() ? "unknown" : e.failed_step];
    }
    if (e.certificate_issued) ++s.certificates_issued;
    if (first_start.empty() || e.started_at < first_start) first_start = e.started_at;
    if (e.finished_at > last_finish) last_finish = e.finished_at;
  }
  s.certificates_reserved = count(*db_, "SELECT count(*) FROM reservations");
  s.units_attempted = static_cast<std::int64_t>(attempted.size());
  s.units_provisioned = static_cast<std::int64_t>(provisioned.size());
  s.yield = attempted.empty() ? 0 : static_cast<double>(provisioned.size()) / static_cast<double>(attempted.size());
  for (auto& [step, count] : failures) s.failures_per_step.emplace_back(step, count);
  auto millis = [](const std::string& text) { return unix_millis(text).value_or(0); };
  double span = static_cast<double>(millis(last_finish) - millis(first_start)) / 1000.0;
  if (span > 0) s.units_per_hour = static_cast<double>(s.units_provisioned) * 3600.0 / span;
  return s;
}

void require_provable(const LedgerVerifyReport& report, const std::filesystem::path& ledger, bool allow_unverified) {
  if (!report.ok)
    throw Error(ExitCode::verification_failed, fmt::format("ledger {}: {}", ledger.string(), report.problem),
                "a ledger that fails verification is not exported; keep the file for investigation");
  // An empty ledger proves nothing either: a station never wrote to it, or every row (station row and
  // head included) was deleted. Both look the same from the file alone.
  if (report.ledger_id.empty() && report.rows == 0 && !allow_unverified)
    throw Error(ExitCode::verification_failed,
                fmt::format("ledger {} has no rows, no station row and no signed head: nothing proves what it held "
                            "(a station never wrote to it, or every row was deleted)",
                            ledger.string()),
                "compare with the bundles this station exported before (the service refuses a ledger that goes "
                "back); pass --allow-unverified to accept an empty ledger");
  if (report.ledger_id.empty() && report.rows > 0 && !allow_unverified)
    throw Error(ExitCode::verification_failed,
                fmt::format("ledger {} has no station row and no signed head: {} of its {} rows are covered by no "
                            "signature, and rows cut from its end could not be detected",
                            ledger.string(), report.unverified_rows, report.rows),
                "run the station once with this ledger (kiln factory run/provision binds it and signs its head), or "
                "pass --allow-unverified to accept it as it is");
}

}  // namespace kiln
