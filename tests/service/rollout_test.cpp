// Staged-rollout rules and the device agent contract (C2) in-process: check-in shape, manifest endpoint, statuses.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/time.hpp"
#include "service/api.hpp"
#include "service/db.hpp"
#include "service/rollout.hpp"
#include "service/store.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_release.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

TEST_CASE("rollout: buckets are stable, spread over 0..99 and differ between deployments") {
  CHECK(rollout_bucket("dep_1", "dev-1") == rollout_bucket("dep_1", "dev-1"));
  std::set<int> seen;
  int differ = 0;
  for (int i = 0; i < 1000; ++i) {
    auto device = "dev-" + std::to_string(i);
    int b = rollout_bucket("dep_1", device);
    CHECK(b >= 0);
    CHECK(b < 100);
    seen.insert(b);
    differ += b != rollout_bucket("dep_2", device);
  }
  CHECK(seen.size() > 90);
  CHECK(differ > 900);
  // The documented formula: first 8 bytes of SHA-256("DEP:UID"), big-endian, modulo 100.
  auto h = digest(HashAlg::sha256, as_bytes(std::string("dep_1:dev-1")));
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | h[static_cast<std::size_t>(i)];
  CHECK(rollout_bucket("dep_1", "dev-1") == static_cast<int>(v % 100));
}

TEST_CASE("rollout: waves admit by cumulative percentage; the threshold is strict; the reason reads as a sentence") {
  std::vector<int> waves = {1, 10, 50, 100};
  CHECK(wave_of_bucket(waves, 0) == 1);
  CHECK(wave_of_bucket(waves, 1) == 2);
  CHECK(wave_of_bucket(waves, 9) == 2);
  CHECK(wave_of_bucket(waves, 10) == 3);
  CHECK(wave_of_bucket(waves, 99) == 4);
  CHECK(wave_of_bucket({10}, 10) == 0);
  CHECK(!failures_exceed(1, 20, 5));  // exactly 5%
  CHECK(failures_exceed(2, 20, 5));
  CHECK(!failures_exceed(0, 0, 0));
  CHECK(failures_exceed(1, 1000, 0));
  CHECK(halt_reason(3, 20, 2, 5) == "halted: 3 of 20 admitted devices failed (15%) in wave 2, above 5%");
  CHECK(halt_reason(1, 3, 1, 2.5) == "halted: 1 of 3 admitted devices failed (33.3%) in wave 1, above 2.5%");
  CHECK(is_failure_status("refused"));
  CHECK(!is_failure_status("testing"));
  CHECK(!is_failure_status("no such status"));
  CHECK(is_failure_status(DeviceStatus::timed_out));
  CHECK(!is_failure_status(DeviceStatus::retrying));
  CHECK(left_deployment(DeviceStatus::unclaimed));
  CHECK(left_deployment("revoked"));
  CHECK(!left_deployment(DeviceStatus::installed));
  CHECK(status_is(std::optional<std::string>("installed"), DeviceStatus::installed));
  CHECK(!status_is(std::optional<std::string>("testing"), DeviceStatus::installed));
  CHECK(!status_is(std::nullopt, DeviceStatus::pending));
  CHECK(failure_kinds() == std::vector<std::string>{"failed", "refused", "rolled_back", "timed_out"});
}

using test::AgentFixture;

