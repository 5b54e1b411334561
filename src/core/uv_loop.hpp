// The libuv side of the loop: one uv_loop_t and an async handle that other threads use to wake
// the poll (FdWatchers::poll, which waits on libuv's descriptor too). Callbacks registered here
// never touch Python, so the poll may run without the GIL.
#pragma once

#include <uv.h>

namespace turboloop::core {

class UvLoop {
 public:
  UvLoop();
  ~UvLoop();
  UvLoop(const UvLoop&) = delete;
  UvLoop& operator=(const UvLoop&) = delete;

  // Thread-safe: makes the current or next poll return.
  void wake();

  uv_loop_t* raw() { return &loop_; }

  // libuv makes a process-wide pipe with its first loop and abort()s when it cannot: call this
  // early (at import), while descriptors are surely free, not in a loop made when they ran out.
  static void prepare_process();

 private:
  uv_loop_t loop_{};
  uv_async_t wakeup_{};
};

}  // namespace turboloop::core
