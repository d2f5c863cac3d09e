// Revocation in-process (issue 17): devices at the agent endpoints and in their deployments, tokens, factory CAs;
// on SQLite (unit) and PostgreSQL (service_postgres).
#include <doctest/doctest.h>

#include <mutex>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "service/rollout.hpp"
#include "service/store.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/service/store_support.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// The service (its store a SQLite file the test reopens, unless the run is on PostgreSQL) with Thermo, whose
// factory CA also signs station certificates.
struct RevocationFixture : test::ProductFixture {
  RevocationFixture() : ProductFixture({.sqlite = "kiln.db", .check_in_after = 7}, true) {}
  // A unit line of Thermo/Field Test carrying its certificate (issued by the factory CA).
  std::string unit(const std::string& uid, const test::TestKey& key) {
    return ProductFixture::unit(uid, key, {{"group", "Field Test"}, {"certificate", factory_ca.issue(key, uid)}});
  }
  // Imports the device; returns its certificate chain for the agent endpoints.
  std::vector<std::string> device(const std::string& uid, const test::TestKey& key) {
    import(unit(uid, key));
    return {test::pem_to_der(factory_ca.issue(key, uid))};
  }
};

}  // namespace

TEST_CASE("revocation: a revoked device is refused at every agent endpoint and leaves its deployment, which completes") {
  RevocationFixture f;
  test::TestKey ka, kb, kc;
  auto a = f.device("dev-a", ka), b = f.device("dev-b", kb), c = f.device("dev-c", kc);
  auto made = f.release("v2", 2);
  const auto& sha = made.first;
  const auto& manifest = made.second;
  auto id = f.json("POST", "/v1/deployments",
                   Json{{"group", "Thermo/Field Test"}, {"images", {sha}}, {"manifest", manifest}}.dump())["id"]
                .get<std::string>();
  // dev-a is downloading, dev-c installed, dev-b has not been seen.
  REQUIRE(f.json("POST", "/v1/agent/check-in", "{}", a)["deployment"]["id"] == id);
  f.json("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "downloading"}}.dump(), a);
  f.json("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), c);

  auto revoked = f.json("POST", "/v1/devices/dev-a/revoke", R"({"reason":"stolen from the field"})");
  CHECK(revoked["state"] == "revoked");
  CHECK(revoked["revoked_reason"] == "stolen from the field");
  CHECK(revoked["deployments_left"] == Json::array({id}));
  auto when = revoked["revoked_at"];
  CHECK(when.is_string());

  // Every agent endpoint refuses its certificate, and the service log names the device and the reason.
  const std::vector<std::pair<std::string, std::string>> agent = {
      {"POST", "/v1/agent/check-in"},
      {"GET", "/v1/agent/images/" + sha + "/content"},
      {"GET", "/v1/agent/deployments/" + id + "/manifest"},
      {"POST", "/v1/agent/status"}};
  for (const auto& endpoint : agent) {
    auto r = f.call(endpoint.first, endpoint.second, Json{{"deployment", id}, {"status", "installed"}}.dump(), a);
    INFO(endpoint.second << " -> " << r.status << " " << r.body);
    CHECK(r.status == 403);
    CHECK(f.code(r) == "device_revoked");
  }
  CHECK(f.log->any("dev-a", "stolen from the field"));
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", b)["deployment"]["id"] == id);  // others go on

  // It left the deployment: revoked, neither installed nor failed nor admitted; the tallies equal a recount.
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["revoked"] == 1);
  CHECK(shown["admitted"] == 2);
  CHECK(shown["state"] == "active");
  auto listed = f.json("GET", "/v1/deployments/" + id + "/devices?status=revoked")["items"];
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["device"] == "dev-a");
  CHECK(test::checked_tally(f.database, f.tenant, id).waves.at(0).reported["revoked"] == 1);
  // The others installing completes the deployment: the revoked device does not hold it.
  f.json("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), b);
  CHECK(f.json("GET", "/v1/deployments/" + id)["state"] == "completed");

  // device show/list say revoked; revoking again changes nothing; an import does not bring it back.
  CHECK(f.json("GET", "/v1/devices/dev-a")["state"] == "revoked");
  auto by_state = f.json("GET", "/v1/devices?state=revoked")["items"];
  REQUIRE(by_state.size() == 1);
  CHECK(by_state[0]["id"] == "dev-a");
  auto again = f.json("POST", "/v1/devices/dev-a/revoke", R"({"reason":"again"})");
  CHECK(again["revoked_at"] == when);
  CHECK(again["revoked_reason"] == "stolen from the field");
  CHECK(again["deployments_left"].empty());
  f.device("dev-a", ka);
  CHECK(f.json("GET", "/v1/devices/dev-a")["state"] == "revoked");
  CHECK(f.call("POST", "/v1/agent/check-in", "{}", a).status == 403);

  // A deployment created later counts it revoked from the start (never pending); it joins no other group.
  auto later = f.release("v3", 3);
  auto next = f.json("POST", "/v1/deployments",
                     Json{{"group", "Thermo/Field Test"}, {"images", {later.first}}, {"manifest", later.second}}.dump());
  CHECK(next["device_status"]["revoked"] == 1);
  CHECK(next["admitted"] == 2);
  auto moved = f.call("POST", "/v1/devices/dev-a/assign", R"({"group":"Thermo/Production"})");
  CHECK(moved.status == 409);
  CHECK(f.code(moved) == "device_revoked");

  // An unknown UID: 404, nothing changed.
  auto unknown = f.call("POST", "/v1/devices/dev-zz/revoke", "{}");
  CHECK(unknown.status == 404);
  CHECK(f.json("GET", "/v1/devices?state=revoked")["items"].size() == 1);
}

TEST_CASE("revocation: another tenant's devices, tokens and CAs answer 404 and stay as they were") {
  RevocationFixture f;
  test::TestKey key;
  auto chain = f.device("dev-a", key);
  auto other_tenant = f.service.create_tenant("globex");
  auto other = f.service.create_token(other_tenant, Role::admin, "admin");
  auto ca_id = f.json("GET", "/v1/factory-cas")["items"][0]["id"].get<std::string>();
  auto token_id = f.json("POST", "/v1/tokens", R"({"role":"reader","name":"dash"})")["id"].get<std::string>();
  CHECK(f.call("POST", "/v1/devices/dev-a/revoke", "{}", other).status == 404);
  CHECK(f.call("POST", "/v1/factory-cas/" + ca_id + "/revoke", "{}", other).status == 404);
  CHECK(f.call("DELETE", "/v1/tokens/" + token_id, "", other).status == 404);
  CHECK(f.call("DELETE", "/v1/tokens/admin", "", other).status == 409);  // its own last admin token
  CHECK(f.json("GET", "/v1/devices/dev-a")["revoked_at"].is_null());
  CHECK(f.call("POST", "/v1/agent/check-in", "{}", chain).status == 200);
  CHECK(f.json("GET", "/v1/factory-cas")["items"][0]["revoked_at"].is_null());
  CHECK(f.call("GET", "/v1/whoami").status == 200);
  for (auto& token : f.json("GET", "/v1/tokens")["items"]) CHECK(token["revoked_at"].is_null());
}

TEST_CASE("revocation: tokens are listed without secrets; a revoked one gets 401; the last admin token stays") {
  RevocationFixture f;
  auto created = f.json("POST", "/v1/tokens", R"({"role":"operator","name":"ci"})");
  auto secret = created["token"].get<std::string>();
  CHECK(created["id"].get<std::string>().starts_with("tok_"));
  auto listed = f.call("GET", "/v1/tokens");
  REQUIRE(listed.status == 200);
  CHECK(listed.body.find(secret) == std::string::npos);
  CHECK(listed.body.find(token_hash(secret)) == std::string::npos);
  CHECK(listed.body.find(token_hash(f.admin)) == std::string::npos);
  auto items = Json::parse(listed.body)["items"];
  REQUIRE(items.size() == 2);
  std::map<std::string, Json> by_name;
  for (auto& item : items) {
    CHECK(!item.contains("token"));
    CHECK(!item.contains("hash"));
    CHECK(item["revoked_at"].is_null());
    by_name[item["name"].get<std::string>()] = item;
  }
  CHECK(by_name["ci"]["role"] == "operator");
  CHECK(by_name["ci"]["id"] == created["id"]);
  CHECK(by_name["admin"]["role"] == "admin");

  CHECK(f.call("GET", "/v1/whoami", {}, secret).status == 200);
  auto revoked = f.json("DELETE", "/v1/tokens/ci");
  CHECK(revoked["id"] == created["id"]);
  CHECK(revoked["revoked_at"].is_string());
  auto refused = f.call("GET", "/v1/whoami", {}, secret);
  CHECK(refused.status == 401);
  CHECK(f.code(refused) == "unauthenticated");
  CHECK(f.json("DELETE", "/v1/tokens/" + created["id"].get<std::string>())["revoked_at"] == revoked["revoked_at"]);
  CHECK(f.call("DELETE", "/v1/tokens/nobody").status == 404);

  // The tenant's last live admin token cannot be revoked (409); with a second one it can.
  auto last = f.call("DELETE", "/v1/tokens/admin");
  CHECK(last.status == 409);
  CHECK(f.code(last) == "last_admin_token");
  CHECK(f.call("GET", "/v1/whoami").status == 200);
  auto second = f.json("POST", "/v1/tokens", R"({"role":"admin","name":"admin-2"})")["token"].get<std::string>();
  CHECK(f.call("DELETE", "/v1/tokens/" + by_name["admin"]["id"].get<std::string>(), "", second).status == 200);
  CHECK(f.call("GET", "/v1/whoami").status == 401);
  CHECK(f.call("DELETE", "/v1/tokens/admin-2", "", second).status == 409);
}

TEST_CASE("revocation: a revoked factory CA refuses imports and station logins; units imported before stay, marked") {
  RevocationFixture f;
  test::TestKey key, station_key, later;
  auto chain = f.device("dev-a", key);
  std::vector<std::string> station = {test::pem_to_der(f.factory_ca.issue(station_key, "station-1"))};
  REQUIRE(f.call("GET", "/v1/whoami", "", station).status == 200);
  CHECK(f.json("GET", "/v1/devices/dev-a")["ca_revoked"] == false);

  CHECK(f.call("POST", "/v1/factory-cas/nope/revoke", "{}").status == 404);
  auto revoked = f.json("POST", "/v1/factory-cas/Acme%20Factory%20CA/revoke", R"({"reason":"factory key leaked"})");
  CHECK(revoked["revoked_at"].is_string());
  CHECK(revoked["revoked_reason"] == "factory key leaked");
  auto listed = f.json("GET", "/v1/factory-cas")["items"];
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["revoked_at"] == revoked["revoked_at"]);
  CHECK(listed[0]["revoked_reason"] == "factory key leaked");
  // Again: the first revocation stays.
  CHECK(f.json("POST", "/v1/factory-cas/" + listed[0]["id"].get<std::string>() + "/revoke", "{}")["revoked_at"] ==
        revoked["revoked_at"]);

  // An import under it: 403, nothing imported.
  auto import = f.call("POST", "/v1/devices/import", test::signed_bundle(f.unit("dev-b", later), f.factory_ca.key));
  CHECK(import.status == 403);
  CHECK(f.code(import) == "ca_revoked");
  CHECK(Json::parse(import.body)["error"]["message"].get<std::string>().find("revoked") != std::string::npos);
  CHECK(f.call("GET", "/v1/devices/dev-b").status == 404);
  CHECK(f.json("GET", "/v1/devices")["items"].size() == 1);
  // A station login under it: 403 saying why.
  auto login = f.call("GET", "/v1/whoami", "", station);
  CHECK(login.status == 403);
  CHECK(f.code(login) == "ca_revoked");
  // The unit imported before stays, marked with its CA's revocation; its agent still checks in.
  auto shown = f.json("GET", "/v1/devices/dev-a");
  CHECK(shown["ca_revoked"] == true);
  CHECK(shown["ca"]["revoked_at"] == revoked["revoked_at"]);
  CHECK(shown["revoked_at"].is_null());
  CHECK(f.call("POST", "/v1/agent/check-in", "{}", chain).status == 200);
}
