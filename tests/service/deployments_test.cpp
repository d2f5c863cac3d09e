// Tests for service/deployments on the run's store (SQLite, or PostgreSQL in service_postgres): a device
// leaving its open deployments (revoke, unclaim, transfer), the checks and request fields of deployment
// creation, and what the deployment endpoints refuse.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/time.hpp"
#include "manifests/suit_create.hpp"
#include "service/api.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"
#include "service/store.hpp"
#include "signing/key_export.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

using namespace kiln;
using Json = nlohmann::json;
using test::AgentFixture;
using service::leave_open_deployments;
using service::open_store;
using service::default_slot_size;
using service::default_abort_min_executed;

namespace {

// The service (its store a SQLite file the test reopens, unless the run is on PostgreSQL) with Thermo.
struct StoreFixture : test::ProductFixture {
  StoreFixture() : ProductFixture({.sqlite = "kiln.db"}) {}
  std::string create(const std::string& image) {
    return json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {image}}}.dump())["id"]
        .get<std::string>();
  }
  void report(const std::string& deployment, const std::string& status, const std::vector<std::string>& chain) {
    json("POST", "/v1/agent/status", Json{{"deployment", deployment}, {"status", status}}.dump(), chain);
  }
};

}  // namespace

TEST_CASE("deployments: a device leaves the open deployments it has not finished, then its group, then they go on") {
  StoreFixture f;
  auto a = f.claimed_device("dev-a");
  auto b = f.assigned_device("dev-b", "Thermo/Field Test");
  auto c = f.assigned_device("dev-c", "Thermo/Field Test");
  auto d = f.assigned_device("dev-d", "Thermo/Field Test");
  test::TestKey loner;
  f.device("dev-e", loner);  // in no group
  auto old = f.create(f.release("v3", 3).first);
  auto id = f.create(f.release("v4", 4).first);
  REQUIRE(f.json("GET", "/v1/deployments/" + old)["state"] == "superseded");
  f.report(id, "installed", b);
  f.report(id, "failed", c);
  auto store = open_store(f.database);
  int leaves = 0;
  std::optional<std::string> recorded_before_leaving;

  // dev-d: nothing reported yet, it leaves with the status and detail given; the caller's leave runs after.
  auto left = leave_open_deployments(*store, f.tenant, "dev-d", DeviceStatus::revoked, "device revoked: stolen", [&] {
    ++leaves;
    recorded_before_leaving = store->reported_status(id, "dev-d");
    store->revoke_device("dev-d", "stolen", now_iso8601());
  });
  CHECK(left == std::vector<std::string>{id});
  CHECK(leaves == 1);
  CHECK(recorded_before_leaving == std::optional<std::string>("revoked"));
  auto row = store->deployment_device(id, "dev-d");
  REQUIRE(row);
  CHECK(row->detail == "device revoked: stolen");
  CHECK_FALSE(store->reported_status(old, "dev-d"));  // a superseded deployment is not open: untouched

  // Finished devices (installed, failed) and a device that left already stay as they are; leave still runs.
  for (const char* done : {"dev-b", "dev-c", "dev-d"}) {
    auto before = store->deployment_device(id, done);
    REQUIRE(before);
    CHECK(leave_open_deployments(*store, f.tenant, done, DeviceStatus::unclaimed, "device unclaimed", [&] {
            ++leaves;
          }).empty());
    auto after = store->deployment_device(id, done);
    REQUIRE(after);
    CHECK(after->status == before->status);
    CHECK(after->detail == before->detail);
  }
  CHECK(leaves == 4);
  // A device in no group leaves nothing; an unknown device neither.
  CHECK(leave_open_deployments(*store, f.tenant, "dev-e", DeviceStatus::unclaimed, "x", [&] { ++leaves; }).empty());
  CHECK(leave_open_deployments(*store, f.tenant, "dev-zz", DeviceStatus::unclaimed, "x", [&] { ++leaves; }).empty());
  CHECK(leaves == 6);
  // dev-c's next attempt installs; dev-a has not finished, so the deployment stays active.
  f.report(id, "installed", c);
  CHECK(f.json("GET", "/v1/deployments/" + id)["state"] == "active");

  // The last unfinished device leaving completes the deployment: it is evaluated after the device left.
  left = leave_open_deployments(*store, f.tenant, "dev-a", DeviceStatus::unclaimed, "device unclaimed",
                                [&] { store->unclaim_device("dev-a"); });
  CHECK(left == std::vector<std::string>{id});
  CHECK(store->reported_status(id, "dev-a") == std::optional<std::string>("unclaimed"));
  auto shown = f.json("GET", "/v1/deployments/" + id);
  INFO(shown.dump());
  CHECK(shown["state"] == "completed");
  CHECK(shown["device_status"]["revoked"] == 1);  // dev-a left the group: it is counted no more
  CHECK(f.json("GET", "/v1/devices/dev-a")["group"].is_null());
  CHECK(f.call("POST", "/v1/agent/check-in", "{}", a).status < 500);
}

