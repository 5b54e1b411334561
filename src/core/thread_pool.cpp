// The worker pool (see thread_pool.hpp).
//
// Locking: State::mutex guards every State member but options. Workers wait on job_ready;
// submit() wakes one waiter per job, shutdown() wakes all. A job runs with the mutex released.
// A worker that retires (elastic pools) records its thread id in `retired` as its very last
// step and returns; its std::thread is joined by the next submit() or shutdown(), so joining it
// never waits for its exit hook. shutdown(wait=true) joins every worker except the calling
// thread (a job may shut its own pool down); that one, if any, is detached by the destructor and
// keeps State alive through its shared_ptr until it returns.
#include "core/thread_pool.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <thread>

namespace turboloop::core {

struct ThreadPool::State {
  explicit State(Options options) : options(std::move(options)) {}

  const Options options;
  std::mutex mutex;
  std::condition_variable job_ready;
  std::deque<std::unique_ptr<Job>> queue;
  std::vector<std::thread> threads;
  std::vector<std::thread::id> retired;
  std::size_t workers = 0;
  std::size_t idle = 0;
  std::size_t started = 0;
  bool shutting_down = false;

  // Precondition: mutex held.
  void join_retired() {
    for (auto id : retired) {
      auto found = std::find_if(threads.begin(), threads.end(), [&](std::thread& t) { return t.get_id() == id; });
      if (found == threads.end()) continue;
      found->join();  // it is returning from work() already
      threads.erase(found);
    }
    retired.clear();
  }
};

ThreadPool::ThreadPool(Options options) : state_(std::make_shared<State>(std::move(options))) {}

ThreadPool::~ThreadPool() {
  shutdown(/*wait=*/true, /*cancel_pending=*/false);
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (auto& thread : state_->threads) thread.detach();  // only the calling thread can be left
}

std::unique_ptr<Job> ThreadPool::submit(std::unique_ptr<Job> job) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.shutting_down) return job;
  s.join_retired();
  s.queue.push_back(std::move(job));
  if (s.idle >= s.queue.size()) {
    s.job_ready.notify_one();
  } else if (s.workers < s.options.max_workers) {
    ++s.workers;
    const std::size_t number = s.started++;
    s.threads.emplace_back([state = state_, number] { work(state, number); });
  }
  return nullptr;
}

std::vector<std::unique_ptr<Job>> ThreadPool::shutdown(bool wait, bool cancel_pending) {
  State& s = *state_;
  std::vector<std::unique_ptr<Job>> cancelled;
  std::vector<std::thread> to_join;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.shutting_down = true;
    if (cancel_pending) {
      for (auto& job : s.queue) cancelled.push_back(std::move(job));
      s.queue.clear();
    }
    s.job_ready.notify_all();
    if (wait) {
      const auto self = std::this_thread::get_id();
      auto others_end =
          std::partition(s.threads.begin(), s.threads.end(), [&](std::thread& t) { return t.get_id() != self; });
      std::move(s.threads.begin(), others_end, std::back_inserter(to_join));
      s.threads.erase(s.threads.begin(), others_end);
      s.retired.clear();
    }
  }
  for (auto& thread : to_join) thread.join();
  return cancelled;
}

ThreadPool::Stats ThreadPool::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return Stats{state_->workers, state_->idle, state_->queue.size(), state_->started};
}

void ThreadPool::work(const std::shared_ptr<State>& state, std::size_t worker_number) {
  State& s = *state;
  if (s.options.on_start) s.options.on_start(worker_number);
  std::unique_lock<std::mutex> lock(s.mutex);
  for (;;) {
    while (s.queue.empty() && !s.shutting_down) {
      ++s.idle;
      const bool elastic = s.options.idle_timeout_seconds >= 0 && s.workers > s.options.min_workers;
      bool timed_out = false;
      if (elastic) {
        const auto timeout = std::chrono::duration<double>(s.options.idle_timeout_seconds);
        timed_out = s.job_ready.wait_for(lock, timeout) == std::cv_status::timeout;
      } else {
        s.job_ready.wait(lock);
      }
      --s.idle;
      if (timed_out && s.queue.empty() && !s.shutting_down && s.workers > s.options.min_workers) {
        --s.workers;
        lock.unlock();
        if (s.options.on_exit) s.options.on_exit();
        lock.lock();
        s.retired.push_back(std::this_thread::get_id());
        return;
      }
    }
    if (s.queue.empty()) break;  // shutting down, nothing left to run
    std::unique_ptr<Job> job = std::move(s.queue.front());
    s.queue.pop_front();
    lock.unlock();
    job->run();
    job.reset();
    lock.lock();
  }
  --s.workers;
  lock.unlock();
  if (s.options.on_exit) s.options.on_exit();
}

}  // namespace turboloop::core
