// A self-pipe for signals: the process's signal handler writes each signal's number to
// write_fd() (Python's signal.set_wakeup_fd does exactly that), which wakes the loop's poll; the
// loop then takes the numbers. Works without the GIL.
#pragma once

#include <uv.h>

#include <vector>

namespace turboloop::core {

class SignalPipe {
 public:
  explicit SignalPipe(uv_loop_t* loop);
  ~SignalPipe();
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;

  int write_fd() const { return write_fd_; }

  // True when signal numbers arrived since the last take().
  bool pending() const { return !received_.empty(); }

  // The signal numbers received since the last call, oldest first.
  std::vector<int> take();

 private:
  static void on_readable(uv_poll_t* watcher, int status, int events);

  int read_fd_ = -1;
  int write_fd_ = -1;
  // Heap-allocated: libuv needs the handle alive until its close callback, after this object.
  uv_poll_t* watcher_ = nullptr;
  std::vector<int> received_;
};

}  // namespace turboloop::core
