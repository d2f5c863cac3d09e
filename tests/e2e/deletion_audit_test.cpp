// Deletion and the audit log with the real binaries: kiln against kiln-service on 127.0.0.1 (TLS, SQLite).
#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/service_setup.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

using kiln::test::jsonl;
using kiln::test::slurp;
using kiln::test::spit;

// The service setting (tests/support/service_setup.hpp), with its image store and audit log at hand.
struct Setup : test::ServiceSetup {
  // Image content as the service keeps it (tenant 1: the one kiln-service init made).
  std::filesystem::path blob(const std::string& id) const { return data / "images" / "1" / id; }

  Json audit(std::vector<std::string> args = {}) const {
    args.insert(args.begin(), {"audit", "list"});
    return json(args);
  }
};

}  // namespace

TEST_CASE("deletion and audit e2e: refused while in use (exit 7, nothing changed), deleted once finished, logged") {
  Setup s;
  auto admin = s.json({"whoami"})["token"].get<std::string>();
  auto operator_file = s.token("operator");
  auto operator_name = s.json({"whoami"}, operator_file)["token"].get<std::string>();
  REQUIRE(operator_name != admin);
  s.json({"product", "create", "Thermo"});

  // One device of Thermo, in Thermo/Production.
  auto device_key = s.dir.file("dev.pem");
  REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", device_key}).exit_code == 0);
  spit(s.dir.file("bundle.jsonl"),
       test::signed_bundle(Json{{"uid", "dev-1"}, {"product", "Thermo"}, {"state", "secured"}, {"version", "1.0.0"},
                                {"public_key", test::public_key_pem_of_file(device_key)}}
                                   .dump() +
                               "\n",
                           s.station.key));
  s.json({"device", "import", s.dir.file("bundle.jsonl")});
  s.json({"device", "assign", "dev-1", "--group", "Thermo/Production"});

  // A release the product's boards accept: signed image and SUIT manifest, uploaded together.
  auto key = s.dir.file("release.pem");
  REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", key}).exit_code == 0);
  s.json({"product", "update", "Thermo", "--boot-key", key, "--manifest-key", key});
  std::string firmware(50000, '\0');
  std::mt19937 rng(17);
  for (auto& c : firmware) c = static_cast<char>(rng());
  spit(s.dir.file("fw.bin"), firmware);
  auto sign = test::kiln({"image", "sign", s.dir.file("fw.bin"), s.dir.file("fw.signed"), "-k", key, "--version",
                          "1.0.2", "--header-size", "0x200", "--slot-size", "0x100000", "--pad-header"});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto made = test::kiln({"manifest", "create", "--component", s.dir.file("fw.signed"), "--vendor-domain",
                          "example.com", "--class-name", "thermo", "--sequence", "2", "--key", key, "-o",
                          s.dir.file("fw.suit")});
  REQUIRE_MESSAGE(made.exit_code == 0, made.err);
  auto uploaded = s.json({"image", "upload", s.dir.file("fw.signed"), "--manifest", s.dir.file("fw.suit")},
                         operator_file);
  auto image = uploaded["id"].get<std::string>(), manifest = uploaded["manifest"].get<std::string>();
  auto dep = s.json({"deployment", "create", "--group", "Thermo/Production", "--image", image}, operator_file)["id"]
                 .get<std::string>();
  REQUIRE(std::filesystem::exists(s.blob(image)));
  REQUIRE(std::filesystem::exists(s.blob(manifest)));

  // While the deployment is unfinished (active, then paused): refused, exit 7, the deployment named, nothing changed.
  for (const char* state : {"active", "paused"}) {
    CAPTURE(state);
    if (std::string_view(state) == "paused") s.json({"deployment", "pause", dep});
    auto refused = s.kiln({"image", "delete", image});
    CHECK(refused.exit_code == 7);
    CHECK(refused.err.find(dep) != std::string::npos);
    CHECK(refused.out.empty());
    CHECK(s.kiln({"image", "delete", manifest}).exit_code == 7);
    auto busy = s.kiln({"deployment", "delete", dep});
    CHECK(busy.exit_code == 7);
    CHECK(busy.err.find(state) != std::string::npos);
  }
  CHECK(s.json({"image", "list"}).size() == 2);
  CHECK(std::filesystem::exists(s.blob(image)));
  CHECK(std::filesystem::exists(s.blob(manifest)));
  CHECK(s.json({"deployment", "show", dep})["state"] == "paused");

  // A product or group that is not empty is refused too.
  auto group = s.kiln({"group", "delete", "Thermo/Production"});
  CHECK(group.exit_code == 7);
  CHECK(group.err.find("devices") != std::string::npos);
  CHECK(s.kiln({"product", "delete", "Thermo"}).exit_code == 7);
  s.json({"device", "assign", "dev-1", "--group", "Thermo/Development"});
  auto with_deployment = s.kiln({"group", "delete", "Thermo/Production"});
  CHECK(with_deployment.exit_code == 7);
  CHECK(with_deployment.err.find("deployments") != std::string::npos);
  CHECK(s.json({"group", "show", "Thermo/Production"})["name"] == "Production");

  // Once it finished (aborted): image and manifest go, content files with them; then the deployment.
  CHECK(s.json({"deployment", "abort", dep})["state"] == "aborted");
  auto deleted = s.json({"image", "delete", image, manifest}, operator_file);
  CHECK(deleted.size() == 2);
  CHECK_FALSE(std::filesystem::exists(s.blob(image)));
  CHECK_FALSE(std::filesystem::exists(s.blob(manifest)));
  CHECK(s.json({"image", "list"}).empty());
  CHECK(s.kiln({"image", "show", image}).exit_code == 9);
  CHECK(s.kiln({"image", "delete", image}).exit_code == 9);
  CHECK(s.json({"deployment", "delete", dep})["deleted"] == dep);
  CHECK(s.kiln({"deployment", "show", dep}).exit_code == 9);
  CHECK(s.kiln({"deployment", "delete", dep}).exit_code == 9);
  CHECK(s.json({"group", "delete", "Thermo/Production"}).contains("deleted"));
  s.json({"product", "create", "Spare"});
  CHECK(s.json({"product", "delete", "Spare"}).contains("deleted"));

  // The audit log: every write with its actor, refused ones with their status.
  auto all = s.audit();
  REQUIRE(all.size() >= 20);
  auto count = [&](const std::string& action, int status, const std::string& actor) {
    return std::count_if(all.begin(), all.end(), [&](const Json& e) {
      return e["action"] == action && e["status"] == status && e["actor"] == actor;
    });
  };
  CHECK(count("product.create", 201, admin) == 2);
  CHECK(count("image.delete", 409, admin) == 4);
  CHECK(count("image.delete", 200, operator_name) == 2);
  CHECK(count("image.create", 201, operator_name) == 2);
  CHECK(count("deployment.create", 201, operator_name) == 1);
  CHECK(count("deployment.delete", 409, admin) == 2);
  CHECK(count("deployment.delete", 200, admin) == 1);
  CHECK(count("group.delete", 409, admin) == 2);
  CHECK(count("product.delete", 409, admin) == 1);
  for (auto& e : all) {
    CHECK(e["request_id"].get<std::string>().size() > 0);
    CHECK(e["at"].get<std::string>().back() == 'Z');
  }

  // Filters.
  auto by_operator = s.audit({"--actor", operator_name});
  // Image and manifest created and uploaded, linked, the deployment, two deletions.
  CHECK(by_operator.size() == 8);
  for (auto& e : by_operator) CHECK(e["actor"] == operator_name);
  auto on_dep = s.audit({"--target", dep});
  for (auto& e : on_dep) CHECK(e["target"] == dep);
  CHECK(on_dep.size() == 7);  // create, pause, 2 refused deletes, abort, delete, the delete answered 404
  CHECK(s.audit({"--action", "image.delete", "--actor", admin}).size() == 5);  // 4 refused, 1 not found
  CHECK(s.audit({"--since", "2999-01-01"}).empty());
  CHECK(s.audit({"--until", "2000-01-01T00:00:00Z"}).empty());
  CHECK(s.audit({"--since", "2000-01-01", "--until", "2999-01-01"}).size() == all.size());
  CHECK(s.audit({"--limit", "3"}).size() == 3);

  // jsonl export: one entry per line, each parses, the same entries as -o json; the table names actions.
  auto export_run = s.kiln({"-o", "jsonl", "audit", "list"});
  REQUIRE_MESSAGE(export_run.exit_code == 0, export_run.err);
  auto lines = jsonl(export_run.out);
  CHECK(lines.size() == all.size());  // the listings above were reads: nothing new was logged
  CHECK(lines.front() == all.front());
  auto table = s.kiln({"audit", "list", "--action", "image.delete"});
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("image.delete") != std::string::npos);

  // Bad input: a malformed time is a usage error before any request; only admins read the log.
  auto bad = s.kiln({"audit", "list", "--since", "yesterday"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("ISO 8601") != std::string::npos);
  CHECK(s.kiln({"audit", "list", "--until", "2026-02-30"}).exit_code == 2);
  CHECK(s.kiln({"audit", "list"}, operator_file).exit_code == 6);
}
