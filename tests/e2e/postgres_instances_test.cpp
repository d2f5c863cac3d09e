// Several kiln-service instances on one PostgreSQL store (docs/operations.md, "Several nodes"): two
// `kiln-service run` on copies of one initialised directory, sharing the store and one --blob-dir, behind
// HAProxy on loopback (TCP mode: TLS and the boards' client certificates pass through). Emulated boards
// check in through HAProxy. An image uploaded through one instance downloads through the other; a
// deployment halts exactly once while both instances take the failure reports; a staged deployment opens
// its second wave and completes after one instance is killed with SIGKILL mid-way; tallies equal a
// recount in SQL. Then the backup and restore drills of docs/operations.md: pg_dump/pg_restore, and
// sqlite3 .backup for a single node, each restored copy served by a new instance.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/ota_fleet.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string pg_bin = "/usr/lib/postgresql/15/bin/";

std::string database_of(const std::string& url) { return url.substr(14, url.find('?') - 14); }

// Statuses whose kept tally (rows of deployment_tallies; status '': the devices of a wave) differs from a
// recount of the devices' last reports, for one deployment ("" when none).
std::string tally_mismatches(const test::PostgresCluster& pg, const std::string& database, const std::string& id) {
  return pg.sql(database,
                "SELECT coalesce(string_agg(coalesce(r.status, t.status) || ': ' || coalesce(r.n, 0) || ' reported, ' "
                "|| coalesce(t.n, 0) || ' tallied', '; '), '') FROM "
                "(SELECT status, count(*) AS n FROM deployment_devices WHERE deployment_id = '" + id +
                    "' GROUP BY status) r FULL JOIN "
                    "(SELECT status, sum(devices) AS n FROM deployment_tallies WHERE deployment_id = '" + id +
                    "' AND status <> '' GROUP BY status HAVING sum(devices) <> 0) t USING (status) "
                    "WHERE r.n IS DISTINCT FROM t.n");
}

std::size_t audit_count(const test::OtaFleet& fleet, const std::string& action, const std::string& target) {
  return fleet.json({"audit", "list", "--action", action, "--target", target}).size();
}

// A restored copy of an instance's directory whose store.toml names `url`.
fs::path restored_dir(const test::OtaFleet& fleet, const std::string& url) {
  fs::path dir = fleet.file("restored");
  fs::copy(fleet.instance_dir(2), dir, fs::copy_options::recursive);
  std::ofstream(dir / "store.toml", std::ios::trunc) << "store = " << Json(url).dump() << "\n";
  return dir;
}

}  // namespace

