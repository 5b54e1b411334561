// LoopCore: the native half of turboloop.Loop. It owns the scheduler (ready queue, timer heap,
// cross-thread queue) and the libuv loop, and implements the hot methods: call_soon, call_later,
// call_at, call_soon_threadsafe, time and the run loop. The Python class turboloop.Loop derives
// from it and from asyncio.BaseEventLoop for everything else.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "binding/common.hpp"
#include "binding/fd_callbacks.hpp"
#include "binding/handle.hpp"
#include "binding/socket_transport.hpp"
#include "binding/watchdog.hpp"
#include "core/loop_metrics.hpp"
#include "core/signal_pipe.hpp"
#include "core/uv_loop.hpp"

namespace turboloop::binding {

class LoopCore {
 public:
  LoopCore();

  void check_closed() const;
  // Debug mode only: a loop must be driven from the thread that runs it.
  void check_thread() const;

  // Runs iterations until stop(); `self` is the Python loop object.
  void run_until_stopped(py::handle self);

  LoopScheduler scheduler;
  core::LoopMetrics metrics;
  LoopWatchdog watchdog{metrics};
  bool debug = false;
  bool closed = false;
  // The Python thread ident of the thread running the loop, while it runs.
  std::optional<unsigned long> thread_id;
  double clock_resolution;
  // Released by close(): a closed loop holds no file descriptors.
  std::unique_ptr<core::UvLoop> uv;
  // Made with the loop, as asyncio's self-pipe: a loop that was made runs without needing another
  // descriptor, and a first run that opened it would take the lowest free number, which may be
  // that of a descriptor closed while still registered.
  std::unique_ptr<core::SignalPipe> signals;
  // Made with the loop, not on first use: add_reader from another thread must not touch libuv
  // while the loop thread polls.
  std::unique_ptr<FdCallbacks> fds;
  // The transports (their TransportCores) holding small writes back until the running callback
  // ends, so that one callback's writes to a socket go out in one sendmsg() (socket_transport.cpp).
  std::vector<HeldWrites> held_writes;

  // Whether the loop is running a callback on this thread: only then are writes held back.
  bool runs_here() const { return thread_id && *thread_id == PyThread_get_thread_ident(); }

 private:
  void poll(py::handle self, double timeout);
  void run(py::handle self, HandleRef& item);
};

// asyncio's loop._ensure_fd_no_transport(fd), which a sock_* call makes before it waits on the
// descriptor (RuntimeError for a transport's socket); asked only when the loop has transports.
void ensure_fd_no_transport(py::handle loop, int fd);

}  // namespace turboloop::binding
