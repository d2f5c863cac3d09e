// Tests for service/agent on the run's store (SQLite, or PostgreSQL in service_postgres): the device
// certificate check, the check-in offer and its manifest, status reports and what they refuse.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/deployment_states.hpp"
#include "service/api.hpp"
#include "service/handlers.hpp"
#include "service/pg_store.hpp"
#include "service/store.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

using namespace kiln;
using Json = nlohmann::json;
using test::AgentFixture;

TEST_CASE(
    "agent contract: check-in offers the wave's deployment with its manifest; the manifest is served to the group "
    "only") {
  AgentFixture f;
  f.create_product();
  f.add_ca(f.factory_ca);
  auto inside = f.assigned_device("dev-in", "Thermo/Field Test");
  auto outside = f.assigned_device("dev-out", "Thermo/Production");

  auto release = f.releases.make("fw", 5);
  auto image = f.upload(release.image);
  auto envelope = release.envelope;
  auto manifest = f.upload(envelope);
  auto other_manifest = f.upload("not a SUIT envelope");
  CHECK(f.call("POST", "/v1/images/" + image + "/manifest", Json{{"manifest", other_manifest}}.dump()).status == 422);
  // A blob larger than any SUIT envelope (an image named as the manifest) is refused before it is read into memory.
  auto huge_manifest = f.upload(std::string((1 << 20) + 1, '\xa5'));
  for (const auto& [target, body] :
       {std::pair{"/v1/images/" + image + "/manifest", Json{{"manifest", huge_manifest}}},
        std::pair{std::string("/v1/deployments"),
                  Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"manifest", huge_manifest}}}}) {
    auto big = f.call("POST", target, body.dump());
    CHECK(big.status == 422);
    CHECK_MESSAGE(Json::parse(big.body)["error"]["message"].get<std::string>().find("larger than") != std::string::npos,
                  big.body);
  }
  auto linked = f.json("POST", "/v1/images/" + image + "/manifest", Json{{"manifest", manifest}}.dump());
  CHECK(linked["sequence"] == 5);

  // The manifest linked at upload is the default; its sequence number is parsed by the service.
  auto dep = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {image}}}.dump());
  CHECK(dep["manifest"] == manifest);
  CHECK(dep["sequence"] == 5);
  CHECK(dep["waves"].size() == 1);
  auto id = dep["id"].get<std::string>();

  auto answer = f.json("POST", "/v1/agent/check-in",
                       R"({"version":"1.0.0","sequence":0,"manifest_digest":null,"state":"device-complete"})", inside);
  CHECK(answer["device"] == "dev-in");
  CHECK(answer["check_in_after"] == 7);
  auto offer = answer["deployment"];
  REQUIRE(offer.is_object());
  CHECK(offer["id"] == id);
  CHECK(offer["wave"] == 1);
  CHECK(offer["action"] == "install");
  CHECK(offer["sequence"] == 5);
  CHECK(offer["manifest"] ==
        Json{{"id", manifest}, {"size", envelope.size()}, {"url", "/v1/agent/deployments/" + id + "/manifest"}});
  CHECK(offer["images"] ==
        Json::array({Json{{"id", image}, {"size", release.image.size()}, {"url", "/v1/agent/images/" + image + "/content"}}}));

  auto served = f.call("GET", offer["manifest"]["url"].get<std::string>(), "", inside);
  CHECK(served.status == 200);
  CHECK(served.content_type == "application/cbor");
  CHECK(served.body == envelope);
  CHECK(f.call("GET", offer["manifest"]["url"].get<std::string>(), "", outside).status == 404);
  CHECK(f.call("GET", "/v1/agent/deployments/dep_nope/manifest", "", inside).status == 404);
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", outside)["deployment"].is_null());

  // Every status of the contract is accepted; unknown ones and malformed bodies are 400; other groups 404.
  for (const char* status : {"downloading", "verifying", "installing", "testing", "refused", "installed"})
    CHECK(f.call("POST", "/v1/agent/status",
                 Json{{"deployment", id}, {"status", status}, {"version", "2.0.0"}, {"detail", "x"}}.dump(), inside)
              .status == 200);
  CHECK(f.json("GET", "/v1/devices/dev-in")["version"] == "2.0.0");
  auto unknown = f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "done"}}.dump(), inside);
  CHECK(unknown.status == 400);
  // The message lists what an agent may report, from the one list the check uses (core/deployment_states).
  auto message = Json::parse(unknown.body)["error"]["message"].get<std::string>();
  for (const auto& status : agent_statuses())
    CHECK_MESSAGE(message.find(status) != std::string::npos, message);
  for (const auto& status : rollout_statuses())
    if (std::find(agent_statuses().begin(), agent_statuses().end(), status) == agent_statuses().end())
      CHECK_MESSAGE(message.find(status) == std::string::npos, message);
  CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), outside).status ==
        404);
  for (const char* body :
       {R"({"sequence":-1})", R"({"sequence":"5"})", R"({"manifest_digest":"abc"})", R"({"version":5})", "[", "[]"})
    CHECK_MESSAGE(f.call("POST", "/v1/agent/check-in", body, inside).status == 400, body);

  // An explicit manifest must describe the images.
  auto unrelated = f.upload("another image");
  auto bad = f.call("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Field Test"}, {"images", {unrelated}}, {"manifest", manifest}}.dump());
  CHECK(bad.status == 422);
  CHECK(Json::parse(bad.body)["error"]["code"] == "manifest_mismatch");
}

