// kiln_service_lib in-process: authorization matrix, malformed bodies, tenant isolation, claim, paging, idempotency.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "provisioning/ledger.hpp"
#include "service/api.hpp"
#include "service/db.hpp"
#include "signing/file_key.hpp"
#include "signing/key_ref.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// The service (on_disk: a SQLite file dir/kiln.db the test may also open, whatever backend the run tests) with
// the station whose signed ledger bundles this tenant imports (its CA is registered with the tenant).
struct Fixture : test::StationFixture {
  explicit Fixture(bool on_disk = false) : StationFixture({.on_disk = on_disk, .check_in_after = 60}) {}
};

std::string write_key(const test::TempDir& dir, const std::string& name, KeyType type) {
  auto path = dir.file(name);
  std::string pem = generate_private_key_pem(type, std::nullopt);
  FILE* f = std::fopen(path.c_str(), "w");
  std::fwrite(pem.data(), 1, pem.size(), f);
  std::fclose(f);
  return path;
}

std::string unit_line(const std::string& uid, const std::string& pem, const std::string& version = "1.0.0") {
  return Json{{"uid", uid}, {"product", "Thermo"}, {"public_key", pem}, {"version", version}, {"state", "secured"}}.dump() + "\n";
}

// A path for a route pattern with every {} filled by `param`.
std::string fill(const std::string& pattern, const std::string& param) {
  std::string out = pattern;
  for (auto pos = out.find("{}"); pos != std::string::npos; pos = out.find("{}")) out.replace(pos, 2, param);
  return out;
}

}  // namespace

// The authorization matrix, written out and reviewed by eye: it is the expectation, independent of the
// route_table() the dispatcher uses. A = allowed (neither 401 nor 403), - = 403 forbidden, D = a device endpoint
// (no token opens it: 401 for every role; a device certificate does). Columns: admin, operator, factory, reader.
namespace {

struct AccessRow {
  std::string method;
  std::string pattern;
  std::string access;  // 4 characters: admin, operator, factory, reader
};
const AccessRow access_matrix[] = {
    // clang-format off
    {"GET",    "/v1/whoami",                       "AAAA"},
    {"POST",   "/v1/tokens",                       "A---"},  // only admins mint tokens
    {"GET",    "/v1/tokens",                       "A---"},  // and list and revoke them
    {"DELETE", "/v1/tokens/{}",                    "A---"},
    {"POST",   "/v1/products",                     "AA--"},
    {"GET",    "/v1/products",                     "AAAA"},
    {"GET",    "/v1/products/{}",                  "AAAA"},
    {"PATCH",  "/v1/products/{}",                  "AA--"},
    {"DELETE", "/v1/products/{}",                  "AA--"},
    {"POST",   "/v1/groups",                       "AA--"},
    {"GET",    "/v1/groups",                       "AAAA"},
    {"GET",    "/v1/groups/{}",                    "AAAA"},
    {"PATCH",  "/v1/groups/{}",                    "AA--"},
    {"DELETE", "/v1/groups/{}",                    "AA--"},
    {"POST",   "/v1/devices/import",               "AAA-"},  // the factory imports ledger bundles
    {"GET",    "/v1/devices",                      "AAAA"},
    {"GET",    "/v1/devices/count",                "AAAA"},
    {"POST",   "/v1/devices/assign",               "AA--"},  // as the single device's assign
    {"GET",    "/v1/devices/{}",                   "AAAA"},
    {"POST",   "/v1/devices/{}/assign",            "AA--"},
    {"PATCH",  "/v1/devices/{}",                   "AA--"},
    {"POST",   "/v1/devices/{}/claim-challenge",   "AAA-"},
    {"POST",   "/v1/devices/{}/claim",             "AAA-"},
    {"POST",   "/v1/devices/{}/revoke",            "AA--"},  // operators revoke devices
    {"POST",   "/v1/devices/{}/unclaim",           "AA--"},  // operators unclaim devices, as they revoke them
    {"POST",   "/v1/device-transfers",             "A---"},  // giving devices to another tenant: admins only
    {"POST",   "/v1/device-transfers/challenge",   "AA--"},  // redeeming a voucher: operators
    {"POST",   "/v1/device-transfers/accept",      "AA--"},
    {"POST",   "/v1/products/{}/trust-updates",    "AA--"},  // key rotation: operators publish
    {"GET",    "/v1/products/{}/trust-updates",    "AAAA"},
    {"POST",   "/v1/images",                       "AA--"},
    {"GET",    "/v1/images",                       "AAAA"},
    {"GET",    "/v1/images/{}",                    "AAAA"},
    {"DELETE", "/v1/images/{}",                    "AA--"},
    {"PUT",    "/v1/images/{}/content",            "AA--"},
    {"GET",    "/v1/images/{}/content",            "AAAA"},
    {"POST",   "/v1/images/{}/manifest",           "AA--"},
    {"POST",   "/v1/deployments",                  "AA--"},
    {"GET",    "/v1/deployments",                  "AAAA"},
    {"GET",    "/v1/deployments/{}",               "AAAA"},
    {"GET",    "/v1/deployments/{}/devices",       "AAAA"},
    {"GET",    "/v1/deployments/{}/report",        "AAAA"},
    {"POST",   "/v1/deployments/{}/pause",         "AA--"},
    {"POST",   "/v1/deployments/{}/resume",        "AA--"},
    {"POST",   "/v1/deployments/{}/abort",         "AA--"},
    {"DELETE", "/v1/deployments/{}",               "AA--"},
    {"GET",    "/v1/audit",                        "A---"},  // the audit log is for admins
    {"POST",   "/v1/factory-cas/challenge",        "A---"},  // factory-CA registration is admin-only
    {"POST",   "/v1/factory-cas",                  "A---"},
    {"GET",    "/v1/factory-cas",                  "AAAA"},
    {"POST",   "/v1/factory-cas/{}/revoke",        "A---"},  // as they register them, admins revoke CAs
    {"POST",   "/v1/agent/check-in",               "DDDD"},
    {"GET",    "/v1/agent/images/{}/content",      "DDDD"},
    {"GET",    "/v1/agent/deployments/{}/manifest","DDDD"},
    {"POST",   "/v1/agent/status",                 "DDDD"},
    // clang-format on
};

}  // namespace

TEST_CASE("service: the written-out authorization matrix covers every route, and every role gets exactly it") {
  // The matrix and the dispatcher's routes are the same set: a new route needs a reviewed row, a row needs a route.
  std::set<std::pair<std::string, std::string>> routes, rows;
  for (const auto& route : route_table()) routes.insert({route.method, route.pattern});
  for (const auto& row : access_matrix) {
    CHECK_MESSAGE(rows.insert({row.method, row.pattern}).second, "duplicate row ", row.method, " ", row.pattern);
    CHECK_MESSAGE(routes.count({row.method, row.pattern}) == 1, "matrix row without a route: ", row.method, " ",
                  row.pattern);
    REQUIRE(row.access.size() == 4);
  }
  for (const auto& [method, pattern] : routes)
    CHECK_MESSAGE(rows.count({method, pattern}) == 1, "route without a matrix row: ", method, " ", pattern);

  Fixture f;
  const Role roles[] = {Role::admin, Role::operator_, Role::factory, Role::reader};
  std::map<Role, std::string> tokens;
  for (Role role : roles) tokens[role] = f.service.create_token(f.tenant, role, role_name(role));
  for (const auto& row : access_matrix) {
    auto target = fill(row.pattern, "missing");
    CHECK_MESSAGE(f.call(row.method, target, {}, test::Caller::nobody()).status == 401, row.method, " ", row.pattern);
    CHECK_MESSAGE(f.call(row.method, target, {}, "kiln_wrong").status == 401, row.method, " ", row.pattern);
    for (std::size_t i = 0; i < 4; ++i) {
      auto r = f.call(row.method, target, "{}", tokens[roles[i]]);
      INFO(row.method << " " << row.pattern << " as " << role_name(roles[i]) << " -> " << r.status << " " << r.body);
      CHECK(r.status < 500);
      switch (row.access[i]) {
        case 'A': CHECK((r.status != 401 && r.status != 403)); break;
        case '-': CHECK(r.status == 403); break;
        case 'D': CHECK(r.status == 401); break;
        default: FAIL("bad access letter in the matrix");
      }
    }
  }
}

