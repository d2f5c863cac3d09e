// Tenant isolation for every route that takes an ID, and for the agent endpoints: tenant B, holding B's admin
// token or a device certificate of B, names A's objects and gets 404; afterwards A's objects read back unchanged.
#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "manifests/suit_create.hpp"
#include "service/api.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_release.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// One tenant of a shared service: its admin token, its factory CA (which signs its ledger bundles and device
// certificates), a device in its "Thermo/Field Test" group, an image with a linked manifest and a deployment.
struct Tenant : test::ProductTenant {
  Deployed deployed;
  const std::string &device_uid = deployed.device_uid, &image = deployed.image, &manifest = deployed.manifest,
                    &deployment = deployed.deployment;
  std::string product_id = json("GET", "/v1/products/Thermo")["id"].get<std::string>();
  std::string group_id = json("GET", "/v1/groups/Thermo%2FField%20Test")["id"].get<std::string>();

  Tenant(Service& s, const std::string& name, const std::filesystem::path& dir)
      : ProductTenant(s, name, dir, true), deployed(deploy(name + "-dev", name)) {}

  Response agent(const std::string& method, const std::string& target, std::string body = "{}") {
    return call(method, target, std::move(body), deployed.device_chain);
  }
  // Everything the owner can read about its objects, for a before/after comparison.
  std::string snapshot() {
    std::string out;
    for (const std::string& target : std::vector<std::string>
         {"/v1/products", "/v1/products/" + product_id, "/v1/groups", "/v1/groups/" + group_id, "/v1/devices",
          "/v1/devices/" + device_uid, "/v1/images", "/v1/images/" + image, "/v1/images/" + manifest,
          "/v1/images/" + image + "/content", "/v1/deployments", "/v1/deployments/" + deployment,
          "/v1/deployments/" + deployment + "/devices", "/v1/factory-cas", "/v1/devices/count", "/v1/audit"}) {
      auto r = call("GET", target);
      REQUIRE_MESSAGE(r.status == 200, target, " -> ", r.status, " ", r.body);
      out += target + " " + r.body + "\n";
    }
    return out;
  }
};

}  // namespace

