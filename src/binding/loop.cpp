// LoopCore and its Python face, turboloop._turboloop.LoopCore (see loop.hpp).
#include "binding/loop.hpp"

#include <pybind11/stl.h>
#include <pythread.h>
#include <time.h>

#include "core/clock.hpp"

namespace turboloop::binding {
namespace {

// asyncio checks callbacks only in debug mode; the check is cold, so it reuses asyncio's own code.
void check_callback(py::handle callback, const char* method) {
  support("check_callback")(callback, method);
}

py::object schedule(py::handle self, PyTypeObject* type, double when, py::handle callback, py::handle args,
                     py::handle context) {
  LoopCore& core = self.cast<LoopCore&>();
  Handle* handle = new_handle(type, callback.ptr(), args.ptr(), context.ptr(), self.ptr(), &core, when);
  if (handle == nullptr) throw py::error_already_set();
  Py_INCREF(handle);
  if (type == &TimerHandleType)
    core.scheduler.call_at(when, HandleRef(handle));
  else
    core.scheduler.call_soon(HandleRef(handle));
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(handle));
}

py::object call_soon(py::handle self, py::handle callback, py::args args, py::handle context) {
  LoopCore& core = self.cast<LoopCore&>();
  core.check_closed();
  if (core.debug) {
    core.check_thread();
    check_callback(callback, "call_soon");
  }
  return schedule(self, &HandleType, 0.0, callback, args, context);
}

double to_when(py::handle when) {
  if (when.is_none()) raise(PyExc_TypeError, "when cannot be None");
  const double seconds = PyFloat_AsDouble(when.ptr());
  if (seconds == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return seconds;
}

py::object call_at(py::handle self, py::handle when, py::handle callback, py::args args, py::handle context) {
  const double deadline = to_when(when);
  LoopCore& core = self.cast<LoopCore&>();
  core.check_closed();
  if (core.debug) {
    core.check_thread();
    check_callback(callback, "call_at");
  }
  return schedule(self, &TimerHandleType, deadline, callback, args, context);
}

py::object call_later(py::handle self, py::handle delay, py::handle callback, py::args args, py::handle context) {
  if (delay.is_none()) raise(PyExc_TypeError, "delay must not be None");
  // time() + delay, computed by Python so that a bad delay fails exactly as in asyncio.
  py::object when = py::float_(core::monotonic_seconds()) + py::reinterpret_borrow<py::object>(delay);
  return call_at(self, when, callback, args, context);
}

py::object call_soon_threadsafe(py::handle self, py::handle callback, py::args args, py::handle context) {
  LoopCore& core = self.cast<LoopCore&>();
  core.check_closed();
  if (core.debug) check_callback(callback, "call_soon_threadsafe");
  Handle* handle = new_handle(&HandleType, callback.ptr(), args.ptr(), context.ptr(), self.ptr(), &core, 0.0);
  if (handle == nullptr) throw py::error_already_set();
  Py_INCREF(handle);
  // Debug mode runs Python code above, during which another thread may have closed the loop.
  if (core.scheduler.call_soon_threadsafe(HandleRef(handle)) && core.uv) core.uv->wake();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(handle));
}

// Everything the loop holds, for close(): handles are released and libuv's descriptors closed.
void shutdown_core(LoopCore& core) {
  core.closed = true;
  core.scheduler.clear();
  core.signals.reset();
  core.uv.reset();
}

int signal_wakeup_fd(LoopCore& core) {
  core.check_closed();
  if (!core.signals) core.signals = std::make_unique<core::SignalPipe>(core.uv->raw());
  return core.signals->write_fd();
}

int traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<LoopCore&>(py::handle(self));
  int status = 0;
  core.scheduler.for_each([&](const HandleRef& item) {
    if (status == 0 && item.get() != nullptr) status = visit(reinterpret_cast<PyObject*>(item.get()), arg);
  });
  return status;
}

int clear(PyObject* self) {
  if (py::detail::is_holder_constructed(self)) py::cast<LoopCore&>(py::handle(self)).scheduler.clear();
  return 0;
}

}  // namespace

