// The blocking-call watchdog: a thread of its own that reads a loop's heartbeat and, when the loop
// thread has been away from its poll for longer than a threshold, flags that busy period and calls
// on_stall from the watchdog thread -- while the loop thread is still away, once per busy period.
// Python-free: the binding's on_stall captures the loop thread's Python stack.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "core/loop_metrics.hpp"

namespace turboloop::core {

class Watchdog {
 public:
  // Receives the start of the busy period found too long (LoopMetrics::busy_since()).
  using OnStall = std::function<void(std::int64_t busy_since)>;

  // Starts watching at once. `threshold_seconds` must be positive.
  Watchdog(LoopMetrics& metrics, double threshold_seconds, OnStall on_stall);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Stops the thread and waits for it, so that on_stall never runs after this returns.
  void stop();

  // Stops and destroys `watchdog`; but in a forked child, where its thread does not exist and
  // its mutex and condition variable may have been in use at the fork (destroying them would
  // wait forever), leaks it instead.
  static void discard(std::unique_ptr<Watchdog> watchdog);

  std::int64_t threshold_ns() const { return threshold_ns_; }

 private:
  void watch();

  LoopMetrics& metrics_;
  const std::int64_t threshold_ns_;
  const OnStall on_stall_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  const pid_t owner_pid_;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace turboloop::core
