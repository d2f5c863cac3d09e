// Thin RAII layer over sqlite3: one connection, prepared statements with typed binds and columns.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace kiln::service {

// How long a statement waits for another connection's write lock before the database answers busy.
constexpr int busy_timeout_ms = 5000;

class Statement;
class ReusedStatement;

class Db {
 public:
  // Opens (creating if needed) the database; WAL mode, foreign keys on, busy timeout set.
  explicit Db(const std::string& path);
  void exec(std::string_view sql);
  Statement prepare(std::string_view sql);
  // A statement prepared once per connection and reset for each use (hot paths: one prepare costs more
  // than the statement). Not for a statement still being stepped when the same SQL runs again.
  ReusedStatement cached(const std::string& sql);
  std::int64_t changes() const { return sqlite3_changes(handle_.get()); }
  sqlite3* raw() const { return handle_.get(); }

 private:
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  std::unique_ptr<sqlite3, Close> handle_;
  std::unordered_map<std::string, std::unique_ptr<Statement>> cache_;  // finalized before handle_ closes
};

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, double value);
  Statement& bind_null(int index);
  Statement& bind_optional(int index, const std::optional<std::string>& text);
  // Steps once: true while a row is available.
  bool step();
  void run() { while (step()) {} }
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
  sqlite3* db_;
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

// BEGIN IMMEDIATE ... COMMIT, rolled back if destroyed without commit().
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

}  // namespace kiln::service