TEST_CASE("rollout: a database from before staged rollouts gains the new columns and keeps its deployments") {
  test::TempDir dir;
  auto database = dir.file("service.db");
  std::string admin, group;
  {
    Service service({database, dir.path() / "images"});
    admin = service.create_token(service.create_tenant("acme"), Role::admin, "admin");
    auto r =
        service.handle({"POST", "/v1/products", {{"authorization", "Bearer " + admin}}, R"({"name":"Thermo"})", {}});
    REQUIRE(r.status == 201);
    auto groups = service.handle({"GET", "/v1/groups", {{"authorization", "Bearer " + admin}}, "", {}});
    group = Json::parse(groups.body)["items"][0]["id"].get<std::string>();
  }
  {
    // The deployments table as the first release wrote it, with one deployment (a store from before
    // versioned migrations: schema version 0).
    Db db(database);
    db.exec("PRAGMA user_version = 0");
    db.exec("DROP TABLE deployments");
    db.exec(
        "CREATE TABLE deployments (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL, group_id TEXT NOT NULL "
        "REFERENCES device_groups(id), images TEXT NOT NULL, rollout INTEGER NOT NULL, state TEXT NOT NULL, "
        "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)");
    db.prepare(
          "INSERT INTO deployments VALUES ('dep_old', 1, ?, '[\"aa\"]', 10, 'active', '2026-01-01T00:00:00Z', "
          "'2026-01-01T00:00:00Z')")
        .bind(1, group)
        .run();
  }
  Service service({database, dir.path() / "images"});
  auto r = service.handle({"GET", "/v1/deployments/dep_old", {{"authorization", "Bearer " + admin}}, "", {}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  auto d = Json::parse(r.body);
  CHECK(d["state"] == "active");
  CHECK(d["rollout"] == 10);
  CHECK(d["wave"] == 1);
  CHECK(d["waves"].size() == 1);
  CHECK(d["manifest"].is_null());
  CHECK(d["halt_on_failure"] == "never");  // a deployment from before thresholds were required keeps none
}

namespace {

// A deployment (`body`) to the fixture's devices (`chains`) whose first wave of `first` percent holds at least
// `min_first` devices and leaves at least one for later (deployment IDs are random, and so is the split: a
// newer deployment supersedes the older); its devices by wave.
struct Split {
  Json deployment;
  std::string id;
  std::vector<std::string> first, later;
};
Split split_deployment(AgentFixture& f, const std::map<std::string, std::vector<std::string>>& chains, Json body,
                       int first, std::size_t min_first) {
  Split s;
  for (int attempt = 0; attempt < 100 && (s.first.size() < min_first || s.later.empty()); ++attempt) {
    s.deployment = f.json("POST", "/v1/deployments", body.dump());
    s.id = s.deployment["id"].get<std::string>();
    s.first.clear();
    s.later.clear();
    for (auto& [uid, chain] : chains) (rollout_bucket(s.id, uid) < first ? s.first : s.later).push_back(uid);
  }
  REQUIRE(s.first.size() >= min_first);
  REQUIRE(!s.later.empty());
  return s;
}

}  // namespace

TEST_CASE("rollout: halting counts the admitted devices of the open waves; completion waits for the last wave") {
  AgentFixture f;
  f.create_product();
  f.add_ca(f.factory_ca);
  std::map<std::string, std::vector<std::string>> chains;
  for (int i = 0; i < 12; ++i) {
    auto uid = "dev-" + std::to_string(i);
    chains[uid] = f.assigned_device(uid, "Thermo/Field Test");
  }
  auto image = f.release("v2", 2).first;
  // The first wave holds at least two devices.
  auto split = split_deployment(f, chains,
                                Json{{"group", "Thermo/Field Test"},
                                     {"images", {image}},
                                     {"rollout", {50, 100}},
                                     {"step_after", 3600},
                                     {"halt_on_failure", 20},
                                     {"halt_min_executed", 1}},
                                50, 2);
  const Json& dep = split.deployment;
  const std::string& id = split.id;
  const std::vector<std::string>& first_wave = split.first;
  const std::vector<std::string>& later = split.later;
  CHECK(dep["admitted"] == first_wave.size());
  CHECK(dep["waves"][0]["admitted"] == first_wave.size());
  CHECK(dep["waves"][1]["admitted"] == first_wave.size());  // cumulative: wave 2 covers wave 1's devices

  // Every device of the first wave installs: not completed while the last wave is closed.
  for (auto& uid : first_wave)
    CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), chains[uid])
              .status == 200);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["state"] == "active");
  CHECK(shown["waves"][0]["status"]["installed"] == first_wave.size());
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", chains[later[0]])["deployment"].is_null());

  // One failure among the admitted devices is above 20% only if fewer than 5 are admitted.
  CHECK(
      f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "refused"}}.dump(), chains[first_wave[0]])
          .status == 200);
  auto after = f.json("GET", "/v1/deployments/" + id);
  bool halts = 100 > 20 * first_wave.size();
  CHECK(after["state"] == (halts ? "halted" : "active"));
  if (halts) CHECK(after["halt_reason"] == halt_reason(1, static_cast<std::int64_t>(first_wave.size()), 1, 20));
  auto failing = f.json("GET", "/v1/deployments/" + id + "/devices?status=failures");
  REQUIRE(failing["items"].size() == 1);
  CHECK(failing["items"][0]["device"] == first_wave[0]);
  CHECK(failing["items"][0]["status"] == "refused");
  CHECK(f.call("GET", "/v1/deployments/" + id + "/devices?status=nonsense").status == 400);
}

