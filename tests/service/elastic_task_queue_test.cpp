// Tests for service/elastic_task_queue: threads grow with the work up to max_threads (more tasks wait, none
// is lost), the ones beyond min_threads retire when idle, and shutdown runs what is queued before it returns.
// Threads are counted in /proc/self/task: the queue's threads are detached and have no other handle.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "service/elastic_task_queue.hpp"

using kiln::service::ElasticTaskQueue;
using namespace std::chrono_literals;

namespace {

std::size_t process_threads() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// The process's threads once no thread is still starting or ending (earlier cases' threads may be on their
// way out): the count, unchanged over 100 ms (five seconds at the most).
std::size_t settled_threads() {
  auto count = process_threads();
  for (auto deadline = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(100ms);
    auto now = process_threads();
    if (now == count) break;
    count = now;
  }
  return count;
}

// Polls `done` for up to five seconds (threads start and exit asynchronously).
bool eventually(const std::function<bool()>& done) {
  for (auto deadline = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(5ms))
    if (done()) return true;
  return done();
}

// Tasks that hold their thread until released, counting how many run at once and how many have run.
struct Blockers {
  std::mutex mutex;
  std::condition_variable changed;
  bool released = false;
  int running = 0, most_at_once = 0, finished = 0;

  std::function<void()> task() {
    return [this] {
      std::unique_lock lock(mutex);
      most_at_once = std::max(most_at_once, ++running);
      changed.notify_all();
      changed.wait(lock, [this] { return released; });
      --running;
      ++finished;
    };
  }
  bool wait_running(int n) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, 5s, [&] { return running == n; });
  }
  void release() {
    std::lock_guard lock(mutex);
    released = true;
    changed.notify_all();
  }
};

// Releases the blockers when a case ends early (a failed REQUIRE), before the queue's shutdown waits for them.
struct ReleaseAtExit {
  Blockers& blockers;
  ~ReleaseAtExit() { blockers.release(); }
};

ElasticTaskQueue::Options options(std::size_t min_threads, std::size_t max_threads,
                                  std::chrono::milliseconds idle_timeout = 10s) {
  return {.min_threads = min_threads, .max_threads = max_threads, .stack_bytes = std::size_t{256} << 10,
          .idle_timeout = idle_timeout};
}

}  // namespace

TEST_CASE("elastic task queue: starts min_threads, grows a thread per waiting task, never beyond max_threads") {
  auto before = settled_threads();
  Blockers blockers;
  {
    ElasticTaskQueue queue(options(2, 4));
    ReleaseAtExit guard{blockers};
    CHECK(eventually([&] { return process_threads() == before + 2; }));
    for (int i = 0; i < 6; ++i) queue.enqueue(blockers.task());
    REQUIRE(blockers.wait_running(4));  // four at once: two more threads than min_threads
    std::this_thread::sleep_for(50ms);
    CHECK(process_threads() == before + 4);  // the other two tasks wait for a thread
    blockers.release();
    queue.shutdown();
  }
  CHECK(blockers.most_at_once == 4);
  CHECK(blockers.finished == 6);  // the waiting tasks ran too
  CHECK(eventually([&] { return process_threads() <= before; }));
}

TEST_CASE("elastic task queue: threads beyond min_threads retire after idle_timeout, min_threads stay") {
  auto before = settled_threads();
  ElasticTaskQueue queue(options(1, 8, 30ms));
  Blockers blockers;
  ReleaseAtExit guard{blockers};
  for (int i = 0; i < 5; ++i) queue.enqueue(blockers.task());
  REQUIRE(blockers.wait_running(5));
  CHECK(process_threads() >= before + 5);  // a thread each (one more if a task came before the first was idle)
  blockers.release();
  CHECK(eventually([&] { return process_threads() == before + 1; }));
  std::this_thread::sleep_for(100ms);  // several idle timeouts: the last one is kept
  CHECK(process_threads() == before + 1);

  // An idle queue grows again when work comes.
  std::atomic<int> ran = 0;
  for (int i = 0; i < 3; ++i) queue.enqueue([&] { ++ran; });
  CHECK(eventually([&] { return ran == 3; }));
}

TEST_CASE("elastic task queue: shutdown runs every queued task before it returns, then no thread is left") {
  auto before = settled_threads();
  Blockers blockers;
  std::atomic<int> ran = 0;
  ElasticTaskQueue queue(options(0, 1));
  ReleaseAtExit guard{blockers};
  queue.enqueue(blockers.task());
  REQUIRE(blockers.wait_running(1));
  for (int i = 0; i < 5; ++i) queue.enqueue([&] { ++ran; });  // wait behind the blocker: one thread at most
  CHECK(ran == 0);
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    blockers.release();
  });
  queue.shutdown();
  releaser.join();
  CHECK(blockers.finished == 1);
  CHECK(ran == 5);
  CHECK(eventually([&] { return process_threads() <= before; }));
}

TEST_CASE("elastic task queue: max_threads 0 means one, min_threads above max_threads is max_threads") {
  auto before = settled_threads();
  Blockers blockers;
  ElasticTaskQueue queue(options(3, 0));
  ReleaseAtExit guard{blockers};
  CHECK(eventually([&] { return process_threads() == before + 1; }));
  queue.enqueue(blockers.task());
  queue.enqueue(blockers.task());
  REQUIRE(blockers.wait_running(1));
  std::this_thread::sleep_for(50ms);  // time for a second thread, were one allowed
  blockers.release();
  queue.shutdown();
  CHECK(blockers.most_at_once == 1);
  CHECK(blockers.finished == 2);
}
