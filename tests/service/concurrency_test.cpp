// Requests in parallel on one on-disk store: each request is its own unit of work (no service-wide lock).
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "service/store.hpp"
#include "tests/service/store_support.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "service/rollout.hpp"
#include "signing/key_ref.hpp"
#include "signing/signer.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_release.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// The service on a SQLite file (or the run's PostgreSQL database) with the product Thermo; devices go into its
// group Field Test.
struct ParallelFixture : test::ProductFixture {
  ParallelFixture() : ProductFixture({.sqlite = "kiln.db", .check_in_after = 7}) {}
  std::vector<std::string> device(const std::string& uid, const test::TestKey& key) {
    return ProductFixture::device(uid, key, "Field Test");
  }
  // `count` devices dev-0, dev-1, ... (keys of their own); their certificate chains.
  std::vector<std::vector<std::string>> devices(int count) {
    std::vector<std::vector<std::string>> chains;
    for (int i = 0; i < count; ++i) chains.push_back(device("dev-" + std::to_string(i), test::TestKey()));
    return chains;
  }
  // A deployment to Thermo/Field Test of a new release `version` (sequence `sequence`), with `policy`'s
  // fields in its body; its ID.
  std::string deploy(const std::string& version, int sequence, Json policy = Json::object()) {
    auto [sha, manifest] = release(version, sequence);
    policy.update(Json{{"group", "Thermo/Field Test"}, {"images", {sha}}, {"manifest", manifest}});
    return json("POST", "/v1/deployments", policy.dump())["id"].get<std::string>();
  }
};

// Runs `work(thread index)` on `count` threads at once.
template <typename Work>
void in_parallel(int count, Work work) {
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i)
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      work(i);
    });
  go = true;
  for (auto& t : threads) t.join();
}

}  // namespace

TEST_CASE("concurrency: racing claims with one challenge: exactly one succeeds, the others find it used") {
  ParallelFixture f;
  test::TestKey key;
  f.device("dev-1", key);
  auto challenge = f.json("POST", "/v1/devices/dev-1/claim-challenge");
  auto key_file = f.dir.file("dev-1.pem");
  {
    std::ofstream out(key_file);
    out << key.private_pem();
  }
  auto signer = open_signer(key_file);
  auto message = challenge["message"].get<std::string>();
  auto signature = signer->sign(digest(HashAlg::sha256, as_bytes(message)), HashAlg::sha256);
  auto body = Json{{"nonce", challenge["nonce"]}, {"signature", to_hex(signature)}}.dump();
  std::atomic<int> claimed{0}, used{0}, other{0};
  in_parallel(8, [&](int) {
    auto r = f.call("POST", "/v1/devices/dev-1/claim", body);
    if (r.status == 200)
      ++claimed;
    else if (r.status == 409 && r.body.find("challenge_unknown") != std::string::npos)
      ++used;
    else
      ++other;
  });
  CHECK(claimed == 1);
  CHECK(used == 7);
  CHECK(other == 0);
  CHECK(f.json("GET", "/v1/devices/dev-1")["claimed"] == true);
}

TEST_CASE("concurrency: status reports in parallel keep tallies equal to a recount") {
  ParallelFixture f;
  constexpr int devices = 24;
  auto chains = f.devices(devices);
  auto id = f.deploy("v2", 2);
  const std::vector<std::string> statuses = {"downloading", "verifying", "installing", "testing", "installed"};
  std::atomic<int> failed{0};
  // Eight threads, each reporting for three devices through every status; reads run beside the writes.
  in_parallel(8, [&](int thread) {
    for (auto& status : statuses)
      for (int i = thread * 3; i < thread * 3 + 3; ++i) {
        auto r = f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", status}}.dump(), chains[i]);
        if (r.status != 200) ++failed;
        if (f.call("GET", "/v1/deployments/" + id).status != 200) ++failed;
      }
  });
  CHECK(failed == 0);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["admitted"] == devices);
  CHECK(shown["device_status"]["installed"] == devices);
  CHECK(shown["state"] == "completed");
  test::checked_tally(f.database, f.tenant, id);
}

TEST_CASE("concurrency: retries of one request with one Idempotency-Key, in parallel: applied once, the rest replay it") {
  ParallelFixture f;
  std::atomic<int> created{0}, replayed{0}, other{0};
  std::vector<std::string> bodies(8);
  in_parallel(8, [&](int thread) {
    std::map<std::string, std::string> headers{{"authorization", "Bearer " + f.admin}, {"idempotency-key", "oven-1"}};
    auto r = f.service.handle({"POST", "/v1/products", headers, R"({"name":"Oven"})", {}});
    bodies[static_cast<std::size_t>(thread)] = r.body;
    if (r.status != 201)
      ++other;
    else if (r.headers.count("Idempotent-Replayed"))
      ++replayed;
    else
      ++created;
  });
  CHECK(created == 1);
  CHECK(replayed == 7);
  CHECK(other == 0);
  for (auto& body : bodies) CHECK(body == bodies[0]);  // the one answer, replayed
  int ovens = 0;
  auto products = f.json("GET", "/v1/products");
  for (auto& p : products["items"]) ovens += p["name"] == "Oven" ? 1 : 0;
  CHECK(ovens == 1);
}

