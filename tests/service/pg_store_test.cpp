// The PostgreSQL store on a private cluster: versioned migrations (an older store migrates, a newer one is
// refused, a migration killed half-way leaves a store the next start migrates), a database that goes away
// and comes back (503 with Retry-After, then service again), values PostgreSQL cannot hold (400, not 500),
// and requests racing on one store.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "service/api.hpp"
#include "service/pg_store.hpp"
#include "tests/service/store_support.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

std::string database_of(const std::string& url) {
  auto start = std::string("postgresql:///").size();
  return url.substr(start, url.find('?') - start);
}

std::string version_of(const std::string& url) {
  return test::shared_postgres().sql(database_of(url), "SELECT version FROM kiln_schema");
}

// A store at schema version 1 holding a tenant, a product, a group of 40 devices, a deployment in waves and
// reports from some devices, written as a release of that version would have (no tallies yet).
void fill_version_1(const std::string& url) {
  {
    PgStore store(url, {{}, 1});
    CHECK(store.schema_version() == 1);
    auto tenant = store.create_tenant("acme", "2026-01-01T00:00:00Z");
    // Version 1's products have no trust columns (migration 4 adds them): written as that release did.
    test::shared_postgres().sql(database_of(url),
                                "INSERT INTO products (id, tenant_id, name, description, created_at) VALUES ('prd_1', " +
                                    std::to_string(tenant) + ", 'Thermo', '', '2026-01-01T00:00:00Z')");
    store.insert_group(tenant, {"grp_1", "prd_1", "", "Field", "", "2026-01-01T00:00:00Z"});
    for (int i = 0; i < 40; ++i)
      REQUIRE(store.upsert_device({"dev-" + std::to_string(i), tenant, "prd_1", "grp_1", "provisioned", std::nullopt,
                                   "key", std::nullopt, std::nullopt, "2026-01-01T00:00:00Z"}));
  }
  auto db = database_of(url);
  auto& pg = test::shared_postgres();
  pg.sql(db,
         "INSERT INTO deployments (id, tenant_id, group_id, images, state, created_at, updated_at, waves, wave, "
         "wave_started_at, step_after, failure_baseline) VALUES ('dep_1', 1, 'grp_1', '[\"aa\"]', 'active', "
         "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '[25,100]', 2, 0, 0, 0)");
  pg.sql(db,
         "INSERT INTO deployment_devices (deployment_id, device_id, status, detail, updated_at) SELECT 'dep_1', id, "
         "CASE WHEN id < 'dev-2' THEN 'installed' ELSE 'failed' END, '', '2026-01-01T00:00:00Z' FROM devices WHERE "
         "id < 'dev-3'");
}

}  // namespace