TEST_CASE("service: malformed JSON to every endpoint answers 400 with a reason, never 500") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestCa factory_ca("Factory CA");
  test::TestKey device_key;
  f.add_ca(factory_ca);
  f.json(
      "POST", "/v1/devices/import",
      f.bundle(Json{{"uid", "Thermo"}, {"product", "Thermo"}, {"public_key", device_key.public_pem()}}.dump() + "\n"));
  std::vector<std::string> device_chain = {test::pem_to_der(factory_ca.issue(device_key, "Thermo"))};
  const std::vector<std::string> bodies = {"{", "not json", "[1,2]", "\"text\"", "{\"name\": 5}", "{\"name\":\"\\ud800\"}",
                                           std::string("\x00\xff{", 3), "{\"a\":" + std::string(100, '[')};
  for (const auto& route : route_table()) {
    bool takes_json = (route.method == "POST" || route.method == "PATCH") &&
                      route.pattern.find("claim-challenge") == std::string::npos &&
                      route.pattern.find("/pause") == std::string::npos && route.pattern.find("/resume") == std::string::npos &&
                      route.pattern.find("/abort") == std::string::npos;
    for (const auto& body : bodies) {
      bool agent = route.roles.empty();
      // Revoking the device would answer its agent calls 403 from then on: revocations name another device.
      auto target = fill(route.pattern, route.pattern.ends_with("/revoke") ? "Other" : "Thermo");
      auto r = f.call(route.method, target, body, agent ? test::Caller(device_chain) : test::Caller());
      INFO(route.method << " " << route.pattern << " body " << body << " -> " << r.status << " " << r.body);
      CHECK(r.status < 500);
      auto error = Json::parse(r.body, nullptr, false);
      if (r.status >= 400) {
        REQUIRE(error.is_object());
        CHECK(!error["error"]["message"].get<std::string>().empty());
      }
      bool valid_object_for_optional_fields = route.pattern == "/v1/agent/check-in" && body == "{\"name\": 5}";
      // A ledger bundle is JSON lines: a body that ends mid-line is first of all a truncated bundle.
      if (takes_json && route.pattern.find("{}") == std::string::npos && !valid_object_for_optional_fields)
        CHECK(r.status == (route.pattern == "/v1/devices/import" ? 422 : 400));
    }
  }
  // Found by the fuzzer: an error message quoting a path that is not UTF-8.
  auto not_utf8 = f.call("PATCH", "/v1/groups/nu%ff%ffame", R"({"name":"x"})");
  CHECK(not_utf8.status == 404);
  CHECK(Json::parse(not_utf8.body)["error"]["code"] == "not_found");
  auto r = f.call("POST", "/v1/products", "{");
  CHECK(Json::parse(r.body)["error"]["code"] == "malformed_json");
  CHECK(Json::parse(r.body)["error"]["message"].get<std::string>().find("not valid JSON") != std::string::npos);
}

TEST_CASE("service: another tenant's objects answer 404") {
  Fixture f;
  auto other_tenant = f.service.create_tenant("globex");
  auto other = f.service.create_token(other_tenant, Role::admin, "admin");
  auto product = f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto key = write_key(f.dir, "dev.pem", KeyType::ecdsa_p256);
  f.json("POST", "/v1/devices/import", f.bundle(unit_line("dev-1", test::public_key_pem_of_file(key))));
  auto group = f.json("GET", "/v1/groups/Thermo%2FProduction");

  CHECK(f.call("GET", "/v1/products/" + product["id"].get<std::string>(), {}, other).status == 404);
  CHECK(f.call("GET", "/v1/products/Thermo", {}, other).status == 404);
  CHECK(f.call("GET", "/v1/groups/" + group["id"].get<std::string>(), {}, other).status == 404);
  CHECK(f.call("GET", "/v1/devices/dev-1", {}, other).status == 404);
  CHECK(f.call("POST", "/v1/devices/dev-1/claim-challenge", {}, other).status == 404);
  CHECK(f.call("POST", "/v1/devices/dev-1/assign", R"({"group":"Thermo/Production"})", other).status == 404);
  CHECK(f.call("DELETE", "/v1/products/Thermo", {}, other).status == 404);
  CHECK(f.json("GET", "/v1/devices", {}, other)["items"].empty());
  CHECK(f.json("GET", "/v1/products", {}, other)["items"].empty());
  // A UID already registered to another tenant cannot be taken over by importing it again.
  f.json("POST", "/v1/products", R"({"name":"Thermo"})", other);
  test::TestCa other_station("Globex Station CA");
  REQUIRE(f.register_ca(other_station, false, nullptr, other).status == 201);
  CHECK(f.call("POST", "/v1/devices/import",
               test::signed_bundle(unit_line("dev-1", test::public_key_pem_of_file(key)), other_station.key), other)
            .status == 409);
  CHECK(f.json("GET", "/v1/devices/dev-1")["product"] == "Thermo");
  // A batch naming the other tenant's device, into a group of the caller's own product of the same name.
  CHECK(f.call("POST", "/v1/devices/assign", R"({"group":"Thermo/Production","devices":["dev-1"]})", other).status ==
        404);
  CHECK(f.json("GET", "/v1/devices/dev-1")["group"] == "Thermo/Development");
}

TEST_CASE("service: claim checks the device signature against the imported key, one way, repeatable") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto ec_key = write_key(f.dir, "ec.pem", KeyType::ecdsa_p256);
  auto ed_key = write_key(f.dir, "ed.pem", KeyType::ed25519);
  auto wrong_key = write_key(f.dir, "wrong.pem", KeyType::ecdsa_p256);
  f.json("POST", "/v1/devices/import",
         f.bundle(unit_line("ec-1", test::public_key_pem_of_file(ec_key)) +
                  unit_line("ed-1", test::public_key_pem_of_file(ed_key))));

  auto claim = [&](const std::string& id, const std::string& key_file) {
    auto challenge = f.json("POST", "/v1/devices/" + id + "/claim-challenge");
    auto message = challenge["message"].get<std::string>();
    CHECK(message.find(challenge["nonce"].get<std::string>()) != std::string::npos);
    auto signer = open_signer(key_file);
    Bytes signature = signer->type() == KeyType::ed25519 ? signer->sign(as_bytes(message), HashAlg::sha256)
                                                         : signer->sign(digest(HashAlg::sha256, as_bytes(message)), HashAlg::sha256);
    return f.call("POST", "/v1/devices/" + id + "/claim",
                  Json{{"nonce", challenge["nonce"]}, {"signature", to_hex(signature)}}.dump());
  };
  auto wrong = claim("ec-1", wrong_key);
  CHECK(wrong.status == 422);
  CHECK(Json::parse(wrong.body)["error"]["code"] == "signature_invalid");
  CHECK(f.json("GET", "/v1/devices/ec-1")["claimed"] == false);

  auto ok = claim("ec-1", ec_key);
  CHECK(ok.status == 200);
  CHECK(Json::parse(ok.body)["claimed"] == true);
  CHECK(claim("ec-1", ec_key).status == 200);  // repeat claim into the same tenant succeeds
  CHECK(claim("ed-1", ed_key).status == 200);

  // A nonce is single use.
  auto challenge = f.json("POST", "/v1/devices/ec-1/claim-challenge");
  auto signer = open_signer(ec_key);
  auto sig = to_hex(signer->sign(digest(HashAlg::sha256, as_bytes(challenge["message"].get<std::string>())), HashAlg::sha256));
  auto body = Json{{"nonce", challenge["nonce"]}, {"signature", sig}}.dump();
  CHECK(f.call("POST", "/v1/devices/ec-1/claim", body).status == 200);
  CHECK(f.call("POST", "/v1/devices/ec-1/claim", body).status == 409);

  CHECK(f.json("GET", "/v1/devices?claimed=true")["items"].size() == 2);
  CHECK(f.json("GET", "/v1/devices?claimed=false")["items"].empty());
}

