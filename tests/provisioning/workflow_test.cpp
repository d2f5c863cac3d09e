// Tests for the provisioning workflow against in-process emulated boards: happy path, resume after
// faults at each step, quota, vendor-root mismatch, dry run, many boards with one dead.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.hpp"
#include "provisioning/station_ca.hpp"
#include "tests/provisioning/station_fixture.hpp"
#include "tests/support/smp_proxy.hpp"
#include "transport/smp_client.hpp"

using namespace kiln;

namespace {

ProvisioningRecord record_of(const test::ServedBoards& served, std::size_t i) {
  SmpClient client(open_link(served.address(i)));
  return read_provisioning_record(client);
}

// Every distinct certificate any ledger row holds for `uid`.
std::set<std::string> certificates_for(Station& station, const std::string& uid) {
  std::set<std::string> found;
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(station.profile.ledger.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT json_extract(content, '$.certificate') FROM ledger WHERE kind = 'unit' "
                     "AND json_extract(content, '$.uid') = ? AND json_extract(content, '$.certificate') != ''",
                     -1, &stmt, nullptr);
  sqlite3_bind_text(stmt, 1, uid.c_str(), -1, SQLITE_TRANSIENT);
  while (sqlite3_step(stmt) == SQLITE_ROW) found.insert(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return found;
}

}  // namespace

TEST_CASE("workflow: a blank board ends device-complete with a recorded, CA-issued identity") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  std::vector<ProvisionEvent> events;
  auto outcome =
      provision_board(*station, served.address(0), {}, [&](const ProvisionEvent& e) { events.push_back(e); });
  REQUIRE_MESSAGE(outcome.result == BoardStatus::provisioned, outcome.error);
  CHECK(outcome.uid == served.boards[0]->uid());
  CHECK(events.size() == 7);
  auto record = record_of(served, 0);
  CHECK(record.state == ManufacturingState::device_complete);
  REQUIRE(record.certificate_chain.size() == 2);
  CHECK(certificate_matches(record.certificate_chain[0], station->ca_certificate_der, record.device_public_key));
  CHECK(record.config.service_url == "https://service.example:8443");
  auto entry = station->ledger->latest_provisioned(outcome.uid);
  REQUIRE(entry);
  CHECK(entry->certificate_serial == outcome.certificate_serial);
  CHECK(entry->operator_name == "tester");

  // A second run changes nothing and issues nothing.
  auto again = provision_board(*station, served.address(0), {}, {});
  CHECK(again.result == BoardStatus::already_provisioned);
  CHECK(station->ledger->certificates_issued() == 1);
  station->ledger->checkpoint();
  CHECK(station->ledger->verify(station->ca->public_key_der()).ok);
}

TEST_CASE("workflow: inject mode installs a station-made key wrapped to the transport key") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path, IdentityMode::inject);
  auto station = files.open();
  auto outcome = provision_board(*station, served.address(0), {}, {});
  REQUIRE_MESSAGE(outcome.result == BoardStatus::provisioned, outcome.error);
  auto record = record_of(served, 0);
  CHECK(record.key_origin == "injected");
  CHECK(certificate_matches(record.certificate_chain[0], station->ca_certificate_der, record.device_public_key));
}

TEST_CASE("workflow: a failure at any write step resumes without a second identity or certificate") {
  // group 64 commands: 1 generate key, 2 install chain, 3 install config, 6 set state.
  for (std::uint8_t command : {1, 2, 3, 6}) {
    CAPTURE(command);
    emu::FaultInjection faults;
    faults.fail_commands.push_back({64, command});
    test::ServedBoards served(1, faults);
    test::StationFiles files(served.root.cert_path);
    auto station = files.open();
    auto failed = provision_board(*station, served.address(0), {}, {});
    CHECK(failed.result == BoardStatus::failed);
    CHECK(record_of(served, 0).state == ManufacturingState::blank);  // never final before the fault clears

    served.serve();  // fault gone
    auto resumed = provision_board(*station, served.address(0), {}, {});
    REQUIRE_MESSAGE(resumed.result == BoardStatus::provisioned, resumed.error);
    auto record = record_of(served, 0);
    CHECK(record.state == ManufacturingState::device_complete);
    CHECK(station->ledger->certificates_issued() == 1);
    auto certificates = certificates_for(*station, resumed.uid);
    CHECK(certificates.size() == 1);
    CHECK(certificate_der_from_pem(*certificates.begin()) == record.certificate_chain[0]);
    station->ledger->checkpoint();
    CHECK(station->ledger->verify(station->ca->public_key_der()).ok);
  }
}