TEST_SUITE("postgres") {

TEST_CASE("postgres store: a new store is created at the latest schema version, recorded in kiln_schema") {
  auto url = test::shared_postgres().create_database();
  {
    PgStore store(url);
    CHECK(store.schema_version() == PgStore::latest_schema_version());
  }
  CHECK(version_of(url) == std::to_string(PgStore::latest_schema_version()));
  PgStore again(url);  // opening an up-to-date store changes nothing
  CHECK(again.schema_version() == PgStore::latest_schema_version());
}

TEST_CASE("postgres store: an older store migrates; its deployments gain tallies equal to a recount") {
  auto url = test::shared_postgres().create_database();
  fill_version_1(url);
  CHECK(version_of(url) == "1");
  PgStore store(url);
  CHECK(store.schema_version() == PgStore::latest_schema_version());
  auto tenant = *store.find_tenant("acme");
  auto deployment = store.find_deployment(tenant, "dep_1");
  REQUIRE(deployment);
  auto kept = store.rollout_tally(*deployment);
  auto counted = test::recount_tally(store, *deployment);
  CHECK(kept.devices == 40);
  CHECK(kept.devices == counted.devices);
  REQUIRE(kept.waves.size() == 2);
  std::int64_t reported = 0;
  for (std::size_t i = 0; i < kept.waves.size(); ++i) {
    CHECK(kept.waves[i].devices == counted.waves[i].devices);
    CHECK(kept.waves[i].reported == counted.waves[i].reported);
    for (auto& [status, n] : kept.waves[i].reported) reported += n;
  }
  CHECK(reported == 23);  // dev-0, dev-1, dev-10..19 installed; dev-2, dev-20..29 failed
  // Migration 3: ledger heads are kept from then on.
  store.save_ledger_head(tenant, "abcd", {"ledger-1", 5, "hash", "2026-01-02T00:00:00Z"});
  CHECK(store.find_ledger_head(tenant, "abcd", "ledger-1")->rows == 5);
  // Migration 4: products trust nothing yet (default slot), deployments keep the halt minimum, reports
  // already made keep no previous firmware; what devices report from then on is kept.
  auto product = store.find_product(tenant, "Thermo");
  REQUIRE(product);
  CHECK(product->boot_keys.empty());
  CHECK(product->manifest_keys.empty());
  CHECK(product->slot_size == 0);
  CHECK(deployment->halt_min_executed == 0);
  auto before = store.deployment_device("dep_1", "dev-0");
  REQUIRE(before);
  CHECK_FALSE(before->previous_manifest);
  CHECK(before->started_at.empty());
  store.record_device_firmware("dev-5", 3, std::string("d1"));
  store.record_status("dep_1", "dev-5", "downloading", "", "2026-01-02T00:00:00Z", std::nullopt);
  auto after = store.deployment_device("dep_1", "dev-5");
  REQUIRE(after);
  CHECK(after->previous_manifest == "d1");
  CHECK(after->started_at == "2026-01-02T00:00:00Z");
}

TEST_CASE("postgres store: a telemetry unit commits with synchronous_commit off; no other unit does") {
  auto url = test::shared_postgres().create_database();
  PgStore store(url);
  // relaxed_commits counts commits of telemetry units; commit_durable() asks the server (SHOW synchronous_commit).
  auto relaxed = [&] { return store.relaxed_commits(); };
  {
    auto unit = store.begin(Store::Access::telemetry);
    CHECK_FALSE(store.commit_durable());
    {
      auto inner = store.begin();  // a unit inside it is part of its transaction
      CHECK_FALSE(store.commit_durable());
      inner->commit();
    }
    unit->commit();
  }
  CHECK(relaxed() == 1);
  {
    auto unit = store.begin(Store::Access::write);  // the next unit on the same pooled connection waits again
    CHECK(store.commit_durable());
    unit->commit();
  }
  CHECK(relaxed() == 1);
  {
    auto unit = store.begin(Store::Access::read);
    CHECK(store.commit_durable());
    unit->commit();
  }
  CHECK(relaxed() == 1);
  {
    auto unit = store.begin(Store::Access::telemetry);
    CHECK_FALSE(store.commit_durable());
    // rolled back: no commit at all
  }
  CHECK(relaxed() == 1);
  {
    auto unit = store.begin();
    CHECK(store.commit_durable());
    unit->commit();
  }
  CHECK(relaxed() == 1);
}

TEST_CASE("postgres store: a telemetry unit records a check-in while a writer holds the write order; any other "
          "write in it needs the order") {
  auto url = test::shared_postgres().create_database();
  PgStore store(url);
  std::int64_t tenant = 0;
  auto product = [](std::string id, std::string name) {
    Product p;
    p.id = std::move(id);
    p.name = std::move(name);
    p.created_at = "2026-01-01T00:00:00Z";
    return p;
  };
  {
    auto unit = store.begin();
    tenant = store.create_tenant("acme", "2026-01-01T00:00:00Z");
    store.insert_product(tenant, product("prd_1", "Thermo"));
    store.insert_group(tenant, {"grp_1", "prd_1", "", "Field", "", "2026-01-01T00:00:00Z"});
    REQUIRE(store.upsert_device({"dev-1", tenant, "prd_1", "grp_1", "provisioned", std::nullopt, "key", std::nullopt,
                                 std::nullopt, "2026-01-01T00:00:00Z"}));
    unit->commit();
  }
  // A writer holds the write order on another connection (its thread) until the check-in is done.
  // It gives up after 20 s: a check-in that waited for it would finish only then, and fail below.
  std::atomic<bool> holding{false}, release{false}, gave_up{false};
  std::thread writer([&] {
    auto unit = store.begin(Store::Access::write);
    holding = true;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!release && !(gave_up = std::chrono::steady_clock::now() > deadline))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    unit->commit();
  });
  while (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    auto unit = store.begin(Store::Access::telemetry);  // a write unit would wait here for the writer
    CHECK(store.device_checked_in("dev-1", "2026-01-02T00:00:00Z", "2026-01-01T23:59:00Z", std::string("1.1.0"),
                                  std::nullopt));
    store.record_device_firmware("dev-1", 7, std::nullopt);
    store.record_device_trust_version("dev-1", 3);
    CHECK(store.find_device(tenant, "dev-1"));  // reads are allowed
    unit->commit();
  }
  release = true;
  writer.join();
  CHECK_FALSE(gave_up);
  auto seen = store.find_device(tenant, "dev-1");
  REQUIRE(seen);
  CHECK(seen->version == "1.1.0");
  CHECK(seen->last_seen == "2026-01-02T00:00:00Z");
  CHECK(seen->trust_version == 3);

  {  // Anything else is refused before it is sent, and the unit is rolled back whole.
    auto unit = store.begin(Store::Access::telemetry);
    CHECK(store.device_checked_in("dev-1", "2026-01-03T00:00:00Z", "2026-01-02T23:59:00Z", std::string("1.2.0"),
                                  std::nullopt));
    CHECK_THROWS_AS(store.insert_product(tenant, product("prd_2", "Other")), WriteOrderNeeded);
  }
  CHECK_FALSE(store.find_product(tenant, "prd_2"));
  CHECK(store.find_device(tenant, "dev-1")->version == "1.1.0");
  {  // The next unit on the connection is an ordinary one again.
    auto unit = store.begin();
    store.insert_product(tenant, product("prd_2", "Other"));
    unit->commit();
  }
  CHECK(store.find_product(tenant, "prd_2"));
}

