// ThreadPool: every job runs once, sizing (fixed and elastic), shutdown with and without
// waiting or cancelling, hooks on every worker.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "core/thread_pool.hpp"

using turboloop::core::Job;
using turboloop::core::ThreadPool;

namespace {

class FunctionJob : public Job {
 public:
  explicit FunctionJob(std::function<void()> body) : body_(std::move(body)) {}
  void run(const TakeNext&) override { body_(); }

 private:
  std::function<void()> body_;
};

std::unique_ptr<Job> job(std::function<void()> body) { return std::make_unique<FunctionJob>(std::move(body)); }

ThreadPool::Options fixed(std::size_t workers) {
  ThreadPool::Options options;
  options.max_workers = workers;
  return options;
}

void wait_until(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace

TEST_CASE("every job submitted from 8 threads runs exactly once") {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25000;
  std::vector<std::atomic<int>> runs(kThreads * kPerThread);
  std::atomic<int> refused{0};  // Catch2 assertions are not thread-safe: count, check after
  {
    ThreadPool pool(fixed(4));
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t) {
      submitters.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i)
          if (pool.submit(job([&, t, i] { runs[t * kPerThread + i]++; })) != nullptr) refused++;
      });
    }
    for (auto& thread : submitters) thread.join();
    pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  }
  REQUIRE(refused.load() == 0);
  for (auto& count : runs) REQUIRE(count.load() == 1);
}

TEST_CASE("a fixed pool starts threads on demand, never more than max_workers, and keeps them") {
  ThreadPool pool(fixed(3));
  REQUIRE(pool.stats().workers == 0);
  std::atomic<bool> release{false};
  std::atomic<int> running{0};
  for (int i = 0; i < 10; ++i)
    pool.submit(job([&] {
      running++;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }));
  wait_until([&] { return running.load() == 3; });
  REQUIRE(pool.stats().workers == 3);
  REQUIRE(pool.stats().queued == 7);
  release = true;
  wait_until([&] { return pool.stats().queued == 0 && pool.stats().idle == 3; });
  REQUIRE(pool.stats().workers == 3);
  REQUIRE(pool.stats().started == 3);
}

TEST_CASE("an idle worker is reused instead of starting a new thread") {
  ThreadPool pool(fixed(8));
  for (int i = 0; i < 20; ++i) {
    std::atomic<bool> done{false};
    pool.submit(job([&] { done = true; }));
    wait_until([&] { return done.load() && pool.stats().idle == pool.stats().workers; });
  }
  REQUIRE(pool.stats().started == 1);
}

TEST_CASE("an elastic pool retires idle workers down to min_workers, and grows again") {
  ThreadPool::Options options = fixed(4);
  options.min_workers = 1;
  options.idle_timeout_seconds = 0.05;
  ThreadPool pool(options);
  std::atomic<bool> release{false};
  std::atomic<int> running{0};
  for (int i = 0; i < 4; ++i)
    pool.submit(job([&] {
      running++;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }));
  wait_until([&] { return running.load() == 4; });
  release = true;
  wait_until([&] { return pool.stats().workers == 1; });
  REQUIRE(pool.stats().workers == 1);
  std::atomic<int> done{0};
  release = false;
  for (int i = 0; i < 4; ++i)
    pool.submit(job([&] {
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      done++;
    }));
  wait_until([&] { return pool.stats().workers == 4; });
  REQUIRE(pool.stats().workers == 4);
  REQUIRE(pool.stats().started == 7);
  release = true;
  wait_until([&] { return done.load() == 4; });
  REQUIRE(done.load() == 4);
}

TEST_CASE("shutdown without cancelling runs the queue, with cancelling returns what did not start") {
  std::atomic<int> ran{0};
  std::atomic<bool> release{false};
  ThreadPool pool(fixed(1));
  pool.submit(job([&] {
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ran++;
  }));
  for (int i = 0; i < 5; ++i) pool.submit(job([&] { ran++; }));
  wait_until([&] { return pool.stats().queued == 5; });
  release = true;
  auto cancelled = pool.shutdown(/*wait=*/true, /*cancel_pending=*/true);
  REQUIRE(cancelled.size() + static_cast<std::size_t>(ran.load()) == 6);
  REQUIRE(cancelled.size() >= 4);
  REQUIRE(pool.submit(job([] {})) != nullptr);  // refused after shutdown
  REQUIRE(pool.stats().workers == 0);
}

TEST_CASE("shutdown(wait=false) and destruction return at once; the workers still finish the queue") {
  std::atomic<int> ran{0};
  auto pool = std::make_unique<ThreadPool>(fixed(2));
  for (int i = 0; i < 100; ++i)
    pool->submit(job([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      ran++;
    }));
  REQUIRE(pool->shutdown(/*wait=*/false, /*cancel_pending=*/false).empty());
  pool.reset();  // the destructor does not wait either: the workers own what they use
  wait_until([&] { return ran.load() == 100; });
  REQUIRE(ran.load() == 100);
}

TEST_CASE("workers start through the launcher and run on_start first, numbered from 0") {
  std::atomic<int> launched{0};
  std::vector<std::size_t> numbers(4, 99);
  ThreadPool::Options options = fixed(4);
  options.launch = [&](ThreadPool::WorkerBody body) {
    launched++;
    std::thread(std::move(body)).detach();
  };
  options.on_start = [&](std::size_t number) {
    numbers[number] = number;
    return true;
  };
  {
    // Declared before the pool, and the pool waits for its workers: the jobs read them to the end.
    std::atomic<int> running{0};
    std::atomic<bool> release{false};
    ThreadPool pool(options);
    for (int i = 0; i < 4; ++i)
      pool.submit(job([&] {
        running++;
        while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }));
    wait_until([&] { return running.load() == 4; });
    release = true;
    pool.shutdown(true, false);
  }
  REQUIRE(launched.load() == 4);
  REQUIRE(numbers == std::vector<std::size_t>{0, 1, 2, 3});
}

