// The SQLite store: versioned schema migrations (older stores migrate, newer ones are refused).
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "service/api.hpp"
#include "service/db.hpp"
#include "service/sqlite_store.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

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
  try {
    SqliteStore store(path);
    FAIL("a newer store was opened");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
    std::string message = e.what();
    CHECK(message.find("schema version " + std::to_string(newer)) != std::string::npos);
    CHECK(message.find("newer than this kiln-service") != std::string::npos);
  }
  CHECK(user_version(path) == newer);  // left as it was
}