TEST_CASE("concurrency: overlapping imports beside claims: one device per UID, claims kept, tallies equal a recount") {
  ParallelFixture f;
  constexpr int units = 40;
  std::vector<test::TestKey> keys(units);
  std::vector<std::string> lines;
  for (int i = 0; i < units; ++i)
    lines.push_back(Json{{"uid", "dev-" + std::to_string(i)}, {"product", "Thermo"}, {"group", "Field Test"},
                         {"public_key", keys[static_cast<std::size_t>(i)].public_pem()}}
                        .dump() +
                    "\n");
  // A deployment of the group, so imports move tallies while they race.
  f.device("dev-0", keys[0]);
  auto id = f.deploy("v3", 3, {{"rollout", {50, 100}}, {"step_after", 3600}});
  // dev-0 is claimed while the imports run (each bundle holds it again).
  auto challenge = f.json("POST", "/v1/devices/dev-0/claim-challenge");
  auto key_file = f.dir.file("dev-0.pem");
  {
    std::ofstream out(key_file);
    out << keys[0].private_pem();
  }
  auto signature = open_signer(key_file)->sign(
      digest(HashAlg::sha256, as_bytes(challenge["message"].get<std::string>())), HashAlg::sha256);
  auto claim = Json{{"nonce", challenge["nonce"]}, {"signature", to_hex(signature)}}.dump();
  std::atomic<int> failed{0};
  in_parallel(6, [&](int thread) {
    if (thread == 0) {
      if (f.call("POST", "/v1/devices/dev-0/claim", claim).status != 200) ++failed;
      return;
    }
    // Bundles of 20 consecutive units, overlapping their neighbours by 10.
    for (int round = 0; round < 2; ++round) {
      std::string units_text;
      int start = ((thread - 1) * 10 + round * 7) % (units - 20);
      for (int i = start; i < start + 20; ++i) units_text += lines[static_cast<std::size_t>(i)];
      auto r = f.call("POST", "/v1/devices/import", test::signed_bundle(units_text, f.factory_ca.key));
      if (r.status != 200) ++failed;
    }
  });
  CHECK(failed == 0);
  auto counted = f.json("GET", "/v1/devices/count?by=group");
  std::int64_t total = counted["total"].get<std::int64_t>();
  CHECK(total == f.json("GET", "/v1/devices?limit=1000")["items"].size());
  CHECK(f.json("GET", "/v1/devices/dev-0")["claimed"] == true);
  CHECK(test::checked_tally(f.database, f.tenant, id).devices == total);
}

TEST_CASE("concurrency: a thousand status reports at once: none lost, tallies equal a recount") {
  ParallelFixture f;
  constexpr int devices = 200;
  std::vector<test::TestKey> keys(devices);
  std::string units;
  std::vector<std::vector<std::string>> chains;
  for (int i = 0; i < devices; ++i) {
    auto uid = "unit-" + std::to_string(i);
    auto& key = keys[static_cast<std::size_t>(i)];
    units += Json{{"uid", uid}, {"product", "Thermo"}, {"group", "Field Test"}, {"public_key", key.public_pem()}}
                 .dump() +
             "\n";
    chains.push_back({test::pem_to_der(f.factory_ca.issue(key, uid))});
  }
  REQUIRE(f.json("POST", "/v1/devices/import", test::signed_bundle(units, f.factory_ca.key))["imported"] == devices);
  auto id = f.deploy("v4", 4);
  const std::vector<std::string> statuses = {"downloading", "verifying", "installing", "testing", "installed"};
  std::atomic<int> next{0}, failed{0};
  std::mutex first_failure_mutex;
  std::string first_failure;
  // 1000 reports (each device through every status, in order) from 16 threads at once.
  in_parallel(16, [&](int) {
    for (int n = next++; n < devices; n = next++)
      for (auto& status : statuses) {
        auto r = f.call("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", status}}.dump(),
                        chains[static_cast<std::size_t>(n)]);
        if (r.status != 200 && failed++ == 0) {
          std::lock_guard lock(first_failure_mutex);
          first_failure = std::to_string(r.status) + " " + r.body;
        }
      }
  });
  INFO("first failure: " << first_failure);
  CHECK(failed == 0);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["device_status"]["installed"] == devices);
  auto kept = test::checked_tally(f.database, f.tenant, id);
  CHECK(kept.devices == devices);
  CHECK(kept.waves.at(0).reported["installed"] == devices);
}

TEST_CASE("concurrency: two instances on one store: failures reported through both at once halt the deployment once") {
  ParallelFixture f;
  // A second instance: another Service on the same store (with PostgreSQL, a pool of its own) and blob directory.
  service::Service other(service::ServiceConfig{f.database, f.dir.path() / "images", 7});
  constexpr int devices = 16;
  auto chains = f.devices(devices);
  auto id = f.deploy("v2", 2, {{"halt_on_failure", 10}, {"halt_min_executed", 1}});
  std::atomic<int> failed{0};
  // Every device fails, half of them through each instance, eight threads at once: the second failure
  // crosses 10%, and every report after it finds the deployment halted already.
  in_parallel(8, [&](int thread) {
    for (int i = thread * 2; i < thread * 2 + 2; ++i) {
      service::Request request{"POST", "/v1/agent/status", {},
                               Json{{"deployment", id}, {"status", "failed"}}.dump(), chains[static_cast<std::size_t>(i)]};
      auto r = i % 2 ? other.handle(request) : f.service.handle(request);
      if (r.status != 200) ++failed;
    }
  });
  CHECK(failed == 0);
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["state"] == "halted");
  CHECK(shown["device_status"]["failed"] == devices);
  auto halts = f.json("GET", "/v1/audit?action=deployment.halt")["items"];
  REQUIRE(halts.size() == 1);
  CHECK(halts[0]["target"] == id);
  CHECK(halts[0]["actor"] == "kiln-service");
  CHECK(halts[0]["role"] == "service");
  test::checked_tally(f.database, f.tenant, id);
}
