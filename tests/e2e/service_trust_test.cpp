// kiln against a real kiln-service: who may register a factory CA, whose devices an import may touch,
// and which secrets the service keeps (issue #12 items 1, 2, 5, 11). Real TLS, SQLite and processes.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/service_setup.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

using kiln::test::mode_of;
using kiln::test::slurp;
using kiln::test::spit;


// A service with two tenants: "default" (token admin.token) owns the station CA "Test Station CA", registered
// with its key and --stations; "globex" (token globex.token) is the other tenant, a would-be thief.
struct TwoTenants : test::ServiceSetup {
  std::string admin = admin_token_file, globex = add_tenant("globex");

  explicit TwoTenants(bool agents = false) : ServiceSetup(agents) {
    for (const auto& token : {admin, globex}) REQUIRE(kiln({"product", "create", "Thermo"}, token).exit_code == 0);
  }

  // A raw API call with curl: {HTTP status, body}.
  std::pair<int, std::string> curl(const std::string& method, const std::string& path, const std::string& token_file,
                                   const std::string& body, const std::vector<std::string>& headers = {}) const {
    std::vector<std::string> args = {"-s",
                                     "-o",
                                     "-",
                                     "-w",
                                     "\n%{http_code}",
                                     "--cacert",
                                     (data / "ca.pem").string(),
                                     "-X",
                                     method,
                                     "-H",
                                     "Authorization: Bearer " + token_of(token_file),
                                     "-H",
                                     "Content-Type: application/json",
                                     "--data-binary",
                                     body};
    for (const auto& h : headers) args.insert(args.end(), {"-H", h});
    args.push_back(service->url() + path);
    auto r = test::run_process("/usr/bin/curl", args);
    auto cut = r.out.rfind('\n');
    REQUIRE(cut != std::string::npos);
    return {std::stoi(r.out.substr(cut + 1)), r.out.substr(0, cut)};
  }

  std::string write_bundle(const std::string& name, const std::string& units, const test::TestKey& signer) const {
    spit(dir.file(name), test::signed_bundle(units, signer));
    return dir.file(name);
  }
};

std::string unit(const std::string& uid, const std::string& public_pem) {
  return Json{{"uid", uid}, {"product", "Thermo"}, {"state", "secured"}, {"public_key", public_pem}}.dump() + "\n";
}

}  // namespace

TEST_CASE(
    "trust e2e: a CA is registered only with its key; another tenant cannot take it, its bundles or its devices") {
  TwoTenants t;
  test::TestKey device, station_key, rogue;
  spit(t.dir.file("rogue.key"), rogue.private_pem(), true);
  spit(t.dir.file("station.pem"), t.station.issue(station_key, "station-1"));
  spit(t.dir.file("station.key"), station_key.private_pem(), true);
  auto bundle = t.write_bundle("units.jsonl", unit("unit-1", device.public_pem()), t.station.key);
  auto station_login = [&] {
    auto o = t.env(t.admin);
    o.env.erase("KILN_TOKEN");
    return test::kiln(
        {"-o", "json", "--client-cert", t.dir.file("station.pem"), "--client-key", t.dir.file("station.key"), "whoami"},
        o);
  };

  // globex holds only the public certificate: no --key is a usage error, another key fails verification (3),
  // and the API refuses a registration without proof, or with a proof by another key (422).
  CHECK(t.kiln({"device", "ca", "add", "--stations", t.dir.file("station-ca.pem")}, t.globex).exit_code == 2);
  auto wrong_key = t.kiln(
      {"device", "ca", "add", "--stations", t.dir.file("station-ca.pem"), "--key", t.dir.file("rogue.key")}, t.globex);
  CHECK(wrong_key.exit_code == 3);
  CHECK(wrong_key.err.find("is not the private key") != std::string::npos);
  auto bare =
      t.curl("POST", "/v1/factory-cas", t.globex, Json{{"certificate", t.station.pem}, {"stations", true}}.dump());
  CHECK(bare.first == 422);
  CHECK(Json::parse(bare.second)["error"]["code"] == "proof_required");
  auto challenge = t.curl("POST", "/v1/factory-cas/challenge", t.globex, Json{{"certificate", t.station.pem}}.dump());
  REQUIRE(challenge.first == 201);
  auto forged = t.curl("POST", "/v1/factory-cas", t.globex,
                       test::factory_ca_registration(t.station, challenge.second, true, &rogue));
  CHECK(forged.first == 422);
  CHECK(Json::parse(forged.second)["error"]["code"] == "proof_invalid");

  // So globex cannot import the owner's bundle first and own its devices; the owner imports them.
  auto taken = t.kiln({"device", "import", bundle}, t.globex);
  CHECK(taken.exit_code == 3);
  CHECK(taken.err.find("not the key of a factory CA registered") != std::string::npos);
  REQUIRE(t.kiln({"device", "import", bundle}).exit_code == 0);
  CHECK(t.kiln({"device", "show", "unit-1"}, t.globex).exit_code == 9);
  CHECK(t.kiln({"device", "show", "unit-1"}).exit_code == 0);

  // Even with the key, a CA owned by one tenant is refused to another (exit 7), without naming the owner;
  // the owner's station keeps logging in, as the owner.
  auto owned =
      t.kiln({"device", "ca", "add", "--stations", t.dir.file("station-ca.pem"), "--key", t.dir.file("station-ca.key")},
             t.globex);
  CHECK(owned.exit_code == 7);
  CHECK(owned.err.find("already registered") != std::string::npos);
  CHECK(owned.err.find("default") == std::string::npos);
  auto who = station_login();
  REQUIRE_MESSAGE(who.exit_code == 0, who.err);
  CHECK(Json::parse(who.out)["tenant"] == "default");
  CHECK(Json::parse(who.out)["role"] == "factory");

  // A challenge answer serves once: sent again, it is refused.
  auto own = t.curl("POST", "/v1/factory-cas/challenge", t.admin, Json{{"certificate", t.station.pem}}.dump());
  auto answer = test::factory_ca_registration(t.station, own.second, true);
  CHECK(t.curl("POST", "/v1/factory-cas", t.admin, answer).first == 201);
  auto replayed = t.curl("POST", "/v1/factory-cas", t.admin, answer);
  CHECK(replayed.first == 422);
  CHECK(Json::parse(replayed.second)["error"]["code"] == "challenge_unknown");
}

