// Handle and TimerHandle: the native objects call_soon/call_later return, with asyncio.Handle's
// interface. They are plain CPython types (not pybind11 classes) because one is allocated per
// scheduled callback: the hot path must cost one allocation and no dispatch.
#pragma once

#include "binding/common.hpp"
#include "core/scheduler.hpp"

namespace turboloop::binding {

class LoopCore;

struct Handle {
  PyObject_HEAD PyObject* callback;  // None once cancelled (nullptr)
  PyObject* args;                    // a tuple; nullptr once cancelled
  PyObject* context;                 // the contextvars.Context the callback runs in
  PyObject* loop;                    // the Python loop object, kept alive by the handle
  PyObject* repr;                    // repr kept at cancel time in debug mode, else nullptr
  PyObject* source_traceback;        // debug mode: where the handle was created, else nullptr
  PyObject* weakrefs;
  LoopCore* core;  // the native part of `loop`
  double when;     // TimerHandle only
  bool cancelled;
  bool scheduled;  // TimerHandle only: still in the loop's timer heap
};

extern PyTypeObject HandleType;
extern PyTypeObject TimerHandleType;

// An owned reference to a Handle, as the scheduler stores it.
class HandleRef {
 public:
  HandleRef() = default;
  explicit HandleRef(Handle* stolen) : handle_(stolen) {}
  HandleRef(HandleRef&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
  HandleRef& operator=(HandleRef&& other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  HandleRef(const HandleRef&) = delete;
  HandleRef& operator=(const HandleRef&) = delete;
  ~HandleRef() { Py_XDECREF(reinterpret_cast<PyObject*>(handle_)); }

  Handle* get() const { return handle_; }
  // Another owned reference to the same Handle.
  HandleRef share() const {
    Py_XINCREF(reinterpret_cast<PyObject*>(handle_));
    return HandleRef(handle_);
  }
  bool cancelled() const { return handle_->cancelled; }
  void set_scheduled(bool scheduled) { handle_->scheduled = scheduled; }

 private:
  Handle* handle_ = nullptr;
};

using LoopScheduler = core::Scheduler<HandleRef>;

// A new Handle (or TimerHandle, when `type` is TimerHandleType). `context` may be None: the
// current context is copied. Returns nullptr with a Python error set on failure.
Handle* new_handle(PyTypeObject* type, PyObject* callback, PyObject* args, PyObject* context, PyObject* loop,
                   LoopCore* core, double when);

// Runs the callback as asyncio's Handle._run does: errors go to the loop's exception handler,
// except SystemExit and KeyboardInterrupt, for which it returns -1 with the error set.
int run_handle(Handle* handle);

}  // namespace turboloop::binding
