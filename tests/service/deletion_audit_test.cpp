// Deletion (images, manifests, deployments, products, groups) and the audit log, in-process on the run's store
// (SQLite, or PostgreSQL under the service_postgres entry).
#include <doctest/doctest.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// A tenant with a product Thermo (its boards' keys), a device in Thermo/Field Test, an image with its
// manifest and an active deployment of them to that group; its admin is alice, with an operator beside.
struct Fleet : test::ProductFixture {
  std::string ops = service.create_token(tenant, Role::operator_, "ops-bot");
  Deployed deployed = deploy("acme-dev", "acme");
  const std::string &device_uid = deployed.device_uid, &image = deployed.image, &manifest = deployed.manifest,
                    &deployment = deployed.deployment;

  Fleet() : ProductFixture({.check_in_after = 7, .admin_name = "alice"}, true) {}
  Response agent(const std::string& method, const std::string& target, std::string body = "{}") {
    return call(method, target, std::move(body), deployed.device_chain);
  }
  std::filesystem::path blob(const std::string& sha) const {
    return dir.path() / "images" / std::to_string(tenant) / sha;
  }
  Json audit(const std::string& query = {}) { return json("GET", "/v1/audit" + query)["items"]; }
};

}  // namespace

TEST_CASE("deletion: an image or manifest in use by an unfinished deployment is refused (409) and kept") {
  Fleet f;
  REQUIRE(std::filesystem::exists(f.blob(f.image)));
  for (std::string state : {"active", "paused"}) {
    CAPTURE(state);
    if (state == "paused") f.json("POST", "/v1/deployments/" + f.deployment + "/pause");
    for (const auto& sha : {f.image, f.manifest}) {
      auto r = f.call("DELETE", "/v1/images/" + sha, {}, f.ops);
      CHECK(r.status == 409);
      CHECK(f.message(r).find(f.deployment + " (" + state + ")") != std::string::npos);
      CHECK(f.call("GET", "/v1/images/" + sha).status == 200);
      CHECK(std::filesystem::exists(f.blob(sha)));
    }
  }
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 409);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");

  // Finished: the image goes, with its content file; its manifest too, and nothing names it any more.
  CHECK(f.json("DELETE", "/v1/images/" + f.image, {}, f.ops) == Json{{"deleted", f.image}});
  CHECK_FALSE(std::filesystem::exists(f.blob(f.image)));
  CHECK(f.call("GET", "/v1/images/" + f.image).status == 404);
  CHECK(f.call("GET", "/v1/images/" + f.image + "/content").status == 404);
  CHECK(f.call("DELETE", "/v1/images/" + f.image).status == 404);
  f.json("DELETE", "/v1/images/" + f.manifest);
  CHECK_FALSE(std::filesystem::exists(f.blob(f.manifest)));
  CHECK(f.json("GET", "/v1/images")["items"].empty());
  CHECK(f.call("DELETE", "/v1/images/not-a-sha").status == 400);
}

TEST_CASE("deletion: only a finished deployment can be deleted; its device rows go with it") {
  Fleet f;
  REQUIRE(Json::parse(f.agent("POST", "/v1/agent/check-in").body)["deployment"]["id"] == f.deployment);
  REQUIRE(f.agent("POST", "/v1/agent/status", Json{{"deployment", f.deployment}, {"status", "downloading"}}.dump())
              .status < 300);
  auto refused = f.call("DELETE", "/v1/deployments/" + f.deployment, {}, f.ops);
  CHECK(refused.status == 409);
  CHECK(f.message(refused).find("is active") != std::string::npos);
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment).status == 200);
  f.json("POST", "/v1/deployments/" + f.deployment + "/pause");
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 409);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");
  CHECK(f.json("DELETE", "/v1/deployments/" + f.deployment, {}, f.ops) == Json{{"deleted", f.deployment}});
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment).status == 404);
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment + "/devices").status == 404);
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 404);
  CHECK(f.json("GET", "/v1/deployments")["items"].empty());
  // A superseded deployment is finished too.
  auto first = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}}.dump());
  auto second = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}}.dump());
  CHECK(f.json("GET", "/v1/deployments/" + first["id"].get<std::string>())["state"] == "superseded");
  f.json("DELETE", "/v1/deployments/" + first["id"].get<std::string>());
  CHECK(f.call("DELETE", "/v1/deployments/" + second["id"].get<std::string>()).status == 409);
}

TEST_CASE("deletion: a product or group that is not empty is refused (409); empty ones go") {
  Fleet f;
  auto group = f.call("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(group.status == 409);
  CHECK(f.message(group).find("devices") != std::string::npos);
  f.json("POST", "/v1/devices/" + f.device_uid + "/assign", Json{{"group", "Thermo/Production"}}.dump());
  group = f.call("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(group.status == 409);
  CHECK(f.message(group).find("1 deployments") != std::string::npos);
  auto product = f.call("DELETE", "/v1/products/Thermo");
  CHECK(product.status == 409);
  CHECK(f.message(product).find("devices") != std::string::npos);
  CHECK(f.call("GET", "/v1/groups/Thermo%2FField%20Test").status == 200);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");
  f.json("DELETE", "/v1/deployments/" + f.deployment);
  f.json("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(f.call("GET", "/v1/groups/Thermo%2FField%20Test").status == 404);
  f.json("DELETE", "/v1/groups/Thermo%2FDevelopment");  // never used: empty

  // A product with neither devices nor deployments goes, with its (empty) groups.
  auto empty = f.json("POST", "/v1/products", R"({"name":"Spare"})");
  CHECK(f.json("DELETE", "/v1/products/Spare") == Json{{"deleted", empty["id"]}});
  CHECK(f.call("GET", "/v1/groups/Spare%2FProduction").status == 404);  // its groups went with it
  CHECK(f.call("DELETE", "/v1/products/Spare").status == 404);
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
  auto reader = f.service.create_token(f.tenant, Role::reader, "auditor");
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
  auto other = f.service.create_token(other_tenant, Role::admin, "mallory");
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
