// The SQLite backend of the Store seam: one database file, its schema and migrations, every SQL statement.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "service/db.hpp"
#include "service/held_connection.hpp"
#include "service/store.hpp"
#include "service/write_turns.hpp"

namespace kiln::service {

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the database and brings its schema up to this binary's version.
  // A store written by a newer release (a higher schema version) is refused: Error, ExitCode::conflict.
  explicit SqliteStore(const std::string& path);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;
  // The store's schema version, and the one this binary migrates to.
  int schema_version();
  static int latest_schema_version();

#include "service/store_overrides.inc"  // every Store operation, declared override

  // The tally counted afresh from every device of the group (what rollout_tally keeps up to date).
  RolloutTally recount_rollout_tally(const Deployment& deployment);

 private:
  // Requests run on many threads: each holds a connection of the pool while it works (WAL: readers run
  // beside the one writer).
  struct Connection;
  friend class HeldConnection<SqliteStore>;
  using Use = HeldConnection<SqliteStore>;
  class SqliteTransaction;
  Connection& current();  // the connection this thread holds (a Use is alive)
  Db& db();
  Connection* acquire();
  void release(Connection* connection);

  static constexpr std::size_t max_idle_connections = 16;
  std::string path_;
  bool shared_;  // an in-memory database: one connection, shared in turn
  std::uint64_t id_;
  ConnectionPool<Connection> pool_;
  WriteTurns write_turns_;  // this process's write units, in the order they began
};

}  // namespace kiln::service