namespace {

// The setting of the rollout-control cases: a product, `devices` devices dev-0, dev-1, ... in its group
// "Thermo/Field Test", and a release v2 (sequence 2) for them.
struct ControlsFleet : AgentFixture {
  std::map<std::string, std::vector<std::string>> chains;
  std::string image;
  explicit ControlsFleet(int devices) {
    create_product();
    for (int i = 0; i < devices; ++i) chains["dev-" + std::to_string(i)] = assigned_device("dev-" + std::to_string(i), "Thermo/Field Test");
    image = release("v2", 2).first;
  }
  // split_deployment of a deployment of the release to the group, with `policy`'s fields in its body.
  Split split(Json policy, int first, std::size_t min_first) {
    policy.update(Json{{"group", "Thermo/Field Test"}, {"images", {image}}});
    return split_deployment(*this, chains, policy, first, min_first);
  }
  // What the agent of device `uid` is offered when it checks in (null: no deployment).
  Json check_in(const std::string& uid) { return json("POST", "/v1/agent/check-in", "{}", chains[uid])["deployment"]; }
  // Device `uid` reports `status` for deployment `id` (accepted); the deployment as shown after it.
  Json report(const std::string& id, const std::string& uid, const char* status) {
    CHECK(call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", status}}.dump(), chains[uid]).status ==
          200);
    return json("GET", "/v1/deployments/" + id);
  }
};

}  // namespace

TEST_CASE("rollout controls: a wave pauses on its success condition; resume opens the next wave") {
  ControlsFleet f(10);
  auto s = f.split(Json{{"rollout", {50, 100}},
                        {"halt_on_failure", "never"},
                        {"wave_success", {{"percent", 100}, {"then", "pause"}}}},
                   50, 2);
  auto report = [&](const std::string& uid, const char* status) { f.report(s.id, uid, status); };
  CHECK(f.check_in(s.later[0]).is_null());
  for (std::size_t i = 0; i + 1 < s.first.size(); ++i) report(s.first[i], "installed");
  CHECK(f.json("GET", "/v1/deployments/" + s.id)["state"] == "active");  // one short of 100 %
  report(s.first.back(), "installed");
  auto paused = f.json("GET", "/v1/deployments/" + s.id);
  CHECK(paused["state"] == "paused");
  CHECK(paused["wave"] == 1);
  CHECK(paused["awaiting_approval"] == true);
  CHECK(paused["pause_reason"].get<std::string>().find("resume to open wave 2") != std::string::npos);
  CHECK(f.check_in(s.later[0]).is_null());
  auto resumed = f.json("POST", "/v1/deployments/" + s.id + "/resume");
  CHECK(resumed["state"] == "active");
  CHECK(resumed["wave"] == 2);
  CHECK(resumed["awaiting_approval"] == false);
  CHECK(f.check_in(s.later[0])["id"] == s.id);
  for (auto& uid : s.later) report(uid, "installed");
  CHECK(f.json("GET", "/v1/deployments/" + s.id)["state"] == "completed");
}

