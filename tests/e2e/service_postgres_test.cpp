// kiln-service on PostgreSQL with the real binaries: `init --store URL` on a private cluster, then `run`
// serving over HTTPS on loopback; a password is never taken from argv; a store that cannot be reached is
// one message and exit 5; a database that stops gives 503 with Retry-After and the service recovers
// when it is back.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <algorithm>
#include <fstream>
#include <string>
#include <tuple>

#include "tests/support/postgres.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

test::ProcessResult service(const std::vector<std::string>& args, test::ProcessOptions options = {}) {
  return test::run_process(test::bin_path("kiln-service"), args, options);
}

// An HTTPS request with the admin token; returns the status line, headers and body as curl prints them.
std::string https(const fs::path& dir, const std::string& url, const std::string& method = "GET",
                  const std::string& body = "") {
  std::vector<std::string> args = {"-s", "-S", "-D", "-", "--max-time", "20", "--cacert", (dir / "ca.pem").string(),
                                   "-H", "Authorization: Bearer " + test::slurp(dir / "admin.token").substr(0, 69),
                                   "-X", method};
  if (!body.empty()) args.insert(args.end(), {"-H", "Content-Type: application/json", "--data-binary", body});
  args.push_back(url);
  return test::run_process("/usr/bin/curl", args).out;
}

int status_of(const std::string& response) {
  auto space = response.find(' ');
  return space == std::string::npos ? 0 : std::atoi(response.c_str() + space + 1);
}

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

TEST_CASE("kiln-service init --store: a URL holding a password is refused (exit 2) and never echoed") {
  test::TempDir tmp;
  for (std::string url : {"postgresql://kiln:s3cr3t-pw@127.0.0.1/kiln", "postgresql://kiln@127.0.0.1/kiln?password=s3cr3t-pw"}) {
    INFO(url);
    auto dir = tmp.path() / "svc";
    auto r = service({"init", "--dir", dir.string(), "--store", url});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("password") != std::string::npos);
    CHECK(r.err.find("KILN_STORE_PASSWORD") != std::string::npos);  // the hint says where it goes instead
    CHECK(r.err.find("s3cr3t-pw") == std::string::npos);
    CHECK(r.out.empty());
    CHECK_FALSE(fs::exists(dir / "store.toml"));
    CHECK_FALSE(fs::exists(dir / "admin.token"));
  }
}

TEST_CASE("kiln-service init/run on a store that cannot be reached: one message naming it, exit 5") {
  test::TempDir tmp;
  auto dir = tmp.path() / "svc";
  // A socket directory where no server listens.
  std::string url = "postgresql:///kiln?host=" + tmp.path().string() + "&port=5999&user=postgres";
  auto r = service({"init", "--dir", dir.string(), "--store", url});
  INFO(r.err);
  CHECK(r.exit_code == 5);
  CHECK(r.err.starts_with("kiln-service: error: cannot reach the PostgreSQL store postgresql:///kiln"));
  CHECK(lines(r.err) <= 2);  // the message and its hint
  CHECK(r.out.empty());
  CHECK_FALSE(fs::exists(dir / "store.toml"));
  CHECK_FALSE(fs::exists(dir / "admin.token"));
}

TEST_CASE("kiln-service on PostgreSQL: init keeps the URL in D/store.toml (0600); run serves; a stopped "
          "database is 503 with Retry-After, never 500, and the service recovers by itself") {
  test::PostgresCluster pg;
  test::TempDir tmp;
  auto dir = tmp.path() / "svc";
  auto url = pg.create_database();
  // The password file: its path is kept, never its content; one readable by others is refused.
  auto password = tmp.path() / "store.password";
  { std::ofstream(password) << "not-a-real-password\n"; }
  ::chmod(password.c_str(), 0644);
  auto refused = service({"init", "--dir", dir.string(), "--store", url, "--store-password-file", password.string()});
  CHECK(refused.exit_code == 6);
  CHECK(refused.err.find("readable by others") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "store.toml"));
  ::chmod(password.c_str(), 0600);

  test::ProcessOptions with_password;
  with_password.env["KILN_STORE_PASSWORD"] = "env-password-xyz";
  auto init = service({"init", "--dir", dir.string(), "--store", url, "--store-password-file", password.string()},
                      with_password);
  INFO(init.err);
  REQUIRE(init.exit_code == 0);
  CHECK(init.out.find("not-a-real-password") == std::string::npos);
  CHECK(init.err.find("not-a-real-password") == std::string::npos);
  auto config = test::slurp(dir / "store.toml");
  CHECK(config.find(url) != std::string::npos);
  CHECK(config.find(password.string()) != std::string::npos);
  CHECK(config.find("not-a-real-password") == std::string::npos);
  CHECK(config.find("env-password-xyz") == std::string::npos);
  CHECK((fs::status(dir / "store.toml").permissions() & (fs::perms::group_all | fs::perms::others_all)) ==
        fs::perms::none);
  CHECK_FALSE(fs::exists(dir / "kiln.db"));  // the records are in PostgreSQL
  CHECK(pg.sql(url.substr(14, url.find('?') - 14), "SELECT name FROM tenants") == "default");
  CHECK(service({"init", "--dir", dir.string(), "--if-missing"}).exit_code == 0);

  {
    test::ServiceProcess running(dir);
    auto created = https(dir, running.url() + "/v1/products", "POST", R"({"name":"Thermo"})");
    CHECK(status_of(created) == 201);
    CHECK(status_of(https(dir, running.url() + "/v1/whoami")) == 200);

    pg.stop();
    for (auto [method, target, body] : {std::tuple{"GET", "/v1/products", ""},
                                        std::tuple{"POST", "/v1/products", R"({"name":"Oven"})"}}) {
      auto r = https(dir, running.url() + target, method, body);
      const std::string request = std::string(method) + " " + target;  // clang 14 lambdas cannot capture bindings
      INFO(request << ": " << r);
      CHECK(status_of(r) == 503);
      CHECK(r.find("Retry-After: 5") != std::string::npos);
      CHECK(r.find("store_unavailable") != std::string::npos);
    }
    pg.start();
    auto listed = https(dir, running.url() + "/v1/products");
    INFO(listed);
    CHECK(status_of(listed) == 200);
    CHECK(listed.find("Thermo") != std::string::npos);
    CHECK(listed.find("Oven") == std::string::npos);  // the request answered 503 applied nothing
    CHECK(status_of(https(dir, running.url() + "/v1/products", "POST", R"({"name":"Oven"})")) == 201);
  }

  // run on a stopped database: one message, exit 5, no listener.
  pg.stop();
  auto run = service({"run", "--dir", dir.string(), "--listen", "127.0.0.1:0"});
  INFO(run.err);
  CHECK(run.exit_code == 5);
  CHECK(run.err.find("cannot reach the PostgreSQL store") != std::string::npos);
  CHECK(run.err.find("listening") == std::string::npos);
  pg.start();
}
