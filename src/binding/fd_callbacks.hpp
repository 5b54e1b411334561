// add_reader/add_writer and their removal, as asyncio's BaseSelectorEventLoop does them: the Handle
// to run when each watched descriptor is ready, over the core's FdWatchers.
#pragma once

#include <unordered_map>
#include <utility>
#include <vector>

#include "binding/common.hpp"
#include "binding/handle.hpp"
#include "core/fd_watchers.hpp"

namespace turboloop::binding {

class FdCallbacks {
 public:
  explicit FdCallbacks(uv_loop_t* loop) : watchers_(loop) {}

  // Runs `handle` each time `fileobj` (whose descriptor is `fd`) has `event`, instead of the
  // callback it had for that event, which is cancelled. Raises OSError as the selector would.
  // A reader added for `owner` (a socket object) where park_reader() left that owner's reader
  // costs no system call.
  void add(int fd, py::handle fileobj, unsigned event, HandleRef handle, py::handle owner = py::handle());

  // remove(fd, kReadable) for a reader that `owner` (a socket object) is likely to want again at
  // once, as sock_recv() does: the descriptor stays in the kernel's set until the poll after
  // next, or until a poll that may block, so that a reader added again in between costs no
  // epoll_ctl. Readiness meanwhile runs nothing (the rest of a message often waits there while
  // the owner's task has yet to run: dropping the registration then cost an epoll_ctl pair per
  // message), and no poll that may block ever sees it. A closed descriptor's number may be reused
  // meanwhile, so only the same owner, whose fileno() the caller has just read, may take the
  // parked registration back. The owner is held while parked, so never across a wait.
  void park_reader(int fd, py::handle owner);

  // Before each poll: really removes the readers parked before the previous poll and not taken
  // back since, or all parked readers when the poll may block.
  void drop_stale_parked(bool poll_may_block);

  // Stops running a callback for `event` on `fd`; returns whether there was one. When the
  // descriptor keeps another event but the kernel refuses the change (it was closed), the whole
  // registration is dropped, as by the selector's failed modify(), and the error is stored in
  // `error` (an errno) if given.
  bool remove(int fd, unsigned event, int* error = nullptr);

  // The descriptor registered for a file object whose fileno() no longer works (a closed
  // socket), found by identity as selectors do; -1 when there is none (a parked reader alone
  // does not count).
  int find_registered(py::handle fileobj) const;

  // The loop's wait for events (FdWatchers::poll); may run without the GIL.
  void poll(double timeout_seconds) { watchers_.poll(timeout_seconds); }

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
      visit(slot.parked_by.ptr());
    }
  }

 private:
  struct Slot {
    py::object fileobj;
    HandleRef reader;      // empty when not reading
    HandleRef writer;      // empty when not writing
    py::object parked_by;  // the owner of a parked reader, else empty

    // Whether a selector would have a key for it: a parked reader alone is no registration.
    bool registered() const { return reader.get() != nullptr || writer.get() != nullptr; }

    // A callback is about to be added: a new registration takes `added` as its file object, as
    // a selector's new key would, and an existing one keeps the one it was first registered
    // with. Returns the file object replaced, for the caller to release last.
    py::object adopt(py::handle added) {
      if (registered()) return py::object();
      return std::exchange(fileobj, py::reinterpret_borrow<py::object>(added));
    }
  };

  // Takes a parked reader's descriptor out of the kernel's set (or the whole slot when nothing
  // else is watched).
  void unpark(std::unordered_map<int, Slot>::iterator found);

  core::FdWatchers watchers_;
  std::unordered_map<int, Slot> slots_;
  std::vector<int> parked_now_;     // parked since the last poll
  std::vector<int> parked_before_;  // parked before the last poll
};

class LoopCore;
void add_fd_methods(py::class_<LoopCore>& cls);
void add_sock_methods(py::class_<LoopCore>& cls);

}  // namespace turboloop::binding