TEST_CASE("service: device list pages with a cursor and filters; count groups") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto pem = test::public_key_pem_of_file(write_key(f.dir, "k.pem", KeyType::ecdsa_p256));
  std::string bundle;
  for (int i = 0; i < 25; ++i) bundle += unit_line(fmt::format("dev-{:03}", i), pem, i % 5 == 0 ? "2.0.0" : "1.0.0");
  CHECK(f.json("POST", "/v1/devices/import", f.bundle(bundle))["imported"] == 25);
  CHECK(f.json("POST", "/v1/devices/import", f.bundle(bundle))["imported"] == 25);  // re-import is an update

  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  while (true) {
    auto page = f.json("GET", "/v1/devices?limit=10" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ++pages;
    for (auto& d : page["items"]) seen.push_back(d["id"]);
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"];
  }
  CHECK(pages == 3);
  CHECK(seen.size() == 25);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(f.json("GET", "/v1/devices?version=2.0.0")["items"].size() == 5);
  CHECK(f.json("GET", "/v1/devices?group=Thermo%2FDevelopment&state=secured")["items"].size() == 25);
  CHECK(f.call("GET", "/v1/devices?group=Thermo%2FNope").status == 404);
  CHECK(f.call("GET", "/v1/devices?limit=0").status == 400);

  auto counts = f.json("GET", "/v1/devices/count?by=version");
  CHECK(counts["total"] == 25);
  CHECK(counts["counts"][0] == Json{{"version", "1.0.0"}, {"count", 20}});
  CHECK(counts["counts"][1] == Json{{"version", "2.0.0"}, {"count", 5}});
  auto by_group = f.json("GET", "/v1/devices/count?by=group");
  CHECK(by_group["counts"][0]["group"] == "Thermo/Development");

  auto moved = f.json("POST", "/v1/devices/dev-001/assign", R"({"group":"Thermo/Field Test"})");
  CHECK(moved["group"] == "Thermo/Field Test");
  CHECK(f.json("GET", "/v1/devices?group=Thermo%2FField%20Test")["items"].size() == 1);
  CHECK(f.call("DELETE", "/v1/groups/Thermo%2FField%20Test").status == 409);
}

TEST_CASE("service: a POST replayed with the same Idempotency-Key returns the first answer and does nothing twice") {
  Fixture f;
  std::map<std::string, std::string> key{{"idempotency-key", "k-1"}};
  auto first = f.call("POST", "/v1/products", R"({"name":"Thermo"})", test::Caller(f.admin).with(key));
  auto second = f.call("POST", "/v1/products", R"({"name":"Thermo"})", test::Caller(f.admin).with(key));
  CHECK(first.status == 201);
  CHECK(second.status == 201);
  CHECK(second.body == first.body);
  CHECK(second.headers["Idempotent-Replayed"] == "true");
  CHECK(f.json("GET", "/v1/products")["items"].size() == 1);
  CHECK(f.call("POST", "/v1/products", R"({"name":"Thermo"})").status == 409);
  CHECK(f.call("POST", "/v1/groups", R"({"product":"Thermo","name":"X"})", test::Caller(f.admin).with(key)).status ==
        422);
}

