// A self-pipe for signals (see signal_pipe.hpp).
#include "core/signal_pipe.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace turboloop::core {

SignalPipe::SignalPipe(uv_loop_t* loop) {
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  read_fd_ = fds[0];
  write_fd_ = fds[1];
  watcher_ = new uv_poll_t;
  int status = uv_poll_init(loop, watcher_, read_fd_);
  if (status == 0) status = uv_poll_start(watcher_, UV_READABLE, on_readable);
  if (status != 0) {
    delete watcher_;
    close(read_fd_);
    close(write_fd_);
    throw std::system_error(-status, std::generic_category(), "uv_poll_start");
  }
  watcher_->data = this;
}

SignalPipe::~SignalPipe() {
  uv_close(reinterpret_cast<uv_handle_t*>(watcher_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  close(read_fd_);
  close(write_fd_);
}

std::vector<int> SignalPipe::take() {
  std::vector<int> taken;
  taken.swap(received_);
  return taken;
}

void SignalPipe::on_readable(uv_poll_t* watcher, int status, int) {
  auto* self = static_cast<SignalPipe*>(watcher->data);
  if (status < 0) return;
  unsigned char buffer[256];
  for (;;) {
    const ssize_t count = read(self->read_fd_, buffer, sizeof buffer);
    if (count <= 0) break;
    for (ssize_t i = 0; i < count; ++i) self->received_.push_back(buffer[i]);
  }
}

}  // namespace turboloop::core