TEST_CASE("isolation: every ID route and every agent endpoint answers 404 to another tenant and changes nothing") {
  test::TempDir dir;
  Service service({test::test_store(":memory:"), dir.path() / "images", 7});
  Tenant a(service, "acme", dir.path());
  Tenant b(service, "globex", dir.path());
  // A's device has been offered its deployment (so a status report would count), before B tries anything.
  REQUIRE(Json::parse(a.agent("POST", "/v1/agent/check-in").body)["deployment"]["id"] == a.deployment);
  auto before = a.snapshot();

  // Each request: B's admin token (or B's device certificate) with A's IDs. The patterns are checked against
  // the route table below, so a new route that takes an ID needs a line here.
  struct Attempt {
    std::string method, pattern, target, body;
    bool agent = false;
  };
  const std::string dep = "/v1/deployments/" + a.deployment;
  const std::vector<Attempt> attempts = {
      {"GET", "/v1/products/{}", "/v1/products/" + a.product_id, ""},
      {"DELETE", "/v1/products/{}", "/v1/products/" + a.product_id, ""},
      {"PATCH", "/v1/products/{}", "/v1/products/" + a.product_id, R"({"slot_size":4096})"},
      {"GET", "/v1/products/{}/trust-updates", "/v1/products/" + a.product_id + "/trust-updates", ""},
      {"POST", "/v1/products/{}/trust-updates", "/v1/products/" + a.product_id + "/trust-updates",
       R"({"update":"AAAA"})"},
      {"GET", "/v1/groups/{}", "/v1/groups/" + a.group_id, ""},
      {"PATCH", "/v1/groups/{}", "/v1/groups/" + a.group_id, R"({"name":"Thermo/Stolen"})"},
      {"DELETE", "/v1/groups/{}", "/v1/groups/" + a.group_id, ""},
      {"GET", "/v1/devices/{}", "/v1/devices/" + a.device_uid, ""},
      {"POST", "/v1/devices/{}/assign", "/v1/devices/" + a.device_uid + "/assign", R"({"group":"Thermo/Production"})"},
      {"PATCH", "/v1/devices/{}", "/v1/devices/" + a.device_uid, R"({"time_zone":"Europe/Berlin"})"},
      {"POST", "/v1/devices/{}/claim-challenge", "/v1/devices/" + a.device_uid + "/claim-challenge", ""},
      {"POST", "/v1/devices/{}/claim", "/v1/devices/" + a.device_uid + "/claim",
       R"({"challenge":"x","signature":"00"})"},
      {"GET", "/v1/images/{}", "/v1/images/" + a.image, ""},
      {"GET", "/v1/images/{}", "/v1/images/" + a.manifest, ""},
      {"PUT", "/v1/images/{}/content", "/v1/images/" + a.image + "/content?offset=0", "overwrite"},
      {"GET", "/v1/images/{}/content", "/v1/images/" + a.image + "/content", ""},
      {"POST", "/v1/images/{}/manifest", "/v1/images/" + a.image + "/manifest", Json{{"manifest", b.manifest}}.dump()},
      {"GET", "/v1/deployments/{}", dep, ""},
      {"GET", "/v1/deployments/{}/devices", dep + "/devices", ""},
      {"GET", "/v1/deployments/{}/report", dep + "/report", ""},
      {"POST", "/v1/deployments/{}/pause", dep + "/pause", ""},
      {"POST", "/v1/deployments/{}/resume", dep + "/resume", ""},
      {"POST", "/v1/deployments/{}/abort", dep + "/abort", ""},
      // Revocations of A's device, token and factory CA.
      {"POST", "/v1/devices/{}/revoke", "/v1/devices/" + a.device_uid + "/revoke", R"({"reason":"x"})"},
      {"POST", "/v1/devices/{}/unclaim", "/v1/devices/" + a.device_uid + "/unclaim", ""},
      {"DELETE", "/v1/tokens/{}", "/v1/tokens/" + a.json("GET", "/v1/tokens")["items"][0]["id"].get<std::string>(), ""},
      {"POST", "/v1/factory-cas/{}/revoke",
       "/v1/factory-cas/" + a.json("GET", "/v1/factory-cas")["items"][0]["id"].get<std::string>() + "/revoke", "{}"},
      {"DELETE", "/v1/deployments/{}", dep, ""},
      {"DELETE", "/v1/images/{}", "/v1/images/" + a.image, ""},
      {"DELETE", "/v1/images/{}", "/v1/images/" + a.manifest, ""},
      // Routes without an ID in the path that name A's objects in the body.
      {"POST", "/v1/images/{}/manifest", "/v1/images/" + b.image + "/manifest", Json{{"manifest", a.manifest}}.dump()},
      {"POST", "/v1/deployments", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {a.image}}}.dump()},
      {"POST", "/v1/device-transfers", "/v1/device-transfers",
       Json{{"to_tenant", "acme"}, {"devices", {a.device_uid}}}.dump()},
      // A batch of B's own device and A's: refused whole (B's device stays too, checked below).
      {"POST", "/v1/devices/assign", "/v1/devices/assign",
       Json{{"group", "Thermo/Production"}, {"devices", {b.device_uid, a.device_uid}}}.dump()},
      // B's device asking for A's image, A's deployment's manifest, and reporting on A's deployment.
      {"GET", "/v1/agent/images/{}/content", "/v1/agent/images/" + a.image + "/content", "", true},
      {"GET", "/v1/agent/deployments/{}/manifest", "/v1/agent/deployments/" + a.deployment + "/manifest", "", true},
      {"POST", "/v1/agent/status", "/v1/agent/status", Json{{"deployment", a.deployment}, {"status", "failed"}}.dump(),
       true},
  };
  std::set<std::pair<std::string, std::string>> covered;
  for (const auto& attempt : attempts) {
    covered.insert({attempt.method, attempt.pattern});
    auto r = attempt.agent ? b.agent(attempt.method, attempt.target, attempt.body)
                           : b.call(attempt.method, attempt.target, attempt.body);
    INFO(attempt.method << " " << attempt.target << " " << attempt.body << " as the other tenant -> " << r.status << " "
                        << r.body);
    CHECK(r.status == 404);
    // The same request from the owner reaches the object (so the 404 above is the tenant check, not a bad path).
    // Only reads are replayed: the writes would change A's objects.
    if (attempt.method == "GET") {
      auto own = attempt.agent ? a.agent(attempt.method, attempt.target, attempt.body)
                               : a.call(attempt.method, attempt.target, attempt.body);
      CHECK_MESSAGE(own.status == 200, "owner: ", attempt.target, " -> ", own.status, " ", own.body);
    }
  }
  for (const auto& route : route_table())
    if (route.pattern.find("{}") != std::string::npos)
      CHECK_MESSAGE(covered.count({route.method, route.pattern}) == 1, "route takes an ID but has no isolation check: ",
                    route.method, " ", route.pattern);

  CHECK(b.json("GET", "/v1/devices/" + b.device_uid)["group"] == "Thermo/Field Test");

  // B's lists hold none of A's objects.
  for (std::string list : {"/v1/devices", "/v1/images", "/v1/deployments", "/v1/factory-cas"}) {
    auto body = b.json("GET", list).dump();
    CAPTURE(list);
    for (const auto& id : std::vector<std::string>{a.device_uid, a.image, a.manifest, a.deployment, a.factory_ca.pem.substr(30, 40)})
      CHECK(body.find(id) == std::string::npos);
  }
  // B's audit log holds B's own attempts (each refused 404), none of A's writes; A's log gained nothing
  // (the snapshot below compares it).
  for (const auto& entry : b.json("GET", "/v1/audit?limit=1000")["items"]) {
    CAPTURE(entry.dump());
    if (entry["target"] == a.image || entry["target"] == a.deployment || entry["target"] == a.device_uid)
      CHECK(entry["status"] == 404);
    CHECK((entry["action"] != "product.create" || entry["status"] == 201));
  }
  std::size_t writes = 0;
  for (const auto& attempt : attempts) writes += attempt.method != "GET" ? 1 : 0;
  CHECK(b.json("GET", "/v1/audit?limit=1000")["items"].size() ==
        a.json("GET", "/v1/audit?limit=1000")["items"].size() + writes);

  // Registering A's content hash as B's own image does not hand B A's bytes: B has received nothing.
  auto shared = b.json("POST", "/v1/images", Json{{"sha256", a.image}, {"size", 3004}}.dump());
  CHECK(shared["received"] == 0);
  CHECK(b.call("GET", "/v1/images/" + a.image + "/content").status != 200);
  // A's station CA is not B's: B cannot import a bundle signed by it.
  test::TestKey stranger;
  CHECK(b.call("POST", "/v1/devices/import",
               test::signed_bundle(
                   Json{{"uid", "stranger"}, {"product", "Thermo"}, {"public_key", stranger.public_pem()}}.dump() + "\n",
                   a.factory_ca.key))
            .status == 422);

  CHECK(a.snapshot() == before);
  CHECK(Json::parse(a.agent("POST", "/v1/agent/check-in").body)["deployment"]["id"] == a.deployment);
}
