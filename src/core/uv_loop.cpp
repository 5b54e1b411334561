// The libuv side of the loop (see uv_loop.hpp).
#include "core/uv_loop.hpp"

#include <unistd.h>

#include <system_error>

namespace turboloop::core {
namespace {

// libuv's statuses are negated errno values: failing for want of descriptors is EMFILE, as in Python.
void check(int status, const char* what) {
  if (status < 0) throw std::system_error(-status, std::generic_category(), what);
}

void on_wakeup(uv_async_t*) {}

}  // namespace

UvLoop::UvLoop() {
  const int init = uv_loop_init(&loop_);
  // libuv before 1.51 leaves the epoll descriptor open when uv_loop_init fails after making it
  // (libuv#4757). Before making it, uv_loop_init sets it to -1, but an early ENOMEM leaves it 0.
  if (init < 0 && init != UV_ENOMEM && uv_version() < 0x013300 && uv_backend_fd(&loop_) >= 0)
    close(uv_backend_fd(&loop_));
  check(init, "uv_loop_init");
  const int status = uv_async_init(&loop_, &wakeup_, on_wakeup);
  if (status < 0) {
    // The destructor will not run: release the descriptors uv_loop_init took.
    uv_loop_close(&loop_);
    check(status, "uv_async_init");
  }
}

UvLoop::~UvLoop() {
  uv_close(reinterpret_cast<uv_handle_t*>(&wakeup_), nullptr);
  // Runs the close callbacks of these and of any handle another owner closed on this loop.
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

void UvLoop::prepare_process() {
  uv_loop_t loop;
  if (uv_loop_init(&loop) == 0) uv_loop_close(&loop);
}

void UvLoop::wake() { uv_async_send(&wakeup_); }

}  // namespace turboloop::core
