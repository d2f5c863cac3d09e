// Tests for POST /v1/devices/assign (service/devices.cpp, both stores): many devices to one group in one request,
// answered as device show answers each; a refused batch (unknown, revoked or other-product device, too many
// devices, bad body) changes nothing and names the device; deployments' tallies stay equal to a recount.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/api.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/service/store_support.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// The product Thermo on a SQLite file (or the run's PostgreSQL database) and devices of it imported into a group.
struct BatchFixture : test::ProductFixture {
  BatchFixture() : ProductFixture({.sqlite = "kiln.db", .check_in_after = 7}) {}
  explicit BatchFixture(test::ServiceOptions options) : ProductFixture(options) {}
  // Devices `prefix`0 .. `prefix`(count - 1) in Thermo/`group`; their certificate chains.
  std::vector<std::vector<std::string>> devices(const std::string& prefix, int count, const std::string& group) {
    std::vector<std::vector<std::string>> chains;
    for (int i = 0; i < count; ++i) chains.push_back(device(prefix + std::to_string(i), test::TestKey(), group));
    return chains;
  }
  Response assign(const std::string& group, const Json& devices) {
    return call("POST", "/v1/devices/assign", Json{{"group", group}, {"devices", devices}}.dump());
  }
  std::string group_of(const std::string& uid) { return json("GET", "/v1/devices/" + uid)["group"].get<std::string>(); }
};

std::string error_code(const Response& r) {
  auto body = Json::parse(r.body, nullptr, false);
  return body.is_object() && body.contains("error") ? body["error"]["code"].get<std::string>() : r.body;
}

}  // namespace

TEST_CASE("assign batch: the devices move in one request, each answered as device show answers it, each once") {
  BatchFixture f;
  f.devices("d", 4, "Development");
  auto r = f.assign("Thermo/Field Test", {"d3", "d0", "d3", "d1"});
  REQUIRE(r.status == 200);
  auto answer = Json::parse(r.body);
  CHECK(answer["assigned"] == 3);
  REQUIRE(answer["devices"].size() == 3);
  CHECK(answer["devices"][0]["id"] == "d3");
  CHECK(answer["devices"][1]["id"] == "d0");
  CHECK(answer["devices"][2]["id"] == "d1");
  for (const auto& d : answer["devices"]) {
    CHECK(d["group"] == "Thermo/Field Test");
    CHECK(d == f.json("GET", "/v1/devices/" + d["id"].get<std::string>()));
  }
  CHECK(f.group_of("d2") == "Thermo/Development");
  // Again: nothing changes, the same answer.
  CHECK(f.assign("Thermo/Field Test", {"d0"}).status == 200);
  CHECK(f.group_of("d0") == "Thermo/Field Test");
  // One audit entry per device moved, its UID the target (audit list --target UID finds who moved a board),
  // all with the request's ID.
  auto audit = f.json("GET", "/v1/audit?action=device.assign");
  REQUIRE(audit["items"].size() == 4);
  CHECK(audit["items"][0]["target"] == "d3");
  CHECK(audit["items"][1]["target"] == "d0");
  CHECK(audit["items"][2]["target"] == "d1");
  CHECK(audit["items"][3]["target"] == "d0");
  for (const auto& item : audit["items"]) CHECK(item["route"] == "/v1/devices/assign");
  CHECK(audit["items"][0]["request_id"] == audit["items"][2]["request_id"]);
  CHECK(audit["items"][0]["request_id"] != audit["items"][3]["request_id"]);
  CHECK(f.json("GET", "/v1/audit?target=d1")["items"].size() == 1);
}

