// The Python side of the loop's watchdog (see watchdog.hpp).
#include "binding/watchdog.hpp"

namespace turboloop::binding {

void LoopWatchdog::start(unsigned long thread_ident) {
  if (threshold_seconds_ <= 0.0 || watchdog_) return;
  thread_ident_ = thread_ident;
  watching_since_ = core::monotonic_ns();
  if (!capture_stack_) capture_stack_ = py::module_::import("turboloop._watchdog").attr("capture_stack");
  watchdog_ =
      std::make_unique<core::Watchdog>(metrics_, threshold_seconds_, [this](std::int64_t since) { capture(since); });
}

void LoopWatchdog::stop() {
  if (!watchdog_) return;
  // The watchdog thread may be waiting for the GIL to capture a stack.
  if (PyGILState_Check()) {
    py::gil_scoped_release without_gil;
    core::Watchdog::discard(std::move(watchdog_));
  } else {
    core::Watchdog::discard(std::move(watchdog_));
  }
}

void LoopWatchdog::capture(std::int64_t busy_since) {
  py::gil_scoped_acquire with_gil;
  // The loop thread may have come back while this thread waited for the GIL (a C call that held
  // it throughout): then there is no stack left to show.
  if (metrics_.busy_since() != busy_since) return;
  try {
    captured_stack_ = capture_stack_(thread_ident_);
    captured_since_ = busy_since;
  } catch (py::error_already_set& error) {
    error.discard_as_unraisable("turboloop watchdog capturing the loop thread's stack");
  }
}

void LoopWatchdog::busy_period_ended(py::handle loop, const core::BusyPeriod& period) {
  if (period.since == 0) return;
  py::object handle = std::move(stalled_handle_);
  py::object stack = std::move(captured_stack_);
  const bool captured = captured_since_ == period.since;
  captured_since_ = 0;
  const double seconds = static_cast<double>(period.ns) * 1e-9;
  if (!watchdog_ || period.since < watching_since_ || seconds < threshold_seconds_) return;
  loop.attr(interned<"_report_stall">())(seconds, threshold_seconds_, handle ? handle : py::none(),
                                         captured && stack ? stack : py::none());
}

}  // namespace turboloop::binding
