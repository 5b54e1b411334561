// The watchdog thread against a heartbeat driven by the test: it flags a busy period that outlasts
// the threshold while it is still going on, once; it never flags a loop that polls.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "core/loop_metrics.hpp"
#include "core/watchdog.hpp"

using turboloop::core::LoopMetrics;
using turboloop::core::Watchdog;

namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

struct Recorder {
  explicit Recorder(LoopMetrics& watched) : metrics(&watched) {}

  std::mutex mutex;
  std::vector<std::int64_t> stalls;
  std::vector<bool> still_busy;
  LoopMetrics* metrics;

  Watchdog::OnStall callback() {
    return [this](std::int64_t since) {
      std::lock_guard<std::mutex> lock(mutex);
      stalls.push_back(since);
      still_busy.push_back(metrics->busy_since() == since);
    };
  }
  std::size_t count() {
    std::lock_guard<std::mutex> lock(mutex);
    return stalls.size();
  }
};

}  // namespace

TEST_CASE("a busy period longer than the threshold is reported once, while it lasts") {
  LoopMetrics metrics;
  Recorder recorder(metrics);
  Watchdog watchdog(metrics, 0.02, recorder.callback());
  metrics.start_running();
  const auto since = metrics.busy_since();
  sleep_ms(150);  // seven thresholds: still one report
  REQUIRE(metrics.stall_flagged());
  metrics.enter_poll();
  sleep_ms(100);
  watchdog.stop();
  REQUIRE(recorder.count() == 1);
  REQUIRE(recorder.stalls[0] == since);
  REQUIRE(recorder.still_busy[0]);
}

TEST_CASE("a loop idle in its poll, or busy only briefly, is never reported") {
  LoopMetrics metrics;
  Recorder recorder(metrics);
  Watchdog watchdog(metrics, 0.05, recorder.callback());
  metrics.start_running();
  metrics.enter_poll();
  sleep_ms(200);
  for (int i = 0; i < 20; ++i) {
    metrics.leave_poll();
    sleep_ms(1);
    metrics.enter_poll();
  }
  watchdog.stop();
  REQUIRE(recorder.count() == 0);
}

TEST_CASE("each stall is reported on its own") {
  LoopMetrics metrics;
  Recorder recorder(metrics);
  Watchdog watchdog(metrics, 0.02, recorder.callback());
  metrics.start_running();
  for (int stall = 0; stall < 3; ++stall) {
    metrics.leave_poll();
    sleep_ms(80);
    metrics.enter_poll();
  }
  watchdog.stop();
  REQUIRE(recorder.count() == 3);
  REQUIRE(recorder.stalls[0] < recorder.stalls[1]);
  REQUIRE(recorder.stalls[1] < recorder.stalls[2]);
}

TEST_CASE("stop wakes a watchdog waiting on a long threshold, and is idempotent") {
  LoopMetrics metrics;
  Recorder recorder(metrics);
  Watchdog watchdog(metrics, 3600.0, recorder.callback());
  metrics.start_running();
  watchdog.stop();
  watchdog.stop();
  REQUIRE(recorder.count() == 0);
  REQUIRE(watchdog.threshold_ns() == 3'600'000'000'000);
}

TEST_CASE("a watchdog is discarded in the process that made it, and in a forked child") {
  LoopMetrics metrics;
  Recorder recorder(metrics);
  auto watchdog = std::make_unique<Watchdog>(metrics, 3600.0, recorder.callback());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // its thread waits on its timer
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    alarm(10);  // a hang fails the test instead of stalling it
    // Stopping would wait forever for a thread the child does not have, and destroying the
    // condition variable that thread waited on, too.
    Watchdog::discard(std::move(watchdog));
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  Watchdog::discard(std::move(watchdog));
  REQUIRE(watchdog == nullptr);
}