TEST_CASE("service: images upload in chunks at the confirmed offset, verify the digest, serve ranges") {
  Fixture f;
  std::string content(3000, 'x');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7);
  auto sha = to_hex(digest(HashAlg::sha256, as_bytes(content)));
  auto created = f.call("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump());
  CHECK(created.status == 201);
  CHECK(f.call("PUT", "/v1/images/" + sha + "/content?offset=1000", content.substr(0, 1000)).status == 409);
  f.json("PUT", "/v1/images/" + sha + "/content?offset=0", content.substr(0, 1000));
  auto again = f.json("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump());
  CHECK(again["received"] == 1000);
  auto done = f.json("PUT", "/v1/images/" + sha + "/content?offset=1000", content.substr(1000));
  CHECK(done["complete"] == true);
  auto range =
      f.call("GET", "/v1/images/" + sha + "/content", {}, test::Caller(f.admin).with({{"range", "bytes=10-19"}}));
  CHECK(range.status == 206);
  CHECK(range.body == content.substr(10, 10));
  CHECK(range.headers["Content-Range"] == "bytes 10-19/3000");
  CHECK(f.call("GET", "/v1/images/" + sha + "/content", {}, test::Caller(f.admin).with({{"range", "bytes=5000-"}}))
            .status == 416);

  auto bad = std::string(64, 'a');
  f.json("POST", "/v1/images", Json{{"sha256", bad}, {"size", 4}}.dump());
  auto mismatch = f.call("PUT", "/v1/images/" + bad + "/content?offset=0", "abcd");
  CHECK(mismatch.status == 422);
  CHECK(f.json("GET", "/v1/images/" + bad)["received"] == 0);
}

TEST_CASE("service: an upload's body is read only from a caller who may send it") {
  Fixture f;
  auto sha = std::string(64, 'b');
  f.json("POST", "/v1/images", Json{{"sha256", sha}, {"size", 4}}.dump());
  auto reader = f.service.create_token(f.tenant, Role::reader, "reader");
  auto put = [&](std::map<std::string, std::string> headers, const std::string& target) {
    bool read = false;
    service::Request request{"PUT", target, std::move(headers), {}, {}};
    request.read_body = [&read](const service::ByteReceiver& receive) {
      read = true;
      return receive("abcd", 4);
    };
    auto response = f.service.handle(request);
    return std::pair{response.status, read};
  };
  auto content = "/v1/images/" + sha + "/content?offset=0";
  CHECK(put({}, content) == std::pair{401, false});                                          // no token
  CHECK(put({{"authorization", "Bearer kiln_not-a-token"}}, content) == std::pair{401, false});  // unknown
  CHECK(put({{"authorization", "Bearer " + reader}}, content) == std::pair{403, false});     // may not upload
  CHECK(put({{"authorization", "Bearer " + f.admin}}, "/v1/nothing/here") == std::pair{404, false});
  CHECK(f.json("GET", "/v1/images/" + sha)["received"] == 0);
  CHECK(put({{"authorization", "Bearer " + f.admin}}, content).second);  // the admin's is read
}

TEST_CASE("service: deployments move active -> paused -> active -> aborted, and aborted is final") {
  Fixture f;
  test::TestReleaseMaker releases(f.dir.path());
  Json product = {{"name", "Thermo"}};
  releases.add_trust(product);
  f.json("POST", "/v1/products", product.dump());
  auto release = releases.make("v2", 2);
  auto sha = to_hex(digest(HashAlg::sha256, as_bytes(release.image)));
  auto manifest = to_hex(digest(HashAlg::sha256, as_bytes(release.envelope)));
  f.json("POST", "/v1/images", Json{{"sha256", sha}, {"size", release.image.size()}}.dump());
  CHECK(f.call("POST", "/v1/deployments", Json{{"group", "Thermo/Production"}, {"images", {sha}}}.dump()).status ==
        409);
  f.json("PUT", "/v1/images/" + sha + "/content?offset=0", release.image);
  f.json("POST", "/v1/images", Json{{"sha256", manifest}, {"size", release.envelope.size()}}.dump());
  f.json("PUT", "/v1/images/" + manifest + "/content?offset=0", release.envelope);
  auto d =
      f.json("POST", "/v1/deployments",
             Json{{"group", "Thermo/Production"}, {"images", {sha}}, {"manifest", manifest}, {"rollout", 10}}.dump());
  CHECK(d["state"] == "active");
  CHECK(d["rollout"] == 10);
  auto id = d["id"].get<std::string>();
  CHECK(f.json("POST", "/v1/deployments/" + id + "/pause")["state"] == "paused");
  CHECK(f.json("POST", "/v1/deployments/" + id + "/resume")["state"] == "active");
  CHECK(f.json("POST", "/v1/deployments/" + id + "/abort")["state"] == "aborted");
  CHECK(f.call("POST", "/v1/deployments/" + id + "/resume").status == 409);
  CHECK(
      f.call("POST", "/v1/deployments", Json{{"group", "Thermo/Production"}, {"images", {sha}}, {"rollout", 0}}.dump())
          .status == 400);
}

TEST_CASE("service: agents check in with a device certificate chained to a registered factory CA") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestCa factory_ca("Acme Factory CA");
  test::TestCa rogue_ca("Rogue CA");
  test::TestKey device_key, other_key;
  auto cert = test::pem_to_der(factory_ca.issue(device_key, "dev-1"));
  f.json(
      "POST", "/v1/devices/import",
      f.bundle(Json{{"uid", "dev-1"}, {"product", "Thermo"}, {"public_key", device_key.public_pem()}}.dump() + "\n"));
  auto agent = [&](const std::string& method, const std::string& target, std::vector<std::string> chain,
                   std::string body = "{}", std::map<std::string, std::string> headers = {}) {
    return f.call(method, target, std::move(body), test::Caller(std::move(chain)).with(std::move(headers)));
  };

  CHECK(agent("POST", "/v1/agent/check-in", {cert}).status == 401);  // no factory CA registered yet
  f.add_ca(factory_ca);
  auto checked_in = agent("POST", "/v1/agent/check-in", {cert}, R"({"version":"1.2.0"})");
  REQUIRE(checked_in.status == 200);
  CHECK(Json::parse(checked_in.body)["deployment"].is_null());
  auto device = f.json("GET", "/v1/devices/dev-1");
  CHECK(device["version"] == "1.2.0");
  CHECK(!device["last_seen"].is_null());

  // Refused: a certificate from another CA, one for another key, none at all, and a bearer token.
  CHECK(agent("POST", "/v1/agent/check-in", {test::pem_to_der(rogue_ca.issue(device_key, "dev-1"))}).status == 401);
  CHECK(agent("POST", "/v1/agent/check-in", {test::pem_to_der(factory_ca.issue(other_key, "dev-1"))}).status == 401);
  CHECK(agent("POST", "/v1/agent/check-in", {test::pem_to_der(factory_ca.issue(device_key, "dev-2"))}).status == 401);
  CHECK(agent("POST", "/v1/agent/check-in", {}).status == 401);
  CHECK(f.call("POST", "/v1/agent/check-in", "{}").status == 401);

  // A deployment to the device's group reaches it on check-in; it downloads with Range and reports.
  test::TestReleaseMaker releases(f.dir.path());
  Json trust = Json::object();
  releases.add_trust(trust);
  f.json("PATCH", "/v1/products/Thermo", trust.dump());
  auto release = releases.make("fw", 2, 5000);
  auto content = release.image;
  auto sha = to_hex(digest(HashAlg::sha256, as_bytes(content)));
  f.json("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump());
  f.json("PUT", "/v1/images/" + sha + "/content?offset=0", content);
  auto manifest = to_hex(digest(HashAlg::sha256, as_bytes(release.envelope)));
  f.json("POST", "/v1/images", Json{{"sha256", manifest}, {"size", release.envelope.size()}}.dump());
  f.json("PUT", "/v1/images/" + manifest + "/content?offset=0", release.envelope);
  auto dep = f.json("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Development"}, {"images", {sha}}, {"manifest", manifest}}.dump());
  auto offer = Json::parse(agent("POST", "/v1/agent/check-in", {cert}).body)["deployment"];
  REQUIRE(offer.is_object());
  CHECK(offer["id"] == dep["id"]);
  auto url = offer["images"][0]["url"].get<std::string>();
  auto part = agent("GET", url, {cert}, "", {{"range", "bytes=4000-"}});
  CHECK(part.status == 206);
  CHECK(part.body.size() == content.size() - 4000);
  CHECK(agent("POST", "/v1/agent/status", {cert}, Json{{"deployment", dep["id"]}, {"status", "installed"}}.dump()).status == 200);
  CHECK(agent("POST", "/v1/agent/status", {cert}, Json{{"deployment", dep["id"]}, {"status", "bogus"}}.dump()).status == 400);
  CHECK(f.json("GET", "/v1/deployments/" + dep["id"].get<std::string>())["device_status"]["installed"] == 1);
  f.json("POST", "/v1/deployments/" + dep["id"].get<std::string>() + "/pause");
  CHECK(Json::parse(agent("POST", "/v1/agent/check-in", {cert}).body)["deployment"].is_null());

  // A re-import never changes a registered device's key (issue #12): the one with another key is refused,
  // and the device's own certificate keeps working.
  CHECK(f.call("POST", "/v1/devices/import",
               f.bundle(Json{{"uid", "dev-1"}, {"product", "Thermo"}, {"public_key", other_key.public_pem()}}.dump() +
                        "\n"))
            .status == 409);
  CHECK(agent("POST", "/v1/agent/check-in", {cert}).status == 200);
}