TEST_CASE("agent: a device certificate is refused unless it is the imported key of a known UID, chained to a CA") {
  test::ProductFixture f;
  test::TestKey key, other;
  auto chain = f.device("dev-1", key);
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", chain)["device"] == "dev-1");
  auto refused = [&](const std::vector<std::string>& certificates, const std::string& why) {
    auto r = f.call("POST", "/v1/agent/check-in", "{}", certificates);
    CHECK_MESSAGE(r.status == 401, why, " -> ", r.body);
    CHECK(f.code(r) == "unauthenticated");
    CHECK_MESSAGE(test::error_message(r).find(why) != std::string::npos, r.body);
  };
  refused(std::vector<std::string>{"not DER"}, "not an X.509 certificate");
  refused(std::vector<std::string>{test::pem_to_der(f.factory_ca.issue(key, "dev-2"))}, "no device dev-2 is registered");
  refused(std::vector<std::string>{test::pem_to_der(f.factory_ca.issue(other, "dev-1"))},
          "the certificate's key is not the key imported for dev-1");
  test::TestCa stranger("Stranger CA");
  refused(std::vector<std::string>{test::pem_to_der(stranger.issue(key, "dev-1"))},
          "does not chain to a registered factory CA");
  // No certificate at all: the agent endpoints need mutual TLS.
  auto anonymous = f.call("POST", "/v1/agent/check-in", "{}", test::Caller::nobody());
  CHECK(anonymous.status == 401);
}

TEST_CASE("agent: status reports name their deployment; a reason comes only with failed") {
  test::ProductFixture f;
  auto d = f.deploy("dev-1", "v3");
  auto report = [&](const Json& body) { return f.call("POST", "/v1/agent/status", body.dump(), d.device_chain); };
  CHECK(report({{"status", "installed"}}).status == 400);
  CHECK(report({{"deployment", d.deployment}}).status == 400);
  CHECK(report({{"deployment", "dep_nope"}, {"status", "installed"}}).status == 404);
  auto reason_without_failed = report({{"deployment", d.deployment}, {"status", "installing"}, {"reason", "power_loss"}});
  CHECK(reason_without_failed.status == 400);
  CHECK(test::error_message(reason_without_failed).find("with status failed") != std::string::npos);
  CHECK(report({{"deployment", d.deployment}, {"status", "failed"}, {"reason", "cosmic_rays"}}).status == 400);
  // The service's own statuses are not the agent's to report.
  for (const char* status : {"notified", "timed_out", "retrying", "revoked", "unclaimed", "pending"})
    CHECK_MESSAGE(report({{"deployment", d.deployment}, {"status", status}}).status == 400, status);
  auto ok = report({{"deployment", d.deployment}, {"status", "failed"}, {"reason", "power_loss"}, {"detail", "brownout"}});
  CHECK(ok.status == 200);
  CHECK(Json::parse(ok.body) == Json{{"deployment", d.deployment}, {"device", "dev-1"}, {"status", "failed"}});
}

TEST_CASE("agent: a device that left a deployment (unclaimed) cannot report itself back into it") {
  test::ProductFixture f({.sqlite = "kiln.db"});
  auto chain = f.claimed_device("dev-1");
  auto release = f.release("v3", 3);
  auto id = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {release.first}}}.dump())["id"]
                .get<std::string>();
  f.json("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "downloading"}}.dump(), chain);
  CHECK(f.json("POST", "/v1/devices/dev-1/unclaim")["deployments_left"] == Json::array({id}));
  auto late = f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), chain);
  CHECK(late.status == 404);
  auto store = service::open_store(f.database);
  CHECK(store->reported_status(id, "dev-1") == std::optional<std::string>("unclaimed"));
  // Out of its group, it is offered nothing.
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", chain)["deployment"].is_null());
}