TEST_CASE("deployments: revoke, unclaim and transfer leave the deployment with their own status and detail") {
  StoreFixture f;
  auto a = f.assigned_device("dev-a", "Thermo/Field Test");
  auto b = f.assigned_device("dev-b", "Thermo/Field Test");
  auto c = f.claimed_device("dev-c");
  auto d = f.assigned_device("dev-d", "Thermo/Field Test");
  auto id = f.create(f.release("v3", 3).first);
  f.report(id, "installed", d);
  CHECK(f.json("POST", "/v1/devices/dev-a/revoke", R"({"reason":"lost"})")["deployments_left"] == Json::array({id}));
  CHECK(f.json("POST", "/v1/devices/dev-b/revoke")["deployments_left"] == Json::array({id}));
  CHECK(f.json("POST", "/v1/devices/dev-c/unclaim")["deployments_left"] == Json::array({id}));
  auto store = open_store(f.database);
  CHECK(store->deployment_device(id, "dev-a")->detail == "device revoked: lost");
  CHECK(store->deployment_device(id, "dev-b")->detail == "device revoked");
  CHECK(store->deployment_device(id, "dev-c")->detail == "device unclaimed");
  CHECK(store->reported_status(id, "dev-c") == std::optional<std::string>("unclaimed"));
  // The last one leaving completes it: only dev-d was left, and it installed.
  CHECK(f.json("GET", "/v1/deployments/" + id)["state"] == "completed");
}

TEST_CASE("deployments: unknown deployments are 404, and a finished state cannot be left") {
  StoreFixture f;
  f.assigned_device("dev-a", "Thermo/Field Test");
  auto id = f.create(f.release("v3", 3).first);
  for (const char* verb : {"pause", "resume", "abort"}) {
    auto r = f.call("POST", std::string("/v1/deployments/dep-nope/") + verb);
    CHECK_MESSAGE(r.status == 404, verb, " -> ", r.body);
  }
  CHECK(f.call("GET", "/v1/deployments/dep-nope").status == 404);
  CHECK(f.call("GET", "/v1/deployments/dep-nope/devices").status == 404);
  // Asking for the state it is in answers it again; abort is final (409 naming the state).
  CHECK(f.json("POST", "/v1/deployments/" + id + "/resume")["state"] == "active");
  CHECK(f.json("POST", "/v1/deployments/" + id + "/abort")["state"] == "aborted");
  CHECK(f.json("POST", "/v1/deployments/" + id + "/abort")["state"] == "aborted");
  for (const char* verb : {"pause", "resume"}) {
    auto r = f.call("POST", "/v1/deployments/" + id + "/" + verb);
    CHECK_MESSAGE(r.status == 409, verb, " -> ", r.body);
    CHECK(test::error_message(r).find("is aborted: it cannot become") != std::string::npos);
  }
  // A finished deployment can be deleted; an unknown one is 404.
  CHECK(f.call("DELETE", "/v1/deployments/" + id).status == 200);
  CHECK(f.call("DELETE", "/v1/deployments/" + id).status == 404);
  // The device list filters by status ("failures": every failure status).
  auto id2 = f.create(f.release("v4", 4).first);
  CHECK(f.json("GET", "/v1/deployments/" + id2 + "/devices")["items"].size() == 1);
  CHECK(f.json("GET", "/v1/deployments/" + id2 + "/devices?status=failures")["items"].empty());
  CHECK(f.json("GET", "/v1/deployments/" + id2 + "/devices?status=installed")["items"].empty());
}

