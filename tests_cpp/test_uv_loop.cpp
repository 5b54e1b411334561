// The loop's wait (FdWatchers::poll) with UvLoop's wake-up and the SignalPipe on a real libuv
// loop: poll timeouts, cross-thread wake-ups, the signal self-pipe.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "catch.hpp"
#include "core/clock.hpp"
#include "core/fd_watchers.hpp"
#include "core/signal_pipe.hpp"
#include "core/uv_loop.hpp"

using turboloop::core::FdWatchers;
using turboloop::core::monotonic_seconds;
using turboloop::core::SignalPipe;
using turboloop::core::UvLoop;

TEST_CASE("the clock is monotonic") {
  const double first = monotonic_seconds();
  const double second = monotonic_seconds();
  REQUIRE(second >= first);
}

TEST_CASE("a zero-timeout poll returns at once and a timed poll waits at least its timeout") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  const double start = monotonic_seconds();
  watchers.poll(0.0);
  watchers.poll(0.05);
  const double elapsed = monotonic_seconds() - start;
  REQUIRE(elapsed >= 0.05);
}

TEST_CASE("many sub-millisecond polls all return on their own") {
  // A timer that fired in uv_run's timer phase once left the poll blocking forever. The watchdog
  // wakes a stuck poll and counts it, so a regression fails instead of hanging.
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  std::atomic<bool> done{false};
  std::atomic<int> polls{0};
  std::atomic<int> rescues{0};
  std::thread watchdog([&] {
    int last = -1;
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (!done && polls.load() == last) {
        rescues++;
        loop.wake();
      }
      last = polls.load();
    }
  });
  for (int i = 0; i < 3000; ++i) {
    watchers.poll(0.0005);
    polls++;
  }
  done = true;
  watchdog.join();
  REQUIRE(rescues.load() == 0);
}

TEST_CASE("wake() from another thread ends a poll that would block forever") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  watchers.poll(0.0);  // libuv has run once: its wake-up descriptor is in its set
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop.wake();
  });
  watchers.poll(-1.0);  // returns only because of the wake-up
  waker.join();
  SUCCEED("the blocking poll returned");
}

TEST_CASE("signal numbers written to the pipe wake the poll and are taken in order") {
  UvLoop loop;
  SignalPipe pipe(loop.raw());
  FdWatchers watchers(loop.raw());
  watchers.poll(0.0);
  REQUIRE_FALSE(pipe.pending());
  const unsigned char numbers[] = {10, 2, 15};
  REQUIRE(write(pipe.write_fd(), numbers, sizeof numbers) == 3);
  watchers.poll(-1.0);
  REQUIRE(pipe.pending());
  REQUIRE(pipe.take() == std::vector<int>{10, 2, 15});
  REQUIRE_FALSE(pipe.pending());
}

TEST_CASE("a wake-up sent before the first poll ends it") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  loop.wake();
  const double start = monotonic_seconds();
  watchers.poll(5.0);
  REQUIRE(monotonic_seconds() - start < 4.0);
}
