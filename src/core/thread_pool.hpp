// A pool of worker threads fed by one FIFO work queue: fixed (threads start on demand and live
// until shutdown, as concurrent.futures.ThreadPoolExecutor's) or elastic (a worker idle for
// longer than idle_timeout exits, but never below min_workers). Python-free: jobs are opaque,
// and the binding supplies how a thread is started and what each worker does first, which is
// how workers become real Python threads that wait for work without the GIL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace turboloop::core {

class Job {
 public:
  // Returns the next queued job, or nullptr when none is waiting.
  using TakeNext = std::function<std::unique_ptr<Job>()>;

  virtual ~Job() = default;
  // Runs the job. A job may call `take_next` and run what it returns on the same thread at once:
  // the binding does, to keep the GIL across jobs that are already queued.
  virtual void run(const TakeNext& take_next) = 0;

 private:
  friend class ThreadPool;
  std::int64_t queued_at_ns_ = 0;  // when submit() queued it, for the pool's task latency
};

class ThreadPool {
 public:
  using WorkerBody = std::function<void()>;

  struct Options {
    std::size_t max_workers = 1;
    std::size_t min_workers = 0;
    // How long an idle worker above min_workers waits for a job before it exits; negative means
    // forever (the stdlib executor's behaviour).
    double idle_timeout_seconds = -1.0;
    // Starts a thread that calls `body` (which returns when the worker exits). The default
    // starts a detached std::thread.
    std::function<void(WorkerBody body)> launch;
    // Runs first on each worker, numbered from 0, once the worker has claimed the job it was
    // started for (so that a shutdown right after submit() cannot cancel that job, as with the
    // stdlib's pool). Returning false ends the worker: its claimed job goes back to the front of
    // the queue and then on_start_failed runs.
    std::function<bool(std::size_t worker_number)> on_start;
    std::function<void()> on_start_failed;
    // Runs last on each worker.
    std::function<void()> on_exit;
  };

  struct Stats {
    std::size_t workers;          // worker loops running
    std::size_t idle;             // workers waiting for a job
    std::size_t queued;           // jobs not yet started
    std::size_t started;          // workers ever started
    std::uint64_t jobs_started;   // jobs a worker has taken from the queue
    double total_wait_seconds;    // their time in the queue, summed
    double longest_wait_seconds;  // the longest of those
  };

  explicit ThreadPool(Options options);
  // Stops the pool as shutdown(wait=false) does: the workers finish the queue, then exit.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues a job and starts a worker if none is idle and the pool is below max_workers. Returns
  // the job back, not queued, once shutdown has begun.
  std::unique_ptr<Job> submit(std::unique_ptr<Job> job);

  // Stops accepting jobs. With cancel_pending, the jobs not yet started are returned instead of
  // run; otherwise workers finish the queue first. With wait, returns once every worker but the
  // calling one (a job may shut its own pool down) has left its loop.
  std::vector<std::unique_ptr<Job>> shutdown(bool wait, bool cancel_pending);

  // Removes and returns the jobs not yet started, leaving the pool running.
  std::vector<std::unique_ptr<Job>> take_pending();

  Stats stats() const;

 private:
  struct State;
  static void work(const std::shared_ptr<State>& state, std::size_t worker_number);
  // Takes the job at the front of the queue (the state's mutex held), counting its wait.
  static std::unique_ptr<Job> take_front(State& state);

  // Shared with the workers, so that a worker outlives the pool safely when the pool is
  // destroyed from one of its own jobs.
  std::shared_ptr<State> state_;
};

}  // namespace turboloop::core