TEST_CASE("workflow: a link cut after any number of bytes is resumed by a re-run") {
  std::set<std::string> failed_steps;
  for (std::uint64_t cut : {8, 20, 40, 60, 80, 120, 700, 1500, 1700, 1900, 2100, 2300}) {
    CAPTURE(cut);
    emu::FaultInjection faults;
    faults.drop_after_bytes = cut;
    test::ServedBoards served(1, faults);
    test::StationFiles files(served.root.cert_path);
    auto station = files.open();
    ProvisionOptions options;
    options.board_timeout = std::chrono::milliseconds(1000);
    auto first = provision_board(*station, served.address(0), options, {});
    CAPTURE(first.error);
    if (first.result != BoardStatus::provisioned) {
      failed_steps.insert(first.failed_step);
      CHECK(record_of(served, 0).state == ManufacturingState::blank);
    }
    auto second = provision_board(*station, served.address(0), options, {});
    // A cut beyond the first attempt's bytes lands in the re-run itself: one more run resumes it.
    if (first.result == BoardStatus::provisioned && second.result == BoardStatus::failed)
      second = provision_board(*station, served.address(0), options, {});
    CHECK_MESSAGE((second.result == BoardStatus::provisioned || second.result == BoardStatus::already_provisioned), second.error);
    auto record = record_of(served, 0);
    CHECK(record.state == ManufacturingState::device_complete);
    CHECK(station->ledger->latest_provisioned(record.uid));
    CHECK(certificates_for(*station, record.uid).size() == 1);
  }
  MESSAGE("link cut during: " << fmt::format("{}", fmt::join(failed_steps, ", ")));
  CHECK(failed_steps.size() >= 4);  // the cuts land in different steps
}

TEST_CASE("workflow: the quota stops certificate issuance") {
  test::ServedBoards served(2);
  test::StationFiles files(served.root.cert_path, IdentityMode::csr, 1);
  auto station = files.open();
  auto first = provision_board(*station, served.address(0), {}, {});
  CHECK(first.result == BoardStatus::provisioned);
  auto second = provision_board(*station, served.address(1), {}, {});
  CHECK(second.result == BoardStatus::failed);
  CHECK(second.failed_step == "certificate");
  CHECK(second.code == ExitCode::conflict);
  CHECK(second.error.find("quota") != std::string::npos);
  CHECK(record_of(served, 1).certificate_chain.empty());
  CHECK(station->ledger->certificates_issued() == 1);
}

TEST_CASE("workflow: a board from another vendor is refused before anything is written") {
  test::ServedBoards served(1);
  test::TempDir other;
  auto other_root = emu::load_or_create_vendor_root(other.path());
  test::StationFiles files(other_root.cert_path);
  auto station = files.open();
  auto outcome = provision_board(*station, served.address(0), {}, {});
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "attest");
  CHECK(outcome.code == ExitCode::verification_failed);
  auto record = record_of(served, 0);
  CHECK(record.device_public_key.empty());
  CHECK(station->ledger->certificates_issued() == 0);
}

TEST_CASE("workflow: a dry run reports the plan and changes nothing") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  ProvisionOptions options;
  options.dry_run = true;
  auto outcome = provision_board(*station, served.address(0), options, {});
  CHECK(outcome.result == BoardStatus::dry_run);
  CHECK(outcome.planned_steps.size() == 6);
  auto record = record_of(served, 0);
  CHECK(record.device_public_key.empty());
  CHECK(record.state == ManufacturingState::blank);
  CHECK(station->ledger->stats().attempts == 0);
}