TEST_CASE("rollout controls: the wave error condition halts on the report that crosses it") {
  ControlsFleet f(10);
  auto s = f.split(
      Json{{"rollout", {60, 100}}, {"step_after", 3600}, {"halt_on_failure", "never"}, {"wave_error", {{"count", 1}}}},
      60, 3);
  auto report = [&](const std::string& uid, const char* status) { return f.report(s.id, uid, status); };
  CHECK(report(s.first[0], "failed")["state"] == "active");  // at the count
  auto halted = report(s.first[1], "rolled_back");           // the report that crosses it
  CHECK(halted["state"] == "halted");
  CHECK(halted["halt_reason"] == "halted: 2 devices of wave 1 failed, above the wave error condition of 1");
  // A resume forgives the wave's failures so far; the next one above the count halts again.
  CHECK(f.json("POST", "/v1/deployments/" + s.id + "/resume")["state"] == "active");
  CHECK(report(s.first[2], "refused")["state"] == "active");
  if (s.first.size() > 3) CHECK(report(s.first[3], "failed")["state"] == "halted");
}

TEST_CASE("rollout controls: an abort criterion aborts the deployment and sends devices back") {
  ControlsFleet f(6);
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"},
                       {"images", {f.image}},
                       {"halt_on_failure", "never"},
                       {"abort_criteria", {{{"kind", "refused"}, {"percent", 40}, {"min_executed", 3}}}}}
                      .dump());
  auto id = d["id"].get<std::string>();
  auto report = [&](const std::string& uid, const char* status) { return f.report(id, uid, status); };
  CHECK(report("dev-0", "refused")["state"] == "active");    // 1 executed: below the minimum of 3
  CHECK(report("dev-1", "installed")["state"] == "active");
  CHECK(report("dev-2", "failed")["state"] == "active");     // 1 refused of 3 executed (33%): not above 40%
  auto aborted = report("dev-3", "refused");                 // 2 of 4 (50%)
  CHECK(aborted["state"] == "aborted");
  CHECK(aborted["halt_reason"] ==
        "aborted: 2 of 4 executed devices ended refused (50%), above the abort criterion refused 40% (once 3 "
        "executed)");
  // Nobody is offered it any more.
  CHECK(f.check_in("dev-5").is_null());
}

TEST_CASE("rollout controls: a device silent past its phase's timeout is recorded timed_out, a failure") {
  ControlsFleet f(3);
  for (const auto& [bad, field] : {std::pair{Json{{"downloading", 0}}, "timeouts.downloading"},
                                   std::pair{Json{{"installing", -5}}, "timeouts.installing"},
                                   std::pair{Json{{"testing", "1m"}}, "timeouts.testing"},
                                   std::pair{Json{{"rebooting", 60}}, "timeouts.rebooting"},
                                   std::pair{Json::object(), "timeouts"}}) {
    auto r = f.call("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"timeouts", bad}}.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, r.body);
  }
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"},
                       {"images", {f.image}},
                       {"halt_on_failure", "never"},
                       {"timeouts", {{"downloading", 1}, {"testing", 3600}}},
                       {"abort_criteria", {{{"kind", "timed_out"}, {"percent", 50}, {"min_executed", 1}}}}}
                      .dump());
  auto id = d["id"].get<std::string>();
  CHECK(d["timeouts"] == Json{{"downloading", 1}, {"testing", 3600}});
  auto report = [&](const std::string& uid, const char* status) { f.report(id, uid, status); };
  report("dev-0", "downloading");
  report("dev-1", "installed");
  report("dev-2", "testing");
  CHECK(f.json("GET", "/v1/deployments/" + id)["device_status"]["timed_out"] == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));  // stored times are whole seconds
  // A GET does not write; the next check-in of any device of the group records the timeout.
  CHECK(f.json("GET", "/v1/deployments/" + id)["device_status"]["timed_out"] == 0);
  f.json("POST", "/v1/agent/check-in", "{}", f.chains["dev-1"]);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["timed_out"] == 1);
  CHECK(shown["device_status"]["testing"] == 1);  // its timeout is an hour
  CHECK(shown["failures"] == 1);
  auto timed_out = f.json("GET", "/v1/deployments/" + id + "/devices?status=timed_out")["items"];
  REQUIRE(timed_out.size() == 1);
  CHECK(timed_out[0]["device"] == "dev-0");
  CHECK(timed_out[0]["detail"].get<std::string>().find("while downloading, above the 1 s timeout") != std::string::npos);
  // 1 timed out of 2 executed is 50%: not above the criterion. The report is a failure with its reason.
  CHECK(shown["state"] == "active");
  auto reported = f.json("GET", "/v1/deployments/" + id + "/report")["items"];
  for (auto& item : reported)
    if (item["device"] == "dev-0") CHECK(item["failure_reason"].get<std::string>().find("timeout") != std::string::npos);
  // An agent cannot report timed_out itself.
  CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "timed_out"}}.dump(), f.chains["dev-2"])
            .status == 400);
}