TEST_CASE("service: an import is applied only when its signature trailer verifies against a registered CA") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestKey device;
  std::string units = unit_line("a-1", device.public_pem()) + unit_line("a-2", device.public_pem());
  auto good = f.bundle(units);
  auto code_of = [&](const std::string& target, const std::string& body) {
    auto r = f.call("POST", target, body);
    auto error = Json::parse(r.body);
    return std::make_pair(r.status, error.contains("error") ? error["error"]["code"].get<std::string>() : std::string());
  };
  using Outcome = std::pair<int, std::string>;
  CHECK(code_of("/v1/devices/import", units) == Outcome{422, "bundle_unsigned"});
  CHECK(code_of("/v1/devices/import", good.substr(0, good.size() - 10)) == Outcome{422, "bundle_truncated"});
  CHECK(code_of("/v1/devices/import", good + units) == Outcome{422, "bundle_modified"});  // lines after the trailer
  auto edited = good;
  edited.replace(edited.find("a-2"), 3, "a-3");
  CHECK(code_of("/v1/devices/import", edited) == Outcome{422, "bundle_modified"});
  test::TestKey rogue;
  CHECK(code_of("/v1/devices/import", test::signed_bundle(units, rogue)) == Outcome{422, "bundle_signer_untrusted"});
  auto bad_trailer = units + R"({"bundle_signature":"zz","units":2,"station_public_key":"x"})" + "\n";
  CHECK(code_of("/v1/devices/import", bad_trailer).first == 400);
  CHECK(f.json("GET", "/v1/devices")["items"].empty());

  // In parts: staged (202) until the part with the trailer; a wrong offset is a conflict.
  auto cut = good.find('\n') + 1;
  auto first = f.call("POST", "/v1/devices/import?import=i1&offset=0", good.substr(0, cut));
  CHECK(first.status == 202);
  CHECK(Json::parse(first.body)["received"] == cut);
  CHECK(f.call("POST", "/v1/devices/import?import=i1&offset=5", good.substr(cut)).status == 409);
  CHECK(f.call("POST", "/v1/devices/import?import=i1&offset=1", "x").status == 409);
  CHECK(f.json("GET", "/v1/devices")["items"].empty());
  auto done = f.json("POST", fmt::format("/v1/devices/import?import=i1&offset={}", cut), good.substr(cut));
  CHECK(done["imported"] == 2);
  CHECK(f.json("GET", "/v1/devices")["items"].size() == 2);
  // An edited first part is found when the trailer arrives: nothing of the import is applied.
  auto edited_first = unit_line("b-1", device.public_pem());
  auto other = f.bundle(unit_line("b-0", device.public_pem()) + unit_line("b-2", device.public_pem()));
  auto split = other.find('\n') + 1;
  CHECK(f.call("POST", "/v1/devices/import?import=i2&offset=0", edited_first).status == 202);
  CHECK(code_of(fmt::format("/v1/devices/import?import=i2&offset={}", edited_first.size()), other.substr(split)) ==
        Outcome{422, "bundle_modified"});
  CHECK(f.json("GET", "/v1/devices")["items"].size() == 2);
}

TEST_CASE("service: a station certificate chained to a registered CA acts with the factory role") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestKey station_key, device_key;
  std::vector<std::string> station = {test::pem_to_der(f.station.issue(station_key, "station-1"))};
  auto as_station = [&](const std::string& method, const std::string& target, const std::string& body,
                        std::vector<std::string> chain) {
    return f.call(method, target, body, test::Caller(std::move(chain)));
  };
  auto who = as_station("GET", "/v1/whoami", "", station);
  REQUIRE(who.status == 200);
  CHECK(Json::parse(who.body)["role"] == "factory");
  CHECK(as_station("POST", "/v1/devices/import", f.bundle(unit_line("d-1", device_key.public_pem())), station).status == 200);
  CHECK(as_station("POST", "/v1/products", R"({"name":"Other"})", station).status == 403);
  test::TestCa rogue("Rogue CA");
  auto refused = as_station("GET", "/v1/whoami", "", {test::pem_to_der(rogue.issue(station_key, "station-1"))});
  CHECK(refused.status == 401);
  CHECK(Json::parse(refused.body)["error"]["message"].get<std::string>().find("does not chain") != std::string::npos);
  // The device's own certificate serves the agent endpoints only.
  auto device = as_station("GET", "/v1/devices", "", {test::pem_to_der(f.station.issue(device_key, "d-1"))});
  CHECK(device.status == 401);
  // A CA belongs to one tenant: another tenant, even one holding the key, cannot register it, and the
  // owner's station logins keep working (before ownership, this made every station login fail).
  auto other = f.service.create_token(f.service.create_tenant("globex"), Role::admin, "admin");
  CHECK(f.register_ca(f.station, true, nullptr, other).status == 409);
  auto still = as_station("GET", "/v1/whoami", "", station);
  REQUIRE(still.status == 200);
  CHECK(Json::parse(still.body)["tenant"] == "acme");
}

TEST_CASE("service: a CA registered for devices only never authenticates a station, even for a device not yet imported") {
  Fixture f;
  test::TestCa devices("Device CA");
  auto added = f.add_ca(devices);
  CHECK(added["stations"] == false);
  test::TestKey key;
  // A device certificate whose bundle has not been imported yet: it chains to a registered CA.
  std::vector<std::string> chain = {test::pem_to_der(devices.issue(key, "not-imported-yet"))};
  auto as_client = [&](const std::string& target) { return f.call("GET", target, {}, test::Caller(chain)); };
  auto refused = as_client("/v1/devices");
  CHECK(refused.status == 401);
  CHECK(Json::parse(refused.body)["error"]["message"].get<std::string>().find("station CA") != std::string::npos);
  // Registering the same CA again with stations widens it (and the listing says so); it never narrows.
  CHECK(f.add_ca(devices, true)["stations"] == true);
  CHECK(as_client("/v1/whoami").status == 200);
  CHECK(f.add_ca(devices)["stations"] == true);
  bool listed = false;
  auto registered = f.json("GET", "/v1/factory-cas");
  for (const auto& ca : registered["items"])
    if (ca["id"] == added["id"]) listed = ca["stations"] == true;
  CHECK(listed);
  CHECK(f.call("POST", "/v1/factory-cas", Json{{"certificate", devices.pem}, {"stations", "yes"}}.dump()).status ==
        400);
}

TEST_CASE("service: docs/openapi.yaml documents every route of the route table") {
  auto doc_path = std::filesystem::path(KILN_SOURCE_DIR) / "docs" / "openapi.yaml";  // __FILE__ is relative under ccache
  std::ifstream in(doc_path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  // Paths as documented, with each {name} turned into {} to compare with the route patterns.
  std::set<std::string> documented;
  std::istringstream lines(text.str());
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("  /v1/") || !line.ends_with(":")) continue;
    std::string path = line.substr(2, line.size() - 3);
    std::string normalized;
    for (std::size_t i = 0; i < path.size(); ++i) {
      if (path[i] == '{') {
        normalized += "{}";
        i = path.find('}', i);
      } else {
        normalized += path[i];
      }
    }
    documented.insert(normalized);
  }
  for (const auto& route : route_table()) CHECK_MESSAGE(documented.count(route.pattern) == 1, route.pattern);
}

namespace {

// A second connection to the fixture's database file, for what a test must arrange behind the API's back
// (a challenge or key that has aged, rows an older version wrote).
void sql(const Fixture& f, const std::string& statement) {
  Db db(f.database);
  db.exec(statement);
}

}  // namespace

