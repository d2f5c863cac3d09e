// The SQLite store: versioned schema migrations (older stores migrate, newer ones are refused); and, on the
// run's backend (SQLite or PostgreSQL), units of work and the deployment tallies the store keeps (equal to a recount whatever devices report and wherever they move).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "service/api.hpp"
#include "service/db.hpp"
#include "service/sqlite_store.hpp"
#include "tests/service/store_support.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {
Product test_product() {
  Product p;
  p.id = "prd_1";
  p.name = "Thermo";
  p.created_at = "2026-01-01T00:00:00Z";
  return p;
}

// A store of this run's backend holding tenant "acme", its product prd_1 and the groups named.
struct AcmeStore {
  test::TempDir dir;
  std::unique_ptr<Store> owned = open_store(test::test_store(dir.file("kiln.db")));
  Store& store = *owned;
  std::int64_t tenant = store.create_tenant("acme", "2026-01-01T00:00:00Z");

  explicit AcmeStore(const std::vector<std::string>& groups) {
    store.insert_product(tenant, test_product());
    for (const auto& g : groups) store.insert_group(tenant, {g, "prd_1", "", g, "", "2026-01-01T00:00:00Z"});
  }
};
}  // namespace

namespace {

int user_version(const std::string& path) {
  Db db(path);
  auto q = db.prepare("PRAGMA user_version");
  q.step();
  return static_cast<int>(q.integer(0));
}

Json get(Service& service, const std::string& token, const std::string& target) {
  auto r = service.handle({"GET", target, {{"authorization", "Bearer " + token}}, "", {}});
  INFO(target << " -> " << r.body);
  REQUIRE(r.status == 200);
  return Json::parse(r.body);
}

}  // namespace

TEST_CASE("store: a new store is created at the latest schema version") {
  test::TempDir dir;
  auto path = dir.file("kiln.db");
  { SqliteStore store(path); }
  CHECK(user_version(path) == SqliteStore::latest_schema_version());
  CHECK(SqliteStore::latest_schema_version() >= 1);
}

TEST_CASE("store: a store written before versioned migrations migrates and keeps its tenants, tokens and products") {
  // tests/service/data/store-before-migrations.sql: `sqlite3 kiln.db .dump` of a store made by
  // `kiln-service init --tenant acme` before versioned migrations, plus a product and a group.
  std::ifstream in(std::string(KILN_SOURCE_DIR) + "/tests/service/data/store-before-migrations.sql");
  REQUIRE(in);
  std::stringstream dump;
  dump << in.rdbuf();
  test::TempDir dir;
  auto path = dir.file("kiln.db");
  {
    Db db(path);
    db.exec(dump.str());
  }
  REQUIRE(user_version(path) == 0);
  const std::string admin = "kiln_6230227cb96e8e3ffb9149afdf55d7cfb662a564aa0e0bf8fb7f026c1d269683";
  {
    Service service({path, dir.path() / "images"});
    CHECK(get(service, admin, "/v1/whoami")["tenant"] == "acme");
    auto product = get(service, admin, "/v1/products/Thermo");
    CHECK(product["id"] == "prd_legacy");
    CHECK(product["description"] == "from before migrations");
    CHECK(get(service, admin, "/v1/groups/Thermo%2FField%20Test")["id"] == "grp_legacy");
    // The migrated store works for writes too: a deployment has the rollout columns.
    CHECK(get(service, admin, "/v1/deployments?group=Thermo%2FField%20Test")["items"].empty());
  }
  CHECK(user_version(path) == SqliteStore::latest_schema_version());
  {
    // The tables of later migrations were added, ledger heads among them.
    Db db(path);
    auto q = db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ledger_heads'");
    q.step();
    CHECK(q.integer(0) == 1);
  }
  // Opening it again changes nothing.
  { Service service({path, dir.path() / "images"}); }
  CHECK(user_version(path) == SqliteStore::latest_schema_version());
}

