// Readiness of file descriptors through an epoll set of our own (see fd_watchers.hpp).
#include "core/fd_watchers.hpp"

#include <unistd.h>

#include <cerrno>
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

FdWatchers::FdWatchers(uv_loop_t* loop) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  watcher_ = new uv_poll_t;
  int status = uv_poll_init(loop, watcher_, epoll_fd_);
  if (status == 0) status = uv_poll_start(watcher_, UV_READABLE, on_readable);
  if (status != 0) {
    delete watcher_;
    close(epoll_fd_);
    throw std::system_error(-status, std::generic_category(), "uv_poll_start");
  }
  watcher_->data = this;
}

FdWatchers::~FdWatchers() {
  uv_close(reinterpret_cast<uv_handle_t*>(watcher_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  close(epoll_fd_);
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

unsigned FdWatchers::watched(int fd) const {
  const auto found = watched_.find(fd);
  return found == watched_.end() ? 0 : found->second;
}

int FdWatchers::wait_ready() {
  ready_.resize(watched_.empty() ? 1 : watched_.size());
  int count;
  do {
    count = epoll_wait(epoll_fd_, ready_.data(), static_cast<int>(ready_.size()), 0);
  } while (count < 0 && errno == EINTR);
  return count < 0 ? 0 : count;
}

void FdWatchers::on_readable(uv_poll_t* watcher, int status, int) {
  if (status == 0) static_cast<FdWatchers*>(watcher->data)->maybe_ready_ = true;
}

}  // namespace turboloop::core
