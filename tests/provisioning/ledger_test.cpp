// Tests for the station ledger: chain, checkpoints, tamper detection, export bundle, stats, quota.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "provisioning/ledger.hpp"
#include "signing/file_key.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

LedgerEntry unit(const std::string& uid, BoardStatus result = BoardStatus::provisioned, bool issued = true) {
  LedgerEntry e;
  e.uid = uid;
  e.result = result;
  e.certificate_issued = issued;
  e.certificate_pem = issued ? "-----BEGIN CERTIFICATE-----\n" + uid + "\n-----END CERTIFICATE-----\n" : "";
  e.failed_step = result == BoardStatus::provisioned ? "" : "install-chain";
  e.product = "Thermostat";
  e.started_at = "2026-01-01T10:00:00.000Z";
  e.finished_at = "2026-01-01T10:00:01.000Z";
  e.steps.push_back({"attest", StepStatus::ok, 3, ""});
  return e;
}

struct Fixture {
  test::TempDir dir;
  std::filesystem::path path = dir.path() / "ledger.sqlite";
  std::unique_ptr<Signer> key;
  Fixture() : key(new_key("station.pem")) {}
  // A fresh ECDSA P-256 key in file `name` of the fixture's directory.
  std::unique_ptr<Signer> new_key(const std::string& name) {
    write_file_atomic(dir.file(name), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
    return load_file_signer(dir.file(name), std::nullopt);
  }
  // Raw SQL on the file, as someone editing the ledger behind the station's back would.
  void tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* message = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
    std::string text = message ? message : "";
    sqlite3_free(message);
    sqlite3_close(db);
    REQUIRE_MESSAGE(rc == SQLITE_OK, text);
  }
  std::string content_of(int seq) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT content FROM ledger WHERE seq = ?", -1, &stmt, nullptr);
    sqlite3_bind_int(stmt, 1, seq);
    std::string content = sqlite3_step(stmt) == SQLITE_ROW ? reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)) : "";
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return content;
  }
  // Five units (checkpoints every 2 rows), then `sql`: the report must name `row` as bad.
  LedgerVerifyReport tampered_report(const std::string& sql, std::int64_t row) {
    fill(5);
    tamper(sql);
    auto report = Ledger(path).verify(key->public_key_der());
    CHECK_FALSE(report.ok);
    REQUIRE(report.bad_row);
    CHECK(*report.bad_row == row);
    return report;
  }
  void fill(int units) {
    Ledger ledger(path);
    ledger.set_station_signer(key.get(), 2);
    for (int i = 0; i < units; ++i) ledger.append(unit(fmt::format("UID{:02}", i)));
    ledger.checkpoint();
  }
  // A ledger bound to the station key (no automatic checkpoints).
  std::unique_ptr<Ledger> open() {
    auto ledger = std::make_unique<Ledger>(path);
    ledger->set_station_signer(key.get(), 0);
    return ledger;
  }
};

}  // namespace

TEST_CASE("ledger: an untouched ledger verifies, with checkpoints every N rows and at the end") {
  Fixture f;
  f.fill(5);
  Ledger ledger(f.path);
  auto report = ledger.verify(f.key->public_key_der());
  CHECK(report.ok);
  CHECK(report.rows == 9);  // the station row, 5 units, checkpoints after 2, 4 and the closing one
  CHECK(report.checkpoints == 3);
  CHECK(report.units == 5);
  CHECK(report.unsealed_rows == 0);
  CHECK(report.head_verified);
  CHECK(report.unverified_rows == 0);
  CHECK(report.ledger_id.size() == 32);
}

TEST_CASE("ledger: an edited row is named") {
  Fixture f;
  auto report = f.tampered_report("UPDATE ledger SET content = replace(content, 'UID03', 'UID99') WHERE seq = 6", 6);
  CHECK(report.problem.find("edited") != std::string::npos);
}

TEST_CASE("ledger: a deleted row is named") {
  Fixture f;
  auto report = f.tampered_report("DELETE FROM ledger WHERE seq = 3", 4);
  CHECK(report.problem.find("row 3 was deleted") != std::string::npos);
}

TEST_CASE("ledger: reordered rows are detected") {
  Fixture f;
  f.tampered_report("UPDATE ledger SET seq = 100 WHERE seq = 1; UPDATE ledger SET seq = 1 WHERE seq = 2; "
                    "UPDATE ledger SET seq = 2 WHERE seq = 100",
                    1);
}