TEST_CASE("agent check-in: one that changes nothing writes nothing; last seen at most once a minute; a change at once") {
  AgentFixture f;
  f.create_product();
  f.add_ca(f.factory_ca);
  auto chain = f.assigned_device("dev-1", "Thermo/Field Test");
  auto seen = [&](const std::string& uid) { return f.json("GET", "/v1/devices/" + uid); };
  CHECK(seen("dev-1")["last_seen"].is_null());
  f.json("POST", "/v1/agent/check-in", R"({"version":"1.0.0"})", chain);
  auto first = seen("dev-1");
  REQUIRE(first["last_seen"].is_string());  // never seen: written
  CHECK(first["version"] == "1.0.0");

  // Timestamps have whole seconds: a second later, the same report leaves last_seen as it was.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  f.json("POST", "/v1/agent/check-in", R"({"version":"1.0.0"})", chain);
  f.json("POST", "/v1/agent/check-in", "{}", chain);
  CHECK(seen("dev-1")["last_seen"] == first["last_seen"]);
  // A new version is written at once, and last_seen with it.
  f.json("POST", "/v1/agent/check-in", R"({"version":"1.1.0"})", chain);
  auto updated = seen("dev-1");
  CHECK(updated["version"] == "1.1.0");
  CHECK(updated["last_seen"].get<std::string>() > first["last_seen"].get<std::string>());
  // So is a new state.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  f.json("POST", "/v1/agent/check-in", R"({"version":"1.1.0","state":"secured"})", chain);
  auto secured = seen("dev-1");
  CHECK(secured["state"] == "secured");
  CHECK(secured["last_seen"].get<std::string>() > updated["last_seen"].get<std::string>());

  // A device last seen more than a minute ago is seen again by any check-in.
  test::TestKey key;
  f.import(f.unit("dev-2", key, Json{{"last_seen", "2026-03-01T08:00:00Z"}}));
  std::vector<std::string> old_chain{test::pem_to_der(f.factory_ca.issue(key, "dev-2"))};
  f.json("POST", "/v1/agent/check-in", "{}", old_chain);
  CHECK(seen("dev-2")["last_seen"].get<std::string>() > "2026-03-01T08:00:00Z");
}

TEST_CASE("agent check-in: on PostgreSQL, one that records only telemetry commits without waiting for the disk") {
  if (!test::testing_postgresql()) return;  // SQLite (WAL, synchronous=NORMAL) never waits per commit
  AgentFixture f;
  f.create_product();
  f.add_ca(f.factory_ca);
  auto inside = f.assigned_device("dev-in", "Thermo/Field Test");
  auto outside = f.assigned_device("dev-out", "Thermo/Production");
  auto [image, manifest] = f.release("fw", 3);
  // With a rate, a device's first offer records it notified (what the rate counts): a decision.
  auto deployment = f.json("POST", "/v1/deployments",
                           Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"rate", {{"base_per_minute", 100}}}}
                               .dump())["id"]
                        .get<std::string>();
  // The handler on a store of its own, to count how its units commit.
  service::PgStore store(f.database);
  service::ServiceConfig config{f.database, f.dir.path() / "images", 60};
  // As the service runs it: in a telemetry unit first, and again in a write unit when it decides something.
  auto check_in = [&](const std::string& device) {
    service::Request request{"POST", "/v1/agent/check-in", {}, "{}", {}};
    service::Call call{store, config, request, {f.tenant, service::Role::reader, device, device}, {}, {}};
    auto in_unit = [&](service::Store::Access access) {
      auto unit = store.begin(access);
      auto reply = service::agent_check_in(call);
      unit->commit();
      return reply;
    };
    try {
      return in_unit(service::Store::Access::telemetry);
    } catch (const service::WriteOrderNeeded&) {
      return in_unit(service::Store::Access::write);
    }
  };
  auto before = store.relaxed_commits();
  CHECK(check_in("dev-out").body["deployment"].is_null());  // telemetry only
  CHECK(store.relaxed_commits() == before + 1);
  CHECK(check_in("dev-in").body["deployment"]["id"] == deployment);  // notified: committed durably
  CHECK(store.relaxed_commits() == before + 1);
  auto mine = store.deployment_device(deployment, "dev-in");
  REQUIRE(mine);
  CHECK(mine->status == "notified");
  CHECK(check_in("dev-out").body["deployment"].is_null());
  CHECK(store.relaxed_commits() == before + 2);
}
