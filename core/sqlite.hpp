// Thin RAII layer over sqlite3 for every database kiln keeps (the service's store, the station ledger):
// one connection, prepared statements with typed binds and columns, transactions that roll back on unwind.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/error.hpp"

namespace kiln::sqlite {

// The database stayed locked by another connection past the busy timeout: nothing was done, the work may be
// tried again (the service answers 503 with Retry-After).
class Busy : public Error {
 public:
  Busy(ExitCode code, std::string message) : Error(code, std::move(message), "try again") {}
};

struct Options {
  std::string label = "database";      // names the database in error messages ("ledger: step: …")
  int busy_timeout_ms = 5000;          // how long a statement waits for another connection's lock
  ExitCode busy_code = ExitCode::failure;  // the exit category of Busy
  bool owner_only = false;             // create the file 0600 (and tighten it and its -wal/-shm if looser)
};

class Statement;
class ReusedStatement;

class Db {
 public:
  // Opens (creating if needed) the database in WAL mode with the busy timeout set. Switching to WAL needs a
  // moment alone with the file, so it is retried while another process opens the same database.
  explicit Db(const std::string& path, Options options = {});
  void exec(std::string_view sql);
  Statement prepare(std::string_view sql);
  // A statement prepared once per connection and reset for each use (hot paths: one prepare costs more
  // than the statement). Not for a statement still being stepped when the same SQL runs again.
  ReusedStatement cached(const std::string& sql);
  // `exec` of one statement that returns no rows, prepared once per connection (BEGIN, COMMIT, a PRAGMA set
  // on every transaction): parsing the SQL again each time is a measurable part of a short request.
  void exec_cached(const std::string& sql);
  std::int64_t changes() const { return sqlite3_changes(handle_.get()); }
  sqlite3* raw() const { return handle_.get(); }
  // Throws the error for a failed call: Busy for a lock held past the timeout, else Error (failure).
  [[noreturn]] void fail(int rc, std::string_view what, std::string_view message) const;
  [[noreturn]] void fail(std::string_view what) const;

 private:
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  Options options_;
  std::unique_ptr<sqlite3, Close> handle_;
  std::unordered_map<std::string, std::unique_ptr<Statement>> cache_;  // finalized before handle_ closes
};

class Statement {
 public:
  Statement(const Db& db, std::string_view sql);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, double value);
  Statement& bind_null(int index);
  Statement& bind_optional(int index, const std::optional<std::string>& text);
  // Steps once: true while a row is available. A constraint violation is Error (conflict).
  bool step();
  void run() {
    while (step()) {}
  }
  // Ready to run again with new binds.
  void reset() {
    sqlite3_reset(stmt_.get());
    sqlite3_clear_bindings(stmt_.get());
  }
  std::string text(int column) const;
  std::optional<std::string> optional_text(int column) const;
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_.get(), column); }
  double real(int column) const { return sqlite3_column_double(stmt_.get(), column); }
  bool is_null(int column) const { return sqlite3_column_type(stmt_.get(), column) == SQLITE_NULL; }
  int column_count() const { return sqlite3_column_count(stmt_.get()); }

 private:
  struct Finalize {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
  };
  const Db* db_;
  std::unique_ptr<sqlite3_stmt, Finalize> stmt_;
};

// A cached statement in use: reset when it goes, so no finished query holds a read snapshot open.
class ReusedStatement {
 public:
  explicit ReusedStatement(Statement& statement) : statement_(statement) {}
  ~ReusedStatement() { statement_.reset(); }
  ReusedStatement(const ReusedStatement&) = delete;
  ReusedStatement& operator=(const ReusedStatement&) = delete;
  Statement* operator->() const { return &statement_; }

 private:
  Statement& statement_;
};

// BEGIN IMMEDIATE (the write lock at once) ... COMMIT, rolled back if destroyed without commit(): an exception
// never leaves a half-written change or a held lock.
class Transaction {
 public:
  explicit Transaction(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_.raw(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    db_.exec("COMMIT");
    done_ = true;
  }

 private:
  Db& db_;
  bool done_ = false;
};

// A consistent snapshot for reading (BEGIN DEFERRED takes no write lock), ended when it goes.
class ReadTransaction {
 public:
  explicit ReadTransaction(Db& db) : db_(db) { db_.exec("BEGIN"); }
  ~ReadTransaction() { sqlite3_exec(db_.raw(), "COMMIT", nullptr, nullptr, nullptr); }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;

 private:
  Db& db_;
};

}  // namespace kiln::sqlite