TEST_CASE("ledger: a rewritten chain without the station key fails at the checkpoint") {
  Fixture f;
  f.fill(1);  // row 1 station, row 2 unit, row 3 checkpoint
  // Rewrite row 2 and re-hash the chain consistently: only the checkpoint signature can tell.
  Ledger ledger(f.path);
  std::string h1 = [&] {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT hash FROM ledger WHERE seq = 1", -1, &stmt, nullptr);
    REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
    std::string hash = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return hash;
  }();
  f.tamper("UPDATE ledger SET content = replace(content, 'UID00', 'UID77') WHERE seq = 2");
  std::string content = f.content_of(2);
  auto h2 = ledger_row_hash(h1, 2, "unit", content);
  f.tamper("UPDATE ledger SET hash = '" + h2 + "' WHERE seq = 2");
  f.tamper("UPDATE ledger SET prev_hash = '" + h2 + "' WHERE seq = 3");
  std::string checkpoint_content = f.content_of(3);
  f.tamper("UPDATE ledger SET hash = '" + ledger_row_hash(h2, 3, "checkpoint", checkpoint_content) + "' WHERE seq = 3");
  auto report = ledger.verify(f.key->public_key_der());
  CHECK_FALSE(report.ok);
  REQUIRE(report.bad_row);
  CHECK(*report.bad_row == 3);
  CHECK(report.problem.find("signature") != std::string::npos);
}

TEST_CASE("ledger: checkpoints signed by another key are refused") {
  Fixture f;
  f.fill(2);
  auto other = f.new_key("other.pem");
  auto report = Ledger(f.path).verify(other->public_key_der());
  CHECK_FALSE(report.ok);
  CHECK(report.problem.find("not the station key") != std::string::npos);
}

TEST_CASE("ledger: export writes one line per provisioned unit and a verifiable signed trailer") {
  Fixture f;
  {
    auto ledger = f.open();
    ledger->append(unit("A", BoardStatus::failed, false));
    ledger->append(unit("A"));
    ledger->append(unit("B"));
    ledger->append(unit("C", BoardStatus::failed, false));
    CHECK(ledger->export_bundle(f.dir.path() / "units.jsonl", *f.key) == 2);
  }
  std::ifstream in(f.dir.path() / "units.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 3);
  auto first = nlohmann::json::parse(lines[0]);
  CHECK(first["uid"] == "A");
  CHECK(first["product"] == "Thermostat");
  CHECK(first["state"] == "provisioned");
  CHECK(first["ledger_seq"] == 3);
  auto trailer = nlohmann::json::parse(lines[2]);
  CHECK(trailer["units"] == 2);
  // The signed head travels with the bundle: 5 rows (station row and 4 units), verifiable alone.
  auto head = trailer["ledger_head"];
  CHECK(head["rows"] == 5);
  CHECK(verify_signature(f.key->public_key_der(),
                         digest(HashAlg::sha256, as_bytes(ledger_head_message(head["ledger_id"], 5, head["hash"]))),
                         HashAlg::sha256, from_hex(head["signature"].get<std::string>())));
  // With the hash of every row up to the head, signed at export: what the service checks a later
  // bundle against (it must extend the head imported before).
  auto chain = head["chain"].get<std::vector<std::string>>();
  REQUIRE(chain.size() == 5);
  CHECK(chain.back() == head["hash"]);
  CHECK(chain[first["ledger_seq"].get<std::size_t>() - 1] == first["ledger_hash"]);
  CHECK(verify_station_message(f.key->public_key_der(), as_bytes(ledger_chain_message(head["ledger_id"], chain)),
                               from_hex(head["chain_signature"].get<std::string>())));
  chain[1] = chain[2];
  CHECK_FALSE(verify_station_message(f.key->public_key_der(), as_bytes(ledger_chain_message(head["ledger_id"], chain)),
                                     from_hex(head["chain_signature"].get<std::string>())));
  std::string signed_text = lines[0] + "\n" + lines[1] + "\n";
  Bytes bundle_digest = digest(HashAlg::sha256, as_bytes(signed_text));
  CHECK(trailer["bundle_sha256"] == to_hex(bundle_digest));
  CHECK(verify_signature(f.key->public_key_der(), bundle_digest, HashAlg::sha256,
                         from_hex(trailer["bundle_signature"].get<std::string>())));
}

TEST_CASE("ledger: stats count yield and failures per step") {
  Fixture f;
  auto opened = f.open();
  Ledger& ledger = *opened;
  ledger.append(unit("A", BoardStatus::failed, false));
  ledger.append(unit("A"));
  ledger.append(unit("B"));
  ledger.append(unit("C", BoardStatus::failed, false));
  auto s = ledger.stats();
  CHECK(s.attempts == 4);
  CHECK(s.failed_attempts == 2);
  CHECK(s.units_attempted == 3);
  CHECK(s.units_provisioned == 2);
  CHECK(s.certificates_issued == 2);
  CHECK(s.yield == doctest::Approx(2.0 / 3.0));
  REQUIRE(s.failures_per_step.size() == 1);
  CHECK(s.failures_per_step[0].first == "install-chain");
  CHECK(s.failures_per_step[0].second == 2);
  CHECK(s.units_per_hour == doctest::Approx(2 * 3600.0));
}

TEST_CASE("ledger: rows are read back with their typed results, and an unknown result is named") {
  Fixture f;
  {
    auto opened = f.open();
    auto failed = unit("A", BoardStatus::failed, false);
    failed.steps.push_back({"install-chain", StepStatus::failed, 7, "write refused"});
    opened->append(failed);
    opened->append(unit("B"));
  }
  CHECK(f.content_of(2).find("\"result\":\"failed\"") != std::string::npos);
  CHECK(f.content_of(3).find("\"result\":\"provisioned\"") != std::string::npos);
  auto latest = Ledger(f.path).latest_provisioned("B");
  REQUIRE(latest);
  CHECK(latest->result == BoardStatus::provisioned);
  REQUIRE(latest->steps.size() == 1);
  CHECK(latest->steps[0].result == StepStatus::ok);
  CHECK_FALSE(Ledger(f.path).latest_provisioned("A"));
  f.tamper("UPDATE ledger SET content = replace(content, '\"result\":\"failed\"', '\"result\":\"exploded\"') WHERE seq = 2");
  try {
    Ledger(f.path).stats();
    FAIL("an unknown result was read");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("unknown result 'exploded'") != std::string::npos);
  }
}

