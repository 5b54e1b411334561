// LoopMetrics: the loop's counters and the heartbeat the watchdog reads.
#include <chrono>
#include <thread>

#include "catch.hpp"
#include "core/loop_metrics.hpp"

using turboloop::core::LoopMetrics;

namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

TEST_CASE("a new loop's metrics are zero and it is not busy") {
  LoopMetrics metrics;
  REQUIRE(metrics.iterations() == 0);
  REQUIRE(metrics.callbacks() == 0);
  REQUIRE(metrics.poll_seconds() == 0.0);
  REQUIRE(metrics.callback_seconds() == 0.0);
  REQUIRE(metrics.longest_callback_seconds() == 0.0);
  REQUIRE(metrics.busy_since() == 0);
  REQUIRE_FALSE(metrics.stall_flagged());
}

TEST_CASE("iterations and callbacks are counted exactly") {
  LoopMetrics metrics;
  metrics.start_running();
  for (int iteration = 0; iteration < 5; ++iteration) {
    metrics.enter_poll();
    metrics.leave_poll();
    for (int callback = 0; callback < iteration; ++callback) metrics.callback_ran();
  }
  metrics.stop_running();
  REQUIRE(metrics.iterations() == 5);
  REQUIRE(metrics.callbacks() == 0 + 1 + 2 + 3 + 4);
}

TEST_CASE("time polling and time in callbacks are measured apart, and the longest callback") {
  LoopMetrics metrics;
  metrics.start_running();
  metrics.enter_poll();
  sleep_ms(30);
  metrics.leave_poll();
  sleep_ms(20);
  metrics.callback_ran();
  sleep_ms(5);
  metrics.callback_ran();
  metrics.stop_running();
  REQUIRE(metrics.poll_seconds() >= 0.030);
  REQUIRE(metrics.poll_seconds() < 0.030 + 0.025);  // the callbacks' time is not counted as polling
  REQUIRE(metrics.callback_seconds() >= 0.025 * 0.99);
  REQUIRE(metrics.longest_callback_seconds() >= 0.020 * 0.99);
  REQUIRE(metrics.longest_callback_seconds() < metrics.callback_seconds());
}

TEST_CASE("the heartbeat says when the loop thread left its poll, and is 0 while it polls") {
  LoopMetrics metrics;
  metrics.start_running();
  const auto first = metrics.busy_since();
  REQUIRE(first != 0);
  sleep_ms(10);
  const auto busy = metrics.enter_poll();
  REQUIRE(busy.since == first);
  REQUIRE(busy.ns >= 10'000'000);
  REQUIRE(metrics.busy_since() == 0);
  metrics.leave_poll();
  REQUIRE(metrics.busy_since() > first);
  REQUIRE(metrics.stop_running().ns >= 0);
  REQUIRE(metrics.busy_since() == 0);
  REQUIRE(metrics.stop_running().since == 0);  // not running: no busy period to end
}

TEST_CASE("a stall flag applies to the busy period it names only") {
  LoopMetrics metrics;
  metrics.start_running();
  metrics.flag_stall(metrics.busy_since());
  REQUIRE(metrics.stall_flagged());
  metrics.enter_poll();
  REQUIRE_FALSE(metrics.stall_flagged());
  metrics.leave_poll();
  REQUIRE_FALSE(metrics.stall_flagged());
}
