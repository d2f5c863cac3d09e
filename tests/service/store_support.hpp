// What service tests need of either store backend (SQLite, PostgreSQL) beyond the Store seam.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "service/pg_store.hpp"
#include "service/sqlite_store.hpp"
#include "service/store.hpp"

namespace kiln::test {

// Opening a store whose schema version is `newer` than this release knows is refused with what users can act
// on: the conflict code, a message naming the version, a hint.
template <typename Open>
void check_refuses_newer_schema(Open open, int newer) {
  try {
    open();
    FAIL("a newer store was opened");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
    std::string message = e.what();
    CHECK(message.find("schema version " + std::to_string(newer)) != std::string::npos);
    CHECK(message.find("newer than this kiln-service") != std::string::npos);
    CHECK_FALSE(e.hint().empty());
  }
}

// The tally of a deployment counted afresh from its group's devices (what the store keeps up to date).
inline service::RolloutTally recount_tally(service::Store& store, const service::Deployment& deployment) {
  if (auto* pg = dynamic_cast<service::PgStore*>(&store)) return pg->recount_rollout_tally(deployment);
  if (auto* sqlite = dynamic_cast<service::SqliteStore*>(&store)) return sqlite->recount_rollout_tally(deployment);
  throw std::logic_error("a store of an unknown backend");
}

// The tally the store kept equals one counted afresh: devices, and each wave's devices and reports.
inline void check_same(const service::RolloutTally& kept, const service::RolloutTally& counted) {
  CHECK(kept.devices == counted.devices);
  REQUIRE(kept.waves.size() == counted.waves.size());
  for (std::size_t i = 0; i < kept.waves.size(); ++i) {
    INFO("wave " << i + 1);
    CHECK(kept.waves[i].devices == counted.waves[i].devices);
    CHECK(kept.waves[i].reported == counted.waves[i].reported);
  }
}

// Deployment `id` of `tenant` in the store at `database`: its kept tally, checked against a recount.
inline service::RolloutTally checked_tally(const std::string& database, std::int64_t tenant, const std::string& id) {
  auto store = service::open_store(database);
  auto deployment = store->find_deployment(tenant, id);
  REQUIRE(deployment);
  auto kept = store->rollout_tally(*deployment);
  check_same(kept, recount_tally(*store, *deployment));
  return kept;
}

}  // namespace kiln::test