TEST_CASE("postgres instances: two kiln-service behind HAProxy share one store and one blob directory; a wave, a "
          "halt and kill -9 of one instance; pg_dump/pg_restore drill") {
  test::PostgresCluster pg;
  auto url = pg.create_database();
  auto database = database_of(url);
  test::OtaFleetOptions options;
  options.boards = 4;
  options.store = url;
  options.instances = 2;
  options.emulator_args = {"--fail-version", "1.2.0"};  // every board rolls 1.2.0 back
  test::OtaFleet fleet(options);
  const auto& uids = fleet.uids();

  // An image and its manifest uploaded through instance 1 download through instance 2 (one blob directory).
  auto bad_image = fleet.sign_image("1.2.0");
  auto bad_manifest = fleet.make_manifest(bad_image, 2);
  auto uploaded = fleet.kiln({"-o", "json", "image", "upload", bad_image, "--manifest", bad_manifest}, 120,
                             fleet.instance(1).url());
  REQUIRE_MESSAGE(uploaded.exit_code == 0, uploaded.err);
  auto bad_id = Json::parse(uploaded.out)["id"].get<std::string>();
  auto downloaded =
      fleet.kiln({"image", "download", bad_id, "-o", fleet.file("via-instance-2.bin")}, 120, fleet.instance(2).url());
  REQUIRE_MESSAGE(downloaded.exit_code == 0, downloaded.err);
  CHECK(test::slurp(fleet.file("via-instance-2.bin")) == test::slurp(bad_image));

  // A deployment every board fails: its status reports reach both instances through HAProxy; the halt is
  // decided once, under the store's write lock, and recorded once.
  auto halting = fleet.json({"deployment", "create", "--group", options.group, "--image", bad_id, "--halt-on-failure",
                             "10%", "--halt-min-executed", "1"});
  auto d1 = halting["id"].get<std::string>();
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.deployment(d1)["state"] == "halted"; }, 60));
  // Every board that was offered the release before the halt reports its rollback (some may be mid-install
  // when it halts); a board that had not checked in since its import when the halt fired is never offered it.
  auto settled = [&] {
    auto status = fleet.deployment(d1)["device_status"];
    int rolled_back = status.value("rolled_back", 0);
    return rolled_back >= 1 && rolled_back + status.value("pending", 0) == 4;
  };
  CHECK(test::OtaFleet::wait_for(settled, 60));
  for (const auto& uid : uids) {
    auto outcome = fleet.agent_outcome(uid, d1);
    CHECK_MESSAGE((outcome.empty() || outcome == "rolled_back"), uid << ": " << outcome);
  }
  auto halted = fleet.deployment(d1);
  CHECK(halted["state"] == "halted");
  CHECK(audit_count(fleet, "deployment.halt", d1) == 1);
  CHECK(tally_mismatches(pg, database, d1) == "");

  // A staged deployment: wave 1 (half the group) then wave 2 after 2 s. Instance 1 dies (SIGKILL) once the
  // first board reported; instance 2 carries on alone behind HAProxy.
  auto good_image = fleet.sign_image("1.3.0");
  auto staged = fleet.deploy(good_image, fleet.make_manifest(good_image, 3), {"--rollout", "50%,100%", "--step-after", "2s"});
  auto d2 = staged["id"].get<std::string>();
  CHECK(staged["rollout"] == 50);
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.deployment(d2)["device_status"].value("pending", 0) < 4; }, 60));
  // Both instances have been serving the boards and kiln (round robin) up to here.
  for (const char* frontend : {"agents", "api"}) {
    auto served = fleet.haproxy().sessions(frontend);
    INFO(frontend);
    CHECK(served.size() == 2);
    for (const auto& server : served) CHECK_MESSAGE(server.second > 2, server.first);
  }
  auto survivor_before = fleet.haproxy().sessions("agents")["agents2"];
  fleet.instance(1).kill_hard();
  CHECK(fleet.wait_all_running("1.3.0", 60));
  CHECK(fleet.wait_all_outcome(d2, "installed", 60));
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.deployment(d2)["state"] == "completed"; }, 30));

  // Nothing lost, nothing applied twice: the second wave opened, each board installed once (one attempt,
  // sequence 3), the kept tallies equal a recount, one deployment.create each, one halt.
  auto done = fleet.deployment(d2);
  CHECK(done["rollout"] == 100);
  CHECK(done["device_status"].value("installed", 0) == 4);
  CHECK(tally_mismatches(pg, database, d2) == "");
  CHECK(tally_mismatches(pg, database, d1) == "");
  CHECK(pg.sql(database, "SELECT devices FROM deployment_tallies WHERE deployment_id = '" + d2 +
                             "' AND wave = 0 AND status = ''") == "4");
  auto rows = fleet.deployment_devices(d2);
  CHECK(rows.size() == 4);
  for (const auto& uid : uids) {
    INFO(uid);
    CHECK(rows[uid]["status"] == "installed");
    CHECK(rows[uid].value("attempt", 0) == 1);
    CHECK(fleet.board_record(uid)["sequence"] == 3);
  }
  CHECK(pg.sql(database, "SELECT count(*) FROM deployment_devices WHERE deployment_id = '" + d2 +
                             "' AND status = 'installed'") == "4");
  CHECK(audit_count(fleet, "deployment.create", d1) == 1);
  CHECK(audit_count(fleet, "deployment.create", d2) == 1);
  CHECK(audit_count(fleet, "deployment.halt", d1) == 1);
  CHECK(audit_count(fleet, "deployment.halt", d2) == 0);
  // The survivor took over the agents: it was given connections after the kill.
  CHECK(fleet.haproxy().sessions("agents")["agents2"] > survivor_before);

  // Backup and restore drill (docs/operations.md): pg_dump of the live store, pg_restore into an empty
  // database, a copy of the directory pointed at it: the restored service serves the same records and images.
  auto dump = fleet.file("kiln.dump");
  auto dumped = test::run_process(pg_bin + "pg_dump", {"-Fc", "-d", url, "-f", dump});
  REQUIRE_MESSAGE(dumped.exit_code == 0, dumped.err);
  auto restored_url = pg.create_database();
  auto restored = test::run_process(pg_bin + "pg_restore", {"--no-owner", "-d", restored_url, dump});
  REQUIRE_MESSAGE(restored.exit_code == 0, restored.err);
  test::ServiceProcess restored_service(restored_dir(fleet, restored_url), 0, false, {"--blob-dir", fleet.file("blobs")});
  auto shown = fleet.kiln({"-o", "json", "deployment", "show", d2}, 120, restored_service.url());
  REQUIRE_MESSAGE(shown.exit_code == 0, shown.err);
  auto again = Json::parse(shown.out);
  CHECK(again["state"] == "completed");
  CHECK(again["device_status"] == done["device_status"]);
  auto image_again = fleet.kiln({"image", "download", bad_id, "-o", fleet.file("restored.bin")}, 120, restored_service.url());
  REQUIRE_MESSAGE(image_again.exit_code == 0, image_again.err);
  CHECK(test::slurp(fleet.file("restored.bin")) == test::slurp(bad_image));
}

