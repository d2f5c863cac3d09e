// A store's pool of connections, and the connection of it that this thread holds while any store call or
// unit of work on it runs: the calls of one request (one thread) share the connection and so its
// transaction. One template each for both backends (SqliteStore, PgStore).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace kiln::service {

// The idle connections of a store and how many are open (idle or held). At most max_open are open at once
// (0: no limit): acquire() waits for one to be released.
template <class Connection>
class ConnectionPool {
 public:
  ConnectionPool(std::size_t max_idle, int max_open) : max_idle_(max_idle), max_open_(max_open) {}
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // An idle connection, else a new one from `open` (called outside the lock; it may throw).
  template <class Open>
  Connection* acquire(Open open) {
    std::unique_lock lock(mutex_);
    free_.wait(lock, [&] { return !idle_.empty() || max_open_ == 0 || open_ < max_open_; });
    if (!idle_.empty()) {
      auto* connection = idle_.back().release();
      idle_.pop_back();
      return connection;
    }
    ++open_;
    lock.unlock();
    try {
      return open();
    } catch (...) {
      lock.lock();
      --open_;
      free_.notify_one();
      throw;
    }
  }

  // A connection back from its holder: idle again when `reusable` and fewer than max_idle are idle, else
  // closed.
  void release(Connection* connection, bool reusable) {
    std::unique_ptr<Connection> owned(connection);
    std::lock_guard lock(mutex_);
    if (reusable && idle_.size() < max_idle_)
      idle_.push_back(std::move(owned));
    else
      --open_;  // closed as `owned` goes
    free_.notify_one();
  }

 private:
  std::size_t max_idle_;
  int max_open_;
  std::mutex mutex_;
  std::condition_variable free_;
  std::vector<std::unique_ptr<Connection>> idle_;
  int open_ = 0;
};

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
