// Tests for core/sqlite: errors that name the database, busy as its own error, private files, transactions.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <string>

#include "core/error.hpp"
#include "core/sqlite.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

TEST_CASE("sqlite: statements bind and read back text, integers, reals and NULL") {
  test::TempDir dir;
  sqlite::Db db(dir.file("t.db"));
  db.exec("CREATE TABLE t (a TEXT, b INTEGER, c REAL, d TEXT)");
  db.prepare("INSERT INTO t VALUES (?, ?, ?, ?)")
      .bind(1, std::string_view("x\0y", 3))
      .bind(2, std::int64_t{1} << 40)
      .bind(3, 2.5)
      .bind_optional(4, std::nullopt)
      .run();
  CHECK(db.changes() == 1);
  auto q = db.prepare("SELECT a, b, c, d FROM t");
  REQUIRE(q.step());
  CHECK(q.text(0) == std::string("x\0y", 3));
  CHECK(q.integer(1) == std::int64_t{1} << 40);
  CHECK(q.real(2) == 2.5);
  CHECK(q.is_null(3));
  CHECK_FALSE(q.optional_text(3));
  CHECK_FALSE(q.step());
}

TEST_CASE("sqlite: a failure names the database's label; a constraint is a conflict") {
  test::TempDir dir;
  sqlite::Db db(dir.file("t.db"), {.label = "ledger"});
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  try {
    db.prepare("SELECT nothing FROM nowhere");
    FAIL("prepare of a bad statement did not throw");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).starts_with("ledger: prepare 'SELECT nothing FROM nowhere'"));
    CHECK(e.code() == ExitCode::failure);
  }
  db.prepare("INSERT INTO t VALUES (1)").run();
  try {
    db.prepare("INSERT INTO t VALUES (1)").run();
    FAIL("a duplicate key did not throw");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
  }
}

TEST_CASE("sqlite: a write lock held past the busy timeout is Busy, with the exit category asked for") {
  test::TempDir dir;
  sqlite::Db holder(dir.file("t.db"));
  holder.exec("CREATE TABLE t (id INTEGER)");
  sqlite::Transaction held(holder);
  sqlite::Db waiter(dir.file("t.db"), {.label = "store", .busy_timeout_ms = 50, .busy_code = ExitCode::service});
  try {
    sqlite::Transaction second(waiter);
    FAIL("a second writer got the lock");
  } catch (const sqlite::Busy& e) {
    CHECK(e.code() == ExitCode::service);
    CHECK(std::string(e.what()).starts_with("the store is busy"));
  }
}

TEST_CASE("sqlite: a transaction not committed is rolled back; a committed one stays") {
  test::TempDir dir;
  sqlite::Db db(dir.file("t.db"));
  db.exec("CREATE TABLE t (id INTEGER)");
  {
    sqlite::Transaction tx(db);
    db.exec("INSERT INTO t VALUES (1)");
  }
  {
    sqlite::Transaction tx(db);
    db.exec("INSERT INTO t VALUES (2)");
    tx.commit();
  }
  auto q = db.prepare("SELECT group_concat(id) FROM t");
  REQUIRE(q.step());
  CHECK(q.text(0) == "2");
}

TEST_CASE("sqlite: owner_only creates the database 0600 and tightens one left readable by others") {
  test::TempDir dir;
  auto path = dir.file("private.db");
  auto mode_of = [](const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 0777;
  };
  { sqlite::Db db(path, {.owner_only = true}); }
  CHECK(mode_of(path) == 0600);
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  { sqlite::Db db(path, {.owner_only = true}); }
  CHECK(mode_of(path) == 0600);
}
