// End to end revocation (issue 17) with the real binaries: an emulated board's agent checks in over mutual
// TLS, its device is revoked with `kiln device revoke`, and its next check-in is refused (the service log
// names it) while the other board goes on; a token revoked with `kiln token revoke` gets 401 (kiln exits 6);
// the last admin token cannot be revoked (exit 7); a bundle signed under a CA revoked with
// `kiln device ca revoke` is refused (exit 6) and nothing of it is imported, while a bundle imported before
// stays and its unit is marked.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tests/support/ota_fleet.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

// kiln with the fleet's service and CA but another token.
test::ProcessResult kiln_as(test::OtaFleet& fleet, const std::string& token, const std::vector<std::string>& args) {
  test::ProcessOptions o;
  o.env["XDG_CONFIG_HOME"] = fleet.file("xdg");
  o.env["KILN_SERVICE"] = fleet.service().url();
  o.env["KILN_CA_FILE"] = fleet.service_dir() + "/ca.pem";
  o.env["KILN_TOKEN"] = token;
  o.timeout_seconds = 60;
  return test::run_kiln(args, o);
}

std::string last_seen(test::OtaFleet& fleet, const std::string& uid) {
  return test::OtaFleet::text(fleet.json({"device", "show", uid}), "last_seen");
}

// A ledger bundle of one new unit, signed by a fresh station key whose certificate the fleet's station CA
// issued (the trailer carries it, as a station's export does).
std::string write_bundle(test::OtaFleet& fleet, const std::string& uid) {
  test::TestKey ca_key, station, unit;
  {
    std::unique_ptr<BIO, test::OpenSslFree> bio(BIO_new_file(fleet.file("station-ca.key.pem").c_str(), "r"));
    REQUIRE(bio);
    ca_key.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    REQUIRE(ca_key.key);
  }
  std::unique_ptr<BIO, test::OpenSslFree> bio(BIO_new_file(fleet.file("station-ca.pem").c_str(), "r"));
  REQUIRE(bio);
  std::unique_ptr<X509, test::OpenSslFree> ca(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(ca);
  auto certificate = test::issue_certificate(station, "station-" + uid, ca.get(), ca_key, false);
  auto units = Json{{"uid", uid}, {"product", "Thermo"}, {"public_key", unit.public_pem()}, {"state", "secured"}}.dump() +
               "\n";
  auto bundle = test::signed_bundle(units, station);
  auto trailer_at = bundle.rfind('\n', bundle.size() - 2) + 1;
  auto trailer = nlohmann::ordered_json::parse(bundle.substr(trailer_at));
  trailer["station_certificate"] = certificate;
  auto path = fleet.file(uid + ".jsonl");
  std::ofstream(path, std::ios::binary) << bundle.substr(0, trailer_at) << trailer.dump() << "\n";
  return path;
}

}  // namespace