TEST_CASE("store: a store newer than this binary is refused with a clear message and the conflict code") {
  test::TempDir dir;
  auto path = dir.file("kiln.db");
  { SqliteStore store(path); }
  int newer = SqliteStore::latest_schema_version() + 1;
  {
    Db db(path);
    db.exec("PRAGMA user_version = " + std::to_string(newer));
  }
  test::check_refuses_newer_schema([&] { SqliteStore store(path); }, newer);
  CHECK(user_version(path) == newer);  // left as it was
}

namespace {

}  // namespace

TEST_CASE("store: a read unit of work (every GET runs in one) cannot write; a write unit can, and commits") {
  test::TempDir dir;
  auto owned = open_store(test::test_store(dir.file("kiln.db")));
  auto& store = *owned;
  auto tenant = store.create_tenant("acme", "2026-01-01T00:00:00Z");
  {
    auto unit = store.begin(Store::Access::read);
    CHECK(store.find_tenant("acme") == tenant);
    CHECK_THROWS_AS(store.insert_product(tenant, test_product()), Error);
    unit->commit();
  }
  CHECK_FALSE(store.find_product(tenant, "Thermo"));
  {
    auto unit = store.begin(Store::Access::write);
    store.insert_product(tenant, test_product());
    {
      auto inner = store.begin();  // a failed inner unit undoes only its own part
      store.insert_group(tenant, {"grp_1", "prd_1", "", "Field Test", "", "2026-01-01T00:00:00Z"});
    }
    unit->commit();
  }
  CHECK(store.find_product(tenant, "Thermo"));
  CHECK_FALSE(store.find_group(tenant, "grp_1"));
}

TEST_CASE("store: tallies kept as devices report, join and leave groups equal a recount") {
  const std::vector<std::string> groups = {"grp_a", "grp_b"};
  AcmeStore acme(groups);
  auto& store = acme.store;
  auto tenant = acme.tenant;
  std::mt19937 random(7);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(random() % n); };
  std::vector<std::string> devices;
  auto import = [&](const std::string& id, const std::string& group) {
    REQUIRE(store.upsert_device({id, tenant, "prd_1", group, "provisioned", std::nullopt, "key-" + id, std::nullopt,
                                 std::nullopt, "2026-01-01T00:00:00Z"}));
  };
  for (int i = 0; i < 150; ++i) {
    devices.push_back("dev-" + std::to_string(i));
    import(devices.back(), groups[pick(2)]);
  }
  std::vector<Deployment> deployments;
  auto deploy = [&](const std::string& group, std::vector<int> waves) {
    Deployment d;
    d.id = "dep_" + std::to_string(deployments.size());
    d.group_id = group;
    d.images = {"aa"};
    d.state = DeploymentState::active;
    d.waves = std::move(waves);
    d.created_at = d.updated_at = "2026-01-01T00:00:00Z";
    store.insert_deployment(tenant, d, d.created_at);
    deployments.push_back(d);
  };
  deploy("grp_a", {10, 50, 100});
  deploy("grp_b", {100});
  auto& statuses = agent_statuses();
  for (int step = 0; step < 3000; ++step) {
    auto& device = devices[pick(devices.size())];
    switch (pick(10)) {
      case 0:  // moves to the other group
        store.set_device_group(device, *store.device_identity(device)->group_id == "grp_a" ? "grp_b" : "grp_a");
        break;
      case 1:  // imported again, into a group at random (a new device now and then)
        if (pick(4) == 0) {
          devices.push_back("dev-" + std::to_string(devices.size()));
          import(devices.back(), groups[pick(2)]);
        } else {
          import(device, groups[pick(2)]);
        }
        break;
      case 2:  // a new deployment now and then (it supersedes the group's running one)
        if (pick(20) == 0) deploy(groups[pick(2)], {20, 100});
        break;
      case 3: {  // several devices move at once (POST /v1/devices/assign), some already in the group
        std::vector<std::string> moving;
        for (std::size_t i = 0, n = 1 + pick(8); i < n; ++i) moving.push_back(devices[pick(devices.size())]);
        std::sort(moving.begin(), moving.end());
        moving.erase(std::unique(moving.begin(), moving.end()), moving.end());
        store.set_devices_group(moving, groups[pick(2)]);
        break;
      }
      default: {  // a report, from a device in the deployment's group or one that reported before
        auto& d = deployments[pick(deployments.size())];
        auto status = statuses[pick(statuses.size())];
        store.record_status(d.id, device, status, "", "2026-01-01T00:00:00Z",
                            status == "installed" ? std::optional<std::string>("2.0") : std::nullopt);
      }
    }
  }
  auto all = store.rollout_tallies(tenant, std::nullopt);
  REQUIRE(all.size() == deployments.size());
  std::int64_t reported = 0;
  for (auto& d : deployments) {
    INFO(d.id);
    auto counted = test::recount_tally(store, d);
    test::check_same(store.rollout_tally(d), counted);
    test::check_same(all[d.id], counted);
    for (auto& w : counted.waves)
      for (auto& [status, n] : w.reported) reported += n;
  }
  CHECK(reported > 500);  // the reports landed in the tallies, not only in deployment_devices
}