namespace {

// A SUIT envelope signed by `key` for any file (a raw file is not an MCUboot image, yet can be described).
std::string signed_envelope(const std::filesystem::path& file, std::uint64_t sequence, const Signer& key) {
  suit::CreateOptions options;
  options.components.push_back({file, ""});
  options.vendor_id = suit::vendor_id_from_domain("example.com");
  options.sequence_number = sequence;
  auto bytes = suit::encode_envelope(suit::create_envelope(suit::describe(options), {}, {&key}));
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

TEST_CASE("deployment checks: what the product's boards would refuse is refused at creation, with the reason") {
  AgentFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto dev = f.assigned_device("dev-1", "Thermo/Field Test");
  auto [image, manifest] = f.release("v5", 5);
  Json body = {{"group", "Thermo/Field Test"}, {"images", {image}}};
  auto create = [&](const Json& b) { return f.call("POST", "/v1/deployments", b.dump()); };

  // A product that names no keys: nothing can be checked, so nothing is created.
  auto keyless = create(body);
  CHECK(keyless.status == 422);
  CHECK(Json::parse(keyless.body)["error"]["code"] == "deployment_refused");
  CHECK(test::error_message(keyless).find("product Thermo has no boot keys") != std::string::npos);
  CHECK(test::error_message(keyless).find("product Thermo has no manifest keys") != std::string::npos);
  CHECK(f.json("GET", "/v1/deployments")["items"].empty());
  // The product learns its keys (PATCH), shows them by fingerprint and key hash, and the same request passes.
  Json trust = Json::object();
  f.releases.add_trust(trust);
  auto product = f.json("PATCH", "/v1/products/Thermo", trust.dump());
  REQUIRE(product["boot_keys"].size() == 1);
  CHECK(product["boot_keys"][0]["mcuboot_key_hash"].get<std::string>().size() == 64);
  CHECK(product["slot_size"] == default_slot_size);
  CHECK(f.call("PATCH", "/v1/products/Thermo", R"({"boot_keys":["not a key"]})").status == 400);
  CHECK(test::error_message(f.call("PATCH", "/v1/products/Thermo", R"({"slot_size":-1})")).find("slot_size") !=
        std::string::npos);

  // A dry run: the plan and every check, nothing created.
  auto plan = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {image}},
                                                      {"rollout", {50, 100}}, {"step_after", 60}, {"dry_run", true}}
                                                    .dump());
  CHECK(plan["dry_run"] == true);
  CHECK(plan["would_create"] == true);
  CHECK(plan["devices"] == 1);
  CHECK(plan["waves"].size() == 2);
  CHECK(plan["rollout"]["halt_on_failure"] == 5);
  CHECK(plan["rollout"]["halt_min_executed"] == 5);
  std::set<std::string> names;
  for (auto& c : plan["checks"]) {
    names.insert(c["check"].get<std::string>());
    CHECK_MESSAGE(c["passed"] == true, c.dump());
  }
  CHECK(names == std::set<std::string>{"manifest", "manifest_key", "mcuboot", "boot_key", "slot_size", "sequence"} );
  CHECK(f.json("GET", "/v1/deployments")["items"].empty());

  // A raw file (not an MCUboot image) with a manifest properly made for it and signed.
  std::string raw(2000, 'r');
  auto raw_file = f.dir.file("raw.bin");
  std::ofstream(raw_file, std::ios::binary) << raw;
  auto raw_image = f.upload(raw);
  auto raw_manifest = f.upload(signed_envelope(raw_file, 6, f.releases.manifest_key()));
  auto r = create({{"group", "Thermo/Field Test"}, {"images", {raw_image}}, {"manifest", raw_manifest}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("is not an MCUboot image") != std::string::npos, r.body);

  // An image without a SUIT manifest.
  auto bare = f.upload(f.releases.make("bare", 6).image);
  r = create({{"group", "Thermo/Field Test"}, {"images", {bare}}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("no SUIT manifest") != std::string::npos, r.body);

  // An image signed by a key that is not a boot key of the product.
  auto other = f.releases.key("other.pem");
  auto rogue = f.releases.make("rogue", 6, 3000, false, nullptr, other.get());
  r = create({{"group", "Thermo/Field Test"}, {"images", {f.upload(rogue.image)}}, {"manifest", f.upload(rogue.envelope)}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("not a boot key of product Thermo") != std::string::npos, r.body);

  // A manifest signed by another key.
  auto forged = f.releases.make("forged", 6, 3000, false, other.get());
  r = create({{"group", "Thermo/Field Test"}, {"images", {f.upload(forged.image)}}, {"manifest", f.upload(forged.envelope)}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("does not verify against the manifest keys of product Thermo") != std::string::npos,
                r.body);

  // The device reports running sequence 7: sequence 5 would be refused by it, and it is named.
  CHECK(f.json("POST", "/v1/agent/check-in", R"({"sequence":7})", dev)["deployment"].is_null());
  r = create(body);
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("manifest sequence number 5 is not above") != std::string::npos, r.body);
  CHECK_MESSAGE(test::error_message(r).find("dev-1") != std::string::npos, r.body);
  auto [image8, manifest8] = f.release("v8", 8);
  auto created = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {image8}}}.dump());
  CHECK(created["halt_on_failure"] == 5);
  CHECK(created["halt_min_executed"] == 5);
  // A deployment still offering sequence 8 blocks an older release for the group, even where no device ran it.
  f.json("POST", "/v1/agent/check-in", R"({"sequence":1})", dev);
  auto [image7, manifest7] = f.release("v7b", 7);
  r = create({{"group", "Thermo/Field Test"}, {"images", {image7}}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("still offers sequence 8") != std::string::npos, r.body);

  // The slot: an image that does not fit the product's slot size.
  f.json("PATCH", "/v1/products/Thermo", R"({"slot_size":3072})");
  auto [image9, manifest9] = f.release("v9", 9);
  r = create({{"group", "Thermo/Field Test"}, {"images", {image9}}});
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("holds 3072 bytes") != std::string::npos, r.body);
  auto dry = f.json("POST", "/v1/deployments",
                    Json{{"group", "Thermo/Field Test"}, {"images", {image9}}, {"dry_run", true}}.dump());
  CHECK(dry["would_create"] == false);
  CHECK(dry["reason"].get<std::string>().find("holds 3072 bytes") != std::string::npos);
  CHECK(f.json("GET", "/v1/deployments")["items"].size() == 1);
}

