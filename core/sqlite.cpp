// sqlite3 wrapper: every failure becomes a kiln::Error naming the database and the call that failed.
#include "core/sqlite.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include <fmt/format.h>

namespace kiln::sqlite {
namespace {

bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED; }

// SQLite creates the -wal and -shm files with the database file's mode, so creating the database 0600
// (and tightening one an older version left 0644) covers all three.
void restrict_to_owner(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) return;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;  // sqlite3_open_v2 reports why
  int rc = ::fchmod(fd, 0600);
  ::close(fd);
  if (rc != 0) throw Error(ExitCode::failure, fmt::format("cannot make database {} private (0600)", path));
  for (const char* suffix : {"-wal", "-shm", "-journal"})
    if (::chmod((path + suffix).c_str(), 0600) != 0 && errno != ENOENT)
      throw Error(ExitCode::failure, fmt::format("cannot make {}{} private (0600)", path, suffix));
}

}  // namespace

Db::Db(const std::string& path, Options options) : options_(std::move(options)) {
  if (options_.owner_only) restrict_to_owner(path);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  handle_.reset(raw);
  if (rc != SQLITE_OK)
    throw Error(ExitCode::failure, fmt::format("cannot open {} {}: {}", options_.label, path,
                                               raw ? sqlite3_errmsg(raw) : "out of memory"));
  sqlite3_busy_timeout(raw, options_.busy_timeout_ms);
  // While another connection switches the same file to WAL, SQLite can answer busy without consulting the
  // busy handler: retry for about as long as the busy timeout.
  for (int waited_ms = 0;; waited_ms += 50) {
    rc = sqlite3_exec(raw, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) break;
    if (!is_busy(rc) || waited_ms >= options_.busy_timeout_ms) fail("PRAGMA journal_mode=WAL");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Db::fail(int rc, std::string_view what, std::string_view message) const {
  if (is_busy(rc))
    throw Busy(options_.busy_code, fmt::format("the {} is busy ({}: {})", options_.label, what, message));
  throw Error(ExitCode::failure, fmt::format("{}: {}: {}", options_.label, what, message));
}

void Db::fail(std::string_view what) const {
  fail(sqlite3_extended_errcode(handle_.get()), what, sqlite3_errmsg(handle_.get()));
}

void Db::exec(std::string_view sql) {
  std::string text(sql);
  char* message = nullptr;
  if (int rc = sqlite3_exec(handle_.get(), text.c_str(), nullptr, nullptr, &message); rc != SQLITE_OK) {
    std::string m = message ? message : "unknown error";
    sqlite3_free(message);
    fail(rc, "exec", m);
  }
}

Statement Db::prepare(std::string_view sql) { return Statement(*this, sql); }

ReusedStatement Db::cached(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) it = cache_.emplace(sql, std::make_unique<Statement>(*this, sql)).first;
  return ReusedStatement(*it->second);
}

void Db::exec_cached(const std::string& sql) {
  auto statement = cached(sql);
  while (statement->step()) {
  }
}

Statement::Statement(const Db& db, std::string_view sql) : db_(&db) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db.raw(), sql.data(), static_cast<int>(sql.size()), &raw, nullptr) != SQLITE_OK)
    db.fail(fmt::format("prepare '{}'", sql.substr(0, 60)));
  stmt_.reset(raw);
}

Statement& Statement::bind(int index, std::string_view text) {
  if (sqlite3_bind_text(stmt_.get(), index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK)
    db_->fail("bind");
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_.get(), index, value) != SQLITE_OK) db_->fail("bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_.get(), index, value) != SQLITE_OK) db_->fail("bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(stmt_.get(), index);
  return *this;
}

Statement& Statement::bind_optional(int index, const std::optional<std::string>& text) {
  return text ? bind(index, *text) : bind_null(index);
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  if (rc == SQLITE_CONSTRAINT)
    throw Error(ExitCode::conflict, fmt::format("conflict: {}", sqlite3_errmsg(db_->raw())));
  db_->fail("step");
}

std::string Statement::text(int column) const {
  auto* p = sqlite3_column_text(stmt_.get(), column);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_.get(), column)))
           : std::string();
}

std::optional<std::string> Statement::optional_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

}  // namespace kiln::sqlite
