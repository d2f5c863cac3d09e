// kiln against a real kiln-service on 127.0.0.1: real TLS, real SQLite, real processes.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "signing/key_ref.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/service_setup.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

using kiln::test::jsonl;
using kiln::test::mode_of;
using kiln::test::slurp;
using kiln::test::spit;

using Setup = test::ServiceSetup;

// A release the product Thermo's boards accept (the key becomes its boot and manifest key): `raw` signed
// as an MCUboot image (real kiln image sign), its SUIT manifest, both uploaded. Returns {image ID, signed file}.
std::pair<std::string, std::string> trusted_release(const Setup& s, const std::string& raw, int sequence) {
  auto key = s.dir.file("release.pem");
  if (!std::filesystem::exists(key)) {
    REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", key}).exit_code == 0);
    s.json({"product", "update", "Thermo", "--boot-key", key, "--manifest-key", key});
  }
  auto signed_file = raw + ".signed", suit = raw + ".suit";
  auto sign = test::kiln({"image", "sign", raw, signed_file, "-k", key, "--version", "1.0." + std::to_string(sequence),
                          "--header-size", "0x200", "--slot-size", "0x100000", "--pad-header"});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto made = test::kiln({"manifest", "create", "--component", signed_file, "--vendor-domain", "example.com",
                          "--class-name", "thermo", "--sequence", std::to_string(sequence), "--key", key, "-o", suit});
  REQUIRE_MESSAGE(made.exit_code == 0, made.err);
  return {s.json({"image", "upload", signed_file, "--manifest", suit})["id"].get<std::string>(), signed_file};
}

}  // namespace

TEST_CASE("service e2e: init writes 0600 secrets; login keeps the token 0600 and never prints it") {
  Setup s;
  CHECK(mode_of(s.data / "admin.token") == 0600);
  CHECK(mode_of(s.data / "ca.key") == 0600);
  CHECK(mode_of(s.data / "server.key") == 0600);
  auto again = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", s.data.string()});
  CHECK(again.exit_code == 7);

  test::ProcessOptions o;
  o.env["XDG_CONFIG_HOME"] = s.dir.file("xdg");
  auto login = test::kiln({"-o", "json", "login", "--service", s.service->url(), "--token-file", s.admin_token_file,
                           "--ca-file", (s.data / "ca.pem").string()},
                          o);
  REQUIRE_MESSAGE(login.exit_code == 0, login.err);
  auto token = slurp(s.admin_token_file);
  token.pop_back();
  CHECK(login.out.find(token) == std::string::npos);
  CHECK(login.err.find(token) == std::string::npos);
  auto credentials = std::filesystem::path(s.dir.file("xdg")) / "kiln" / "credentials";
  CHECK(mode_of(credentials) == 0600);
  auto who = test::kiln({"-o", "json", "whoami"}, o);
  REQUIRE_MESSAGE(who.exit_code == 0, who.err);
  CHECK(Json::parse(who.out)["role"] == "admin");
  CHECK(test::kiln({"logout"}, o).exit_code == 0);
  CHECK(test::kiln({"whoami"}, o).exit_code == 6);

  // A wrong token is refused by the service: exit 6 before anything is stored.
  spit(s.dir.file("bad.token"), "kiln_0000\n");
  auto bad = test::kiln({"login", "--service", s.service->url(), "--token-file", s.dir.file("bad.token"), "--ca-file",
                         (s.data / "ca.pem").string()},
                        o);
  CHECK(bad.exit_code == 6);
  CHECK(!std::filesystem::exists(credentials));
}

TEST_CASE("service e2e: TLS and connection failures say what failed") {
  Setup s;
  test::TempDir other;
  REQUIRE(test::run_process(test::bin_path("kiln-service"), {"init", "--dir", other.file("svc")}).exit_code == 0);
  auto o = s.env();
  o.env["KILN_CA_FILE"] = other.file("svc/ca.pem");
  auto wrong_ca = test::kiln({"whoami"}, o);
  CHECK(wrong_ca.exit_code == 5);
  CHECK(wrong_ca.err.find("does not verify") != std::string::npos);

  o = s.env();
  o.env["KILN_SERVICE"] = "https://localhost:" + std::to_string(s.service->port());
  CHECK(test::kiln({"whoami"}, o).exit_code == 0);  // the certificate names localhost too

  o.env["KILN_SERVICE"] = "https://127.0.0.1:1";
  auto refused = test::kiln({"whoami"}, o);
  CHECK(refused.exit_code == 5);
  CHECK(refused.err.find("cannot connect") != std::string::npos);
}