TEST_CASE("deployment checks: an image carrying only its key hash needs a board that holds the key") {
  AgentFixture f;
  std::filesystem::create_directories(f.dir.path() / "separate");
  test::TestReleaseMaker separate(f.dir.path() / "separate", true);  // boot key != manifest key
  Json product = {{"name", "Thermo"}};
  separate.add_trust(product);
  f.json("POST", "/v1/products", product.dump());
  auto upload = [&](const test::TestReleaseFiles& r) {
    return Json{{"group", "Thermo/Production"}, {"images", {f.upload(r.image)}}, {"manifest", f.upload(r.envelope)}};
  };
  auto hash_only = f.call("POST", "/v1/deployments", upload(separate.make("hash", 2)).dump());
  CHECK(hash_only.status == 422);
  CHECK_MESSAGE(test::error_message(hash_only).find("sign with --public-key-format full") != std::string::npos,
                hash_only.body);
  CHECK(f.call("POST", "/v1/deployments", upload(separate.make("full", 2, 3000, true)).dump()).status == 201);
}

TEST_CASE("deployment requests: bad rollout settings are 400 naming the field") {
  AgentFixture f;
  f.create_product();
  auto [image, manifest] = f.release("v2", 2);
  const std::pair<Json, const char*> cases[] = {
      {Json{{"rollout", 150}}, "rollout"},
      {Json{{"rollout", -5}}, "rollout"},
      {Json{{"rollout", {50, 10}}, {"step_after", 60}}, "rollout"},
      {Json{{"rollout", {10, 100}}}, "step_after"},
      {Json{{"rollout", {10, 100}}, {"step_after", 0}}, "step_after"},
      {Json{{"rollout", {10, 100}}, {"step_after", -60}}, "step_after"},
      {Json{{"halt_on_failure", 101}}, "halt_on_failure"},
      {Json{{"halt_on_failure", -1}}, "halt_on_failure"},
      {Json{{"halt_on_failure", "sometimes"}}, "halt_on_failure"},
      {Json{{"halt_min_executed", 0}}, "halt_min_executed"},
      {Json{{"dry_run", "yes"}}, "dry_run"},
  };
  for (auto& [extra, field] : cases) {
    Json body = {{"group", "Thermo/Field Test"}, {"images", {image}}};
    body.update(extra);
    auto r = f.call("POST", "/v1/deployments", body.dump());
    CHECK_MESSAGE(r.status == 400, body.dump());
    CHECK_MESSAGE(test::error_message(r).find(field) != std::string::npos, body.dump(), " -> ", r.body);
  }
  // "never" must be said to have no halt threshold; it is shown as such.
  auto never = f.json("POST", "/v1/deployments",
                      Json{{"group", "Thermo/Field Test"}, {"images", {image}}, {"halt_on_failure", "never"}}.dump());
  CHECK(never["halt_on_failure"] == "never");
}