TEST_CASE("workflow: many boards at once, one of them gone, the rest provisioned") {
  test::ServedBoards served(5);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  auto boards = served.addresses();
  boards.push_back({BoardAddress::Kind::emulator, (served.dir.path() / "missing.sock").string(), "missing"});
  auto outcomes = provision_boards(*station, boards, 3, {}, {});
  REQUIRE(outcomes.size() == 6);
  for (std::size_t i = 0; i < 5; ++i) CHECK_MESSAGE(outcomes[i].result == BoardStatus::provisioned, outcomes[i].error);
  CHECK(outcomes[5].result == BoardStatus::failed);
  CHECK(outcomes[5].failed_step == "connect");
  CHECK(station->ledger->certificates_issued() == 5);
  std::set<std::string> serials;
  for (std::size_t i = 0; i < 5; ++i) serials.insert(outcomes[i].certificate_serial);
  CHECK(serials.size() == 5);
}

TEST_CASE("workflow: a certificate found on a board but in no ledger row counts against the quota once") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path, IdentityMode::csr, 5);
  auto station = files.open();
  // A station killed between issuing and recording: the board holds a certificate from this CA,
  // the ledger knows nothing of it.
  {
    SmpClient client(open_link(served.address(0)));
    auto uid = read_identity(client).uid;
    auto key = verify_csr(generate_device_key(client, uid));
    auto issued = issue_device_certificate(*station->ca, station->ca_certificate_der, key, uid, {"Thermostat", 30});
    install_certificate_chain(client, {issued.der, station->ca_certificate_der});
  }
  CHECK(station->ledger->certificates_issued() == 0);
  auto outcome = provision_board(*station, served.address(0), {}, {});
  REQUIRE_MESSAGE(outcome.result == BoardStatus::provisioned, outcome.error);
  CHECK(station->ledger->certificates_issued() == 1);
  CHECK(station->ledger->certificates_reserved() == 0);
  // Recorded now, so a re-run does not count it again.
  CHECK(provision_board(*station, served.address(0), {}, {}).result == BoardStatus::already_provisioned);
  CHECK(station->ledger->certificates_issued() == 1);
}

namespace {

// The genuine board's identity answer to a challenge of the attacker's choosing: what a proxy that
// once sat between this board and a station (or that asked it itself) holds.
smp::Body captured_identity(const test::ServedBoards& served, std::size_t i) {
  SmpClient client(open_link(served.address(i)));
  SmpRequest request{smp::Op::read,
                     smp::group::kiln_provisioning,
                     provisioning_command::identity,
                     {{"nonce", smp::binary(Bytes(32, 0x42))}}};
  return client.call_raw(request);
}

bool is_request(const smp::Header& h, std::uint16_t group, std::uint8_t command) {
  return h.group == group && h.command == command;
}

// A board's directory after a change to its persisted state (what a counterfeit's firmware could claim).
void edit_board_state(test::ServedBoards& served, std::size_t i, const std::function<void(nlohmann::json&)>& edit) {
  served.servers.clear();
  auto dir = served.boards[i]->dir();
  served.boards[i].reset();
  auto state = nlohmann::json::parse(read_text_file(dir / "state.json"));
  edit(state);
  write_file_atomic(dir / "state.json", as_bytes(state.dump(2)));
  served.boards[i] = emu::Board::open(dir, served.root, {});
  served.serve();
}

}  // namespace

TEST_CASE("workflow: a proxy replaying another board's attestation gets no certificate (exit 3)") {
  test::ServedBoards served(2);  // 0: the genuine board; 1: the counterfeit behind the proxy
  auto genuine_uid = served.boards[0]->uid();
  auto replayed = captured_identity(served, 0);
  // The proxy answers identity with the captured answer and makes the counterfeit's record name
  // the genuine UID; every other request goes to the counterfeit.
  test::SmpProxy proxy(
      served.dir.path() / "proxy.sock", (served.dir.path() / (served.boards[1]->uid() + ".sock")).string(),
      [&](const smp::Header& h, const smp::Body&) -> std::optional<smp::Body> {
        if (is_request(h, smp::group::kiln_provisioning, provisioning_command::identity)) return replayed;
        return std::nullopt;
      },
      [&](const smp::Header& h, smp::Body& response) {
        if (is_request(h, smp::group::kiln_provisioning, provisioning_command::record)) response["uid"] = genuine_uid;
      });
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  BoardAddress address{BoardAddress::Kind::emulator, proxy.path().string(), "proxy"};
  auto outcome = provision_board(*station, address, {}, {});
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "attest");
  CHECK(outcome.code == ExitCode::verification_failed);
  CHECK(outcome.error.find(genuine_uid) != std::string::npos);
  CHECK(outcome.error.find("replayed") != std::string::npos);
  CHECK(record_of(served, 1).device_public_key.empty());  // nothing was written to the counterfeit
  CHECK(station->ledger->certificates_issued() == 0);
  CHECK_FALSE(station->ledger->latest_certificate(genuine_uid));
}

