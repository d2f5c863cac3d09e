// A private PostgreSQL 15 cluster for tests: initdb + pg_ctl in a temp dir, as the `postgres` user (the
// server refuses root), reached only through a Unix socket in that dir (listen_addresses=''). Stopped
// with `pg_ctl -m immediate` and removed when destroyed. No PostgreSQL installed: the constructor throws
// naming what is missing (a test fails, it is never skipped).
#pragma once

#include <filesystem>
#include <string>

namespace kiln::test {

class PostgresCluster {
 public:
  PostgresCluster();
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // The libpq URL of a database of this cluster (user postgres, trust authentication).
  std::string url(const std::string& database) const;
  // A new, empty database (CREATE DATABASE); returns its URL.
  std::string create_database();
  // Runs SQL as the superuser on `database` (test setup and inspection); returns the first value of the
  // first row ("" when none).
  std::string sql(const std::string& database, const std::string& statement) const;
  // Stops the server (as a crash would: -m immediate) and starts it again on the same socket.
  void stop();
  void start();
  const std::filesystem::path& socket_dir() const { return base_; }

 private:
  std::filesystem::path base_, data_;
  int next_database_ = 0;
  bool running_ = false;
};

// The cluster of this test process, started at first use and stopped at exit.
PostgresCluster& shared_postgres();

// Which backend the service tests run against: KILN_TEST_STORE=postgresql in the environment (the
// service_postgres ctest entry) selects PostgreSQL; anything else, SQLite.
bool testing_postgresql();
// The store location a service test should use: with PostgreSQL, a fresh database of the shared
// cluster; else `sqlite` (":memory:" or a file path).
std::string test_store(const std::string& sqlite);

}  // namespace kiln::test
