// The service's SQLite database: core/sqlite opened with the service's settings (private file, foreign keys).
#pragma once

#include <string>

#include "core/sqlite.hpp"

namespace kiln::service {

// How long a statement waits for another connection's write lock before the database answers busy.
constexpr int busy_timeout_ms = 5000;

using sqlite::ReusedStatement;
using sqlite::Statement;
using sqlite::Transaction;

class Db : public sqlite::Db {
 public:
  // Opens (creating if needed, 0600) the database; WAL mode, foreign keys on, busy timeout set. A database
  // still busy after busy_timeout_ms is sqlite::Busy with ExitCode::service (the API answers 503).
  explicit Db(const std::string& path);
};

}  // namespace kiln::service