TEST_CASE("deployment requests: bad rollout controls are 400 naming the field") {
  AgentFixture f;
  f.create_product();
  auto [image, manifest] = f.release("v2", 2);
  const std::pair<Json, const char*> cases[] = {
      {Json{{"wave_success", {{"percent", 101}}}}, "wave_success.percent"},
      {Json{{"wave_success", {{"percent", -1}}}}, "wave_success.percent"},
      {Json{{"wave_success", {{"percent", "90%"}}}}, "wave_success.percent"},
      {Json{{"wave_success", {{"then", "next"}}}}, "wave_success.percent"},
      {Json{{"wave_success", {{"percent", 90}, {"then", "later"}}}}, "wave_success.then"},
      {Json{{"wave_success", {{"percent", 90}, {"than", "pause"}}}}, "wave_success.than"},
      {Json{{"wave_success", 90}}, "wave_success"},
      {Json{{"wave_error", {{"count", -1}}}}, "wave_error.count"},
      {Json{{"wave_error", {{"count", 1.5}}}}, "wave_error.count"},
      {Json{{"wave_error", {{"percent", 250}}}}, "wave_error.percent"},
      {Json{{"wave_error", {{"percent", 10}, {"count", 2}}}}, "wave_error"},
      {Json{{"wave_error", Json::object()}}, "wave_error"},
      {Json{{"abort_criteria", {{{"kind", "exploded"}, {"percent", 10}}}}}, "abort_criteria[0].kind"},
      {Json{{"abort_criteria", {{{"percent", 10}}}}}, "abort_criteria[0].kind"},
      {Json{{"abort_criteria", {{{"kind", "failed"}, {"percent", 110}}}}}, "abort_criteria[0].percent"},
      {Json{{"abort_criteria", {{{"kind", "failed"}}}}}, "abort_criteria[0].percent"},
      {Json{{"abort_criteria", {{{"kind", "failed"}, {"percent", 10}, {"min_executed", 0}}}}},
       "abort_criteria[0].min_executed"},
      {Json{{"abort_criteria", {{{"kind", "failed"}, {"percent", 10}}, {{"kind", "failed"}, {"percent", 20}}}}},
       "abort_criteria[1].kind"},
      {Json{{"abort_criteria", "failed"}}, "abort_criteria"},
  };
  for (auto& [extra, field] : cases) {
    Json body = {{"group", "Thermo/Field Test"}, {"images", {image}}};
    body.update(extra);
    auto r = f.call("POST", "/v1/deployments", body.dump());
    CHECK_MESSAGE(r.status == 400, body.dump());
    CHECK_MESSAGE(test::error_message(r).find(std::string("'") + field + "'") != std::string::npos, body.dump(), " -> ",
                  r.body);
  }
  // Several waves need step_after, unless their success condition opens them; the controls are shown back.
  auto d = f.json("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"},
                       {"images", {image}},
                       {"rollout", {10, 100}},
                       {"wave_success", {{"percent", 95}, {"then", "pause"}}},
                       {"wave_error", {{"count", 2}}},
                       {"abort_criteria", {{{"kind", "timed_out"}, {"percent", 15}}}}}
                      .dump());
  CHECK(d["wave_success"] == Json{{"percent", 95.0}, {"then", "pause"}});
  CHECK(d["wave_error"] == Json{{"count", 2}});
  CHECK(d["abort_criteria"] ==
        Json::array({Json{{"kind", "timed_out"}, {"percent", 15.0}, {"min_executed", default_abort_min_executed}}}));
  CHECK(d["next_wave_at"].is_null());
  auto shown = f.json("GET", "/v1/deployments/" + d["id"].get<std::string>());
  CHECK(shown["wave_success"] == d["wave_success"]);
  CHECK(shown["abort_criteria"] == d["abort_criteria"]);
  auto plain = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {image}}}.dump());
  CHECK(plain["wave_success"].is_null());
  CHECK(plain["wave_error"].is_null());
  CHECK(plain["abort_criteria"] == Json::array());
}

