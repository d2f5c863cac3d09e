// ElasticTaskQueue: detached pthreads with a small stack, started on demand, retired when idle.
#include "service/elastic_task_queue.hpp"

#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>

namespace kiln::service {

struct ElasticTaskQueue::State {
  Options options;
  std::mutex mutex;
  std::condition_variable work;      // a task was queued, or shutdown
  std::condition_variable finished;  // a thread ended
  std::deque<std::function<void()>> tasks;
  std::size_t threads = 0, idle = 0;
  bool stopping = false;
  bool warned_at_max = false;

  // Called with the mutex held.
  bool start_thread(const std::shared_ptr<State>& self) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, options.stack_bytes);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    auto* arg = new std::shared_ptr<State>(self);
    pthread_t thread;
    int result = pthread_create(&thread, &attr, &State::run, arg);
    pthread_attr_destroy(&attr);
    if (result != 0) {
      delete arg;
      return false;
    }
    ++threads;
    return true;
  }

  static void* run(void* arg) {
    std::shared_ptr<State> self = std::move(*static_cast<std::shared_ptr<State>*>(arg));
    delete static_cast<std::shared_ptr<State>*>(arg);
    self->work_loop();
    return nullptr;
  }

  void work_loop() {
    std::unique_lock lock(mutex);
    for (;;) {
      while (tasks.empty() && !stopping) {
        ++idle;
        auto status = work.wait_for(lock, options.idle_timeout);
        --idle;
        if (status == std::cv_status::timeout && tasks.empty() && threads > options.min_threads) break;
      }
      if (tasks.empty()) break;  // stopping, or idle beyond min_threads
      auto task = std::move(tasks.front());
      tasks.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // destroy the task's captures before the lock is taken again
      lock.lock();
    }
    --threads;
    finished.notify_all();
  }
};

ElasticTaskQueue::ElasticTaskQueue(Options options) : state_(std::make_shared<State>()) {
  state_->options = options;
  if (state_->options.max_threads < 1) state_->options.max_threads = 1;
  if (state_->options.min_threads > state_->options.max_threads)
    state_->options.min_threads = state_->options.max_threads;
  std::lock_guard lock(state_->mutex);
  for (std::size_t i = 0; i < state_->options.min_threads; ++i) state_->start_thread(state_);
}

ElasticTaskQueue::~ElasticTaskQueue() {
  shutdown();
}

void ElasticTaskQueue::enqueue(std::function<void()> task) {
  std::unique_lock lock(state_->mutex);
  state_->tasks.push_back(std::move(task));
  if (state_->idle >= state_->tasks.size() || state_->threads >= state_->options.max_threads) {
    if (state_->threads >= state_->options.max_threads && state_->idle < state_->tasks.size() &&
        !state_->warned_at_max) {
      state_->warned_at_max = true;
      std::cerr << "kiln-service: all " << state_->options.max_threads
                << " connection threads are busy; new connections wait (raise --max-threads?)" << std::endl;
    }
    state_->work.notify_one();
    return;
  }
  if (!state_->start_thread(state_)) state_->work.notify_one();  // out of threads: an existing one takes it later
  if (state_->threads == 0) {
    // Not even one thread could start: run the task here rather than drop the connection.
    auto next = std::move(state_->tasks.back());
    state_->tasks.pop_back();
    lock.unlock();
    next();
  }
}

void ElasticTaskQueue::shutdown() {
  std::unique_lock lock(state_->mutex);
  state_->stopping = true;
  state_->work.notify_all();
  state_->finished.wait(lock, [this] { return state_->threads == 0; });
}

}  // namespace kiln::service