TEST_CASE("postgres store: a store a newer release wrote is refused with a clear message and left as it was") {
  auto url = test::shared_postgres().create_database();
  { PgStore store(url); }
  int newer = PgStore::latest_schema_version() + 1;
  test::shared_postgres().sql(database_of(url), "UPDATE kiln_schema SET version = " + std::to_string(newer));
  test::check_refuses_newer_schema([&] { PgStore store(url); }, newer);
  CHECK(version_of(url) == std::to_string(newer));
}

TEST_CASE("postgres store: kiln-service killed (-9) in the middle of a migration leaves a store the next start migrates") {
  auto& pg = test::shared_postgres();
  auto url = pg.create_database();
  fill_version_1(url);
  auto db = database_of(url);
  // Migration 2 reads the deployments after creating its table: a lock held on them stops kiln-service
  // there, half-way through the migration, where it is killed.
  std::unique_ptr<PGconn, void (*)(PGconn*)> blocker(PQconnectdb(url.c_str()), PQfinish);
  REQUIRE(PQstatus(blocker.get()) == CONNECTION_OK);
  auto exec = [&](const char* sql) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(blocker.get(), sql), PQclear);
    REQUIRE(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
  };
  exec("BEGIN");
  exec("LOCK TABLE deployments IN ACCESS EXCLUSIVE MODE");
  test::TempDir dir;
  test::ChildProcess child(test::bin_path("kiln-service"),
                           {"init", "--dir", (dir.path() / "svc").string(), "--store", url});
  bool waiting = false;
  for (int i = 0; i < 200 && !waiting; ++i) {
    waiting = pg.sql(db,
                     "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kiln-service' AND "
                     "wait_event_type = 'Lock'") == "1";
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(waiting);
  // The migration's table exists only inside its transaction: no one else sees it.
  CHECK(pg.sql(db, "SELECT to_regclass('deployment_tallies') IS NULL") == "t");
  child.signal(SIGKILL);
  child.wait();
  exec("COMMIT");
  CHECK(version_of(url) == "1");
  CHECK(pg.sql(db, "SELECT to_regclass('deployment_tallies') IS NULL") == "t");
  PgStore store(url);  // waits for the killed session's transaction to end, then migrates
  CHECK(store.schema_version() == PgStore::latest_schema_version());
  auto deployment = store.find_deployment(*store.find_tenant("acme"), "dep_1");
  REQUIRE(deployment);
  CHECK(store.rollout_tally(*deployment).devices == 40);
  CHECK_FALSE(std::filesystem::exists(dir.path() / "svc" / "store.toml"));  // init never finished
}

