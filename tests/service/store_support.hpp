// What service tests need of either store backend (SQLite, PostgreSQL) beyond the Store seam.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "service/pg_store.hpp"
#include "service/sqlite_store.hpp"
#include "service/store.hpp"

namespace kiln::test {

// The tally of a deployment counted afresh from its group's devices (what the store keeps up to date).
inline service::RolloutTally recount_tally(service::Store& store, const service::Deployment& deployment) {
  if (auto* pg = dynamic_cast<service::PgStore*>(&store)) return pg->recount_rollout_tally(deployment);
  if (auto* sqlite = dynamic_cast<service::SqliteStore*>(&store)) return sqlite->recount_rollout_tally(deployment);
  throw std::logic_error("a store of an unknown backend");
}

}  // namespace kiln::test
