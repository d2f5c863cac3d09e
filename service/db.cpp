// sqlite3 wrapper: every failure becomes a kiln::Error naming the statement's purpose.
#include "service/db.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "core/error.hpp"
#include "service/store.hpp"

namespace kiln::service {
namespace {

// Busy (another writer held the database past busy_timeout_ms) is a store that cannot serve now: 503 with
// Retry-After, which clients retry; anything else is a failure.
[[noreturn]] void fail(int rc, std::string_view what, const char* message) {
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
    throw StoreUnavailable(fmt::format("the database is busy ({}: {})", what, message), "send the request again");
  throw Error(ExitCode::failure, fmt::format("database: {}: {}", what, message));
}

[[noreturn]] void fail(sqlite3* db, std::string_view what) { fail(sqlite3_extended_errcode(db), what, sqlite3_errmsg(db)); }

// The database holds token hashes, device keys and claim state: only the service's user may read it.
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

Db::Db(const std::string& path) {
  restrict_to_owner(path);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  handle_.reset(raw);
  if (rc != SQLITE_OK)
    throw Error(ExitCode::failure, fmt::format("cannot open database {}: {}", path, raw ? sqlite3_errmsg(raw) : "?"));
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
  exec("PRAGMA secure_delete=ON");  // deleted challenges and replaced keys do not linger in free pages
}

void Db::exec(std::string_view sql) {
  std::string text(sql);
  char* message = nullptr;
  if (int rc = sqlite3_exec(handle_.get(), text.c_str(), nullptr, nullptr, &message); rc != SQLITE_OK) {
    std::string m = message ? message : "unknown error";
    sqlite3_free(message);
    fail(rc, "exec", m.c_str());
  }
}

Statement Db::prepare(std::string_view sql) { return Statement(handle_.get(), sql); }

ReusedStatement Db::cached(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) it = cache_.emplace(sql, std::make_unique<Statement>(handle_.get(), sql)).first;
  return ReusedStatement(*it->second);
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &raw, nullptr) != SQLITE_OK)
    fail(db, fmt::format("prepare '{}'", sql.substr(0, 60)));
  stmt_.reset(raw);
}

Statement& Statement::bind(int index, std::string_view text) {
  if (sqlite3_bind_text(stmt_.get(), index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK)
    fail(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_.get(), index, value) != SQLITE_OK) fail(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_.get(), index, value) != SQLITE_OK) fail(db_, "bind");
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
  if (rc == SQLITE_CONSTRAINT) throw Error(ExitCode::conflict, fmt::format("conflict: {}", sqlite3_errmsg(db_)));
  fail(db_, "step");
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

}  // namespace kiln::service
