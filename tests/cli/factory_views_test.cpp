// Tests for cli/factory_views: the exact JSON and table lines `kiln factory` prints for board outcomes, step
// events, a profile, a ledger's verification and its statistics.
#include <doctest/doctest.h>

#include "cli/factory_views.hpp"
#include "core/files.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("factory_views: an outcome has only the fields that say something") {
  ProvisionOutcome done;
  done.board = "emu:/b/1.sock";
  done.uid = "0a1b";
  done.result = BoardStatus::provisioned;
  done.certificate_serial = "7f";
  done.duration_ms = 1500;
  CHECK(outcome_json(done).dump() ==
        R"({"board":"emu:/b/1.sock","uid":"0a1b","result":"provisioned","serial":"7f","duration_ms":1500})");

  ProvisionOutcome failed;
  failed.board = "usb:1-2";
  failed.result = BoardStatus::failed;
  failed.failed_step = "certificate";
  failed.error = "quota reached";
  CHECK(outcome_json(failed).dump() ==
        R"({"board":"usb:1-2","uid":"","result":"failed","failed_step":"certificate","error":"quota reached","duration_ms":0})");

  ProvisionOutcome dry;
  dry.board = "b";
  dry.uid = "u";
  dry.result = BoardStatus::dry_run;
  dry.planned_steps = {"identity", "certificate", "lock"};
  CHECK(outcome_json(dry).dump() ==
        R"({"board":"b","uid":"u","result":"dry-run","would_run":"identity,certificate,lock","duration_ms":0})");
}

TEST_CASE("factory_views: a step event as a JSON record and as a line of the live table") {
  ProvisionEvent ok{"emu:/b/1.sock", "0a1b", "firmware", StepStatus::ok, 250, ""};
  CHECK(event_json(ok).dump() ==
        R"({"board":"emu:/b/1.sock","uid":"0a1b","step":"firmware","result":"ok","duration_ms":250})");
  CHECK(event_table_line(ok) == "0a1b         firmware        ok         ");

  ProvisionEvent failed{"b", "", "lock", StepStatus::failed, 3, std::string(70, 'e')};
  CHECK(event_json(failed)["error"] == std::string(70, 'e'));
  // An unknown UID shows as "?"; the error is cut to its first 60 characters.
  CHECK(event_table_line(failed) == "?            lock            failed     " + std::string(60, 'e'));
  ProvisionEvent planned{"b", "u", "identity", StepStatus::would_run, 0, ""};
  CHECK(event_json(planned)["result"] == "would-run");
}

TEST_CASE("factory_views: a profile names its settings and the SHA-256 of its file") {
  test::TempDir dir;
  write_file_atomic(dir.file("station.toml"), as_bytes("abc"));
  StationProfile p;
  p.product = "Thermo";
  p.ledger = "/var/lib/kiln/ledger.db";
  p.quota = 500;
  p.identity = IdentityMode::inject;
  p.final_state = ManufacturingState::module_complete;
  CHECK(profile_json(dir.file("station.toml"), p).dump() ==
        R"({"profile":")" + dir.file("station.toml") +
            R"(","product":"Thermo","identity":"inject","final_state":"module-complete","quota":500,)"
            R"("ledger":"/var/lib/kiln/ledger.db","firmware":null,)"
            R"("profile_hash":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})");
  p.quota.reset();
  p.identity = IdentityMode::csr;
  p.firmware = FirmwareProfile{};
  p.firmware->image = "fw/app.signed.bin";
  auto j = profile_json(dir.file("station.toml"), p);
  CHECK(j["quota"].is_null());
  CHECK(j["firmware"] == "fw/app.signed.bin");
  CHECK(j["identity"] == "csr");
}

TEST_CASE("factory_views: a ledger's verification report, sound and broken") {
  LedgerVerifyReport sound{.rows = 12,
                           .units = 10,
                           .checkpoints = 1,
                           .unsealed_rows = 2,
                           .ledger_id = "L-1",
                           .head_verified = true,
                           .bad_row = std::nullopt,
                           .problem = ""};
  CHECK(ledger_verify_json("ledger.db", sound).dump() ==
        R"({"ledger":"ledger.db","ok":true,"rows":12,"units":10,"checkpoints":1,"unsealed_rows":2,)"
        R"("unverified_rows":0,"head_verified":true,"reprovisions":0,"ledger_id":"L-1"})");
  LedgerVerifyReport broken{.ledger_id = "", .ok = false, .bad_row = 5, .problem = "row 5: hash does not chain"};
  CHECK(ledger_verify_json("l", broken).dump() ==
        R"({"ledger":"l","ok":false,"rows":0,"units":0,"checkpoints":0,"unsealed_rows":0,"unverified_rows":0,)"
        R"("head_verified":false,"reprovisions":0,"bad_row":5,"problem":"row 5: hash does not chain"})");
}

TEST_CASE("factory_views: ledger statistics with failures per step, and the quota when there is one") {
  LedgerStats s{.attempts = 12,
                .failed_attempts = 2,
                .units_attempted = 10,
                .units_provisioned = 9,
                .certificates_issued = 9,
                .certificates_reserved = 1,
                .yield = 0.9,
                .units_per_hour = 120.5,
                .failures_per_step = {{"firmware", 1}, {"certificate", 1}}};
  CHECK(ledger_stats_json(s, 100).dump() ==
        R"({"attempts":12,"failed_attempts":2,"units_attempted":10,"units_provisioned":9,"yield":0.9,)"
        R"("units_per_hour":120.5,"certificates_issued":9,"certificates_reserved":1,"quota":100,)"
        R"("failures_per_step":{"firmware":1,"certificate":1}})");
  CHECK(ledger_stats_json(LedgerStats{}, std::nullopt)["quota"].is_null());
  CHECK(ledger_stats_json(LedgerStats{}, std::nullopt)["failures_per_step"] == Json::object());
}
