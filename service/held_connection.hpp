// The connection of a store's pool that this thread holds while any store call or unit of work on it runs:
// the calls of one request (one thread) share the connection and so its transaction. One template for both
// backends (SqliteStore, PgStore).
#pragma once

#include <cstdint>
#include <map>
#include <utility>

namespace kiln::service {

// Pool: a store with a nested `Connection`, `Connection* acquire()`, `void release(Connection*)` and an `id_`
// unique among the pools of the process; it names HeldConnection<Pool> its friend. The first HeldConnection
// of a thread on a pool acquires a connection, the last to go releases it.
template <class Pool>
class HeldConnection {
 public:
  using Connection = typename Pool::Connection;

  explicit HeldConnection(Pool& pool) : pool_(pool) {
    auto& slot = held()[pool_.id_];
    if (slot.second++ == 0) {
      try {
        slot.first = pool_.acquire();
      } catch (...) {
        held().erase(pool_.id_);
        throw;
      }
    }
  }
  ~HeldConnection() {
    auto it = held().find(pool_.id_);
    if (--it->second.second == 0) {
      pool_.release(it->second.first);
      held().erase(it);
    }
  }
  HeldConnection(const HeldConnection&) = delete;
  HeldConnection& operator=(const HeldConnection&) = delete;

  // The connection this thread holds on the pool `pool_id` (a HeldConnection on it is alive).
  static Connection& current(std::uint64_t pool_id) { return *held().at(pool_id).first; }
  Connection& connection() const { return current(pool_.id_); }

 private:
  // Per thread: pool id -> the connection held, and how many HeldConnections hold it.
  static std::map<std::uint64_t, std::pair<Connection*, int>>& held() {
    static thread_local std::map<std::uint64_t, std::pair<Connection*, int>> by_pool;
    return by_pool;
  }

  Pool& pool_;
};

}  // namespace kiln::service
