// The PostgreSQL backend of the Store seam (libpq): a pool of connections, the schema and its versioned
// migrations, every SQL statement. Write units of work take the store's write lock (a transaction-scoped
// advisory lock, so writers are serialised across every process sharing the database, as SQLite's one
// writer); read units run on a REPEATABLE READ READ ONLY snapshot beside them. A lost connection or a
// database that is down or restarting throws StoreUnavailable (HTTP 503); the pool reconnects by itself.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "service/held_connection.hpp"
#include "service/store.hpp"

namespace kiln::service {

struct PgStoreOptions {
  // A file (mode 0600 or stricter) holding the password; else KILN_STORE_PASSWORD, else libpq's own
  // PGPASSWORD / PGPASSFILE / ~/.pgpass.
  std::string password_file;
  // Tests: migrate no further than this schema version (0: the latest).
  int migrate_to = 0;
};

class PgStore final : public Store {
 public:
  // Connects to the database of the libpq connection URI and brings its schema up to this binary's
  // version (one transaction per migration, under an advisory lock: instances starting together migrate
  // once). A store written by a newer release is refused: Error, ExitCode::conflict. A database that
  // cannot be reached: StoreUnavailable (ExitCode::service).
  explicit PgStore(const std::string& url, PgStoreOptions options = {});
  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;
  int schema_version();
  static int latest_schema_version();

#include "service/store_overrides.inc"  // every Store operation, declared override

  // The tally counted afresh from every device of the group (what rollout_tally keeps up to date).
  RolloutTally recount_rollout_tally(const Deployment& deployment);
  void require_write_order() override;
  // For tests: how many transactions committed without waiting for the disk (Access::telemetry units), and
  // whether the current unit's would wait (what the server says, SHOW synchronous_commit).
  std::uint64_t relaxed_commits() const { return relaxed_commits_; }
  bool commit_durable();
  // For tests: how many statements the server holds prepared for the session of this thread's connection.
  std::int64_t prepared_statements();

 private:
  struct Connection;
  friend class HeldConnection<PgStore>;
  class Use;
  class PgTransaction;
  Connection& current();
  Connection* acquire();
  void release(Connection* connection);
  PGconn* connect();

  static constexpr std::size_t max_idle_connections = 16;
  static constexpr int max_open_connections = 32;
  std::string url_;
  PgStoreOptions options_;
  std::uint64_t id_;
  std::atomic<std::uint64_t> relaxed_commits_{0};
  ConnectionPool<Connection> pool_;
};

}  // namespace kiln::service
