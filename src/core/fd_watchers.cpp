// Readiness of file descriptors, and the loop's wait (see fd_watchers.hpp).
#include "core/fd_watchers.hpp"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <system_error>

namespace turboloop::core {
namespace {

std::uint32_t to_epoll(unsigned events) {
  std::uint32_t mask = 0;
  if (events & FdWatchers::kReadable) mask |= EPOLLIN;
  if (events & FdWatchers::kWritable) mask |= EPOLLOUT;
  return mask;
}

int control(int epoll_fd, int operation, int fd, unsigned events) {
  epoll_event event{};
  event.events = to_epoll(events);
  event.data.fd = fd;
  return epoll_ctl(epoll_fd, operation, fd, &event) == 0 ? 0 : -errno;
}

}  // namespace

FdWatchers::FdWatchers(uv_loop_t* loop) : loop_(loop), backend_fd_(uv_backend_fd(loop)) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  const int status = control(epoll_fd_, EPOLL_CTL_ADD, backend_fd_, kReadable);
  if (status != 0) {
    close(epoll_fd_);
    throw std::system_error(-status, std::generic_category(), "epoll_ctl");
  }
}

FdWatchers::~FdWatchers() { close(epoll_fd_); }

void FdWatchers::poll(double timeout_seconds) {
  // libuv puts its handles' descriptors in its set only when it runs, and may have work pending
  // (handles closing): let it run first then. That may take a wake-up meant to end this poll, so
  // the poll does not wait.
  if (!libuv_ran_ || uv_backend_timeout(loop_) == 0) {
    uv_run(loop_, UV_RUN_NOWAIT);
    libuv_ran_ = true;
    timeout_seconds = 0.0;
  }
  int timeout_ms = -1;
  if (timeout_seconds >= 0.0) {
    // Milliseconds, rounded up: never wakes before the deadline.
    const double ms = std::ceil(timeout_seconds * 1000.0);
    timeout_ms = ms >= static_cast<double>(INT_MAX) ? INT_MAX : static_cast<int>(ms);
  }
  // Not past libuv's own next deadline (it has none today: no libuv timers are used).
  const int libuv_timeout = uv_backend_timeout(loop_);
  if (libuv_timeout >= 0 && (timeout_ms < 0 || libuv_timeout < timeout_ms)) timeout_ms = libuv_timeout;
  const int count = epoll_wait(epoll_fd_, ready_.data(), static_cast<int>(ready_.size()), timeout_ms);
  // EINTR: a signal, whose handler wrote to the signal pipe; the next iteration sees it.
  ready_count_ = count < 0 ? 0 : count;
  for (int i = 0; i < ready_count_; ++i) {
    if (ready_[static_cast<std::size_t>(i)].data.fd == backend_fd_) {
      uv_run(loop_, UV_RUN_NOWAIT);
      break;
    }
  }
}

int FdWatchers::watch(int fd, unsigned events) {
  const auto found = watched_.find(fd);
  if (events == 0) {
    if (found == watched_.end()) return 0;
    watched_.erase(found);
    // A descriptor closed while watched has already left the set: nothing to undo.
    control(epoll_fd_, EPOLL_CTL_DEL, fd, 0);
    return 0;
  }
  int status;
  if (found == watched_.end()) {
    status = control(epoll_fd_, EPOLL_CTL_ADD, fd, events);
    // Still in the set under a number we had forgotten (a failed watch() of it).
    if (status == -EEXIST) status = control(epoll_fd_, EPOLL_CTL_MOD, fd, events);
  } else {
    status = control(epoll_fd_, EPOLL_CTL_MOD, fd, events);
    // The descriptor was closed and its number reused since it was added.
    if (status == -ENOENT) status = control(epoll_fd_, EPOLL_CTL_ADD, fd, events);
    // Closed since, and the events unchanged: a selector's modify() makes no system call then,
    // so the registration stays as it is, without an error.
    if (status == -EBADF && events == found->second) status = 0;
  }
  if (status == 0) {
    watched_[fd] = events;
  } else if (found != watched_.end()) {
    watched_.erase(found);
  }
  return status;
}

void FdWatchers::narrow(int fd, unsigned events) {
  const auto found = watched_.find(fd);
  if (found == watched_.end()) return;
  events &= found->second;
  if (events == 0) {
    watch(fd, 0);
    return;
  }
  // An error means the descriptor was closed (or its number reused), so it is out of the set.
  if (events != found->second) control(epoll_fd_, EPOLL_CTL_MOD, fd, events);
  found->second = events;
}

unsigned FdWatchers::watched(int fd) const {
  const auto found = watched_.find(fd);
  return found == watched_.end() ? 0 : found->second;
}

}  // namespace turboloop::core