TEST_CASE("postgres store: a database that stops answers 503 with Retry-After (never 500); service resumes when it is back") {
  auto& pg = test::shared_postgres();
  test::TempDir dir;
  Service service({pg.create_database(), dir.path() / "images"});
  auto token = service.create_token(service.create_tenant("acme"), Role::admin, "admin");
  auto call = [&](const std::string& method, const std::string& target, std::string body = {}) {
    return service.handle({method, target, {{"authorization", "Bearer " + token}}, std::move(body), {}});
  };
  REQUIRE(call("GET", "/v1/whoami").status == 200);
  pg.stop();
  for (auto& [method, target, body] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", "/v1/whoami", ""}, {"POST", "/v1/products", R"({"name":"Thermo"})"}, {"GET", "/v1/products", ""}}) {
    auto r = call(method, target, body);
    INFO(method << " " << target << " -> " << r.status << " " << r.body);
    CHECK(r.status == 503);
    CHECK(r.headers.count("Retry-After") == 1);
    CHECK(Json::parse(r.body)["error"]["code"] == "store_unavailable");
  }
  pg.start();
  auto created = call("POST", "/v1/products", R"({"name":"Thermo"})");
  INFO(created.body);
  CHECK(created.status == 201);
  CHECK(call("GET", "/v1/products").status == 200);
  // A restart between two requests: the pooled connections are dead; the next request reconnects.
  pg.stop();
  pg.start();
  CHECK(call("GET", "/v1/whoami").status == 200);
  CHECK(Json::parse(call("GET", "/v1/products").body)["items"].size() == 1);
}

TEST_CASE("postgres store: each statement is prepared once per connection; a reconnect prepares them again") {
  auto& pg = test::shared_postgres();
  auto url = pg.create_database();
  PgStore store(url);
  auto tenant = store.create_tenant("acme", "2026-01-01T00:00:00Z");
  auto calls = [&] {
    auto unit = store.begin(Store::Access::read);
    CHECK(store.tenant_name(tenant) == "acme");
    CHECK(store.find_tenant("acme") == tenant);
    unit->commit();
  };
  calls();
  auto prepared = store.prepared_statements();
  CHECK(prepared >= 4);  // BEGIN, two queries, COMMIT at least
  for (int i = 0; i < 20; ++i) calls();
  CHECK(store.prepared_statements() == prepared);  // the same statements again: none prepared anew

  // A restart: the pooled connection reconnects (PQreset) into a session that holds none of them.
  pg.stop();
  pg.start();
  calls();
  CHECK(store.prepared_statements() == 4);  // those of this unit only, in the new session

  // A column's type changed under a prepared statement (another instance's migration): PostgreSQL refuses
  // the statement ("cached plan must not change result type"). Outside a unit it is prepared again at once;
  // in one, the request gets 503 (try again) and the next prepares it again.
  pg.sql(database_of(url), "ALTER TABLE tenants ALTER COLUMN name TYPE VARCHAR(200)");
  CHECK(store.tenant_name(tenant) == "acme");
  pg.sql(database_of(url), "ALTER TABLE tenants ALTER COLUMN name TYPE TEXT");
  {
    auto unit = store.begin(Store::Access::read);
    CHECK_THROWS_AS(store.tenant_name(tenant), StoreUnavailable);
  }
  calls();
  // The statement forgotten inside the unit was deallocated once the connection was idle: no leftover.
  CHECK(store.prepared_statements() == 4);
}

TEST_CASE("postgres store: text PostgreSQL cannot hold (a NUL byte, bytes that are not UTF-8) is a 400, not a 500") {
  test::TempDir dir;
  Service service({test::shared_postgres().create_database(), dir.path() / "images"});
  auto token = service.create_token(service.create_tenant("acme"), Role::admin, "admin");
  auto post = [&](std::string body) {
    return service.handle({"POST", "/v1/products", {{"authorization", "Bearer " + token}}, std::move(body), {}});
  };
  CHECK(post(R"({"name":"Ther\u0000mo"})").status == 400);
  CHECK(post(std::string("{\"name\":\"Ther\xff\xfe") + "mo\"}").status == 400);
  CHECK(post(R"({"name":"Thermo"})").status == 201);  // the store goes on
}

TEST_CASE("postgres store: a password in the URL is refused; messages never show one") {
  CHECK_THROWS_AS(check_store_url("postgresql://kiln:secret@db.example.com/kiln"), Error);
  CHECK_THROWS_AS(check_store_url("postgresql://kiln@db.example.com/kiln?password=secret"), Error);
  CHECK_NOTHROW(check_store_url("postgresql://kiln@db.example.com/kiln"));
  try {
    check_store_url("postgresql://kiln:secret@db.example.com/kiln");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("secret") == std::string::npos);
  }
  CHECK(redact_store_url("postgresql://kiln:secret@db/kiln") == "postgresql://kiln:***@db/kiln");
  CHECK(redact_store_url("postgresql://db/kiln?user=k&password=secret&x=1") ==
        "postgresql://db/kiln?user=k&password=***&x=1");
}

}  // TEST_SUITE("postgres")