LoopCore::LoopCore() : uv(std::make_unique<core::UvLoop>()) {
  timespec resolution{};
  clock_getres(CLOCK_MONOTONIC, &resolution);
  clock_resolution = static_cast<double>(resolution.tv_sec) + static_cast<double>(resolution.tv_nsec) * 1e-9;
}

void LoopCore::check_closed() const {
  if (closed) raise(PyExc_RuntimeError, "Event loop is closed");
}

void LoopCore::check_thread() const {
  if (thread_id && *thread_id != PyThread_get_thread_ident())
    raise(PyExc_RuntimeError, "Non-thread-safe operation invoked on an event loop other than the current one");
}

void LoopCore::run_until_stopped(py::handle self) {
  thread_id = PyThread_get_thread_ident();
  struct ClearThread {
    std::optional<unsigned long>& id;
    ~ClearThread() { id.reset(); }
  } clear_thread{thread_id};
  scheduler.run_until_stopped(
      core::monotonic_seconds, clock_resolution, [&](double timeout) { poll(self, timeout); },
      [&](HandleRef& item) { run(self, item); });
}

void LoopCore::poll(py::handle self, double timeout) {
  if (timeout == 0.0) {
    uv->poll(0.0);
  } else {
    py::gil_scoped_release without_gil;
    uv->poll(timeout);
  }
  if (signals && signals->pending()) {
    py::list numbers;
    for (int number : signals->take()) numbers.append(number);
    self.attr("_process_signals")(numbers);
    // Runs the Python-level handlers now (the default SIGINT one raises KeyboardInterrupt),
    // as a blocking select() in asyncio's loop would.
    if (PyErr_CheckSignals() < 0) throw py::error_already_set();
  }
}

void LoopCore::run(py::handle self, HandleRef& item) {
  if (debug) {
    self.attr("_run_handle_debug")(py::handle(reinterpret_cast<PyObject*>(item.get())));
  } else if (run_handle(item.get()) < 0) {
    throw py::error_already_set();
  }
}

void register_loop(py::module_& module) {
  py::class_<LoopCore>(module, "LoopCore", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                         auto* type = &heap_type->ht_type;
                         type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                         type->tp_traverse = traverse;
                         type->tp_clear = clear;
                       }))
      .def(py::init<>())
      .def("call_soon", &call_soon, py::arg("callback"), py::kw_only(), py::arg("context") = py::none(),
           "Arrange for callback(*args) to be called soon, in FIFO order.")
      .def("call_later", &call_later, py::arg("delay"), py::arg("callback"), py::kw_only(),
           py::arg("context") = py::none(), "Arrange for callback(*args) to be called after delay seconds.")
      .def("call_at", &call_at, py::arg("when"), py::arg("callback"), py::kw_only(),
           py::arg("context") = py::none(), "Arrange for callback(*args) to be called at loop time `when`.")
      .def("call_soon_threadsafe", &call_soon_threadsafe, py::arg("callback"), py::kw_only(),
           py::arg("context") = py::none(), "Like call_soon(), but safe to call from any thread.")
      .def("time", [](py::handle) { return core::monotonic_seconds(); },
           "Return the loop's time: the monotonic clock, as time.monotonic().")
      .def("_run_until_stopped", [](py::handle self) { self.cast<LoopCore&>().run_until_stopped(self); })
      .def("_shutdown_core", [](LoopCore& core) { shutdown_core(core); })
      .def("_signal_wakeup_fd", &signal_wakeup_fd)
      .def("_write_to_self", [](LoopCore& core) {
        if (core.uv) core.uv->wake();
      })
      .def_property(
          "_closed", [](const LoopCore& core) { return core.closed; },
          [](LoopCore& core, bool closed) { core.closed = closed; })
      .def_property(
          "_stopping", [](const LoopCore& core) { return core.scheduler.stopping(); },
          [](LoopCore& core, bool stopping) { core.scheduler.set_stopping(stopping); })
      .def_property(
          "_debug", [](const LoopCore& core) { return core.debug; },
          [](LoopCore& core, py::handle enabled) { core.debug = PyObject_IsTrue(enabled.ptr()) == 1; })
      .def_property(
          "_thread_id", [](const LoopCore& core) { return core.thread_id; },
          [](LoopCore& core, std::optional<unsigned long> id) { core.thread_id = id; });
}

}  // namespace turboloop::binding
