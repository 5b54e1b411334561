// What the loop measures about itself, always on and nearly free: written by the loop thread at
// the edges of each poll (two clock reads) and after each callback (one tick read). Its
// heartbeat -- whether the loop thread is away from its poll, and since when -- is atomic, for
// the watchdog thread to read.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/clock.hpp"

namespace turboloop::core {

// A stretch of time in which the loop thread was away from its poll.
struct BusyPeriod {
  std::int64_t since = 0;  // when it began (ns of the monotonic clock); 0: there was none
  std::int64_t ns = 0;     // how long it lasted
};

class LoopMetrics {
 public:
  // The loop thread starts running iterations: it is busy until its first poll.
  void start_running() { set_busy_since(monotonic_ns()); }

  // The loop thread stops running iterations, ending its busy period.
  BusyPeriod stop_running() { return end_busy_period(monotonic_ns()); }

  // The loop thread is about to poll, ending its busy period.
  BusyPeriod enter_poll() {
    const std::int64_t now = monotonic_ns();
    poll_started_ns_ = now;
    return end_busy_period(now);
  }

  // The loop thread is back from its poll: a new iteration's callbacks start.
  void leave_poll() {
    const std::int64_t now = monotonic_ns();
    poll_ns_ += now - poll_started_ns_;
    ++iterations_;
    set_busy_since(now);
    last_tick_ = ticks();
  }

  // A callback has just returned; it started when the previous one returned, or at leave_poll.
  void callback_ran() {
    const std::uint64_t now = ticks();
    const std::uint64_t took = now - last_tick_;
    last_tick_ = now;
    ++callbacks_;
    callback_ticks_ += took;
    if (took > longest_callback_ticks_) longest_callback_ticks_ = took;
  }

  std::uint64_t iterations() const { return iterations_; }
  std::uint64_t callbacks() const { return callbacks_; }
  double poll_seconds() const { return static_cast<double>(poll_ns_) * 1e-9; }
  double callback_seconds() const { return rate_.seconds(callback_ticks_); }
  double longest_callback_seconds() const { return rate_.seconds(longest_callback_ticks_); }

  // -- the heartbeat (any thread) --

  // When the current busy period began (ns of the monotonic clock), or 0 while the loop thread
  // polls or is not running. A busy period is identified by its start.
  std::int64_t busy_since() const { return busy_since_.load(std::memory_order_acquire); }

  // The watchdog marks the busy period it found too long; the loop thread checks the mark.
  void flag_stall(std::int64_t since) { flagged_since_.store(since, std::memory_order_release); }
  bool stall_flagged() const {
    return own_busy_since_ != 0 && flagged_since_.load(std::memory_order_relaxed) == own_busy_since_;
  }

 private:
  void set_busy_since(std::int64_t now) {
    own_busy_since_ = now;
    busy_since_.store(now, std::memory_order_release);
  }

  BusyPeriod end_busy_period(std::int64_t now) {
    const std::int64_t since = own_busy_since_;
    set_busy_since(0);
    return since == 0 ? BusyPeriod{} : BusyPeriod{since, now - since};
  }

  std::atomic<std::int64_t> busy_since_{0};
  std::atomic<std::int64_t> flagged_since_{0};
  // The loop thread's own copy of busy_since_, read without synchronisation.
  std::int64_t own_busy_since_ = 0;
  std::int64_t poll_started_ns_ = 0;
  std::int64_t poll_ns_ = 0;
  std::uint64_t iterations_ = 0;
  std::uint64_t callbacks_ = 0;
  std::uint64_t last_tick_ = 0;
  std::uint64_t callback_ticks_ = 0;
  std::uint64_t longest_callback_ticks_ = 0;
  TickRate rate_;
};

}  // namespace turboloop::core