TEST_CASE("service: registering a factory CA needs a live, single-use challenge signed by the CA's own key") {
  Fixture f(true);
  test::TestCa ca("Acme Device CA");
  test::TestKey rogue;
  auto code = [](const Response& r) { return Json::parse(r.body)["error"]["code"].get<std::string>(); };
  // No proof at all, and a proof signed by another key.
  auto bare = f.call("POST", "/v1/factory-cas", Json{{"certificate", ca.pem}}.dump());
  CHECK(bare.status == 422);
  CHECK(code(bare) == "proof_required");
  auto wrong = f.register_ca(ca, false, &rogue);
  CHECK(wrong.status == 422);
  CHECK(code(wrong) == "proof_invalid");
  CHECK(f.json("GET", "/v1/factory-cas")["items"].size() == 1);  // the station CA only

  // A challenge serves once: the same signed answer sent again is refused, even though it verifies.
  auto challenge = f.call("POST", "/v1/factory-cas/challenge", Json{{"certificate", ca.pem}}.dump());
  REQUIRE(challenge.status == 201);
  auto answer = test::factory_ca_registration(ca, challenge.body);
  CHECK(f.call("POST", "/v1/factory-cas", answer).status == 201);
  auto replayed = f.call("POST", "/v1/factory-cas", answer);
  CHECK(replayed.status == 422);
  CHECK(code(replayed) == "challenge_unknown");
  // A failed attempt uses the challenge up too: no second try with the same nonce.
  challenge = f.call("POST", "/v1/factory-cas/challenge", Json{{"certificate", ca.pem}}.dump());
  CHECK(f.call("POST", "/v1/factory-cas", test::factory_ca_registration(ca, challenge.body, false, &rogue)).status ==
        422);
  CHECK(code(f.call("POST", "/v1/factory-cas", test::factory_ca_registration(ca, challenge.body))) ==
        "challenge_unknown");

  // A challenge is bound to the CA's key: one issued for another certificate does not register this one.
  test::TestCa other_ca("Other CA");
  auto for_other = f.call("POST", "/v1/factory-cas/challenge", Json{{"certificate", other_ca.pem}}.dump());
  auto message = Json::parse(for_other.body)["message"].get<std::string>();
  auto crossed = Json{{"certificate", ca.pem},
                      {"nonce", Json::parse(for_other.body)["nonce"]},
                      {"signature", test::sign_message_hex(ca.key, message)}};
  CHECK(code(f.call("POST", "/v1/factory-cas", crossed.dump())) == "challenge_unknown");

  // An expired challenge is refused.
  challenge = f.call("POST", "/v1/factory-cas/challenge", Json{{"certificate", ca.pem}}.dump());
  sql(f, "UPDATE factory_ca_challenges SET expires_at = expires_at - 301");
  auto expired = f.call("POST", "/v1/factory-cas", test::factory_ca_registration(ca, challenge.body));
  CHECK(expired.status == 422);
  CHECK(code(expired) == "challenge_unknown");
}

TEST_CASE(
    "service: another tenant cannot register a tenant's CA, import its bundles, take its devices or stop its "
    "stations") {
  Fixture f;  // acme: owns the station CA (stations: true)
  auto globex = f.service.create_tenant("globex");
  auto other = f.service.create_token(globex, Role::admin, "admin");
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  f.json("POST", "/v1/products", R"({"name":"Thermo"})", other);
  test::TestKey device, station_key;
  auto bundle = f.bundle(unit_line("unit-1", device.public_pem()));
  std::vector<std::string> station = {test::pem_to_der(f.station.issue(station_key, "station-1"))};

  // globex has the public certificate only: no proof, a proof by its own key, and the owner's (used)
  // challenge answer are all refused the same way as for an unregistered CA.
  auto bare = f.call("POST", "/v1/factory-cas", Json{{"certificate", f.station.pem}, {"stations", true}}.dump(), other);
  CHECK(bare.status == 422);
  test::TestKey globex_key;
  CHECK(f.register_ca(f.station, true, &globex_key, other).status == 422);
  auto acme_challenge = f.call("POST", "/v1/factory-cas/challenge", Json{{"certificate", f.station.pem}}.dump());
  auto stolen =
      f.call("POST", "/v1/factory-cas", test::factory_ca_registration(f.station, acme_challenge.body, true), other);
  CHECK(stolen.status == 422);  // bound to acme: refused for globex (and used up)
  CHECK(f.json("GET", "/v1/factory-cas", {}, other)["items"].empty());

  // So globex cannot import acme's bundle first; acme's import and its station login work.
  auto taken = f.call("POST", "/v1/devices/import", bundle, other);
  CHECK(taken.status == 422);
  CHECK(Json::parse(taken.body)["error"]["code"] == "bundle_signer_untrusted");
  CHECK(f.json("POST", "/v1/devices/import", bundle)["imported"] == 1);
  CHECK(f.call("GET", "/v1/devices/unit-1", {}, other).status == 404);
  auto who = f.call("GET", "/v1/whoami", {}, test::Caller(station));
  REQUIRE(who.status == 200);
  CHECK(Json::parse(who.body)["tenant"] == "acme");

  // Even holding the key, globex gets a 409 that does not say who owns the CA.
  auto owned = f.register_ca(f.station, true, nullptr, other);
  CHECK(owned.status == 409);
  CHECK(owned.body.find("acme") == std::string::npos);
  CHECK(f.call("GET", "/v1/whoami", {}, test::Caller(station)).status == 200);
}

TEST_CASE(
    "service: a database holding one CA under two tenants keeps the first registration; the later one is unusable") {
  test::TestKey device, station_key;
  std::string database;
  {
    Fixture f(true);  // acme registered the station CA first
    database = f.database;
    auto globex = f.service.create_tenant("globex");
    auto other = f.service.create_token(globex, Role::admin, "admin");
    f.json("POST", "/v1/products", R"({"name":"Thermo"})", other);
    // As an older version allowed: globex registered the same CA later, without proof.
    sql(f,
        "INSERT INTO factory_cas (tenant_id, id, subject, pem, created_at, stations) SELECT 2, id, subject, pem, "
        "'2999-01-01T00:00:00Z', 1 FROM factory_cas WHERE tenant_id = 1");
    sql(f, "UPDATE factory_cas SET key_sha256 = NULL");
    sql(f, "DELETE FROM factory_ca_owners");
    sql(f, "PRAGMA user_version = 0");  // a store from before versioned migrations
    std::string bundle = f.bundle(unit_line("unit-1", device.public_pem()));
    Service reopened({database, f.dir.path() / "images"});  // adopts owners on start
    auto call = [&](const std::string& method, const std::string& target, const std::string& token, std::string body,
                    std::vector<std::string> chain = {}) {
      std::map<std::string, std::string> headers;
      if (!token.empty()) headers["authorization"] = "Bearer " + token;
      return reopened.handle({method, target, headers, std::move(body), std::move(chain)});
    };
    auto listed = Json::parse(call("GET", "/v1/factory-cas", other, "").body)["items"];
    REQUIRE(listed.size() == 1);
    CHECK(listed[0]["usable"] == false);
    CHECK(Json::parse(call("GET", "/v1/factory-cas", f.admin, "").body)["items"][0]["usable"] == true);
    CHECK(call("POST", "/v1/devices/import", other, bundle).status == 422);
    std::vector<std::string> station = {test::pem_to_der(f.station.issue(station_key, "station-1"))};
    auto who = call("GET", "/v1/whoami", "", "", station);
    REQUIRE(who.status == 200);
    CHECK(Json::parse(who.body)["tenant"] == "acme");
  }
}