TEST_CASE(
    "trust e2e: a counterfeit bundle replaying a claimed unit's UID with another key is refused; the genuine unit "
    "checks in") {
  TwoTenants t(true);
  test::TestCa device_ca("Default Device CA");
  test::TestKey genuine, counterfeit;
  spit(t.dir.file("device-ca.pem"), device_ca.pem);
  spit(t.dir.file("device-ca.key"), device_ca.key.private_pem(), true);
  REQUIRE(
      t.kiln({"device", "ca", "add", t.dir.file("device-ca.pem"), "--key", t.dir.file("device-ca.key")}).exit_code ==
      0);
  spit(t.dir.file("genuine.key"), genuine.private_pem(), true);
  spit(t.dir.file("genuine.pem"), device_ca.issue(genuine, "unit-1"));
  spit(t.dir.file("counterfeit.key"), counterfeit.private_pem(), true);
  spit(t.dir.file("counterfeit.pem"), device_ca.issue(counterfeit, "unit-1"));
  REQUIRE(
      t.kiln({"device", "import", t.write_bundle("genuine.jsonl", unit("unit-1", genuine.public_pem()), t.station.key)})
          .exit_code == 0);
  auto claimed = t.kiln({"device", "claim", "--id", "unit-1", "--key", t.dir.file("genuine.key")});
  REQUIRE_MESSAGE(claimed.exit_code == 0, claimed.err);

  // The counterfeit's bundle is correctly signed by the tenant's own station: still refused, naming the unit.
  auto fake = t.write_bundle(
      "fake.jsonl", unit("unit-2", counterfeit.public_pem()) + unit("unit-1", counterfeit.public_pem()), t.station.key);
  auto refused = t.kiln({"device", "import", fake});
  CHECK(refused.exit_code == 7);
  CHECK(refused.err.find("unit unit-1 conflicts") != std::string::npos);
  CHECK(t.kiln({"device", "show", "unit-2"}).exit_code == 9);  // nothing of that bundle was applied
  // Re-importing the genuine unit with its own key stays idempotent.
  CHECK(t.kiln({"device", "import", t.dir.file("genuine.jsonl")}).exit_code == 0);

  auto agent_url = "https://127.0.0.1:" + std::to_string(t.service->agent_port());
  auto check_in = [&](const std::string& who) {
    return test::run_process(
        "/usr/bin/curl", {"-s", "-w", "\n%{http_code}", "--cacert", (t.data / "ca.pem").string(),
                          "--cert", t.dir.file(who + ".pem"), "--key", t.dir.file(who + ".key"), "-X", "POST", "--data",
                          R"({"version":"1.0.0"})", agent_url + "/v1/agent/check-in"});
  };
  CHECK(check_in("genuine").out.ends_with("\n200"));
  CHECK(check_in("counterfeit").out.ends_with("\n401"));
  auto device = t.kiln({"-o", "json", "device", "show", "unit-1"});
  REQUIRE(device.exit_code == 0);
  CHECK(Json::parse(device.out)["claimed"] == true);
  CHECK(Json::parse(device.out)["version"] == "1.0.0");
}

