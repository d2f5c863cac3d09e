// service/write_turns.hpp: writers get the store in the order they asked for it, a waiter that gives up leaves
// the queue without delaying the ones behind it. Threads are ordered by what the turns report (queued()), never
// by sleeping.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include "service/write_turns.hpp"

using kiln::service::WriteTurns;
using namespace std::chrono_literals;

TEST_CASE("write turns go in arrival order, not to whoever asks again first") {
  WriteTurns turns;
  REQUIRE(turns.acquire(1s));  // the importer holds the store
  std::mutex order_mutex;
  std::vector<std::size_t> order;
  std::vector<std::thread> waiters;
  for (std::size_t i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      REQUIRE(turns.acquire(10s));
      {
        std::lock_guard lock(order_mutex);
        order.push_back(i);
      }
      turns.release();
    });
    // Each waiter holds its ticket before the next one starts (the importer holds one, and i earlier waiters).
    while (turns.queued() < i + 2) std::this_thread::yield();
  }
  // The importer ends its part and at once asks for the next one: it queues behind the three.
  turns.release();
  REQUIRE(turns.acquire(10s));
  {
    std::lock_guard lock(order_mutex);
    CHECK(order == std::vector<std::size_t>{0, 1, 2});
  }
  turns.release();
  for (auto& waiter : waiters) waiter.join();
}

TEST_CASE("a waiter that gives up does not hold the turns behind it") {
  WriteTurns turns;
  REQUIRE(turns.acquire(1s));
  CHECK_FALSE(turns.acquire(30ms));  // gives up while the store is held
  std::atomic<bool> got{false};
  std::thread later([&] {
    got = turns.acquire(10s);
    turns.release();
  });
  while (turns.queued() < 2) std::this_thread::yield();  // `later` holds the ticket after the given-up one
  turns.release();  // the given-up ticket is skipped: `later` goes next
  later.join();
  CHECK(got);
  // And the store is free again.
  CHECK(turns.acquire(100ms));
  turns.release();
}
