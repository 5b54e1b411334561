// Readiness of file descriptors, with a selector's semantics: an epoll set of our own.
// Registration is synchronous, so errors come at once (as from selectors.EpollSelector), and a
// descriptor closed while still watched simply drops out of the set; libuv's uv_poll_t defers the
// epoll_ctl to the next poll and aborts the process on a descriptor closed by then.
//
// The set also holds libuv's own epoll descriptor (uv_backend_fd), so that poll() is the loop's
// one wait: a single epoll_wait per iteration, with libuv run (UV_RUN_NOWAIT) only when its
// handles -- the cross-thread wake-up, the signal pipe -- have events or work pending. Works
// without the GIL.
#pragma once

#include <sys/epoll.h>
#include <uv.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace turboloop::core {

class FdWatchers {
 public:
  static constexpr unsigned kReadable = 1;        // as selectors.EVENT_READ
  static constexpr unsigned kWritable = 2;        // as selectors.EVENT_WRITE
  static constexpr std::size_t kMaxReady = 1024;  // as libuv's own poll

  explicit FdWatchers(uv_loop_t* loop);
  ~FdWatchers();
  FdWatchers(const FdWatchers&) = delete;
  FdWatchers& operator=(const FdWatchers&) = delete;

  // Waits once for the watched descriptors and libuv's handles, running the callbacks of the
  // latter: a timeout of 0 returns at once, a negative one waits until an event or a wake-up.
  // take_ready() then reports the descriptors found ready (at most kMaxReady; the others stay
  // ready for the next poll). Touches nothing watch() changes, so another thread may watch()
  // meanwhile.
  void poll(double timeout_seconds);

  // Watches `fd` for `events` (kReadable | kWritable) from now on; 0 stops watching it.
  // Returns 0, or a negative errno (EPERM for a regular file, EBADF for a closed descriptor).
  int watch(int fd, unsigned events);

  // Stops watching `fd` for the events not in `events`. Never fails: a descriptor closed
  // meanwhile has left the kernel's set already, and its narrower registration stays recorded,
  // as a selector's key outlives its descriptor until it is unregistered.
  void narrow(int fd, unsigned events);

  // The events watched on `fd` (0 when none).
  unsigned watched(int fd) const;

  // Calls visit(fd, events) for each watched descriptor the last poll() found ready, once.
  // As selectors.EpollSelector, an error or hang-up counts as both readable and writable.
  template <typename Visit>
  void take_ready(Visit&& visit) {
    const int count = ready_count_;
    ready_count_ = 0;
    for (int i = 0; i < count; ++i) {
      const epoll_event& event = ready_[static_cast<std::size_t>(i)];
      if (event.data.fd == backend_fd_) continue;
      unsigned events = 0;
      if (event.events & ~static_cast<std::uint32_t>(EPOLLOUT)) events |= kReadable;
      if (event.events & ~static_cast<std::uint32_t>(EPOLLIN)) events |= kWritable;
      events &= watched(event.data.fd);
      if (events != 0) visit(event.data.fd, events);
    }
  }

 private:
  uv_loop_t* loop_;
  int epoll_fd_ = -1;
  int backend_fd_ = -1;  // libuv's epoll descriptor, in our set
  bool libuv_ran_ = false;
  std::unordered_map<int, unsigned> watched_;
  std::vector<epoll_event> ready_ = std::vector<epoll_event>(kMaxReady);
  int ready_count_ = 0;
};

}  // namespace turboloop::core
