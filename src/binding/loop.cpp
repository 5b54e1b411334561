// LoopCore and its Python face, turboloop._turboloop.LoopCore (see loop.hpp).
#include "binding/loop.hpp"

#include <pybind11/stl.h>
#include <pythread.h>
#include <time.h>

#include "binding/schedule.hpp"
#include "binding/sock_calls.hpp"
#include "core/clock.hpp"
#include "core/malloc_tuning.hpp"

namespace turboloop::binding {
namespace {

// Everything the loop holds, for close(): handles are released and libuv's descriptors closed.
void shutdown_core(LoopCore& core) {
  core.closed = true;
  core.scheduler.clear();
  core.fds.reset();
  core.signals.reset();
  core.uv.reset();
}

int signal_wakeup_fd(LoopCore& core) {
  core.check_closed();
  return core.signals->write_fd();
}

// What the native core counts and holds, for the Python loop's stats().
py::dict native_stats(const LoopCore& core) {
  py::dict stats;
  stats["iterations"] = core.metrics.iterations();
  stats["callbacks_run"] = core.metrics.callbacks();
  stats["time_in_callbacks"] = core.metrics.callback_seconds();
  stats["time_polling"] = core.metrics.poll_seconds();
  stats["longest_callback"] = core.metrics.longest_callback_seconds();
  stats["ready_queue_depth"] = core.scheduler.ready_count();
  stats["timers_pending"] = core.scheduler.live_timer_count();
  stats["readers"] = core.fds ? core.fds->reader_count() : 0;
  stats["writers"] = core.fds ? core.fds->writer_count() : 0;
  return stats;
}

void set_watchdog(LoopCore& core, double threshold) {
  core.watchdog.stop();
  core.watchdog.set_threshold(threshold);
  if (core.thread_id && *core.thread_id == PyThread_get_thread_ident()) core.watchdog.start(*core.thread_id);
}

int traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<LoopCore&>(py::handle(self));
  int status = 0;
  core.scheduler.for_each([&](const HandleRef& item) {
    if (status == 0 && item.get() != nullptr) status = visit(reinterpret_cast<PyObject*>(item.get()), arg);
  });
  if (core.fds) {
    core.fds->for_each([&](PyObject* object) {
      if (status == 0 && object != nullptr) status = visit(object, arg);
    });
  }
  for (const HeldWrites& held : core.held_writes)
    if (status == 0) status = visit(held.owner.ptr(), arg);
  return status;
}

int clear(PyObject* self) {
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<LoopCore&>(py::handle(self));
  core.scheduler.clear();
  core.fds.reset();
  core.held_writes.clear();
  return 0;
}

// object.__new__, then pybind11's layout. pybind11's own tp_new leaves out the inline attribute
// values object.__new__ gives instances of a Python subclass (turboloop.Loop): the loop's first
// attribute made a plain dict then, and every method lookup from C on the loop (each Future asks
// get_debug(), each callback call_soon()) a dict lookup of its own.
PyObject* new_loop(PyTypeObject* type, PyObject*, PyObject*) {
  static PyObject* const no_arguments = PyTuple_New(0);  // never released
  PyObject* self = PyBaseObject_Type.tp_new(type, no_arguments, nullptr);
  if (self == nullptr) return nullptr;
  // Out of the collector's sight until the layout exists: allocating it may collect (pybind11
  // makes a weak reference to a new subclass on its first instance), and traverse() cannot read
  // an instance with no layout yet.
  PyObject_GC_UnTrack(self);
  try {
    reinterpret_cast<py::detail::instance*>(self)->allocate_layout();
  } catch (const std::exception& error) {
    PyObject_GC_Track(self);
    Py_DECREF(self);
    PyErr_SetString(PyExc_MemoryError, error.what());
    return nullptr;
  }
  PyObject_GC_Track(self);
  return self;
}

}  // namespace

LoopCore::LoopCore()
    : uv(std::make_unique<core::UvLoop>()),
      signals(std::make_unique<core::SignalPipe>(uv->raw())),
      fds(std::make_unique<FdCallbacks>(uv->raw())) {
  core::tune_malloc_for_io();
  timespec resolution{};
  clock_getres(CLOCK_MONOTONIC, &resolution);
  clock_resolution = static_cast<double>(resolution.tv_sec) + static_cast<double>(resolution.tv_nsec) * 1e-9;
}

void LoopCore::check_closed() const {
  // Also when private code set _closed back to False: the libuv loop is gone for good.
  if (closed || !uv || !fds) raise(PyExc_RuntimeError, "Event loop is closed");
}