TEST_CASE("postgres instances: a single node's SQLite store backed up online with sqlite3 .backup and restored") {
  test::TempDir tmp;
  auto dir = tmp.path() / "svc";
  REQUIRE(test::run_process(test::bin_path("kiln-service"), {"init", "--dir", dir.string()}).exit_code == 0);
  auto kiln_at = [&](const std::string& url, const std::vector<std::string>& args) {
    test::ProcessOptions o;
    o.env["XDG_CONFIG_HOME"] = tmp.file("xdg");
    o.env["KILN_SERVICE"] = url;
    o.env["KILN_CA_FILE"] = (dir / "ca.pem").string();
    o.env["KILN_TOKEN"] = test::slurp(dir / "admin.token").substr(0, 69);
    return test::run_kiln(args, o);
  };
  auto backup = tmp.file("backup.db");
  // A --blob-dir that is not there (a shared mount missing) stops run: exit 9, nothing served.
  auto missing = test::run_process(test::bin_path("kiln-service"), {"run", "--dir", dir.string(), "--listen",
                                                                    "127.0.0.1:0", "--blob-dir", tmp.file("no-mount")});
  CHECK(missing.exit_code == 9);
  CHECK(missing.err.find("--blob-dir " + tmp.file("no-mount") + " is not a directory") != std::string::npos);
  {
    test::ServiceProcess running(dir);
    REQUIRE(kiln_at(running.url(), {"product", "create", "Thermo"}).exit_code == 0);
    // Online: the service keeps running and writing.
    auto saved = test::run_process("/usr/bin/sqlite3", {(dir / "kiln.db").string(), ".backup '" + backup + "'"});
    REQUIRE_MESSAGE(saved.exit_code == 0, saved.err);
    REQUIRE(kiln_at(running.url(), {"product", "create", "Oven"}).exit_code == 0);
  }
  // Restore: the directory without its database files, the backup as D/kiln.db.
  auto restored = tmp.path() / "restored";
  fs::copy(dir, restored, fs::copy_options::recursive);
  for (const char* name : {"kiln.db", "kiln.db-wal", "kiln.db-shm"}) fs::remove(restored / name);
  fs::copy_file(backup, restored / "kiln.db");
  test::ServiceProcess running(restored);
  auto listed = kiln_at(running.url(), {"-o", "json", "product", "list"});
  REQUIRE_MESSAGE(listed.exit_code == 0, listed.err);
  CHECK(listed.out.find("Thermo") != std::string::npos);
  CHECK(listed.out.find("Oven") == std::string::npos);  // written after the backup
}