TEST_CASE("rollout controls: the rate offers the deployment to no more new devices than it allows by now") {
  ControlsFleet f(3);
  for (const auto& [bad, field] :
       {std::pair{Json{{"base_per_minute", 0}}, "rate.base_per_minute"},
        std::pair{Json{{"base_per_minute", -3}}, "rate.base_per_minute"},
        std::pair{Json{{"factor", 2}, {"every", 5}}, "rate.base_per_minute"},
        std::pair{Json{{"base_per_minute", 5}, {"factor", 0.5}, {"every", 5}}, "rate.factor"},
        std::pair{Json{{"base_per_minute", 5}, {"factor", 2}}, "rate.every"},
        std::pair{Json{{"base_per_minute", 5}, {"factor", 2}, {"every", 0}}, "rate.every"},
        std::pair{Json{{"base_per_minute", 5}, {"increase_on", "installed"}}, "rate.increase_on"},
        std::pair{Json{{"base_per_minute", 5}, {"max_per_minute", 4}}, "rate.max_per_minute"},
        std::pair{Json{{"base_per_minute", 5}, {"speed", 4}}, "rate.speed"}}) {
    auto r = f.call("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"rate", bad}}.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, r.body);
  }
  // One device per minute: the first at once, the next a minute later (the test takes far less).
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"},
                       {"images", {f.image}},
                       {"rate", {{"base_per_minute", 1}, {"factor", 2}, {"every", 10}}}}
                      .dump());
  auto id = d["id"].get<std::string>();
  CHECK(d["rate"] ==
        Json{{"base_per_minute", 1}, {"factor", 2.0}, {"increase_on", "notified"}, {"every", 10}, {"max_per_minute", nullptr}});
  CHECK(d["rate_now"] == Json{{"per_minute", 1.0}, {"notified", 0}, {"allowed", 1}});
  CHECK(f.check_in("dev-0")["id"] == id);
  CHECK(f.check_in("dev-1").is_null());
  CHECK(f.check_in("dev-2").is_null());
  CHECK(f.check_in("dev-0")["id"] == id);  // notified already
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["notified"] == 1);
  CHECK(shown["device_status"]["pending"] == 2);
  CHECK(shown["rate_now"]["notified"] == 1);
  // Its reports take over from notified; the rate still holds the others back.
  CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "installed"}}.dump(), f.chains["dev-0"])
            .status == 200);
  CHECK(f.check_in("dev-1").is_null());
  CHECK(f.json("GET", "/v1/deployments/" + id)["device_status"]["installed"] == 1);
  // An agent cannot report notified itself.
  CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "notified"}}.dump(), f.chains["dev-1"])
            .status == 400);
}

