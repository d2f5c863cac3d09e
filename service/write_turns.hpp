// Write units of one process take the store in the order they asked for it (a ticket lock that a waiter may
// leave). SQLite lets one writer in at a time and makes the others poll with sleeps: a unit that commits and at
// once begins again (a large import applied part by part) would win nearly every time and starve the check-ins
// waiting between its parts. With turns, each waiter gets the store before the importer's next part.
#pragma once

#include <chrono>
#include <cstddef>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>

namespace kiln::service {

class WriteTurns {
 public:
  // Waits for this caller's turn; false when `patience` ran out first (the caller then holds nothing, and the
  // turns after it are not delayed by it).
  bool acquire(std::chrono::milliseconds patience) {
    std::unique_lock lock(mutex_);
    std::uint64_t ticket = next_++;
    if (wake_.wait_for(lock, patience, [&] { return serving_ == ticket; })) return true;
    given_up_.insert(ticket);
    return false;
  }
  // Ends the current turn: the longest waiter that is still waiting goes next.
  void release() {
    {
      std::lock_guard lock(mutex_);
      ++serving_;
      while (given_up_.erase(serving_) > 0) ++serving_;
    }
    wake_.notify_all();
  }
  // Callers holding or waiting for a turn (not those that gave up): what a test waits on to know a caller is queued.
  std::size_t queued() {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(next_ - serving_) - given_up_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::uint64_t next_ = 0, serving_ = 0;
  std::set<std::uint64_t> given_up_;
};

}  // namespace kiln::service
