// Staged-rollout rules and the device agent contract (C2) in-process: check-in shape, manifest endpoint, statuses.
#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "manifests/suit_create.hpp"
#include "service/api.hpp"
#include "service/db.hpp"
#include "service/rollout.hpp"
#include "signing/signer.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
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
}

namespace {

struct AgentFixture {
  test::TempDir dir;
  Service service{{test::test_store(":memory:"), dir.path() / "images", 7}};
  std::int64_t tenant = service.create_tenant("acme");
  std::string admin = service.create_token(tenant, Role::admin, "admin");
  test::TestCa factory_ca{"Acme Factory CA"};
  // The factory CA signs the ledger bundles this tenant imports and the device certificates.
  AgentFixture() { register_factory_ca(); }
  // Registers the factory CA, proving possession of its key (idempotent).
  void register_factory_ca() {
    auto challenge = json("POST", "/v1/factory-cas/challenge", Json{{"certificate", factory_ca.pem}}.dump());
    json("POST", "/v1/factory-cas", test::factory_ca_registration(factory_ca, challenge.dump()));
  }

  Response call(const std::string& method, const std::string& target, std::string body = {},
                std::vector<std::string> chain = {}, std::map<std::string, std::string> headers = {}) {
    if (chain.empty()) headers["authorization"] = "Bearer " + admin;
    return service.handle({method, target, headers, std::move(body), std::move(chain)});
  }
  Json json(const std::string& method, const std::string& target, const std::string& body = {},
            std::vector<std::string> chain = {}) {
    auto r = call(method, target, body, std::move(chain));
    INFO(method << " " << target << " -> " << r.status << " " << r.body);
    REQUIRE(r.status < 300);
    return Json::parse(r.body);
  }
  std::string upload(const std::string& content) {
    auto sha = to_hex(digest(HashAlg::sha256, as_bytes(content)));
    json("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump());
    json("PUT", "/v1/images/" + sha + "/content?offset=0", content);
    return sha;
  }
  // A device in `group`, and its certificate chain for the agent endpoints.
  std::vector<std::string> device(const std::string& uid, const std::string& group) {
    test::TestKey key;
    json("POST", "/v1/devices/import",
         test::signed_bundle(Json{{"uid", uid}, {"product", "Thermo"}, {"public_key", key.public_pem()}}.dump() + "\n",
                             factory_ca.key));
    json("POST", "/v1/devices/" + uid + "/assign", Json{{"group", group}}.dump());
    return {test::pem_to_der(factory_ca.issue(key, uid))};
  }
};

// An unsigned SUIT envelope describing `image_file` with this sequence number.
std::string envelope_for(const std::filesystem::path& image_file, std::uint64_t sequence) {
  suit::CreateOptions options;
  options.components.push_back({image_file, ""});
  options.vendor_id = suit::vendor_id_from_domain("example.com");
  options.sequence_number = sequence;
  auto bytes = suit::encode_envelope(suit::create_envelope(suit::describe(options), {}, {}));
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

TEST_CASE(
    "agent contract: check-in offers the wave's deployment with its manifest; the manifest is served to the group "
    "only") {
  AgentFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  f.register_factory_ca();
  auto inside = f.device("dev-in", "Thermo/Field Test");
  auto outside = f.device("dev-out", "Thermo/Production");

  std::string firmware(3000, 'q');
  auto image_file = f.dir.file("fw.bin");
  std::ofstream(image_file, std::ios::binary) << firmware;
  auto image = f.upload(firmware);
  auto envelope = envelope_for(image_file, 5);
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
        Json::array({Json{{"id", image}, {"size", 3000}, {"url", "/v1/agent/images/" + image + "/content"}}}));

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
  CHECK(f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "done"}}.dump(), inside).status == 400);
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
  CHECK(d["halt_on_failure"].is_null());
}

TEST_CASE("rollout: halting counts the admitted devices of the open waves; completion waits for the last wave") {
  AgentFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  f.register_factory_ca();
  std::map<std::string, std::vector<std::string>> chains;
  for (int i = 0; i < 12; ++i) {
    auto uid = "dev-" + std::to_string(i);
    chains[uid] = f.device(uid, "Thermo/Field Test");
  }
  auto image = f.upload("firmware v2");
  // Deployment IDs are random, and so is the split: take one (a newer deployment supersedes the older)
  // whose first wave has at least two devices and leaves some for the second.
  Json dep;
  std::string id;
  std::vector<std::string> first_wave, later;
  for (int attempt = 0; attempt < 50 && (first_wave.size() < 2 || later.empty()); ++attempt) {
    dep = f.json("POST", "/v1/deployments",
                 Json{{"group", "Thermo/Field Test"},
                      {"images", {image}},
                      {"rollout", {50, 100}},
                      {"step_after", 3600},
                      {"halt_on_failure", 20}}
                     .dump());
    id = dep["id"].get<std::string>();
    first_wave.clear();
    later.clear();
    for (auto& [uid, chain] : chains) (rollout_bucket(id, uid) < 50 ? first_wave : later).push_back(uid);
  }
  REQUIRE(first_wave.size() >= 2);
  REQUIRE(!later.empty());
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
