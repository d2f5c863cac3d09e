// Tests for service/audit: the action each route stands for, and GET /v1/audit (every write logged with who,
// what, target, result and time; filters; cursor paging; tenants apart), in-process on the run's store (SQLite,
// or PostgreSQL under the service_postgres entry).
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "service/handlers.hpp"
#include "tests/service/deployed_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;
using Fleet = test::DeployedFleet;

TEST_CASE("audit: a route's action is its singular noun and its verb") {
  CHECK(service::audit_action("POST", "/v1/products") == "product.create");
  CHECK(service::audit_action("POST", "/v1/images/{}") == "image.create");
  CHECK(service::audit_action("PUT", "/v1/images/{}/content") == "image.upload");
  CHECK(service::audit_action("DELETE", "/v1/images/{}") == "image.delete");
  CHECK(service::audit_action("PATCH", "/v1/groups/{}") == "group.update");
  CHECK(service::audit_action("POST", "/v1/deployments/{}/pause") == "deployment.pause");
  CHECK(service::audit_action("POST", "/v1/factory-cas/challenge") == "factory-ca.challenge");
  CHECK(service::audit_action("POST", "/v1/devices/{}/assign") == "device.assign");
  CHECK(service::audit_action("POST", "/v1/agent/status") == "agent.status");
}

TEST_CASE("audit: every write is logged with who, what, target, result, time and request id; reads are not") {
  Fleet f;
  auto setup = f.audit();
  // Setup wrote: CA challenge and registration, product, import, assign, 2 x (image create, upload), link, deployment.
  REQUIRE(setup.size() == 11);
  CHECK(setup[0]["action"] == "factory-ca.challenge");
  CHECK(setup[1]["action"] == "factory-ca.create");
  CHECK(setup[2]["action"] == "product.create");
  CHECK(setup[3]["action"] == "device.import");
  CHECK(setup[4]["action"] == "device.assign");
  CHECK(setup[4]["target"] == f.device_uid);
  CHECK(setup[5]["action"] == "image.create");
  CHECK(setup[5]["target"] == f.image);
  CHECK(setup[6]["action"] == "image.upload");
  CHECK(setup[9]["action"] == "image.manifest");
  CHECK(setup[10]["action"] == "deployment.create");
  CHECK(setup[10]["target"] == f.deployment);
  for (auto& entry : setup) {
    CHECK(entry["actor"] == "alice");
    CHECK(entry["role"] == "admin");
    CHECK(entry["status"].get<int>() < 300);
    CHECK(entry["request_id"].get<std::string>().size() > 4);
    CHECK(entry["at"].get<std::string>().size() == 20);  // 2026-01-31T12:00:00Z
  }

  // A refused write is logged with its status; the request id is the client's when it sends a sane one.
  auto refused = f.call("DELETE", "/v1/images/" + f.image, {}, test::Caller(f.ops).with({{"x-request-id", "trace-42"}}));
  CHECK(refused.status == 409);
  CHECK(refused.headers["X-Request-Id"] == "trace-42");
  auto reader = f.service.create_token(f.tenant, service::Role::reader, "auditor");
  CHECK(f.call("POST", "/v1/deployments/" + f.deployment + "/pause", {}, reader).status == 403);
  CHECK(f.call("GET", "/v1/audit", {}, reader).status == 403);
  CHECK(f.call("GET", "/v1/audit", {}, f.ops).status == 403);
  f.call("GET", "/v1/images/" + f.image);
  // Agents: a status report is logged under the device's UID; check-ins (heartbeats) are not.
  REQUIRE(f.agent("POST", "/v1/agent/check-in").status == 200);
  REQUIRE(f.agent("POST", "/v1/agent/status", Json{{"deployment", f.deployment}, {"status", "downloading"}}.dump())
              .status < 300);
  auto all = f.audit();
  REQUIRE(all.size() == 14);
  CHECK(all[11]["actor"] == "ops-bot");
  CHECK(all[11]["role"] == "operator");
  CHECK(all[11]["action"] == "image.delete");
  CHECK(all[11]["method"] == "DELETE");
  CHECK(all[11]["route"] == "/v1/images/{}");
  CHECK(all[11]["target"] == f.image);
  CHECK(all[11]["status"] == 409);
  CHECK(all[11]["request_id"] == "trace-42");
  CHECK(all[12]["actor"] == "auditor");
  CHECK(all[12]["status"] == 403);
  CHECK(all[13]["actor"] == f.device_uid);
  CHECK(all[13]["role"] == "device");
  CHECK(all[13]["action"] == "agent.status");
  CHECK(all[13]["target"] == f.deployment);

  // Filters.
  CHECK(f.audit("?actor=ops-bot").size() == 1);
  CHECK(f.audit("?action=image.create").size() == 2);
  CHECK(f.audit("?target=" + f.image).size() == 4);  // create, upload, manifest link, refused delete
  CHECK(f.audit("?target=" + f.image + "&action=image.delete")[0]["status"] == 409);
  CHECK(f.audit("?since=2999-01-01").empty());
  CHECK(f.audit("?until=2000-01-01").empty());
  CHECK(f.audit("?since=2000-01-01&until=2999-01-01").size() == 14);
  CHECK(f.call("GET", "/v1/audit?since=yesterday").status == 400);
  CHECK(f.call("GET", "/v1/audit?limit=0").status == 400);
  CHECK(f.call("GET", "/v1/audit?cursor=x").status == 400);

  // Cursor paging walks every entry once, in order.
  std::vector<std::int64_t> ids;
  std::string cursor;
  for (int page = 0; page < 20; ++page) {
    auto reply = f.json("GET", "/v1/audit?limit=4" + (cursor.empty() ? std::string() : "&cursor=" + cursor));
    for (auto& entry : reply["items"]) ids.push_back(entry["id"].get<std::int64_t>());
    if (reply["next_cursor"].is_null()) break;
    cursor = reply["next_cursor"].get<std::string>();
  }
  REQUIRE(ids.size() == 14);
  CHECK(std::is_sorted(ids.begin(), ids.end()));
  CHECK(std::set<std::int64_t>(ids.begin(), ids.end()).size() == 14);
}

TEST_CASE("audit: tenants never see each other's entries") {
  Fleet f;
  auto other_tenant = f.service.create_tenant("globex");
  auto other = f.service.create_token(other_tenant, service::Role::admin, "mallory");
  auto before = f.audit().size();
  CHECK(f.call("DELETE", "/v1/images/" + f.image, {}, other).status == 404);
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment, {}, other).status == 404);
  auto theirs = Json::parse(f.call("GET", "/v1/audit", {}, other).body)["items"];
  REQUIRE(theirs.size() == 2);  // their own two refused attempts, nothing of acme's
  for (auto& entry : theirs) {
    CHECK(entry["actor"] == "mallory");
    CHECK(entry["status"] == 404);
  }
  CHECK(f.audit().size() == before);
  CHECK(f.audit("?actor=mallory").empty());
}
