// PostgresCluster: a throwaway PostgreSQL cluster run as the postgres user on a private Unix socket.
#include "tests/support/postgres.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "tests/support/process.hpp"

namespace kiln::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* bin_dir = "/usr/lib/postgresql/15/bin";
constexpr int port = 5432;  // names the socket file only: the server listens on no TCP port

std::string tool(const char* name) {
  auto path = fs::path(bin_dir) / name;
  if (!fs::exists(path))
    throw std::runtime_error(std::string("PostgreSQL 15 is missing: no ") + path.string() +
                             " (install the Debian package postgresql-15; scripts/setup.sh does)");
  return path.string();
}

ProcessResult as_postgres(const std::vector<std::string>& command, int timeout = 60) {
  std::vector<std::string> args = {"-u", "postgres", "--"};
  args.insert(args.end(), command.begin(), command.end());
  ProcessOptions options;
  options.timeout_seconds = timeout;
  options.cwd = "/";
  return run_process("/usr/sbin/runuser", args, options);
}

std::string quoted_identifier(const std::string& name) { return "\"" + name + "\""; }

}  // namespace

PostgresCluster::PostgresCluster() {
  auto initdb = tool("initdb");
  tool("pg_ctl");
  if (!getpwnam("postgres"))
    throw std::runtime_error("PostgreSQL is missing its user: no 'postgres' account (install postgresql-15)");
  if (!fs::exists("/usr/sbin/runuser")) throw std::runtime_error("runuser is missing (util-linux)");
  // /tmp, not $TMPDIR: the socket's path must stay short, and every parent must let postgres through.
  std::string templ = "/tmp/kiln-pg-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for the PostgreSQL cluster");
  base_ = buf.data();
  data_ = base_ / "data";
  ::chmod(base_.c_str(), 0755);
  auto* pw = getpwnam("postgres");
  if (::chown(base_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
    throw std::runtime_error("cannot give " + base_.string() + " to the postgres user");
  auto r = as_postgres({initdb, "-D", data_.string(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8",
                        "--locale=C.UTF-8"});
  if (r.exit_code != 0) throw std::runtime_error("initdb failed: " + r.err + r.out);
  start();
}

PostgresCluster::~PostgresCluster() {
  stop();
  std::error_code ec;
  fs::remove_all(base_, ec);
}

void PostgresCluster::start() {
  if (running_) return;
  auto options = "-k " + base_.string() + " -p " + std::to_string(port) +
                 " -c listen_addresses='' -c fsync=off -c full_page_writes=off "
                 "-c max_connections=200";
  auto r = as_postgres({tool("pg_ctl"), "-D", data_.string(), "-o", options, "-l", (base_ / "server.log").string(),
                        "-w", "-t", "60", "start"});
  if (r.exit_code != 0)
    throw std::runtime_error("pg_ctl start failed: " + r.err + r.out + "\nserver log:\n" +
                             [&] {
                               std::ifstream in(base_ / "server.log");
                               std::stringstream s;
                               s << in.rdbuf();
                               return s.str();
                             }());
  running_ = true;
}

void PostgresCluster::stop() {
  if (!running_) return;
  as_postgres({tool("pg_ctl"), "-D", data_.string(), "-m", "immediate", "-w", "stop"});
  running_ = false;
}

std::string PostgresCluster::url(const std::string& database) const {
  return "postgresql:///" + database + "?host=" + base_.string() + "&port=" + std::to_string(port) +
         "&user=postgres";
}

std::string PostgresCluster::sql(const std::string& database, const std::string& statement) const {
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdb(url(database).c_str()), PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error("cannot connect to the test cluster: " + std::string(PQerrorMessage(conn.get())));
  std::unique_ptr<PGresult, void (*)(PGresult*)> result(PQexec(conn.get(), statement.c_str()), PQclear);
  auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw std::runtime_error("test SQL failed: " + statement + ": " + PQresultErrorMessage(result.get()));
  if (status != PGRES_TUPLES_OK || PQntuples(result.get()) == 0 || PQgetisnull(result.get(), 0, 0)) return "";
  return PQgetvalue(result.get(), 0, 0);
}

std::string PostgresCluster::create_database() {
  std::string name = "kiln_test_" + std::to_string(++next_database_);
  sql("postgres", "CREATE DATABASE " + quoted_identifier(name) + " TEMPLATE template0 STRATEGY FILE_COPY");
  return url(name);
}

PostgresCluster& shared_postgres() {
  static std::mutex mutex;
  static std::unique_ptr<PostgresCluster> cluster;
  std::lock_guard lock(mutex);
  if (!cluster) {
    cluster = std::make_unique<PostgresCluster>();
    // Stopped when the test process exits (the static's destructor).
  }
  return *cluster;
}

bool testing_postgresql() {
  const char* store = std::getenv("KILN_TEST_STORE");
  return store && std::string_view(store) == "postgresql";
}

std::string test_store(const std::string& sqlite) {
  if (!testing_postgresql()) return sqlite;
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  return shared_postgres().create_database();
}

}  // namespace kiln::test