TEST_CASE("ledger: the quota counts issued certificates and pending reservations") {
  Fixture f;
  auto opened = f.open();
  Ledger& ledger = *opened;
  ledger.append(unit("A"));
  ledger.reserve_certificate("B", 2);  // one issued + this one = 2
  CHECK_THROWS_WITH_AS(ledger.reserve_certificate("C", 2), doctest::Contains("quota reached"), Error);
  CHECK_NOTHROW(ledger.reserve_certificate("B", 2));  // B's own reservation is not counted twice
  ledger.release_certificate("B");
  CHECK_NOTHROW(ledger.reserve_certificate("C", 2));
  ledger.release_certificate("C");
  CHECK(ledger.certificates_reserved() == 0);
  CHECK_NOTHROW(ledger.reserve_certificate("D", std::nullopt));
}

TEST_CASE("ledger: reservations are shared by every connection to the file and consumed by the unit row") {
  Fixture f;
  auto first_ledger = f.open();
  auto second_ledger = f.open();  // another station process on the same ledger
  Ledger& first = *first_ledger;
  Ledger& second = *second_ledger;
  first.reserve_certificate("A", 1);
  CHECK_THROWS_WITH_AS(second.reserve_certificate("B", 1), doctest::Contains("1 more being issued"), Error);
  first.append(unit("A"));  // certificate_issued: the row replaces the reservation
  CHECK(second.certificates_reserved() == 0);
  CHECK(second.certificates_issued() == 1);
  CHECK_THROWS_WITH_AS(second.reserve_certificate("B", 1), doctest::Contains("quota reached: 1 of 1"), Error);
  // A reservation left by a killed station keeps counting until its UID is recorded.
  { Ledger killed(f.path); killed.reserve_certificate("C", 3); }
  CHECK(first.certificates_reserved() == 1);
  CHECK_NOTHROW(first.reserve_certificate("D", 3));
  CHECK_THROWS_AS(second.reserve_certificate("E", 3), Error);
}

