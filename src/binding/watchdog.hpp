// The Python side of the loop's blocking-call watchdog (core::Watchdog): while the loop thread is
// stuck, the watchdog thread takes the GIL and captures the loop thread's Python stack; when the
// loop thread is back at its poll, the stall is reported through the Python loop's _report_stall.
#pragma once

#include <cstdint>
#include <memory>

#include "binding/common.hpp"
#include "binding/handle.hpp"
#include "core/loop_metrics.hpp"
#include "core/watchdog.hpp"

namespace turboloop::binding {

class LoopWatchdog {
 public:
  explicit LoopWatchdog(core::LoopMetrics& metrics) : metrics_(metrics) {}
  ~LoopWatchdog() { stop(); }
  LoopWatchdog(const LoopWatchdog&) = delete;
  LoopWatchdog& operator=(const LoopWatchdog&) = delete;

  // The stall threshold in seconds; 0 means off. Takes effect when the loop next starts running.
  void set_threshold(double seconds) { threshold_seconds_ = seconds; }
  double threshold() const { return threshold_seconds_; }

  // The loop runs on the thread with this Python ident: watches it if switched on.
  void start(unsigned long thread_ident);
  // Stops watching; the GIL is let go while the watchdog thread finishes.
  void stop();
  bool watching() const { return watchdog_ != nullptr; }

  // After each callback: notes the one running when the watchdog flagged the busy period.
  void callback_ran(Handle* handle) {
    if (metrics_.stall_flagged() && !stalled_handle_)
      stalled_handle_ = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(handle));
  }

  // The loop thread is back at its poll (or stops running): reports the busy period that ended
  // if it lasted the threshold or longer.
  void busy_period_ended(py::handle loop, const core::BusyPeriod& period);

  // Forgets what was noted about the current busy period (the loop left running by an exception):
  // the noted Handle refers to the loop, a cycle the garbage collector cannot see.
  void forget_stall() {
    stalled_handle_ = py::object();
    captured_stack_ = py::object();
    captured_since_ = 0;
  }

 private:
  // The watchdog thread's on_stall: captures the stack of a loop thread that is still stuck.
  void capture(std::int64_t busy_since);

  core::LoopMetrics& metrics_;
  double threshold_seconds_ = 0.0;
  unsigned long thread_ident_ = 0;
  // Busy periods that began before the watchdog was switched on are not reported.
  std::int64_t watching_since_ = 0;
  std::unique_ptr<core::Watchdog> watchdog_;
  // Touched under the GIL only.
  py::object capture_stack_;
  std::int64_t captured_since_ = 0;
  py::object captured_stack_;
  py::object stalled_handle_;
};

}  // namespace turboloop::binding