TEST_CASE("service e2e: products, groups, import, list, count, claim, roles, deployments, restart keeps state") {
  Setup s;
  auto product = s.json({"product", "create", "Thermo"});
  CHECK(product["groups"].size() == 3);
  CHECK(s.kiln({"product", "create", "Thermo"}).exit_code == 7);
  CHECK(s.json({"group", "list", "--product", "Thermo"}).size() == 3);
  CHECK(s.json({"group", "create", "Thermo/Beta"})["name"] == "Beta");
  CHECK(s.json({"group", "update", "Thermo/Beta", "--name", "Beta2"})["name"] == "Beta2");
  CHECK(s.json({"group", "delete", "Thermo/Beta2"}).contains("deleted"));
  CHECK(s.kiln({"group", "show", "Thermo/Beta2"}).exit_code == 9);

  // A bundle of 5 units with real device keys.
  std::string bundle;
  for (int i = 0; i < 5; ++i) {
    auto key = s.dir.file("dev-" + std::to_string(i) + ".pem");
    REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", key}).exit_code == 0);
    bundle += Json{{"uid", "dev-" + std::to_string(i)}, {"product", "Thermo"}, {"state", "secured"},
                   {"version", i < 3 ? "1.0.0" : "1.1.0"}, {"public_key", test::public_key_pem_of_file(key)}}.dump() + "\n";
  }
  s.write_bundle("bundle.jsonl", bundle);
  CHECK(s.json({"device", "import", s.dir.file("bundle.jsonl")})["imported"] == 5);

  auto list = s.kiln({"-o", "jsonl", "device", "list", "--page-size", "2"});
  REQUIRE_MESSAGE(list.exit_code == 0, list.err);
  auto rows = jsonl(list.out);
  REQUIRE(rows.size() == 5);
  CHECK(rows[4]["id"] == "dev-4");
  // --limit N stops after N devices and names the cursor to continue from (stderr); --cursor goes on
  // from there; the pages together are the whole list, each device once.
  {
    std::vector<std::string> ids;
    std::string cursor;
    for (int page = 0; page < 5; ++page) {
      std::vector<std::string> args = {"-o", "jsonl", "device", "list", "--limit", "2", "--page-size", "1"};
      if (!cursor.empty()) args.insert(args.end(), {"--cursor", cursor});
      auto r = s.kiln(args);
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
      auto got = jsonl(r.out);
      CHECK(got.size() <= 2);
      for (auto& d : got) ids.push_back(d["id"]);
      auto at = r.err.find("--cursor ");
      if (at == std::string::npos) break;
      cursor = r.err.substr(at + 9);
      cursor = cursor.substr(0, cursor.find_first_of(" \n"));
    }
    CHECK(ids == std::vector<std::string>{"dev-0", "dev-1", "dev-2", "dev-3", "dev-4"});
    CHECK(s.kiln({"device", "list", "--limit", "0"}).exit_code == 2);
  }
  CHECK(jsonl(s.kiln({"-o", "jsonl", "device", "list", "--version", "1.1.0"}).out).size() == 2);
  auto csv = s.kiln({"-o", "csv", "device", "list", "--page-size", "2"});
  CHECK(std::count(csv.out.begin(), csv.out.end(), '\n') == 6);  // header + 5
  auto counts = s.json({"device", "count", "--by", "version"});
  CHECK(counts[0] == Json{{"version", "1.0.0"}, {"count", 3}});

  auto claimed = s.json({"device", "claim", "--id", "dev-0", "--key", s.dir.file("dev-0.pem")});
  CHECK(claimed["claimed"] == true);
  auto wrong = s.kiln({"device", "claim", "--id", "dev-1", "--key", s.dir.file("dev-0.pem")});
  CHECK(wrong.exit_code == 3);
  CHECK(wrong.err.find("does not verify") != std::string::npos);
  CHECK(s.kiln({"device", "show", "nope"}).exit_code == 9);
  CHECK(s.json({"device", "assign", "dev-1", "dev-2", "--group", "Thermo/Field Test"}).size() == 2);
  CHECK(jsonl(s.kiln({"-o", "jsonl", "device", "list", "--group", "Thermo/Field Test"}).out).size() == 2);

  // Roles: a reader reads but cannot write; a factory token imports but cannot create products.
  auto reader = s.token("reader");
  CHECK(s.kiln({"product", "list"}, reader).exit_code == 0);
  auto denied = s.kiln({"product", "create", "Other"}, reader);
  CHECK(denied.exit_code == 6);
  CHECK(denied.err.find("role reader") != std::string::npos);
  auto factory = s.token("factory");
  CHECK(s.kiln({"device", "import", s.dir.file("bundle.jsonl")}, factory).exit_code == 0);
  CHECK(s.kiln({"product", "create", "Other"}, factory).exit_code == 6);

  // Images and a deployment.
  std::string firmware(200000, '\0');
  std::mt19937 rng(7);
  for (auto& c : firmware) c = static_cast<char>(rng());
  spit(s.dir.file("fw.bin"), firmware);
  auto uploaded = s.json({"image", "upload", s.dir.file("fw.bin")});
  CHECK(uploaded["uploaded"] == true);
  auto id = uploaded["id"].get<std::string>();
  CHECK(s.json({"image", "upload", s.dir.file("fw.bin")})["uploaded"] == false);  // already there: one request
  CHECK(s.json({"image", "download", id, "-O", s.dir.file("back.bin")})["size"] == 200000);
  CHECK(slurp(s.dir.file("back.bin")) == firmware);
  // A device output is written in place (a node of our own: renaming onto /dev/null destroys it as root),
  // from a verified staging copy, with no "<device>.part" beside it.
  if (::mknod(s.dir.file("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    CHECK(s.json({"image", "download", id, "-O", s.dir.file("null")})["size"] == 200000);
    struct stat st {};
    REQUIRE(::stat(s.dir.file("null").c_str(), &st) == 0);
    CHECK(S_ISCHR(st.st_mode));
    CHECK_FALSE(std::filesystem::exists(s.dir.file("null.part")));
  }
  auto release = trusted_release(s, s.dir.file("fw.bin"), 2).first;
  auto deployment =
      s.json({"deployment", "create", "--group", "Thermo/Production", "--image", release, "--rollout", "10%"});
  CHECK(deployment["rollout"] == 10);
  auto dep = deployment["id"].get<std::string>();
  CHECK(s.json({"deployment", "pause", dep})["state"] == "paused");

  // Restart mid-deployment: everything persists.
  CHECK(s.service->stop() == 0);
  s.service = std::make_unique<test::ServiceProcess>(s.data);
  CHECK(s.json({"deployment", "show", dep})["state"] == "paused");
  CHECK(s.json({"deployment", "resume", dep})["state"] == "active");
  CHECK(s.json({"deployment", "abort", dep})["state"] == "aborted");
  CHECK(s.kiln({"deployment", "resume", dep}).exit_code == 7);
  CHECK(s.json({"device", "show", "dev-0"})["claimed"] == true);
  CHECK(jsonl(s.kiln({"-o", "jsonl", "device", "list"}).out).size() == 5);
  CHECK(s.json({"image", "list"}).size() == 3);  // the firmware, and the signed release with its manifest
}

TEST_CASE("service e2e: malformed JSON over real TLS answers 400 with a reason") {
  Setup s;
  auto token = s.env().env.at("KILN_TOKEN");
  for (const char* path : {"/v1/products", "/v1/groups", "/v1/devices/import", "/v1/images", "/v1/deployments", "/v1/tokens",
                           "/v1/images/0000000000000000000000000000000000000000000000000000000000000000/manifest"}) {
    auto r = test::run_process("/usr/bin/curl",
                               {"-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", (s.data / "ca.pem").string(), "-H",
                                "Authorization: Bearer " + token, "--data-binary", "{\"name\":", s.service->url() + path});
    INFO(path << ": " << r.out);
    // A ledger bundle is JSON lines: one that ends mid-line is refused as truncated (422).
    CHECK(r.out.ends_with(std::string(path) == "/v1/devices/import" ? "\n422" : "\n400"));
    CHECK(r.out.find("\"message\"") != std::string::npos);
  }
}

TEST_CASE("service e2e: an upload cut by the network resumes where the service stopped") {
  Setup s;
  test::FaultProxy proxy(s.service->port());
  auto o = s.env();
  o.env["KILN_SERVICE"] = "https://127.0.0.1:" + std::to_string(proxy.port());
  std::string firmware(3 << 20, '\0');
  std::mt19937 rng(11);
  for (auto& c : firmware) c = static_cast<char>(rng());
  spit(s.dir.file("big.bin"), firmware);

  proxy.cut_after((3 << 20) / 2);  // somewhere in the second 1 MiB chunk
  auto cut = test::kiln({"image", "upload", s.dir.file("big.bin")}, o);
  CHECK(proxy.cut_happened());
  CHECK(cut.exit_code == 5);

  proxy.allow();
  auto resumed = test::kiln({"-o", "json", "image", "upload", s.dir.file("big.bin")}, o);
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
  auto result = Json::parse(resumed.out);
  CHECK(result["uploaded"] == true);
  CHECK(result["resumed_from"] == 1 << 20);
  auto id = result["id"].get<std::string>();
  CHECK(s.json({"image", "show", id})["complete"] == true);
  CHECK(s.json({"image", "download", id, "-O", s.dir.file("back.bin")})["size"] == 3 << 20);
  CHECK(slurp(s.dir.file("back.bin")) == firmware);
}

TEST_CASE("service e2e: a device agent checks in and downloads a range over mutual TLS") {
  Setup s(true);
  REQUIRE(s.service->agent_port() > 0);
  test::TestCa factory_ca("Acme Factory CA");
  test::TestKey device_key;
  spit(s.dir.file("factory-ca.pem"), factory_ca.pem);
  spit(s.dir.file("factory-ca.key"), factory_ca.key.private_pem());
  spit(s.dir.file("device.pem"), factory_ca.issue(device_key, "dev-1"));
  spit(s.dir.file("device.key"), device_key.private_pem());
  s.json({"product", "create", "Thermo"});
  s.write_bundle("bundle.jsonl", Json{{"uid", "dev-1"}, {"product", "Thermo"}, {"public_key", device_key.public_pem()}}.dump() + "\n");
  s.json({"device", "import", s.dir.file("bundle.jsonl")});
  CHECK(s.json({"device", "ca", "add", s.dir.file("factory-ca.pem"), "--key", s.dir.file("factory-ca.key")})
            .contains("id"));
  CHECK(s.json({"device", "ca", "list"}).size() == 2);  // the station CA and the factory CA
  spit(s.dir.file("fw.bin"), std::string(10000, 'z'));
  auto [id, signed_file] = trusted_release(s, s.dir.file("fw.bin"), 2);
  auto firmware = slurp(signed_file);
  s.json({"deployment", "create", "--group", "Thermo/Development", "--image", id});

  auto agent_url = "https://127.0.0.1:" + std::to_string(s.service->agent_port());
  std::vector<std::string> tls = {"-s", "--cacert", (s.data / "ca.pem").string(), "--cert", s.dir.file("device.pem"),
                                  "--key", s.dir.file("device.key")};
  auto curl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), tls.begin(), tls.end());
    return test::run_process("/usr/bin/curl", args);
  };
  auto check_in = curl({"-X", "POST", "--data", R"({"version":"1.0.1"})", agent_url + "/v1/agent/check-in"});
  REQUIRE_MESSAGE(check_in.exit_code == 0, check_in.err);
  auto offer = Json::parse(check_in.out);
  REQUIRE(offer["deployment"].is_object());
  auto range = curl({"-r", "100-199", agent_url + offer["deployment"]["images"][0]["url"].get<std::string>()});
  CHECK(range.out == firmware.substr(100, 100));
  CHECK(s.json({"device", "show", "dev-1"})["version"] == "1.0.1");

  // Without a client certificate the agent listener refuses the TLS handshake itself.
  auto anonymous = test::run_process("/usr/bin/curl", {"-s", "--cacert", (s.data / "ca.pem").string(), "-X", "POST",
                                                       agent_url + "/v1/agent/check-in"});
  CHECK(anonymous.exit_code != 0);
  // The bearer-token listener never serves agents.
  auto via_api = test::run_process("/usr/bin/curl", {"-s", "--cacert", (s.data / "ca.pem").string(), "--data", "{}",
                                                     s.service->url() + "/v1/agent/check-in"});
  CHECK(Json::parse(via_api.out)["error"]["code"] == "unauthenticated");
}