void LoopCore::check_thread() const {
  if (thread_id && *thread_id != PyThread_get_thread_ident())
    raise(PyExc_RuntimeError, "Non-thread-safe operation invoked on an event loop other than the current one");
}

void LoopCore::run_until_stopped(py::handle self) {
  thread_id = PyThread_get_thread_ident();
  watchdog.start(*thread_id);
  metrics.start_running();
  struct StopRunning {
    LoopCore& core;
    ~StopRunning() {
      core.watchdog.stop();
      core.watchdog.forget_stall();
      core.metrics.stop_running();
      core.thread_id.reset();
    }
  } stop_running{*this};
  try {
    scheduler.run_until_stopped(
        core::monotonic_seconds, clock_resolution, [&](double timeout) { poll(self, timeout); },
        [&](HandleRef& item) { run(self, item); });
  } catch (py::error_already_set&) {
    // A callback's exception ends the run: what it wrote goes out still, as it would have at once.
    try {
      send_held_writes(held_writes);
    } catch (py::error_already_set& error) {
      error.discard_as_unraisable("sending the writes a callback held back");
    }
    throw;
  }
  send_held_writes(held_writes);  // any made outside a callback (a signal's Python handler)
  // A stall in the last iteration is reported too (an exception leaving the loop skips this).
  watchdog.busy_period_ended(self, metrics.stop_running());
}

void LoopCore::poll(py::handle self, double timeout) {
  watchdog.busy_period_ended(self, metrics.enter_poll());
  struct LeavePoll {
    core::LoopMetrics& metrics;
    ~LeavePoll() { metrics.leave_poll(); }
  } leave_poll{metrics};
  if (!fds) raise(PyExc_RuntimeError, "Event loop is closed");
  fds->drop_stale_parked(timeout != 0.0);
  if (timeout == 0.0) {
    fds->poll(0.0);
  } else {
    py::gil_scoped_release without_gil;
    fds->poll(timeout);
  }
  fds->schedule_ready(scheduler);
  if (signals && signals->pending()) {
    py::list numbers;
    for (int number : signals->take()) numbers.append(number);
    self.attr(interned<"_process_signals">())(numbers);
    // Runs the Python-level handlers now (the default SIGINT one raises KeyboardInterrupt),
    // as a blocking select() in asyncio's loop would.
    if (PyErr_CheckSignals() < 0) throw py::error_already_set();
  }
}

void LoopCore::run(py::handle self, HandleRef& item) {
  if (debug) {
    self.attr(interned<"_run_handle_debug">())(py::handle(reinterpret_cast<PyObject*>(item.get())));
  } else if (run_handle(item.get()) < 0) {
    throw py::error_already_set();
  }
  if (!held_writes.empty()) send_held_writes(held_writes);
  metrics.callback_ran();
  watchdog.callback_ran(item.get());
}

void ensure_fd_no_transport(py::handle loop, int fd) {
  const py::object transports = loop.attr(interned<"_transports">());
  if (PyDict_GET_SIZE(transports.attr(interned<"data">()).ptr()) > 0)
    loop.attr(interned<"_ensure_fd_no_transport">())(fd);
}

void register_loop(py::module_& module) {
  auto cls =
      py::class_<LoopCore>(module, "LoopCore", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                             auto* type = &heap_type->ht_type;
                             type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                             type->tp_traverse = traverse;
                             type->tp_clear = clear;
                             type->tp_new = new_loop;
                           }))
          .def(py::init<>())
          .def(
              "time", [](py::handle) { return core::monotonic_seconds(); },
              "Return the loop's time: the monotonic clock, as time.monotonic().")
          .def("_run_until_stopped", [](py::handle self) { self.cast<LoopCore&>().run_until_stopped(self); })
          .def("_shutdown_core", [](LoopCore& core) { shutdown_core(core); })
          .def("_signal_wakeup_fd", &signal_wakeup_fd)
          .def("_native_stats", &native_stats)
          .def("_set_watchdog", &set_watchdog, py::arg("threshold"))
          .def_property_readonly("_watchdog_threshold", [](const LoopCore& core) { return core.watchdog.threshold(); })
          .def("_write_to_self",
               [](LoopCore& core) {
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
  add_scheduling_methods(cls);
  add_fd_methods(cls);
  add_sock_methods(cls);
  add_sock_calls(cls, module);
}

}  // namespace turboloop::binding