TEST_CASE("workflow: a proxy relaying the challenge to the genuine board cannot certify a key made elsewhere") {
  test::ServedBoards served(2);
  auto genuine_uid = served.boards[0]->uid();
  // Live relay: identity questions go to the genuine board (so the challenge is answered), the
  // key is made by the counterfeit.
  test::SmpProxy proxy(
      served.dir.path() / "proxy.sock", (served.dir.path() / (served.boards[1]->uid() + ".sock")).string(),
      [&](const smp::Header& h, const smp::Body& request) -> std::optional<smp::Body> {
        if (!is_request(h, smp::group::kiln_provisioning, provisioning_command::identity)) return std::nullopt;
        SmpClient genuine(open_link(served.address(0)));
        return genuine.call_raw(
            {smp::Op::read, smp::group::kiln_provisioning, provisioning_command::identity, request});
      },
      [&](const smp::Header& h, smp::Body& response) {
        if (is_request(h, smp::group::kiln_provisioning, provisioning_command::record)) response["uid"] = genuine_uid;
      });
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  auto outcome = provision_board(*station, {BoardAddress::Kind::emulator, proxy.path().string(), "proxy"}, {}, {});
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "identity");
  CHECK(outcome.code == ExitCode::verification_failed);
  CHECK(outcome.error.find("does not vouch") != std::string::npos);
  CHECK(station->ledger->certificates_issued() == 0);
  CHECK(record_of(served, 1).certificate_chain.empty());
}

TEST_CASE("workflow: a board reporting a UID its attestation certificate does not bind is refused (exit 3)") {
  test::ServedBoards served(1);
  std::string victim = "0123456789abcdef";  // another unit's UID
  // The board keeps its own (genuine) attestation certificate but claims another unit's UID.
  edit_board_state(served, 0, [&](nlohmann::json& state) { state["uid"] = victim; });
  REQUIRE(served.boards[0]->uid() == victim);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  auto outcome = provision_board(*station, served.address(0), {}, {});
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "attest");
  CHECK(outcome.code == ExitCode::verification_failed);
  CHECK(outcome.error.find("does not bind") != std::string::npos);
  CHECK(station->ledger->certificates_issued() == 0);
}

TEST_CASE("workflow: a board UID outside the service's alphabet is refused before any write (exit 4)") {
  test::ServedBoards served(1);
  std::string hostile = "unit/\x1b[2J../x";
  test::SmpProxy proxy(served.dir.path() / "proxy.sock",
                       (served.dir.path() / (served.boards[0]->uid() + ".sock")).string(), {},
                       [&](const smp::Header& h, smp::Body& response) {
                         if (is_request(h, smp::group::kiln_provisioning, provisioning_command::identity) ||
                             is_request(h, smp::group::kiln_provisioning, provisioning_command::record))
                           response["uid"] = hostile;
                       });
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  std::vector<ProvisionEvent> events;
  auto outcome = provision_board(*station, {BoardAddress::Kind::emulator, proxy.path().string(), "proxy"}, {},
                                 [&](const ProvisionEvent& e) { events.push_back(e); });
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "attest");
  CHECK(outcome.code == ExitCode::board);
  CHECK(outcome.error.find("not a device UID") != std::string::npos);
  CHECK(outcome.error.find('\x1b') == std::string::npos);  // shown escaped, never raw
  CHECK(outcome.uid.empty());
  for (const auto& e : events) CHECK(e.uid.find('\x1b') == std::string::npos);
  CHECK(record_of(served, 0).device_public_key.empty());
  CHECK(station->ledger->stats().attempts == 0);  // no row under a UID the service could not take
}