TEST_CASE("ledger: deleting one, several or all rows after a checkpoint is detected, with or without the head") {
  // station row 1; units 2, 3; checkpoint 4; units 5, 6; checkpoint 7; unit 8; closing checkpoint 9;
  // then three more units (10, 11, 12) not yet covered by a checkpoint, only by the signed head.
  struct Cut {
    const char* sql;
    const char* problem;
  };
  for (auto cut : {Cut{"DELETE FROM ledger WHERE seq = 12", "rows 12 to 12 were deleted from its end"},
                   Cut{"DELETE FROM ledger WHERE seq >= 11", "rows 11 to 12 were deleted from its end"},
                   Cut{"DELETE FROM ledger WHERE seq >= 10", "rows 10 to 12 were deleted from its end"},
                   // the rows and the checkpoint that sealed the ones before them
                   Cut{"DELETE FROM ledger WHERE seq >= 8", "rows 8 to 12 were deleted from its end"},
                   // the tail and the head that names it
                   Cut{"DELETE FROM ledger WHERE seq >= 10; DELETE FROM head", "head is missing"},
                   Cut{"DELETE FROM ledger WHERE seq >= 8; DELETE FROM head", "head is missing"},
                   // every row, with the station row: the head left behind names a station that is gone
                   Cut{"DELETE FROM ledger", "its station binding included, was deleted"}}) {
    std::string sql = cut.sql;
    CAPTURE(sql);
    Fixture f;
    f.fill(5);
    {
      auto ledger = f.open();
      for (const char* uid : {"LATE1", "LATE2", "LATE3"}) ledger->append(unit(uid));
      auto before = ledger->verify(f.key->public_key_der());
      REQUIRE(before.ok);
      REQUIRE(before.rows == 12);
      REQUIRE(before.unsealed_rows == 3);
      REQUIRE(before.head_verified);  // the head signed with each append covers the unsealed rows
    }
    f.tamper(cut.sql);
    auto report = Ledger(f.path).verify(f.key->public_key_der());
    CHECK_FALSE(report.ok);
    CHECK_FALSE(report.head_verified);
    CHECK_MESSAGE(report.problem.find(cut.problem) != std::string::npos, report.problem);
  }
}

TEST_CASE("ledger: a ledger with every row and its head deleted proves nothing") {
  // Nothing is left to say which station wrote it: the library reports an unbound, empty ledger and
  // `kiln factory ledger verify` refuses it (e2e) unless --allow-unverified.
  Fixture f;
  f.fill(2);
  f.tamper("DELETE FROM ledger; DELETE FROM head");
  auto report = Ledger(f.path).verify(f.key->public_key_der());
  CHECK(report.rows == 0);
  CHECK(report.ledger_id.empty());
  CHECK_FALSE(report.head_verified);
}

TEST_CASE("ledger: a head that is not the station's, or rows added past it, are refused") {
  Fixture f;
  f.fill(2);
  {
    auto ledger = f.open();
    ledger->append(unit("X"));
  }
  // Someone appends a row with a correct hash link but cannot re-sign the head.
  f.tamper("INSERT INTO ledger (seq, kind, content, prev_hash, hash, signature) SELECT seq + 1, kind, content, hash, "
           "hash, NULL FROM ledger WHERE seq = (SELECT max(seq) FROM ledger)");
  auto added = Ledger(f.path).verify(f.key->public_key_der());
  CHECK_FALSE(added.ok);  // the forged row's hash does not match (or it follows the head)
  f.tamper("DELETE FROM ledger WHERE seq = (SELECT max(seq) FROM ledger)");
  REQUIRE(Ledger(f.path).verify(f.key->public_key_der()).ok);
  f.tamper("UPDATE head SET signature = '00' || substr(signature, 3)");
  auto forged = Ledger(f.path).verify(f.key->public_key_der());
  CHECK_FALSE(forged.ok);
  CHECK(forged.problem.find("head") != std::string::npos);
}

TEST_CASE("ledger: a station with another key refuses to write to a ledger bound to the first") {
  Fixture f;
  f.fill(2);
  auto other = f.new_key("other.pem");
  Ledger ledger(f.path);
  try {
    ledger.set_station_signer(other.get(), 2);
    FAIL("a second station key was bound");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
    CHECK(std::string(e.what()).find("another station key") != std::string::npos);
    CHECK(e.hint().find("--ledger") != std::string::npos);
  }
  CHECK_THROWS_AS(ledger.append(unit("INTRUDER")), Error);  // nothing bound: nothing written
  CHECK(ledger.station_public_key() == f.key->public_key_der());
  auto report = ledger.verify(f.key->public_key_der());
  CHECK(report.ok);
  CHECK(report.units == 2);
}
