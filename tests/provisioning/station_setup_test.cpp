// Tests for provisioning/station_setup: `kiln factory init`'s profile, built and cross-checked before writing.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/station_setup.hpp"
#include "tests/provisioning/station_fixture.hpp"

using namespace kiln;

namespace {

struct InitFixture {
  test::TempDir dir;
  StationSetup setup;
  InitFixture() {
    test::make_ca(dir, "ca.key", "ca.pem");
    test::make_ca(dir, "root.key", "root.pem", "/CN=Vendor Root");
    write_file_atomic(dir.file("boot.pem"), as_bytes(generate_private_key_pem(KeyType::ed25519, std::nullopt)), 0600);
    setup.ca_key = dir.file("ca.key");
    setup.ca_cert = dir.file("ca.pem");
    setup.vendor_root = dir.file("root.pem");
    setup.boot_key = dir.file("boot.pem");
    setup.product = "Thermostat";
  }
  std::filesystem::path profile() const { return dir.file("station.toml"); }
};

}  // namespace

TEST_CASE("station setup: defaults are taken from the profile's place and the service") {
  InitFixture s;
  auto p = build_station_profile(s.setup, s.profile(), {});
  CHECK(p.station_id == "station");
  CHECK(p.ledger == s.dir.path() / "station-ledger.sqlite");
  CHECK(p.station_key == p.ca_key);
  CHECK(p.trust_anchor == p.ca_certificate);
  CHECK(p.final_state == ManufacturingState::module_complete);  // no service: device-complete is impossible
  CHECK(p.boot_key_hash ==
        describe_public_key(load_public_key(s.setup.boot_key)).mcuboot_key_hash);
  CHECK_FALSE(p.firmware);

  s.setup.service = "https://kiln.example";
  s.setup.identity = "inject";
  CHECK(build_station_profile(s.setup, s.profile(), {}).final_state == ManufacturingState::device_complete);
  CHECK(build_station_profile(s.setup, s.profile(), {}).identity == IdentityMode::inject);
}

TEST_CASE("station setup: init writes a profile that reads back, and refuses to overwrite it") {
  InitFixture s;
  auto written = init_station(s.setup, s.profile(), {}, false);
  auto read = read_profile(s.profile());
  CHECK(read.product == written.product);
  CHECK(read.boot_key_hash == written.boot_key_hash);
  CHECK(read.ledger == written.ledger);
  CHECK(test::exit_code_of([&] { init_station(s.setup, s.profile(), {}, false); }) == ExitCode::conflict);
  CHECK(test::exit_code_of([&] { init_station(s.setup, s.profile(), {}, true); }) == ExitCode::ok);
}

TEST_CASE("station setup: a CA key of another certificate, a partial firmware step and a bad identity are refused") {
  InitFixture s;
  auto other_ca = s.setup;
  other_ca.ca_cert = s.dir.file("root.pem");
  CHECK(test::exit_code_of([&] { init_station(other_ca, s.profile(), {}, false); }) == ExitCode::usage);
  CHECK_FALSE(std::filesystem::exists(s.profile()));

  auto partial = s.setup;
  partial.image = s.dir.file("boot.pem");
  CHECK(test::exit_code_of([&] { build_station_profile(partial, s.profile(), {}); }) == ExitCode::usage);

  auto identity = s.setup;
  identity.identity = "magic";
  CHECK(test::exit_code_of([&] { build_station_profile(identity, s.profile(), {}); }) == ExitCode::usage);
}

TEST_CASE("station setup: a ledger bound to another station key stays with that station") {
  InitFixture s;
  init_station(s.setup, s.profile(), {}, false);
  {
    // The first station binds the ledger (its key signs the station row).
    auto station = open_station(s.profile(), {}, "tester");
    station->ledger->checkpoint();
  }
  test::make_ca(s.dir, "other.key", "other.pem", "/CN=Other Station CA");
  auto other = s.setup;
  other.ca_key = s.dir.file("other.key");
  other.ca_cert = s.dir.file("other.pem");
  CHECK(test::exit_code_of([&] { init_station(other, s.dir.file("other.toml"), {}, false); }) == ExitCode::conflict);
  CHECK_FALSE(std::filesystem::exists(s.dir.file("other.toml")));
}

TEST_CASE("ledger: require_provable refuses a failed, an empty and an unbound ledger unless told") {
  LedgerVerifyReport bad;
  bad.ok = false;
  bad.problem = "row 3: hash chain broken";
  CHECK(test::exit_code_of([&] { require_provable(bad, "l.sqlite", true); }) == ExitCode::verification_failed);
  LedgerVerifyReport empty;
  CHECK(test::exit_code_of([&] { require_provable(empty, "l.sqlite", false); }) == ExitCode::verification_failed);
  CHECK(test::exit_code_of([&] { require_provable(empty, "l.sqlite", true); }) == ExitCode::ok);
  LedgerVerifyReport unbound;
  unbound.rows = 4;
  unbound.unverified_rows = 4;
  CHECK(test::exit_code_of([&] { require_provable(unbound, "l.sqlite", false); }) == ExitCode::verification_failed);
  CHECK(test::exit_code_of([&] { require_provable(unbound, "l.sqlite", true); }) == ExitCode::ok);
  LedgerVerifyReport bound = unbound;
  bound.ledger_id = "abc";
  CHECK(test::exit_code_of([&] { require_provable(bound, "l.sqlite", false); }) == ExitCode::ok);
}

TEST_CASE("workflow: require_all_provisioned names every failed board, with the board's own code when alone") {
  ProvisionOutcome ok;
  ok.board = "emu:a";
  ok.uid = "A";
  ok.result = BoardStatus::provisioned;
  ProvisionOutcome failed;
  failed.board = "emu:b";
  failed.result = BoardStatus::failed;
  failed.failed_step = "attest";
  failed.error = "bad chain";
  failed.code = ExitCode::verification_failed;
  CHECK(test::exit_code_of([&] { require_all_provisioned({ok}); }) == ExitCode::ok);
  CHECK(test::exit_code_of([&] { require_all_provisioned({failed}); }) == ExitCode::verification_failed);
  try {
    require_all_provisioned({ok, failed});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::partial);
    CHECK(std::string(e.what()).find("1 of 2 boards failed: emu:b (attest)") != std::string::npos);
  }
}
