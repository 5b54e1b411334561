// The loop's scheduling semantics, those of asyncio's BaseEventLoop._run_once, over any item type.
// An iteration: drop cancelled timers, poll (blocking only when nothing is ready), take what other
// threads sent, move expired timers to the ready queue, then run exactly the items that were ready
// when the batch started: what a callback schedules waits for the next iteration.
//
// T is a movable handle with `bool cancelled() const` and `void set_scheduled(bool)`.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <vector>

#include "core/mpsc_queue.hpp"
#include "core/ring_queue.hpp"
#include "core/timer_heap.hpp"

namespace turboloop::core {

template <typename T>
class Scheduler {
 public:
  // asyncio's rule: compact the heap when it holds over 100 timers and over half are cancelled.
  static constexpr std::size_t kMinTimersToCompact = 100;
  static constexpr double kMaxCancelledFraction = 0.5;
  // asyncio caps one poll at a day.
  static constexpr double kMaxPollSeconds = 24 * 3600.0;
  // Passed to the poll function to mean "block until something happens".
  static constexpr double kForever = -1.0;

  void call_soon(T item) {
    // What other threads sent earlier goes first, as in asyncio, whose call_soon_threadsafe
    // appends to the ready queue at once.
    if (incoming_pending_.load(std::memory_order_acquire)) take_threadsafe();
    ready_.push_back(std::move(item));
  }

  void call_at(double when, T item) {
    item.set_scheduled(true);
    timers_.push(when, std::move(item));
  }

  // Thread-safe. Returns true when the loop thread must be woken up to see the item.
  bool call_soon_threadsafe(T item) {
    const bool wake = incoming_.push(std::move(item));
    incoming_pending_.store(true, std::memory_order_release);
    return wake;
  }

  // A timer still in the heap was cancelled; it is dropped lazily.
  void timer_cancelled() { ++cancelled_timers_; }

  void stop() { stopping_ = true; }
  bool stopping() const { return stopping_; }
  void set_stopping(bool stopping) { stopping_ = stopping; }

  std::size_t ready_count() const { return ready_.size(); }
  std::size_t timer_count() const { return timers_.size(); }
  // Timers still due to run: those in the heap that were not cancelled (walks the heap).
  std::size_t live_timer_count() const {
    std::size_t live = 0;
    timers_.for_each([&](const T& item) { live += item.cancelled() ? 0 : 1; });
    return live;
  }

  // Runs iterations until stop() is called; the stop request is consumed either way.
  template <typename Clock, typename Poll, typename Run>
  void run_until_stopped(Clock&& now, double resolution, Poll&& poll, Run&& run) {
    struct ClearStop {
      bool& stopping;
      ~ClearStop() { stopping = false; }
    } clear_stop{stopping_};
    do {
      run_once(now, resolution, poll, run);
    } while (!stopping_);
  }

  // One iteration. `poll(timeout)` waits for I/O: 0 means do not block, kForever means block
  // until woken. `run(item)` runs one ready item; an exception from it leaves the rest of the
  // batch queued, as asyncio does.
  template <typename Clock, typename Poll, typename Run>
  void run_once(Clock&& now, double resolution, Poll&& poll, Run&& run) {
    drop_cancelled_timers();
    poll(poll_timeout(now()));
    take_threadsafe();
    collect_expired(now() + resolution);
    const std::size_t batch = ready_.size();
    for (std::size_t i = 0; i < batch; ++i) {
      T item = ready_.pop_front();
      if (!item.cancelled()) run(item);
    }
  }

  // Visits every item the scheduler holds (for garbage-collector traversal), including those
  // other threads sent that the loop has not taken yet.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    ready_.for_each(visit);
    timers_.for_each(visit);
    incoming_.for_each(visit);
  }

  // Drops everything scheduled (the loop is closing).
  void clear() {
    ready_.clear();
    timers_.remove_if([](const T&) { return true; }, [](T& item) { item.set_scheduled(false); });
    std::vector<T> pending;
    incoming_.take_all(pending);
    cancelled_timers_ = 0;
  }

 private:
  double poll_timeout(double current) const {
    if (!ready_.empty() || stopping_) return 0.0;
    if (timers_.empty()) return kForever;
    const double timeout = timers_.top_when() - current;
    // A NaN deadline counts as due, as collect_expired() treats it.
    if (!(timeout > 0.0)) return 0.0;
    return std::min(timeout, kMaxPollSeconds);
  }

  void drop_cancelled_timers() {
    const std::size_t count = timers_.size();
    if (count > kMinTimersToCompact &&
        static_cast<double>(cancelled_timers_) / static_cast<double>(count) > kMaxCancelledFraction) {
      timers_.remove_if([](const T& item) { return item.cancelled(); }, [](T& item) { item.set_scheduled(false); });
      cancelled_timers_ = 0;
      return;
    }
    while (!timers_.empty() && timers_.top().cancelled()) {
      if (cancelled_timers_ > 0) --cancelled_timers_;
      timers_.pop().set_scheduled(false);
    }
  }

  void take_threadsafe() {
    incoming_pending_.store(false, std::memory_order_relaxed);
    incoming_.take_all(arrived_);
    for (T& item : arrived_) ready_.push_back(std::move(item));
    arrived_.clear();
  }

  void collect_expired(double end_time) {
    // asyncio's test, `not when >= end_time`, so that a NaN deadline is due at once.
    while (!timers_.empty() && !(timers_.top_when() >= end_time)) {
      T item = timers_.pop();
      item.set_scheduled(false);
      ready_.push_back(std::move(item));
    }
  }

  RingQueue<T> ready_;
  TimerHeap<T> timers_;
  MpscQueue<T> incoming_;
  std::vector<T> arrived_;
  // Set by producers after a push: lets call_soon() skip the queue's lock when nothing came.
  std::atomic<bool> incoming_pending_{false};
  std::size_t cancelled_timers_ = 0;
  bool stopping_ = false;
};

}  // namespace turboloop::core