TEST_CASE("trust e2e: a token's secret is never stored for replay; the database files are 0600") {
  TwoTenants t;
  const std::vector<std::string> key = {"Idempotency-Key: mint-ci-token"};
  auto first = t.curl("POST", "/v1/tokens", t.admin, R"({"role":"reader","name":"ci"})", key);
  REQUIRE(first.first == 201);
  auto secret = Json::parse(first.second)["token"].get<std::string>();
  auto retried = t.curl("POST", "/v1/tokens", t.admin, R"({"role":"reader","name":"ci"})", key);
  CHECK(retried.first == 409);
  CHECK(Json::parse(retried.second)["error"]["code"] == "idempotency_conflict");
  CHECK(retried.second.find(secret) == std::string::npos);
  auto other = t.curl("POST", "/v1/tokens", t.admin, R"({"role":"admin","name":"ci"})", key);
  CHECK(other.first == 422);
  CHECK(other.second.find(secret) == std::string::npos);

  // Nothing on disk holds the secret, and only the service's user can read the database.
  for (const char* name : {"kiln.db", "kiln.db-wal", "kiln.db-shm"}) {
    auto file = t.data / name;
    REQUIRE_MESSAGE(std::filesystem::exists(file), name);
    CHECK_MESSAGE(mode_of(file) == 0600, name);
    CHECK_MESSAGE(slurp(file).find(secret) == std::string::npos, name);
  }
  CHECK(mode_of(t.data) == 0700);

  // Malformed time filters are usage errors naming the option (exit 2), not an empty list; the service
  // itself answers 400 naming the field (tests/service).
  for (const char* bad_time : {"0abc", "yesterday", "2026-02-30", "2026-01-31T12:00:00"}) {
    CAPTURE(bad_time);
    auto bad = t.kiln({"device", "list", "--seen-after", bad_time});
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("--seen-after") != std::string::npos);
    CHECK(bad.err.find("ISO 8601") != std::string::npos);
    CHECK(bad.out.empty());
  }
  CHECK(t.kiln({"device", "count", "--seen-before", "2026-02-30"}).exit_code == 2);
  CHECK(t.kiln({"device", "count", "--seen-before", "2026-01-31T12:00:00+02:00"}).exit_code == 0);
}

TEST_CASE("trust e2e: a CA whose key lives on a PKCS#11 token is registered by signing the challenge on the token") {
  TwoTenants t;
  const std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  if (!std::filesystem::exists(module)) return;
  auto conf = t.dir.file("softhsm2.conf");
  std::filesystem::create_directory(t.dir.path() / "tokens");
  std::ofstream(conf) << "directories.tokendir = " << t.dir.file("tokens")
                      << "\nobjectstore.backend = file\nlog.level = ERROR\n";
  test::ProcessOptions hsm;
  hsm.env["SOFTHSM2_CONF"] = conf;
  auto tool = [&](const std::string& program, const std::vector<std::string>& args) {
    auto r = test::run_process(program, args, hsm);
    INFO(program << ": " << r.err);
    REQUIRE(r.exit_code == 0);
  };
  tool("/usr/bin/softhsm2-util", {"--init-token", "--free", "--label", "CA", "--pin", "1234", "--so-pin", "5678"});
  tool("/usr/bin/pkcs11-tool", {"--module", module, "--login", "--pin", "1234", "--keypairgen", "--key-type",
                                "EC:prime256v1", "--id", "01", "--label", "device-ca"});
  tool("/usr/bin/pkcs11-tool",
       {"--module", module, "--read-object", "--type", "pubkey", "--id", "01", "-o", t.dir.file("hsm.der")});
  tool("/usr/bin/openssl",
       {"pkey", "-pubin", "-inform", "DER", "-in", t.dir.file("hsm.der"), "-out", t.dir.file("hsm.pub")});
  // A certificate for the token's key (-force_pubkey), issued by a file root.
  tool("/usr/bin/openssl",
       {"req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        t.dir.file("root.key"), "-subj", "/CN=Root", "-days", "2", "-out", t.dir.file("root.pem")});
  tool("/usr/bin/openssl", {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                            t.dir.file("dummy.key"), "-subj", "/CN=HSM Device CA", "-out", t.dir.file("dummy.csr")});
  tool("/usr/bin/openssl",
       {"x509", "-req", "-in", t.dir.file("dummy.csr"), "-CA", t.dir.file("root.pem"), "-CAkey", t.dir.file("root.key"),
        "-CAcreateserial", "-force_pubkey", t.dir.file("hsm.pub"), "-days", "2", "-out", t.dir.file("hsm-ca.pem")});

  auto o = t.env(t.admin);
  o.env["SOFTHSM2_CONF"] = conf;
  o.env["KILN_PKCS11_MODULE"] = module;
  o.env["KILN_PKCS11_PIN"] = "1234";
  auto added = test::kiln(
      {"-o", "json", "device", "ca", "add", t.dir.file("hsm-ca.pem"), "--key", "pkcs11:token=CA;object=device-ca"}, o);
  REQUIRE_MESSAGE(added.exit_code == 0, added.err);
  CHECK(Json::parse(added.out)["stations"] == false);
  // The root's file key is not the token's key: refused before any request.
  auto wrong = test::kiln({"device", "ca", "add", t.dir.file("hsm-ca.pem"), "--key", t.dir.file("root.key")}, o);
  CHECK(wrong.exit_code == 3);
}