TEST_CASE("deployment checks: a manifest below the product's M-of-N threshold is refused, naming found and required") {
  AgentFixture f;
  auto second = f.releases.key("second.pem");
  auto third = f.releases.key("third.pem");
  auto pem = [](const Signer& s) {
    auto bytes = export_public_key(s.public_key_der(), PublicKeyFormat::pem);
    return std::string(bytes.begin(), bytes.end());
  };
  Json body = {{"name", "Thermo"}};
  f.releases.add_trust(body);
  body["manifest_keys"].push_back(pem(*second));
  body["manifest_keys"].push_back(pem(*third));
  // Never a threshold above the number of keys, or below 1.
  body["manifest_threshold"] = 4;
  auto too_high = f.call("POST", "/v1/products", body.dump());
  CHECK(too_high.status == 400);
  CHECK_MESSAGE(test::error_message(too_high).find("manifest_threshold 4 is above the number of manifest keys (3)") !=
                    std::string::npos,
                too_high.body);
  body["manifest_threshold"] = 0;
  CHECK(f.call("POST", "/v1/products", body.dump()).status == 400);
  body["manifest_threshold"] = 2;
  auto product = f.json("POST", "/v1/products", body.dump());
  CHECK(product["manifest_threshold"] == 2);
  CHECK(product["manifest_keys"].size() == 3);
  CHECK(f.json("GET", "/v1/products/Thermo")["manifest_threshold"] == 2);
  // Dropping keys below the threshold is refused, the product unchanged.
  Json fewer = {{"manifest_keys", {f.releases.manifest_pem()}}};
  CHECK(f.call("PATCH", "/v1/products/Thermo", fewer.dump()).status == 400);
  CHECK(f.json("GET", "/v1/products/Thermo")["manifest_keys"].size() == 3);
  f.assigned_device("dev-1", "Thermo/Field Test");

  // Signed by one key, then by the same key twice: refused before any device sees it, dry run too.
  auto one = f.releases.make("one", 5);
  auto image = f.upload(one.image);
  Json request = {{"group", "Thermo/Field Test"}, {"images", {image}}, {"manifest", f.upload(one.envelope)}};
  auto r = f.call("POST", "/v1/deployments", request.dump());
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("1 valid signature from the trusted keys, 2 required (threshold 2 of 3)") !=
                    std::string::npos,
                r.body);
  request["dry_run"] = true;
  auto plan = f.json("POST", "/v1/deployments", request.dump());
  CHECK(plan["would_create"] == false);
  CHECK(f.json("GET", "/v1/deployments")["items"].empty());

  suit::Envelope twice = suit::parse_envelope(as_bytes(one.envelope));
  suit::add_signature(twice, f.releases.manifest_key());
  Bytes twice_bytes = suit::encode_envelope(twice);
  request = {{"group", "Thermo/Field Test"},
             {"images", {image}},
             {"manifest", f.upload(std::string(twice_bytes.begin(), twice_bytes.end()))}};
  r = f.call("POST", "/v1/deployments", request.dump());
  CHECK(r.status == 422);
  CHECK_MESSAGE(test::error_message(r).find("1 valid signature from the trusted keys") != std::string::npos, r.body);

  // Two distinct keys of the set: created. The product lowered to 1 of 3 accepts one signature again.
  suit::Envelope two = suit::parse_envelope(as_bytes(one.envelope));
  suit::add_signature(two, *third);
  Bytes two_bytes = suit::encode_envelope(two);
  request["manifest"] = f.upload(std::string(two_bytes.begin(), two_bytes.end()));
  request["dry_run"] = true;
  plan = f.json("POST", "/v1/deployments", request.dump());
  CHECK(plan["would_create"] == true);
  bool named = false;
  for (auto& c : plan["checks"])
    if (c["check"] == "manifest_key") named = c["detail"].get<std::string>().find("threshold 2 of 3") != std::string::npos;
  CHECK_MESSAGE(named, plan.dump());
  CHECK(f.json("PATCH", "/v1/products/Thermo", R"({"manifest_threshold":1})")["manifest_threshold"] == 1);
  request["manifest"] = f.upload(one.envelope);
  CHECK(f.json("POST", "/v1/deployments", request.dump())["would_create"] == true);
}