TEST_CASE("store: a device imported again keeps the group it was assigned to; a new one joins the import's") {
  AcmeStore acme({"grp_a", "grp_b"});
  auto& store = acme.store;
  auto tenant = acme.tenant;
  auto import = [&](const std::string& id, const std::string& group, const std::string& state) {
    return store.upsert_device({id, tenant, "prd_1", group, state, std::nullopt, "key-" + id, std::nullopt, std::nullopt,
                                "2026-01-01T00:00:00Z"});
  };
  REQUIRE(import("dev-1", "grp_a", "provisioned"));
  store.set_device_group("dev-1", "grp_b");  // the operator moved it
  REQUIRE(import("dev-1", "grp_a", "claimed"));  // the station's bundle, sent again with a later state
  CHECK(store.device_identity("dev-1")->group_id == std::optional<std::string>("grp_b"));
  REQUIRE(import("dev-2", "grp_a", "provisioned"));
  CHECK(store.device_identity("dev-2")->group_id == std::optional<std::string>("grp_a"));
  // The group sizes deployments are cut from follow: one device in each.
  for (const char* group : {"grp_a", "grp_b"}) {
    DeviceFilter in_group;
    in_group.tenant_id = tenant;
    in_group.group_id = group;
    INFO(group);
    CHECK(store.count_devices(in_group, DeviceCountKey::group).at(0).count == 1);
  }
}

TEST_CASE("store: device image-encryption keys and the images delivered with them; a new key forgets them") {
  test::TempDir dir;
  auto owned = open_store(test::test_store(dir.file("kiln.db")));
  auto& store = *owned;
  CHECK_FALSE(store.device_encryption_key("dev-1"));
  CHECK_FALSE(store.find_device_image("dev-1", "aa"));
  store.set_device_encryption_key("dev-1", "3059aa");
  store.set_device_encryption_key("dev-2", "3059bb");
  CHECK(store.device_encryption_key("dev-1") == std::optional<std::string>("3059aa"));
  store.save_device_image({"dev-1", "aa", "0769", "11", 100, "2026-01-01T00:00:00Z"});
  store.save_device_image({"dev-2", "aa", "0769", "22", 101, "2026-01-01T00:00:00Z"});
  auto mine = store.find_device_image("dev-1", "aa");
  REQUIRE(mine);
  CHECK(mine->area == "0769");
  CHECK(mine->sha256 == "11");
  CHECK(mine->size == 100);
  CHECK_FALSE(store.find_device_image("dev-1", "bb"));
  // The same key again keeps what was delivered; another key forgets it (it was wrapped to the old key).
  store.set_device_encryption_key("dev-1", "3059aa");
  CHECK(store.find_device_image("dev-1", "aa"));
  store.set_device_encryption_key("dev-1", "3059cc");
  CHECK(store.device_encryption_key("dev-1") == std::optional<std::string>("3059cc"));
  CHECK_FALSE(store.find_device_image("dev-1", "aa"));
  CHECK(store.find_device_image("dev-2", "aa"));
}