TEST_CASE("rollout controls: a scheduled start holds every device until it comes") {
  AgentFixture f;
  f.create_product();
  auto chain = f.assigned_device("dev-0", "Thermo/Field Test");
  auto image = f.release("v2", 2).first;
  for (const auto& [bad, field] : {std::pair{Json{{"start_at", "tomorrow"}}, "schedule.start_at"},
                                   std::pair{Json{{"start_at", "2026-12-24T02:00:00"}}, "schedule.start_at"},
                                   std::pair{Json{{"start_at", 5}}, "schedule.start_at"},
                                   std::pair{Json{{"windows", Json::array()}}, "schedule.windows"}}) {
    auto r = f.call("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"schedule", bad}}.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, r.body);
  }
  auto later = f.json("POST", "/v1/deployments",
                      Json{{"group", "Thermo/Field Test"},
                           {"images", {image}},
                           {"schedule", {{"start_at", "2999-01-01T01:00:00+01:00"}}}}
                          .dump());
  CHECK(later["schedule"] == Json{{"start_at", "2999-01-01T00:00:00Z"}});
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", chain)["deployment"].is_null());
  auto past = f.json("POST", "/v1/deployments",
                     Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"schedule", {{"start_at", "2020-01-01"}}}}
                         .dump());
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", chain)["deployment"]["id"] == past["id"]);
}

