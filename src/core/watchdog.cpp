// The blocking-call watchdog (see watchdog.hpp).
#include "core/watchdog.hpp"

#include <unistd.h>

#include <chrono>

namespace turboloop::core {

Watchdog::Watchdog(LoopMetrics& metrics, double threshold_seconds, OnStall on_stall)
    : metrics_(metrics),
      threshold_ns_(static_cast<std::int64_t>(threshold_seconds * 1e9)),
      on_stall_(std::move(on_stall)),
      owner_pid_(getpid()),
      thread_(std::make_unique<std::thread>([this] { watch(); })) {}

Watchdog::~Watchdog() { stop(); }

void Watchdog::discard(std::unique_ptr<Watchdog> watchdog) {
  if (watchdog && getpid() != watchdog->owner_pid_) static_cast<void>(watchdog.release());
}

void Watchdog::stop() {
  if (!thread_) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_->join();
  thread_.reset();
}

void Watchdog::watch() {
  std::int64_t last_flagged = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    const std::int64_t since = metrics_.busy_since();
    const std::int64_t now = monotonic_ns();
    const bool unflagged_busy = since != 0 && since != last_flagged;
    if (unflagged_busy && now - since >= threshold_ns_) {
      last_flagged = since;
      metrics_.flag_stall(since);
      lock.unlock();
      on_stall_(since);
      lock.lock();
      continue;
    }
    // The earliest moment a stall can be due: this busy period's, or one that begins now.
    const std::int64_t due = unflagged_busy ? since + threshold_ns_ : now + threshold_ns_;
    wake_.wait_for(lock, std::chrono::nanoseconds(due - now));
  }
}

}  // namespace turboloop::core
