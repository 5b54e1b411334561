// add_reader/add_writer and their removal, as asyncio's BaseSelectorEventLoop does them: the Handle
// to run when each watched descriptor is ready, over the core's FdWatchers.
#pragma once

#include <unordered_map>

#include "binding/common.hpp"
#include "binding/handle.hpp"
#include "core/fd_watchers.hpp"

namespace turboloop::binding {

class FdCallbacks {
 public:
  explicit FdCallbacks(uv_loop_t* loop) : watchers_(loop) {}

  // Runs `handle` each time `fileobj` (whose descriptor is `fd`) has `event`, instead of the
  // callback it had for that event, which is cancelled. Raises OSError as the selector would.
  void add(int fd, py::handle fileobj, unsigned event, HandleRef handle);

  // Stops running a callback for `event` on `fd`; returns whether there was one. When the
  // descriptor keeps another event but the kernel refuses the change (it was closed), the whole
  // registration is dropped, as by the selector's failed modify(), and the error is stored in
  // `error` (an errno) if given.
  bool remove(int fd, unsigned event, int* error = nullptr);

  // The descriptor registered for a file object whose fileno() no longer works (a closed
  // socket), found by identity as selectors do; -1 when there is none.
  int find_registered(py::handle fileobj) const;

  // After a poll: queues the Handles of the ready descriptors, dropping cancelled ones.
  void schedule_ready(LoopScheduler& scheduler);

  // (events, reader, writer) as a selector key holds them, or None when `fd` is not watched.
  py::object key(int fd) const;

  // How many descriptors have a reader callback, and how many a writer callback.
  std::size_t reader_count() const;
  std::size_t writer_count() const;

  // Visits each Python object held (for garbage-collector traversal).
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (const auto& [fd, slot] : slots_) {
      visit(slot.fileobj.ptr());
      visit(reinterpret_cast<PyObject*>(slot.reader.get()));
      visit(reinterpret_cast<PyObject*>(slot.writer.get()));
    }
  }

 private:
  struct Slot {
    py::object fileobj;
    HandleRef reader;  // empty when not reading
    HandleRef writer;  // empty when not writing
  };

  core::FdWatchers watchers_;
  std::unordered_map<int, Slot> slots_;
};

class LoopCore;
void add_fd_methods(py::class_<LoopCore>& cls);
void add_sock_methods(py::class_<LoopCore>& cls);

}  // namespace turboloop::binding