namespace {

// Checks in until the deployment is offered again (a retry's wait of about a second), at most 10 s.
Json offered_again(ControlsFleet& f, const std::string& uid) {
  for (int i = 0; i < 200; ++i) {
    auto d = f.json("POST", "/v1/agent/check-in", "{}", f.chains[uid])["deployment"];
    if (!d.is_null()) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("the deployment was not offered again within 10 s");
  return nullptr;
}

Json device_row(ControlsFleet& f, const std::string& id, const std::string& uid) {
  auto rows = f.json("GET", "/v1/deployments/" + id + "/devices");
  for (auto& item : rows["items"])
    if (item["device"] == uid) return item;
  FAIL("no row for " << uid << " in " << rows.dump());
  return nullptr;
}

}  // namespace

TEST_CASE("rollout controls: transient failures are retried with backoff; the last attempt's failure counts once") {
  ControlsFleet f(3);
  for (const auto& [bad, field] :
       {std::pair{Json{{"retries", 0}}, "retry.retries"}, std::pair{Json{{"retries", 11}}, "retry.retries"},
        std::pair{Json{{"retries", "3"}}, "retry.retries"}, std::pair{Json{{"backoff_seconds", 30}}, "retry.retries"},
        std::pair{Json{{"retries", 3}, {"backoff_seconds", 0}}, "retry.backoff_seconds"},
        std::pair{Json{{"retries", 3}, {"backoff_seconds", -30}}, "retry.backoff_seconds"},
        std::pair{Json{{"retries", 3}, {"backoff_seconds", 60}, {"backoff_max_seconds", 30}}, "retry.backoff_max_seconds"},
        std::pair{Json{{"retries", 3}, {"backoff_max_seconds", 0}}, "retry.backoff_max_seconds"},
        std::pair{Json{{"retries", 3}, {"jitter", 1}}, "retry.jitter"}, std::pair{Json(3), "retry"}}) {
    auto r = f.call("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"retry", bad}}.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, r.body);
  }
  auto defaults = f.json("POST", "/v1/deployments",
                         Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"retry", {{"retries", 2}}}}.dump());
  CHECK(defaults["retry"] == Json{{"retries", 2}, {"backoff_seconds", default_retry_backoff},
                                  {"backoff_max_seconds", default_retry_backoff_max}});
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"},
                       {"images", {f.image}},
                       {"halt_on_failure", "never"},
                       {"retry", {{"retries", 2}, {"backoff_seconds", 1}, {"backoff_max_seconds", 1}}}}
                      .dump());
  auto id = d["id"].get<std::string>();
  CHECK(d["retry"] == Json{{"retries", 2}, {"backoff_seconds", 1}, {"backoff_max_seconds", 1}});
  auto offer = f.check_in("dev-0");
  CHECK(offer["retry"] == Json{{"attempt", 1}, {"attempts", 3}});
  auto fail = [&](const std::string& uid, const char* status, std::optional<const char*> reason) {
    Json body = {{"deployment", id}, {"status", status}, {"detail", "cut at byte 1000"}};
    if (reason) body["reason"] = *reason;
    return f.call("POST", "/v1/agent/status", body.dump(), f.chains[uid]).status;
  };
  // Attempt 1 is cut: retrying (not a failure), held until its wait is over.
  f.report(id, "dev-0", "downloading");
  auto second = unix_now();
  CHECK(fail("dev-0", "failed", "download_interrupted") == 200);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["retrying"] == 1);
  CHECK(shown["failures"] == 0);
  auto row = device_row(f, id, "dev-0");
  CHECK(row["status"] == "retrying");
  CHECK(row["attempt"] == 1);
  CHECK(row["retry_at"].is_string());
  CHECK(row["detail"].get<std::string>().find("download_interrupted: cut at byte 1000 (attempt 1 of 3") != std::string::npos);
  // Held for its 1 s wait, which the service counts in whole seconds (until the report's second + 1): a
  // check-in answered within the second the report was sent in is offered nothing. One that missed that
  // second (a loaded machine, or a report at x.99 s) may already be offered the retry.
  auto early = f.check_in("dev-0");
  if (unix_now() == second) CHECK(early.is_null());
  // Attempt 2 is offered after the wait; power is lost: retrying again.
  offer = offered_again(f, "dev-0");
  CHECK(offer["retry"] == Json{{"attempt", 2}, {"attempts", 3}});
  CHECK(device_row(f, id, "dev-0")["attempt"] == 2);
  CHECK(f.json("GET", "/v1/deployments/" + id + "/devices?status=notified")["items"].size() == 1);
  f.report(id, "dev-0", "installing");
  CHECK(fail("dev-0", "failed", "power_loss") == 200);
  CHECK(device_row(f, id, "dev-0")["status"] == "retrying");
  // Attempt 3, the last, is cut too: failed, counted once.
  offer = offered_again(f, "dev-0");
  CHECK(offer["retry"]["attempt"] == 3);
  CHECK(fail("dev-0", "failed", "download_interrupted") == 200);
  row = device_row(f, id, "dev-0");
  CHECK(row["status"] == "failed");
  CHECK(row["attempt"] == 3);
  CHECK(row["detail"].get<std::string>().find("no retries left") != std::string::npos);
  // Failures that are not transient are never retried: failed without a reason, refused, rolled back.
  CHECK(fail("dev-1", "failed", std::nullopt) == 200);
  CHECK(fail("dev-2", "refused", std::nullopt) == 200);
  CHECK(fail("dev-2", "refused", "download_interrupted") == 400);  // a reason goes with failed only
  CHECK(fail("dev-2", "failed", "bad_signature") == 400);
  shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["retrying"] == 0);
  CHECK(shown["device_status"]["failed"] == 2);
  CHECK(shown["failures"] == 3);  // dev-0 once, dev-1, dev-2
  CHECK(device_row(f, id, "dev-1")["attempt"] == 1);
  auto report = f.json("GET", "/v1/deployments/" + id + "/report");
  for (auto& item : report["items"]) CHECK(item["attempts"] == (item["device"] == "dev-0" ? 3 : 1));
  // Without a retry policy a transient failure is a failure at once.
  auto plain = f.json("POST", "/v1/deployments",
                      Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"halt_on_failure", "never"}}.dump());
  id = plain["id"].get<std::string>();
  CHECK(f.check_in("dev-0")["retry"].is_null());
  CHECK(fail("dev-0", "failed", "download_interrupted") == 200);
  CHECK(device_row(f, id, "dev-0")["status"] == "failed");
}

