// Readiness of file descriptors, with a selector's semantics: an epoll set of our own, whose own
// descriptor libuv polls. Registration is synchronous, so errors come at once (as from
// selectors.EpollSelector), and a descriptor closed while still watched simply drops out of the
// set; libuv's uv_poll_t defers the epoll_ctl to the next poll and aborts the process on a
// descriptor closed by then. Works without the GIL.
#pragma once

#include <sys/epoll.h>
#include <uv.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace turboloop::core {

class FdWatchers {
 public:
  static constexpr unsigned kReadable = 1;  // as selectors.EVENT_READ
  static constexpr unsigned kWritable = 2;  // as selectors.EVENT_WRITE

  explicit FdWatchers(uv_loop_t* loop);
  ~FdWatchers();
  FdWatchers(const FdWatchers&) = delete;
  FdWatchers& operator=(const FdWatchers&) = delete;

  // Watches `fd` for `events` (kReadable | kWritable) from now on; 0 stops watching it.
  // Returns 0, or a negative errno (EPERM for a regular file, EBADF for a closed descriptor).
  int watch(int fd, unsigned events);

  // The events watched on `fd` (0 when none).
  unsigned watched(int fd) const;

  // Calls visit(fd, events) for each watched descriptor that is ready now, without blocking.
  // As selectors.EpollSelector, an error or hang-up counts as both readable and writable.
  template <typename Visit>
  void take_ready(Visit&& visit) {
    if (!maybe_ready_) return;
    maybe_ready_ = false;
    const int count = wait_ready();
    for (int i = 0; i < count; ++i) {
      const epoll_event& event = ready_[static_cast<std::size_t>(i)];
      unsigned events = 0;
      if (event.events & ~static_cast<std::uint32_t>(EPOLLOUT)) events |= kReadable;
      if (event.events & ~static_cast<std::uint32_t>(EPOLLIN)) events |= kWritable;
      events &= watched(event.data.fd);
      if (events != 0) visit(event.data.fd, events);
    }
  }

 private:
  static void on_readable(uv_poll_t* watcher, int status, int events);
  int wait_ready();

  int epoll_fd_ = -1;
  // Heap-allocated: libuv needs the handle alive until its close callback, after this object.
  uv_poll_t* watcher_ = nullptr;
  std::unordered_map<int, unsigned> watched_;
  std::vector<epoll_event> ready_;
  bool maybe_ready_ = false;
};

}  // namespace turboloop::core
