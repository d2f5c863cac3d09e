// A task queue for cpp-httplib whose worker threads grow with demand and shrink when idle.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include <httplib.h>

namespace kiln::service {

// cpp-httplib runs a whole connection (TLS handshake, every keep-alive request) on one task, so a fixed
// pool of N threads is held by N slow or idle clients. Here each connection gets a thread of its own
// (small stack, mostly blocked in poll) up to max_threads; threads beyond min_threads exit after
// idle_timeout without work. At max_threads, connections wait in the queue.
class ElasticTaskQueue : public httplib::TaskQueue {
 public:
  struct Options {
    std::size_t min_threads = 8;
    std::size_t max_threads = 4096;
    // As much as a default thread: cpp-httplib matches routes and Range headers with std::regex, which
    // recurses once per character (an 8 KB path needs about 4 MB). Untouched stack costs no memory.
    std::size_t stack_bytes = std::size_t{8} << 20;
    std::chrono::milliseconds idle_timeout{10000};
  };
  explicit ElasticTaskQueue(Options options);
  ~ElasticTaskQueue() override;
  ElasticTaskQueue(const ElasticTaskQueue&) = delete;
  ElasticTaskQueue& operator=(const ElasticTaskQueue&) = delete;

  void enqueue(std::function<void()> task) override;
  // Runs what is queued, then waits until every thread has finished.
  void shutdown() override;

 private:
  struct State;
  // Shared with the threads, so one that is still returning never touches a destroyed queue.
  std::shared_ptr<State> state_;
};

}  // namespace kiln::service