TEST_CASE("service: an import never replaces a registered device's key, in any tenant; the same key re-imports") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestCa device_ca("Acme Device CA");
  f.add_ca(device_ca);
  test::TestKey genuine, counterfeit, never_claimed;
  f.json("POST", "/v1/devices/import",
         f.bundle(unit_line("unit-1", genuine.public_pem()) + unit_line("unit-2", never_claimed.public_pem())));
  auto challenge = f.json("POST", "/v1/devices/unit-1/claim-challenge");
  f.json("POST", "/v1/devices/unit-1/claim",
         Json{{"nonce", challenge["nonce"]},
              {"signature", test::sign_message_hex(genuine, challenge["message"].get<std::string>())}}
             .dump());

  // A counterfeit with the genuine UID and its own key, in a correctly signed bundle: refused, naming the unit,
  // and nothing of the bundle is applied.
  auto refused =
      f.call("POST", "/v1/devices/import",
             f.bundle(unit_line("unit-9", counterfeit.public_pem()) + unit_line("unit-1", counterfeit.public_pem())));
  CHECK(refused.status == 409);
  CHECK(Json::parse(refused.body)["error"]["code"] == "device_key_conflict");
  CHECK(refused.body.find("unit unit-1 conflicts") != std::string::npos);
  CHECK(f.call("GET", "/v1/devices/unit-9").status == 404);
  // A device never claimed is protected the same way.
  CHECK(f.call("POST", "/v1/devices/import", f.bundle(unit_line("unit-2", counterfeit.public_pem()))).status == 409);
  // Another tenant with its own trusted station cannot replace it either.
  auto globex = f.service.create_token(f.service.create_tenant("globex"), Role::admin, "admin");
  f.json("POST", "/v1/products", R"({"name":"Thermo"})", globex);
  test::TestCa globex_station("Globex Station CA");
  REQUIRE(f.register_ca(globex_station, false, nullptr, globex).status == 201);
  auto elsewhere =
      f.call("POST", "/v1/devices/import",
             test::signed_bundle(unit_line("unit-1", counterfeit.public_pem()), globex_station.key), globex);
  CHECK(elsewhere.status == 409);
  CHECK(elsewhere.body.find("unit-1") != std::string::npos);

  // The genuine device still checks in; the counterfeit's certificate does not.
  auto agent = [&](const test::TestKey& key) {
    return f.call("POST", "/v1/agent/check-in", "{}", test::Caller(std::vector<std::string>{test::pem_to_der(device_ca.issue(key, "unit-1"))}));
  };
  CHECK(agent(genuine).status == 200);
  CHECK(agent(counterfeit).status == 401);
  CHECK(f.json("GET", "/v1/devices/unit-1")["claimed"] == true);
  // Re-importing the same unit with the same key stays an idempotent update.
  CHECK(f.json("POST", "/v1/devices/import",
               f.bundle(unit_line("unit-1", genuine.public_pem(), "1.1.0")))["imported"] == 1);
  CHECK(agent(genuine).status == 200);
}

TEST_CASE("service: a unit whose certificate names another UID is refused; malformed times are 400 naming the field") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestKey key;
  auto unit = [&](const std::string& uid, const std::string& cn) {
    return Json{{"uid", uid}, {"product", "Thermo"}, {"certificate", f.station.issue(key, cn)}}.dump() + "\n";
  };
  auto mismatch = f.call("POST", "/v1/devices/import", f.bundle(unit("unit-1", "unit-1") + unit("unit-2", "unit-1")));
  CHECK(mismatch.status == 422);
  CHECK(Json::parse(mismatch.body)["error"]["code"] == "bundle_unit_mismatch");
  CHECK(mismatch.body.find("unit unit-2") != std::string::npos);
  CHECK(f.json("GET", "/v1/devices")["items"].empty());
  // public_key and certificate must agree when both are given.
  test::TestKey other;
  auto both = Json{{"uid", "unit-3"},
                   {"product", "Thermo"},
                   {"certificate", f.station.issue(key, "unit-3")},
                   {"public_key", other.public_pem()}}
                  .dump() +
              "\n";
  CHECK(f.call("POST", "/v1/devices/import", f.bundle(both)).status == 422);
  CHECK(f.json("POST", "/v1/devices/import", f.bundle(unit("unit-1", "unit-1")))["imported"] == 1);

  // last_seen in a bundle, seen_before/seen_after filters: malformed is 400 with the field named.
  auto seen = [&](const std::string& uid, const std::string& when) {
    return Json{{"uid", uid}, {"product", "Thermo"}, {"public_key", key.public_pem()}, {"last_seen", when}}.dump() +
           "\n";
  };
  auto bad_seen = f.call("POST", "/v1/devices/import", f.bundle(seen("unit-4", "yesterday")));
  CHECK(bad_seen.status == 400);
  CHECK(bad_seen.body.find("last_seen") != std::string::npos);
  CHECK(f.json("POST", "/v1/devices/import", f.bundle(seen("unit-4", "2026-03-01T10:00:00+02:00")))["imported"] == 1);
  CHECK(f.json("GET", "/v1/devices/unit-4")["last_seen"] == "2026-03-01T08:00:00Z");
  for (const char* field : {"seen_after", "seen_before"}) {
    for (const char* value : {"0abc", "2026-13-01", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z",
                              "2026-01-01T00:00:00", "2026-01-01T00:00:00Zjunk"}) {
      for (const char* path : {"/v1/devices?", "/v1/devices/count?by=state&"}) {
        auto r = f.call("GET", fmt::format("{}{}={}", path, field, value));
        INFO(path << field << "=" << value << " -> " << r.body);
        CHECK(r.status == 400);
        CHECK(r.body.find(field) != std::string::npos);
      }
    }
  }
  CHECK(f.json("GET", "/v1/devices?seen_after=2026-03-01T07:59:59Z")["items"].size() == 1);
  CHECK(f.json("GET", "/v1/devices?seen_after=2026-03-01")["items"].size() == 1);
  CHECK(f.json("GET", "/v1/devices?seen_before=2026-03-01T08:00:00.000Z")["items"].empty());
  CHECK(f.json("GET", "/v1/devices/count?by=state&seen_after=2026-03-01T10:00:00%2B02:00")["total"] == 0);
}

TEST_CASE("service: a secret-bearing answer is never stored for replay; keys expire after 24 h; another body is 422") {
  Fixture f(true);
  std::map<std::string, std::string> key{{"idempotency-key", "token-1"}};
  auto first = f.call("POST", "/v1/tokens", R"({"role":"reader","name":"ci"})", test::Caller(f.admin).with(key));
  REQUIRE(first.status == 201);
  auto secret = Json::parse(first.body)["token"].get<std::string>();
  auto again = f.call("POST", "/v1/tokens", R"({"role":"reader","name":"ci"})", test::Caller(f.admin).with(key));
  CHECK(again.status == 409);
  CHECK(Json::parse(again.body)["error"]["code"] == "idempotency_conflict");
  CHECK(again.body.find(secret) == std::string::npos);
  {
    Db db(f.database);
    auto q = db.prepare("SELECT body FROM idempotency");
    while (q.step()) CHECK(q.text(0).find(secret) == std::string::npos);
  }
  // The same key with another body, method or path is 422, not a replay of the first answer.
  CHECK(f.call("POST", "/v1/tokens", R"({"role":"admin","name":"ci"})", test::Caller(f.admin).with(key)).status == 422);
  std::map<std::string, std::string> k2{{"idempotency-key", "product-1"}};
  CHECK(f.call("POST", "/v1/products", R"({"name":"Thermo"})", test::Caller(f.admin).with(k2)).status == 201);
  auto other_body = f.call("POST", "/v1/products", R"({"name":"Other"})", test::Caller(f.admin).with(k2));
  CHECK(other_body.status == 422);
  CHECK(Json::parse(other_body.body)["error"]["code"] == "idempotency_key_reused");
  CHECK(f.call("POST", "/v1/products", R"({"name":"Thermo"})", test::Caller(f.admin).with(k2))
            .headers["Idempotent-Replayed"] == "true");
  // After 24 hours a key is forgotten: the same key names a new request.
  sql(f, "UPDATE idempotency SET created_at = '2000-01-01T00:00:00Z'");
  auto fresh = f.call("POST", "/v1/products", R"({"name":"Other"})", test::Caller(f.admin).with(k2));
  CHECK(fresh.status == 201);
  CHECK(fresh.headers.count("Idempotent-Replayed") == 0);
}