TEST_CASE("a worker whose on_start fails puts its job back, then reports, and take_pending empties the queue") {
  ThreadPool::Options options = fixed(1);
  std::atomic<std::size_t> queued_when_reported{99};
  std::atomic<int> exits{0};
  ThreadPool* pool_address = nullptr;
  options.on_start = [](std::size_t) { return false; };
  options.on_start_failed = [&] { queued_when_reported = pool_address->stats().queued; };
  options.on_exit = [&] { exits++; };
  ThreadPool pool(options);
  pool_address = &pool;
  std::atomic<int> ran{0};
  pool.submit(job([&] { ran++; }));
  wait_until([&] { return pool.stats().workers == 0; });
  REQUIRE(pool.stats().queued == 1);
  REQUIRE(queued_when_reported.load() == 1);
  wait_until([&] { return exits.load() == 1; });
  REQUIRE(exits.load() == 1);
  REQUIRE(pool.take_pending().size() == 1);
  REQUIRE(pool.stats().queued == 0);
  REQUIRE(ran.load() == 0);
}

TEST_CASE("a job may shut down its own pool with wait=true without deadlock") {
  ThreadPool pool(fixed(2));
  std::atomic<bool> done{false};
  pool.submit(job([&] {
    pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
    done = true;
  }));
  wait_until([&] { return done.load(); });
  REQUIRE(done.load());
}

TEST_CASE("a new worker claims its job before on_start, so a shutdown cannot cancel it") {
  ThreadPool::Options options = fixed(1);
  std::atomic<bool> proceed{false};
  std::atomic<bool> in_start{false};
  options.on_start = [&](std::size_t) {
    in_start = true;
    while (!proceed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  ThreadPool pool(options);
  std::atomic<int> ran{0};
  pool.submit(job([&] { ran++; }));
  wait_until([&] { return in_start.load(); });
  REQUIRE(pool.shutdown(/*wait=*/false, /*cancel_pending=*/true).empty());
  proceed = true;
  pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  REQUIRE(ran.load() == 1);
}

TEST_CASE("a worker whose job is finishing counts as idle: the next submit reuses it") {
  // The binding completes a Future at the end of a job; the caller may submit again before the
  // worker is back in its wait. That submit must not start a second thread.
  class SubmitsAgain : public Job {
   public:
    SubmitsAgain(ThreadPool& pool, std::atomic<int>& left) : pool_(pool), left_(left) {}
    void run(const TakeNext& take_next) override {
      if (take_next() == nullptr && --left_ > 0) pool_.submit(std::make_unique<SubmitsAgain>(pool_, left_));
    }

   private:
    ThreadPool& pool_;
    std::atomic<int>& left_;
  };
  ThreadPool pool(fixed(8));
  std::atomic<int> left{50};
  pool.submit(std::make_unique<SubmitsAgain>(pool, left));
  wait_until([&] { return left.load() == 0; });
  pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  REQUIRE(pool.stats().started == 1);
}

TEST_CASE("a job can take the queued jobs and run them on its own thread") {
  // A job that drains the queue: it runs first, and the others run inside it, in order.
  class Draining : public Job {
   public:
    Draining(std::vector<int>& log, int id) : log_(log), id_(id) {}
    void run(const TakeNext& take_next) override {
      log_.push_back(id_);
      if (id_ != 0) return;
      while (auto next = take_next()) next->run(take_next);
    }

   private:
    std::vector<int>& log_;
    int id_;
  };
  std::vector<int> log;
  ThreadPool::Options options = fixed(1);
  std::atomic<bool> started{false};
  options.on_start = [&](std::size_t) {
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  ThreadPool pool(options);
  for (int id = 0; id < 5; ++id) pool.submit(std::make_unique<Draining>(log, id));
  started = true;
  pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  REQUIRE(log == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("a job may destroy its own pool") {
  std::atomic<bool> done{false};
  auto* pool = new ThreadPool(fixed(1));
  pool->submit(job([&] {
    delete pool;
    done = true;
  }));
  wait_until([&] { return done.load(); });
  REQUIRE(done.load());
}

TEST_CASE("the pool counts the jobs it started and how long they waited in the queue") {
  ThreadPool pool(fixed(1));
  std::atomic<bool> release{false};
  REQUIRE(pool.submit(job([&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  })) == nullptr);
  wait_until([&] { return pool.stats().jobs_started == 1; });
  std::atomic<int> ran{0};
  for (int i = 0; i < 5; ++i) REQUIRE(pool.submit(job([&] { ran++; })) == nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the five wait behind the first
  release = true;
  pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  const auto stats = pool.stats();
  REQUIRE(ran.load() == 5);
  REQUIRE(stats.jobs_started == 6);
  REQUIRE(stats.longest_wait_seconds >= 0.030);
  REQUIRE(stats.total_wait_seconds >= 5 * 0.030);
  REQUIRE(stats.total_wait_seconds >= stats.longest_wait_seconds);
}

TEST_CASE("jobs cancelled before they start are not counted as started") {
  ThreadPool pool(fixed(1));
  std::atomic<bool> release{false};
  REQUIRE(pool.submit(job([&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  })) == nullptr);
  wait_until([&] { return pool.stats().jobs_started == 1; });
  for (int i = 0; i < 3; ++i) REQUIRE(pool.submit(job([] {})) == nullptr);
  REQUIRE(pool.take_pending().size() == 3);
  release = true;
  pool.shutdown(/*wait=*/true, /*cancel_pending=*/false);
  REQUIRE(pool.stats().jobs_started == 1);
}