TEST_CASE("workflow: a second certificate for a UID needs --reprovision, and the ledger records it") {
  // First attempt: the certificate is issued (and recorded), then installing it fails.
  emu::FaultInjection faults;
  faults.fail_commands.push_back({64, provisioning_command::install_chain});
  test::ServedBoards served(1, faults);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  auto uid = served.boards[0]->uid();
  CHECK(provision_board(*station, served.address(0), {}, {}).failed_step == "install-chain");
  REQUIRE(station->ledger->latest_certificate(uid));
  // The board comes back with a fresh secure element (no key): a board that merely claims the UID
  // looks the same to the station.
  served.servers.clear();
  std::filesystem::remove(served.boards[0]->dir() / "device.key.pem");
  edit_board_state(served, 0, [](nlohmann::json& state) { state.erase("key_origin"); });

  auto refused = provision_board(*station, served.address(0), {}, {});
  CHECK(refused.result == BoardStatus::failed);
  CHECK(refused.code == ExitCode::conflict);
  CHECK(refused.failed_step == "attest");
  CHECK(refused.error.find("--reprovision") != std::string::npos);
  CHECK(record_of(served, 0).device_public_key.empty());  // refused before anything was written
  CHECK(certificates_for(*station, uid).size() == 1);

  ProvisionOptions options;
  options.reprovision = true;
  auto reprovisioned = provision_board(*station, served.address(0), options, {});
  REQUIRE_MESSAGE(reprovisioned.result == BoardStatus::provisioned, reprovisioned.error);
  auto entry = station->ledger->latest_provisioned(uid);
  REQUIRE(entry);
  CHECK(entry->reprovision);
  CHECK_FALSE(entry->replaces_serial.empty());
  CHECK(entry->replaces_serial != entry->certificate_serial);
  CHECK(certificates_for(*station, uid).size() == 2);
  station->ledger->checkpoint();
  auto report = station->ledger->verify(station->ca->public_key_der());
  CHECK(report.ok);
  CHECK(report.reprovisions == 1);
  // The export says so, for the service and the auditor.
  station->ledger->export_bundle(files.dir.path() / "units.jsonl", *station->ca);
  auto line = nlohmann::json::parse(read_text_file(files.dir.path() / "units.jsonl")
                                        .substr(0, read_text_file(files.dir.path() / "units.jsonl").find('\n')));
  CHECK(line["uid"] == uid);
  CHECK(line["reprovisioned"] == true);
  CHECK(line["certificates_issued"] == 2);
}

TEST_CASE("workflow: a board that acknowledges a write it did not keep is never sealed") {
  test::ServedBoards served(1);
  // The install-config write is acknowledged but never reaches the board (a flash fault, a proxy).
  test::SmpProxy proxy(served.dir.path() / "proxy.sock",
                       (served.dir.path() / (served.boards[0]->uid() + ".sock")).string(),
                       [&](const smp::Header& h, const smp::Body&) -> std::optional<smp::Body> {
                         if (is_request(h, smp::group::kiln_provisioning, provisioning_command::install_config))
                           return smp::Body::object();
                         return std::nullopt;
                       });
  test::StationFiles files(served.root.cert_path);
  // module-complete: the board itself would not insist on the service configuration.
  files.profile.final_state = ManufacturingState::module_complete;
  write_profile(files.profile_path, files.profile, true);
  auto station = files.open();
  auto outcome = provision_board(*station, {BoardAddress::Kind::emulator, proxy.path().string(), "proxy"}, {}, {});
  CHECK(outcome.result == BoardStatus::failed);
  CHECK(outcome.failed_step == "ledger");
  CHECK(outcome.code == ExitCode::board);
  CHECK(outcome.error.find("service configuration") != std::string::npos);
  CHECK(record_of(served, 0).state == ManufacturingState::blank);  // not sealed
  CHECK_FALSE(station->ledger->latest_provisioned(outcome.uid));

  // Straight to the board, the same station finishes it.
  auto direct = provision_board(*station, served.address(0), {}, {});
  REQUIRE_MESSAGE(direct.result == BoardStatus::provisioned, direct.error);
  CHECK(record_of(served, 0).state == ManufacturingState::module_complete);
}