TEST_CASE("revocation e2e: a revoked board's check-ins are refused and logged; revoked tokens and CAs are refused") {
  test::OtaFleetOptions options;
  options.boards = 2;
  options.factory_firmware = false;  // no deployment here: provisioning without the firmware step is quicker
  test::OtaFleet fleet(options);
  auto revoked = fleet.uids().at(0), other = fleet.uids().at(1);

  // Both agents check in over mutual TLS.
  REQUIRE(test::OtaFleet::wait_for([&] { return !last_seen(fleet, revoked).empty() && !last_seen(fleet, other).empty(); }));

  // kiln device revoke: its next check-in is refused and the service log names it with the reason.
  auto r = fleet.kiln({"-o", "json", "device", "revoke", revoked, "--reason", "board stolen"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto answer = Json::parse(r.out);
  REQUIRE(answer.size() == 1);
  CHECK(answer[0]["state"] == "revoked");
  CHECK(answer[0]["revoked_reason"] == "board stolen");
  auto refused = "agent: refused device " + revoked;
  CHECK_MESSAGE(test::OtaFleet::wait_for([&] { return fleet.service().log().find(refused) != std::string::npos; }, 30),
                fleet.service().log());
  auto& log = fleet.service().log();
  auto line = log.substr(log.find(refused), log.find('\n', log.find(refused)) - log.find(refused));
  CHECK_MESSAGE(line.find("board stolen") != std::string::npos, line);
  // The revoked board is no longer heard; the other one is.
  auto revoked_seen = last_seen(fleet, revoked), other_seen = last_seen(fleet, other);
  CHECK(test::OtaFleet::wait_for([&] { return last_seen(fleet, other) != other_seen; }, 30));
  CHECK(last_seen(fleet, revoked) == revoked_seen);
  auto shown = fleet.json({"device", "show", revoked});
  CHECK(shown["state"] == "revoked");
  CHECK(fleet.json({"device", "list", "--state", "revoked"}).size() == 1);
  // Again: idempotent. An unknown UID: exit 9, nothing changed.
  CHECK(fleet.json({"device", "revoke", revoked})[0]["revoked_at"] == shown["revoked_at"]);
  auto unknown = fleet.kiln({"device", "revoke", "NO-SUCH-UID"});
  CHECK(unknown.exit_code == 9);
  CHECK(fleet.json({"device", "list", "--state", "revoked"}).size() == 1);

  // kiln token revoke: the revoked token's next request gets 401, kiln exits 6 (authentication).
  auto created = test::run_process(test::bin_path("kiln-service"), {"token", "create", "--dir", fleet.service_dir(), "--role",
                                                        "operator", "--name", "ci"});
  REQUIRE_MESSAGE(created.exit_code == 0, created.err);
  auto ci = created.out.substr(0, created.out.find_first_of("\r\n"));
  CHECK(kiln_as(fleet, ci, {"whoami"}).exit_code == 0);
  auto tokens = fleet.json({"token", "list"});
  CHECK(tokens.size() == 2);
  CHECK(tokens.dump().find(ci) == std::string::npos);
  CHECK(fleet.json({"token", "revoke", "ci"})["revoked_at"].is_string());
  auto after = kiln_as(fleet, ci, {"whoami"});
  CHECK(after.exit_code == 6);
  CHECK_MESSAGE(after.err.find("refused the token") != std::string::npos, after.err);
  // The tenant's last admin token: exit 7, still working.
  auto last = fleet.kiln({"token", "revoke", "admin"});
  CHECK_MESSAGE(last.exit_code == 7, last.err);
  CHECK(fleet.kiln({"whoami"}).exit_code == 0);

  // kiln device ca revoke: a bundle signed under the CA was imported before; one after is refused, nothing
  // of it imported; the unit imported before stays, marked.
  REQUIRE(fleet.json({"device", "import", write_bundle(fleet, "NEW-UNIT-1")})["imported"] == 1);
  auto ca = fleet.json({"device", "ca", "revoke", "OTA Station CA", "--reason", "station key leaked"});
  CHECK(ca["revoked_at"].is_string());
  auto cas = fleet.json({"device", "ca", "list"});
  REQUIRE(cas.size() == 1);
  CHECK(cas[0]["revoked_at"] == ca["revoked_at"]);
  auto import = fleet.kiln({"device", "import", write_bundle(fleet, "NEW-UNIT-2")});
  CHECK(import.exit_code == 6);
  CHECK_MESSAGE(import.err.find("revoked") != std::string::npos, import.err);
  CHECK(fleet.kiln({"device", "show", "NEW-UNIT-2"}).exit_code == 9);
  CHECK(fleet.json({"device", "show", "NEW-UNIT-1"})["state"] == "secured");
  // Boards imported under the CA before stay, marked with its revocation; the unrevoked one still checks in.
  CHECK(fleet.json({"device", "show", other})["ca_revoked"] == true);
  auto seen = last_seen(fleet, other);
  CHECK(test::OtaFleet::wait_for([&] { return last_seen(fleet, other) != seen; }, 30));
}