TEST_CASE("service: the database and its WAL and SHM files are created 0600; an older 0644 database is tightened") {
  test::TempDir dir;
  auto path = dir.file("kiln.db");
  {
    Service service({path, dir.path() / "images"});
    service.create_token(service.create_tenant("acme"), Role::admin, "admin");
    for (const char* suffix : {"", "-wal", "-shm"}) {
      auto file = path + suffix;
      REQUIRE(std::filesystem::exists(file));
      CHECK_MESSAGE((std::filesystem::status(file).permissions() & std::filesystem::perms::all) ==
                        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write),
                    file);
    }
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                         std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  Service reopened({path, dir.path() / "images"});
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
}

namespace {

// A station ledger signed by the tenant's registered station CA key, exported as `kiln factory ledger
// export` does (the real provisioning::Ledger, not a hand-made trailer).
struct StationLedger {
  std::filesystem::path path;
  std::unique_ptr<Signer> key;
  StationLedger(const test::TempDir& dir, const std::string& name, const test::TestKey& station_key)
      : path(dir.path() / name) {
    write_file_atomic(dir.path() / (name + ".key"), as_bytes(station_key.private_pem()), 0600);
    key = load_file_signer(dir.path() / (name + ".key"), std::nullopt);
  }
  void append(const std::vector<std::string>& uids, const test::TestKey& device) {
    Ledger ledger(path);
    ledger.set_station_signer(key.get(), 0);
    for (const auto& uid : uids) {
      LedgerEntry e;
      e.uid = uid;
      e.result = BoardStatus::provisioned;
      e.product = "Thermo";
      e.device_public_key_pem = device.public_pem();
      e.started_at = e.finished_at = "2026-01-01T10:00:00.000Z";
      ledger.append(e);
    }
  }
  std::string bundle() {
    Ledger ledger(path);
    auto out = path.string() + ".jsonl";
    ledger.export_bundle(out, *key);
    return read_text_file(out);
  }
  // Another ledger file holding this one as it is now (the station's ledger, copied aside while closed).
  StationLedger copy(const test::TempDir& dir, const std::string& name) const {
    StationLedger other(dir, name, *this);
    std::filesystem::copy_file(path, other.path);
    return other;
  }

 private:
  StationLedger(const test::TempDir& dir, const std::string& name, const StationLedger& from)
      : path(dir.path() / name), key(load_file_signer(from.path.string() + ".key", std::nullopt)) {
    std::filesystem::copy_file(from.path.string() + ".key", path.string() + ".key");
  }
};

}  // namespace

TEST_CASE("service: a ledger bundle must extend the head imported before; truncated, rolled back or rewritten ledgers import nothing") {
  Fixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  test::TestKey device;
  StationLedger station(f.dir, "station.sqlite", f.station.key);
  station.append({"u-1", "u-2", "u-3"}, device);  // rows: station row + 3 units
  auto four_rows = station.bundle();
  auto backup = station.copy(f.dir, "backup.sqlite");  // the ledger as it was at that export
  station.append({"u-4", "u-5"}, device);
  auto six_rows = station.bundle();

  using Outcome = std::pair<int, std::string>;
  auto import = [&](const std::string& bundle) {
    auto r = f.call("POST", "/v1/devices/import", bundle);
    auto body = Json::parse(r.body);
    INFO(r.body);
    return Outcome{r.status, body.contains("error") ? body["error"]["code"].get<std::string>() : std::string()};
  };
  auto devices = [&] { return f.json("GET", "/v1/devices")["items"].size(); };

  CHECK(import(four_rows) == Outcome{200, ""});
  CHECK(import(four_rows) == Outcome{200, ""});  // the same bundle again: idempotent
  CHECK(import(six_rows) == Outcome{200, ""});   // extends it
  CHECK(devices() == 5);

  // Truncated: the older export (or the ledger it came from, with its tail deleted and its old head
  // restored) is validly signed but goes back: fewer rows than the head imported.
  CHECK(import(four_rows) == Outcome{409, "ledger_rolled_back"});
  auto refused = f.call("POST", "/v1/devices/import", four_rows);
  CHECK(Json::parse(refused.body)["error"]["message"].get<std::string>().find("has 4 rows in this bundle, but a bundle "
                                                                              "with 6 rows") != std::string::npos);
  // Rolled back to the copy and written on: as many rows, or more, but not the rows imported.
  auto fork = backup.copy(f.dir, "fork.sqlite");
  fork.append({"u-6", "u-7"}, device);
  CHECK(import(fork.bundle()) == Outcome{409, "ledger_rolled_back"});  // 6 rows, another row 6
  fork.append({"u-8"}, device);
  CHECK(import(fork.bundle()) == Outcome{409, "ledger_rolled_back"});  // 7 rows, another row 6
  CHECK(devices() == 5);

  // The proof cannot be taken out or edited: a stripped head, an edited chain or head.
  auto trailer_at = six_rows.rfind('\n', six_rows.size() - 2) + 1;
  auto units = six_rows.substr(0, trailer_at);
  auto trailer = Json::parse(six_rows.substr(trailer_at));
  auto with = [&](const Json& t) { return units + t.dump() + "\n"; };
  auto stripped = trailer;
  stripped.erase("ledger_head");
  CHECK(import(with(stripped)) == Outcome{422, "ledger_head_missing"});
  auto edited_chain = trailer;
  edited_chain["ledger_head"]["chain"][1] = edited_chain["ledger_head"]["chain"][2];
  CHECK(import(with(edited_chain)) == Outcome{422, "bundle_signature_invalid"});
  auto edited_head = trailer;
  edited_head["ledger_head"]["rows"] = 7;
  edited_head["ledger_head"]["chain"].push_back(trailer["ledger_head"]["hash"]);
  CHECK(import(with(edited_head)) == Outcome{422, "bundle_signature_invalid"});
  auto no_chain = trailer;
  no_chain["ledger_head"].erase("chain");
  CHECK(import(with(no_chain)).first == 400);

  // In parts, the refusal comes with the trailer and nothing staged is applied.
  auto cut = four_rows.find('\n') + 1;
  CHECK(f.call("POST", "/v1/devices/import?import=p1&offset=0", four_rows.substr(0, cut)).status == 202);
  auto last = f.call("POST", fmt::format("/v1/devices/import?import=p1&offset={}", cut), four_rows.substr(cut));
  CHECK(last.status == 409);
  CHECK(devices() == 5);

  // The station's real ledger, written on, still imports.
  station.append({"u-9"}, device);
  CHECK(import(station.bundle()) == Outcome{200, ""});
  CHECK(devices() == 6);
  CHECK(import(six_rows) == Outcome{409, "ledger_rolled_back"});
}

TEST_CASE("service: a database from before ledger heads gains the table on start and remembers heads from then on") {
  Fixture f(true);
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  {
    Db db(f.database);
    // As an older service left it: the schema version before ledger heads, without the table.
    db.exec("DROP TABLE ledger_heads");
    db.exec("PRAGMA user_version = 2");
  }
  Service restarted({f.database, f.dir.path() / "images"});
  auto call = [&](const std::string& body) {
    return restarted.handle({"POST", "/v1/devices/import", {{"authorization", "Bearer " + f.admin}}, body, {}}).status;
  };
  test::TestKey device;
  StationLedger station(f.dir, "station.sqlite", f.station.key);
  station.append({"m-1"}, device);
  auto first = station.bundle();
  station.append({"m-2"}, device);
  CHECK(call(station.bundle()) == 200);
  CHECK(call(first) == 409);
}
