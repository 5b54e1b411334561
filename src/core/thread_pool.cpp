// The worker pool (see thread_pool.hpp).
//
// Locking: State::mutex guards every State member but options. Workers wait on job_ready;
// submit() wakes one waiter per job, shutdown() wakes all. A job runs with the mutex released.
// Workers are counted, not joined: a worker decrements `workers` as the last thing it does under
// the mutex and signals worker_exited, and shutdown(wait=true) waits for that count to reach
// zero (one, when a job shuts its own pool down). Everything a worker touches lives in State,
// which each worker co-owns, so workers may outlive the ThreadPool object: destroying it only
// stops the pool, and the workers finish the queue on their own.
#include "core/thread_pool.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "core/clock.hpp"

namespace turboloop::core {
namespace {

// The pool whose worker loop the current thread runs, if any.
thread_local const void* current_pool = nullptr;

}  // namespace

struct ThreadPool::State {
  explicit State(Options options) : options(std::move(options)) {}

  const Options options;
  std::mutex mutex;
  std::condition_variable job_ready;
  std::condition_variable worker_exited;
  std::deque<std::unique_ptr<Job>> queue;
  std::size_t workers = 0;
  std::size_t idle = 0;
  std::size_t started = 0;
  std::uint64_t jobs_started = 0;
  std::int64_t total_wait_ns = 0;
  std::int64_t longest_wait_ns = 0;
  bool shutting_down = false;
};

ThreadPool::ThreadPool(Options options) : state_(std::make_shared<State>(std::move(options))) {}

ThreadPool::~ThreadPool() { shutdown(/*wait=*/false, /*cancel_pending=*/false); }

std::unique_ptr<Job> ThreadPool::submit(std::unique_ptr<Job> job) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.shutting_down) return job;
  job->queued_at_ns_ = monotonic_ns();
  s.queue.push_back(std::move(job));
  if (s.idle >= s.queue.size()) {
    s.job_ready.notify_one();
    return nullptr;
  }
  if (s.workers >= s.options.max_workers) return nullptr;
  ++s.workers;
  const std::size_t number = s.started++;
  lock.unlock();
  WorkerBody body = [state = state_, number] { work(state, number); };
  try {
    if (s.options.launch)
      s.options.launch(std::move(body));
    else
      std::thread(std::move(body)).detach();
  } catch (...) {
    // No thread started: the job stays queued for the workers there are, and the caller hears
    // why (the stdlib's submit raises when a thread cannot start, too).
    lock.lock();
    --s.workers;
    s.worker_exited.notify_all();
    throw;
  }
  return nullptr;
}

std::vector<std::unique_ptr<Job>> ThreadPool::shutdown(bool wait, bool cancel_pending) {
  State& s = *state_;
  std::vector<std::unique_ptr<Job>> cancelled;
  std::unique_lock<std::mutex> lock(s.mutex);
  s.shutting_down = true;
  if (cancel_pending) {
    for (auto& job : s.queue) cancelled.push_back(std::move(job));
    s.queue.clear();
  }
  s.job_ready.notify_all();
  if (wait) {
    const std::size_t self = current_pool == &s ? 1 : 0;
    s.worker_exited.wait(lock, [&] { return s.workers <= self; });
  }
  return cancelled;
}

std::vector<std::unique_ptr<Job>> ThreadPool::take_pending() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  std::vector<std::unique_ptr<Job>> pending;
  for (auto& job : state_->queue) pending.push_back(std::move(job));
  state_->queue.clear();
  return pending;
}

ThreadPool::Stats ThreadPool::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  const State& s = *state_;
  return Stats{s.workers,
               s.idle,
               s.queue.size(),
               s.started,
               s.jobs_started,
               static_cast<double>(s.total_wait_ns) * 1e-9,
               static_cast<double>(s.longest_wait_ns) * 1e-9};
}

std::unique_ptr<Job> ThreadPool::take_front(State& s) {
  std::unique_ptr<Job> job = std::move(s.queue.front());
  s.queue.pop_front();
  const std::int64_t waited = monotonic_ns() - job->queued_at_ns_;
  ++s.jobs_started;
  s.total_wait_ns += waited;
  if (waited > s.longest_wait_ns) s.longest_wait_ns = waited;
  return job;
}

void ThreadPool::work(const std::shared_ptr<State>& state, std::size_t worker_number) {
  State& s = *state;
  current_pool = &s;
  // Set when take_next() found the queue empty: the worker counts as idle from then on, while
  // its job may still be finishing (for the binding, before it lets go of the GIL), so that a
  // submit() that the job's completion triggers reuses this worker instead of starting another,
  // as the stdlib's pool does.
  bool counted_idle = false;
  const Job::TakeNext take_next = [&s, &counted_idle]() -> std::unique_ptr<Job> {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.queue.empty()) {
      if (!counted_idle) ++s.idle;
      counted_idle = true;
      return nullptr;
    }
    if (counted_idle) --s.idle;
    counted_idle = false;
    return take_front(s);
  };
  std::unique_ptr<Job> claimed;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.queue.empty()) {
      claimed = take_front(s);
    }
  }
  const bool ready = !s.options.on_start || s.options.on_start(worker_number);
  if (!ready && claimed) {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.queue.push_front(std::move(claimed));
  }
  if (!ready && s.options.on_start_failed) s.options.on_start_failed();
  if (claimed) {
    claimed->run(take_next);
    claimed.reset();
  }
  std::unique_lock<std::mutex> lock(s.mutex);
  if (counted_idle) --s.idle;
  counted_idle = false;
  while (ready) {
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
      if (timed_out && s.queue.empty() && !s.shutting_down && s.workers > s.options.min_workers) break;
    }
    if (s.queue.empty()) break;  // retiring, or shutting down with nothing left to run
    std::unique_ptr<Job> job = take_front(s);
    lock.unlock();
    job->run(take_next);
    job.reset();
    lock.lock();
    if (counted_idle) --s.idle;
    counted_idle = false;
  }
  --s.workers;
  current_pool = nullptr;
  lock.unlock();
  if (s.options.on_exit) s.options.on_exit();
  // Notified last, so that shutdown(wait=true) returns only once no hook is running.
  lock.lock();
  s.worker_exited.notify_all();
}

}  // namespace turboloop::core