TEST_CASE("assign batch: a refused batch changes nothing and names the device or field") {
  BatchFixture f;
  f.devices("d", 3, "Development");
  f.json("POST", "/v1/products", R"({"name":"Lamp"})");
  f.import(test::ProductTenant::unit("lamp", test::TestKey(), {{"product", "Lamp"}}));
  f.devices("r", 1, "Development");
  f.json("POST", "/v1/devices/r0/revoke", R"({"reason":"stolen"})");

  struct Refusal {
    Json devices;
    int status;
    std::string code, message;
  };
  const std::vector<Refusal> refusals = {
      {{"d0", "nope", "d1"}, 404, "not_found", "device nope not found (no device of this request was moved)"},
      {{"d0", "r0"}, 409, "device_revoked", "device r0 is revoked: it joins no group (no device of this request was moved)"},
      {{"d0", "lamp"}, 409, "conflict", "belongs to another product than device lamp (no device of this request was moved)"},
  };
  for (const auto& refusal : refusals) {
    CAPTURE(refusal.devices.dump());
    auto r = f.assign("Thermo/Production", refusal.devices);
    CHECK(r.status == refusal.status);
    CHECK(error_code(r) == refusal.code);
    CHECK(test::error_message(r).find(refusal.message) != std::string::npos);
    CHECK(f.group_of("d0") == "Thermo/Development");  // the devices before the refused one did not move
  }

  Json too_many = Json::array();
  for (int i = 0; i < 1001; ++i) too_many.push_back("d" + std::to_string(i % 3));
  auto big = f.assign("Thermo/Production", too_many);
  CHECK(big.status == 400);
  CHECK(test::error_message(big) == "field 'devices' must be an array of 1 to 1000 device UIDs");
  for (const char* body : {R"({"group":"Thermo/Production"})", R"({"group":"Thermo/Production","devices":[]})",
                           R"({"group":"Thermo/Production","devices":"d0"})",
                           R"({"group":"Thermo/Production","devices":["d0",5]})", R"({"devices":["d0"]})", "[]"}) {
    CAPTURE(body);
    CHECK(f.call("POST", "/v1/devices/assign", body).status == 400);
  }
  // A string outside the UID alphabet is refused by name and place on both stores (PostgreSQL cannot hold a NUL).
  for (const std::string& bad : {std::string("d\0x", 3), std::string("d 1"), std::string(".."), std::string(129, 'a')}) {
    auto r = f.assign("Thermo/Production", {"d0", bad});
    CHECK(r.status == 400);
    CHECK(test::error_message(r).find("element 1 is not one") != std::string::npos);
  }
  CHECK(f.assign("Thermo/Nope", {"d0"}).status == 404);
  CHECK(f.assign("Lamp/Production", {"d0"}).status == 409);
  for (const char* uid : {"d0", "d1", "d2"}) CHECK(f.group_of(uid) == "Thermo/Development");
  CHECK(f.group_of("lamp") == "Lamp/Development");

  // 1000 named (a repeat counts, and is moved once) is within the bound.
  Json thousand = Json::array();
  for (int i = 0; i < 1000; ++i) thousand.push_back("d" + std::to_string(i % 3));
  auto ok = f.assign("Thermo/Production", thousand);
  REQUIRE(ok.status == 200);
  CHECK(Json::parse(ok.body)["assigned"] == 3);
  for (const char* uid : {"d0", "d1", "d2"}) CHECK(f.group_of(uid) == "Thermo/Production");
}

TEST_CASE("assign batch: devices moving into and out of a deployment's group keep its tally equal to a recount") {
  BatchFixture f;
  auto inside = f.devices("in", 8, "Field Test");
  f.devices("out", 8, "Development");
  auto [image, manifest] = f.release("v2", 2);
  auto id = f.json("POST", "/v1/deployments",
                   Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"manifest", manifest},
                        {"rollout", {50, 100}}, {"step_after", 3600}, {"halt_on_failure", "never"}}
                       .dump())["id"]
                .get<std::string>();
  // Some devices of the group report, so that leaving moves reported counts too.
  for (int i = 0; i < 8; ++i)
    f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "downloading"}}.dump(), inside[i]);
  auto before = test::checked_tally(f.database, f.tenant, id);
  CHECK(before.devices == 8);

  REQUIRE(f.assign("Thermo/Production", {"in0", "in1", "in2", "in5"}).status == 200);
  CHECK(test::checked_tally(f.database, f.tenant, id).devices == 4);
  REQUIRE(f.assign("Thermo/Field Test", {"out0", "out1", "out2", "in3", "in0"}).status == 200);
  CHECK(test::checked_tally(f.database, f.tenant, id).devices == 8);
  // A refused batch leaves the tally as it was.
  CHECK(f.assign("Thermo/Production", {"in3", "in4", "nope"}).status == 404);
  CHECK(test::checked_tally(f.database, f.tenant, id).devices == 8);
  CHECK(f.json("GET", "/v1/deployments/" + id)["devices"] == 8);
}

TEST_CASE("assign batch: a move that fails part-way undoes itself although the request's unit commits") {
  // On a SQLite file the test opens too: a trigger makes the store's update of d2 fail (as an I/O error would)
  // after d0 and d1 moved in the same request.
  BatchFixture f({.on_disk = true, .check_in_after = 7});
  f.devices("d", 3, "Development");
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(f.database.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db,
                       "CREATE TRIGGER fail_d2 BEFORE UPDATE OF group_id ON devices WHEN NEW.id = 'd2' "
                       "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  auto r = f.assign("Thermo/Field Test", {"d0", "d1", "d2"});
  CHECK(r.status >= 400);  // the failure (a constraint error here: 409) is the answer
  for (const char* uid : {"d0", "d1", "d2"}) CHECK(f.group_of(uid) == "Thermo/Development");
  REQUIRE(sqlite3_exec(db, "DROP TRIGGER fail_d2", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  REQUIRE(f.assign("Thermo/Field Test", {"d0", "d1", "d2"}).status == 200);
  for (const char* uid : {"d0", "d1", "d2"}) CHECK(f.group_of(uid) == "Thermo/Field Test");
}