namespace {

// Unit lines for `count` devices sharing one public key (the service checks keys, not uniqueness).
std::string unit_lines(const std::string& prefix, int count, const std::string& public_pem) {
  std::string out;
  for (int i = 0; i < count; ++i)
    out.append(Json{{"uid", prefix + std::to_string(i)}, {"product", "Thermo"}, {"state", "secured"}, {"public_key", public_pem}}.dump())
        .append("\n");
  return out;
}

std::string replace_first(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("service e2e: import verifies the bundle signature; edited, shortened, re-signed or cut bundles import nothing") {
  Setup s;
  s.json({"product", "create", "Thermo"});
  test::TestKey device;
  auto units = unit_lines("unit-", 3, device.public_pem());
  auto good = test::signed_bundle(units, s.station.key);
  auto refused = [&](const std::string& name, const std::string& bundle, const std::string& reason) {
    spit(s.dir.file(name), bundle);
    auto r = s.kiln({"device", "import", s.dir.file(name)});
    INFO(name << ": " << r.err);
    CHECK(r.exit_code == 3);
    CHECK(r.err.find(reason) != std::string::npos);
    CHECK(r.err.find("hint:") != std::string::npos);
  };
  refused("edited.jsonl", replace_first(good, "\"secured\"", "\"provisioned\""), "edited after export");
  auto second_line = good.find('\n') + 1;
  refused("removed.jsonl", good.substr(0, second_line) + good.substr(good.find('\n', second_line) + 1), "added or removed");
  test::TestKey rogue;
  refused("rogue.jsonl", test::signed_bundle(units, rogue), "not the key of a factory CA registered");
  refused("truncated.jsonl", good.substr(0, good.size() / 2), "it was truncated");
  refused("unsigned.jsonl", units, "unsigned or truncated");
  // A re-signed trailer that claims another key's signature: the signature itself must verify.
  auto forged = test::signed_bundle(units, rogue);
  auto trailer = Json::parse(forged.substr(units.size()));
  trailer["station_public_key"] = s.station.key.public_pem();
  refused("forged.jsonl", units + trailer.dump() + "\n", "does not verify");
  CHECK(s.json({"device", "list"}).empty());

  spit(s.dir.file("good.jsonl"), good);
  CHECK(s.json({"device", "import", s.dir.file("good.jsonl")})["imported"] == 3);

  // A station key other than the CA's: the trailer carries its certificate, issued by the registered CA.
  test::TestKey station_key;
  auto other_units = unit_lines("other-", 2, device.public_pem());
  auto by_station = Json::parse(test::signed_bundle(other_units, station_key).substr(other_units.size()));
  by_station["station_certificate"] = s.station.issue(station_key, "station-7");
  spit(s.dir.file("station.jsonl"), other_units + by_station.dump() + "\n");
  CHECK(s.json({"device", "import", s.dir.file("station.jsonl")})["imported"] == 2);
  test::TestCa rogue_ca("Rogue CA");
  by_station["station_certificate"] = rogue_ca.issue(station_key, "station-7");
  refused("rogue-station.jsonl", other_units + by_station.dump() + "\n", "does not chain");

  // Over 4 MiB the bundle goes in parts; the service checks the whole before it applies any part.
  auto many = unit_lines("bulk-", 20000, device.public_pem());
  REQUIRE(many.size() > (4u << 20));
  refused("big-edited.jsonl", replace_first(test::signed_bundle(many, s.station.key), "bulk-19999", "bulk-99999"),
          "edited after export");
  CHECK(s.json({"device", "count", "--by", "state"})[0]["count"] == 5);
  spit(s.dir.file("big.jsonl"), test::signed_bundle(many, s.station.key));
  auto big = s.json({"device", "import", s.dir.file("big.jsonl")});
  CHECK(big["imported"] == 20000);
  CHECK(big["requests"].get<int>() >= 2);
  CHECK(s.json({"device", "count", "--by", "state"})[0]["count"] == 20005);
}

TEST_CASE("service e2e: a station authenticates with a client certificate chained to the tenant's factory CA") {
  Setup s;
  s.json({"product", "create", "Thermo"});
  test::TestKey station_key, device_key;
  spit(s.dir.file("station.pem"), s.station.issue(station_key, "station-7"));
  spit(s.dir.file("station.key"), station_key.private_pem());
  std::filesystem::permissions(s.dir.file("station.key"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  spit(s.dir.file("device.key"), device_key.private_pem());
  s.write_bundle("units.jsonl", Json{{"uid", "dev-1"}, {"product", "Thermo"}, {"public_key", device_key.public_pem()}}.dump() + "\n");

  auto o = s.env();
  o.env.erase("KILN_TOKEN");
  auto station = [&](std::vector<std::string> args, const std::string& cert = "station.pem", const std::string& key = "station.key") {
    args.insert(args.begin(), {"--client-cert", s.dir.file(cert), "--client-key", s.dir.file(key)});
    return test::kiln(args, o);
  };
  auto who = station({"-o", "json", "whoami"});
  REQUIRE_MESSAGE(who.exit_code == 0, who.err);
  CHECK(Json::parse(who.out)["role"] == "factory");
  CHECK(Json::parse(who.out)["token"] == "station:station-7");
  auto imported = station({"-o", "json", "device", "import", s.dir.file("units.jsonl")});
  REQUIRE_MESSAGE(imported.exit_code == 0, imported.err);
  auto claimed = station({"-o", "json", "device", "claim", "--id", "dev-1", "--key", s.dir.file("device.key")});
  REQUIRE_MESSAGE(claimed.exit_code == 0, claimed.err);
  CHECK(Json::parse(claimed.out)["claimed"] == true);

  // A station is not an operator.
  auto create = station({"product", "create", "Other"});
  CHECK(create.exit_code == 6);
  CHECK(create.err.find("role factory") != std::string::npos);

  // A certificate from a CA the tenant never registered: 401, said plainly.
  test::TestCa rogue("Rogue CA");
  spit(s.dir.file("rogue.pem"), rogue.issue(station_key, "station-7"));
  auto refused = station({"whoami"}, "rogue.pem");
  CHECK(refused.exit_code == 6);
  CHECK(refused.err.find("refused client certificate") != std::string::npos);
  CHECK(refused.err.find("does not chain to a station CA") != std::string::npos);

  // A device's certificate is for the agent endpoints only.
  spit(s.dir.file("device.pem"), s.station.issue(device_key, "dev-1"));
  std::filesystem::permissions(s.dir.file("device.key"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto as_device = station({"device", "list"}, "device.pem", "device.key");
  CHECK(as_device.exit_code == 6);
  CHECK(as_device.err.find("/v1/agent") != std::string::npos);

  // The key file must be private, and both halves must be given.
  spit(s.dir.file("open.key"), station_key.private_pem());
  std::filesystem::permissions(s.dir.file("open.key"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                                           std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  auto open_key = station({"whoami"}, "station.pem", "open.key");
  CHECK(open_key.exit_code == 6);
  CHECK(open_key.err.find("chmod 600") != std::string::npos);
  CHECK(test::kiln({"--client-cert", s.dir.file("station.pem"), "whoami"}, o).exit_code == 2);

  // The same from the environment, and kept by login for later commands.
  auto env = o;
  env.env["KILN_CLIENT_CERT"] = s.dir.file("station.pem");
  env.env["KILN_CLIENT_KEY"] = s.dir.file("station.key");
  CHECK(test::kiln({"whoami"}, env).exit_code == 0);
  auto login = test::kiln({"login", "--service", s.service->url(), "--ca-file", (s.data / "ca.pem").string()}, env);
  REQUIRE_MESSAGE(login.exit_code == 0, login.err);
  auto later = o;
  later.env.erase("KILN_SERVICE");
  later.env.erase("KILN_CA_FILE");
  auto stored = test::kiln({"-o", "json", "whoami"}, later);
  REQUIRE_MESSAGE(stored.exit_code == 0, stored.err);
  CHECK(Json::parse(stored.out)["role"] == "factory");
}

TEST_CASE("service e2e: device claim takes several UIDs or a file and reports a row per device") {
  Setup s;
  s.json({"product", "create", "Thermo"});
  std::filesystem::create_directories(s.dir.file("keys"));
  std::string units;
  for (const char* uid : {"dev-a", "dev-b", "dev-c"}) {
    auto key = s.dir.file(std::string("keys/") + uid + ".pem");
    REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", key}).exit_code == 0);
    units += Json{{"uid", uid}, {"product", "Thermo"}, {"public_key", test::public_key_pem_of_file(key)}}.dump() + "\n";
  }
  s.write_bundle("units.jsonl", units);
  REQUIRE(s.kiln({"device", "import", s.dir.file("units.jsonl")}).exit_code == 0);
  auto keys = s.dir.file("keys") + "/{uid}.pem";

  spit(s.dir.file("ids.txt"), "# line 3\ndev-a\n\n  dev-b  \n");
  auto two = s.kiln({"-o", "json", "device", "claim", "--from-file", s.dir.file("ids.txt"), "--id", "dev-c", "--key", keys});
  REQUIRE_MESSAGE(two.exit_code == 0, two.err);
  auto rows = Json::parse(two.out);
  REQUIRE(rows.size() == 3);
  for (auto& row : rows) CHECK(row["result"] == "claimed");
  CHECK(rows[0]["uid"] == "dev-c");  // --id first, then the file in order
  CHECK(rows[1]["uid"] == "dev-a");

  // The JSON lines of device list (or the ledger bundle itself) work as a UID file; claims repeat fine.
  spit(s.dir.file("list.jsonl"), s.kiln({"-o", "jsonl", "device", "list"}).out);
  CHECK(s.kiln({"device", "claim", "--from-file", s.dir.file("list.jsonl"), "--key", keys}).exit_code == 0);
  CHECK(s.kiln({"device", "claim", "--from-file", s.dir.file("units.jsonl"), "--key", keys}).exit_code == 0);

  // Some fail: exit 8, every device still tried, the failures named.
  auto partial = s.kiln({"-o", "json", "device", "claim", "--id", "dev-a", "--id", "ghost", "--id", "dev-b", "--key",
                         s.dir.file("keys/dev-a.pem")});
  CHECK(partial.exit_code == 8);
  auto result = Json::parse(partial.out);
  REQUIRE(result.size() == 3);
  CHECK(result[0]["result"] == "claimed");
  CHECK(result[1]["result"] == "failed");
  CHECK(result[2]["result"] == "failed");
  CHECK(result[2]["error"].get<std::string>().find("does not verify") != std::string::npos);
  CHECK(partial.err.find("2 of 3 devices") != std::string::npos);
  CHECK(partial.err.find("ghost") != std::string::npos);

  spit(s.dir.file("bad-ids.txt"), "dev-a dev-b\n");
  auto bad = s.kiln({"device", "claim", "--from-file", s.dir.file("bad-ids.txt"), "--key", keys});
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("line 1") != std::string::npos);
  // A UID names a key file through {uid}: one that leaves the key directory is refused before anything is signed.
  spit(s.dir.file("escape-ids.txt"), "dev-a\n../keys/dev-b\n");
  auto escape = s.kiln({"device", "claim", "--from-file", s.dir.file("escape-ids.txt"), "--key", keys});
  CHECK(escape.exit_code == 1);
  CHECK_MESSAGE(escape.err.find("line 2") != std::string::npos, escape.err);
  spit(s.dir.file("escape.jsonl"), R"({"uid":"../keys/dev-b"})" "\n");
  CHECK(s.kiln({"device", "claim", "--from-file", s.dir.file("escape.jsonl"), "--key", keys}).exit_code == 1);
  CHECK(s.kiln({"device", "claim", "--id", "dev-a", "--id", "dev-b", "--board", "emu:/nowhere"}).exit_code == 2);
}

TEST_CASE("service e2e: a stalled transfer is noticed within the stall timeout; idempotent requests are retried") {
  Setup s;
  test::FaultProxy proxy(s.service->port());
  auto o = s.env();
  o.env["KILN_SERVICE"] = "https://127.0.0.1:" + std::to_string(proxy.port());
  o.env["KILN_STALL_TIMEOUT"] = "2";
  std::string firmware(3 << 20, '\0');
  std::mt19937 rng(5);
  for (auto& c : firmware) c = static_cast<char>(rng());
  spit(s.dir.file("fw.bin"), firmware);

  // The link goes silent once, mid-chunk: the PUT is abandoned after 2 s and sent again on a new connection.
  proxy.stall_after((3 << 20) / 2, test::FaultProxy::Direction::to_server, true);
  auto once = test::kiln({"-o", "json", "image", "upload", s.dir.file("fw.bin")}, o);
  REQUIRE_MESSAGE(once.exit_code == 0, once.err);
  CHECK(proxy.stall_happened());
  CHECK(proxy.connections() >= 2);
  CHECK(s.json({"image", "show", Json::parse(once.out)["id"].get<std::string>()})["complete"] == true);

  // The link stays silent: every attempt stalls, and kiln says so with exit 5.
  firmware[0] ^= 1;
  spit(s.dir.file("fw2.bin"), firmware);
  proxy.stall_after((3 << 20) / 2);
  auto stuck = test::kiln({"image", "upload", s.dir.file("fw2.bin")}, o);
  CHECK(stuck.exit_code == 5);
  CHECK(stuck.err.find("stalled: no data moved for 2 s") != std::string::npos);
  CHECK(stuck.err.find("--stall-timeout") != std::string::npos);
}

TEST_CASE("service e2e: image download writes FILE.part, resumes with Range, and renames only a verified image") {
  Setup s;
  std::string firmware(3 << 20, '\0');
  std::mt19937 rng(9);
  for (auto& c : firmware) c = static_cast<char>(rng());
  spit(s.dir.file("fw.bin"), firmware);
  auto id = s.json({"image", "upload", s.dir.file("fw.bin")})["id"].get<std::string>();
  test::FaultProxy proxy(s.service->port());
  auto o = s.env();
  o.env["KILN_SERVICE"] = "https://127.0.0.1:" + std::to_string(proxy.port());
  o.env["KILN_STALL_TIMEOUT"] = "2";
  auto out = s.dir.file("back.bin");
  auto part = out + ".part";

  // Cut mid-body, and the service stays unreachable: nothing under the final name, the bytes kept.
  proxy.cut_after((3 << 20) / 2, test::FaultProxy::Direction::to_client);
  auto cut = test::kiln({"image", "download", id, "-O", out}, o);
  CHECK(proxy.cut_happened());
  CHECK(cut.exit_code == 5);
  CHECK(cut.err.find(".part") != std::string::npos);
  CHECK(!std::filesystem::exists(out));
  REQUIRE(std::filesystem::exists(part));
  auto kept = std::filesystem::file_size(part);
  CHECK(kept > 0);
  CHECK(kept < firmware.size());

  // The next run asks for the rest with Range.
  proxy.allow();
  auto resumed = test::kiln({"-o", "json", "image", "download", id, "-o", out}, o);  // -o after the verb: the file
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
  CHECK(Json::parse(resumed.out)["resumed_from"] == kept);
  CHECK(slurp(out) == firmware);
  CHECK(!std::filesystem::exists(part));

  // A stall mid-body within one run: kiln resumes by itself.
  std::filesystem::remove(out);
  proxy.stall_after(1 << 20, test::FaultProxy::Direction::to_client, true);
  auto stalled = test::kiln({"-o", "json", "image", "download", id, "-O", out}, o);
  REQUIRE_MESSAGE(stalled.exit_code == 0, stalled.err);
  CHECK(proxy.stall_happened());
  CHECK(slurp(out) == firmware);

  // A .part that is not a prefix of the image fails the digest check and is discarded.
  std::filesystem::remove(out);
  spit(part, std::string(1000, 'x'));
  auto wrong = test::kiln({"image", "download", id, "-O", out}, o);
  CHECK(wrong.exit_code == 3);
  CHECK(!std::filesystem::exists(out));
  CHECK(!std::filesystem::exists(part));

  // A .part larger than the image is no prefix of it: it starts over and the image arrives whole.
  spit(part, std::string(firmware.size() + 4096, 'x'));
  auto larger = test::kiln({"-o", "json", "image", "download", id, "-O", out}, o);
  REQUIRE_MESSAGE(larger.exit_code == 0, larger.err);
  CHECK(Json::parse(larger.out)["resumed_from"] == 0);
  CHECK(slurp(out) == firmware);
  CHECK(!std::filesystem::exists(part));

  // A .part that is a symlink is refused: the file it points to is neither appended to nor truncated.
  std::filesystem::remove(out);
  spit(s.dir.file("victim.txt"), "keep me\n");
  std::filesystem::create_symlink(s.dir.file("victim.txt"), part);
  auto linked = test::kiln({"image", "download", id, "-O", out}, o);
  CHECK(linked.exit_code == 1);
  CHECK_MESSAGE(linked.err.find("not a regular file") != std::string::npos, linked.err);
  CHECK(slurp(s.dir.file("victim.txt")) == "keep me\n");
  CHECK(!std::filesystem::exists(out));
  CHECK(std::filesystem::is_symlink(part));
}

TEST_CASE("service e2e: one kept-alive connection carries many requests (not cpp-httplib's default of 5)") {
  Setup s;
  s.json({"product", "create", "Thermo"});
  test::TestKey device;
  s.write_bundle("units.jsonl", unit_lines("k-", 12, device.public_pem()));
  REQUIRE(s.kiln({"device", "import", s.dir.file("units.jsonl")}).exit_code == 0);
  test::FaultProxy proxy(s.service->port());
  auto o = s.env();
  o.env["KILN_SERVICE"] = "https://127.0.0.1:" + std::to_string(proxy.port());
  auto list = test::kiln({"-o", "jsonl", "device", "list", "--page-size", "1"}, o);  // 12 requests
  REQUIRE_MESSAGE(list.exit_code == 0, list.err);
  CHECK(jsonl(list.out).size() == 12);
  CHECK(proxy.connections() == 1);
}