TEST_CASE("rollout controls: maintenance windows hold devices outside them, in the device's or the named zone") {
  ControlsFleet f(2);
  for (const auto& [bad, field] :
       {std::pair{Json{{"windows", {"Mon-Fri 25:00-26:00"}}}, "schedule.windows[0]"},
        std::pair{Json{{"windows", {"Mon-Fri 01:00-04:00", "Tue 03:00-03:00"}}}, "schedule.windows[1]"},
        std::pair{Json{{"windows", {"Someday 01:00-02:00"}}}, "schedule.windows[0]"},
        std::pair{Json{{"windows", {7}}}, "schedule.windows[0]"},
        std::pair{Json{{"windows", "Mon 01:00-02:00"}}, "schedule.windows"},
        std::pair{Json{{"windows", {"Mon 01:00-02:00"}}, {"time_zone", "Mars/Olympus_Mons"}}, "schedule.time_zone"},
        std::pair{Json{{"time_zone", "Europe/Berlin"}}, "schedule.time_zone"}}) {
    auto r = f.call("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"schedule", bad}}.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, r.body);
  }
  // A daily two-hour window twelve hours from now in UTC: closed in UTC, open in UTC+12 (Etc/GMT-12).
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto hour = (now / 3600) % 24;
  auto window = fmt::format("Mon-Sun {:02}:00-{:02}:00", (hour + 12) % 24, (hour + 14) % 24);
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}, {"schedule", {{"windows", {window}}}}}.dump());
  auto id = d["id"].get<std::string>();
  CHECK(d["schedule"] == Json{{"start_at", nullptr}, {"windows", {window}}, {"time_zone", "UTC"}});
  CHECK(d["window_open"] == false);
  CHECK(d["next_window_at"].get<std::string>() > d["created_at"].get<std::string>());
  CHECK(d["waiting_window"] == 2);
  CHECK(f.check_in("dev-0").is_null());
  auto held = f.json("GET", "/v1/deployments/" + id + "/devices?status=waiting_window")["items"];
  REQUIRE(held.size() == 2);
  CHECK(held[0]["detail"].get<std::string>().find("outside its maintenance windows (UTC): the next opens at") !=
        std::string::npos);
  // The device's own zone wins: in UTC+12 the window is open.
  for (const auto& [bad, why] : {std::pair{Json{{"time_zone", "Europe/Nowhere"}}, "time_zone"},
                                 std::pair{Json{{"time_zone", 5}}, "time_zone"},
                                 std::pair{Json{{"zone", "UTC"}}, "zone"}}) {
    auto r = f.call("PATCH", "/v1/devices/dev-1", bad.dump());
    CHECK(r.status == 400);
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + why + "'") != std::string::npos, r.body);
  }
  CHECK(f.json("PATCH", "/v1/devices/dev-1", Json{{"time_zone", "Etc/GMT-12"}}.dump())["time_zone"] == "Etc/GMT-12");
  CHECK(f.json("GET", "/v1/devices/dev-1")["time_zone"] == "Etc/GMT-12");
  CHECK(f.check_in("dev-1")["id"] == id);
  CHECK(f.check_in("dev-0").is_null());
  CHECK(f.json("GET", "/v1/deployments/" + id)["waiting_window"] == 1);
  // A device that started finishes outside its window; null clears the zone.
  f.report(id, "dev-1", "downloading");
  CHECK(f.json("PATCH", "/v1/devices/dev-1", Json{{"time_zone", nullptr}}.dump())["time_zone"].is_null());
  CHECK(f.check_in("dev-1")["id"] == id);
  // A named zone for the deployment: the same window read in UTC+12 is open for both.
  auto named = f.json("POST", "/v1/deployments",
                      Json{{"group", "Thermo/Field Test"},
                           {"images", {f.image}},
                           {"schedule", {{"windows", {window}}, {"time_zone", "Etc/GMT-12"}}}}
                          .dump());
  CHECK(named["window_open"] == true);
  CHECK(f.check_in("dev-0")["id"] == named["id"]);
}

