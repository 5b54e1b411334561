// The scheduling methods as METH_FASTCALL entries (see schedule.hpp). Argument checks and their
// messages follow asyncio's BaseEventLoop, including its debug-mode-only callback checks.
#include "binding/schedule.hpp"

#include <initializer_list>
#include <string>

#include "binding/handle.hpp"
#include "binding/loop.hpp"
#include "core/clock.hpp"

namespace turboloop::binding {

// The LoopCore inside a Python loop object (the method descriptor has checked its type).
LoopCore* loop_core(PyObject* self) {
  auto holder = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
  if (!holder.holder_constructed()) {
    PyErr_SetString(PyExc_RuntimeError, "the loop's __init__() was not called");
    return nullptr;
  }
  return holder.value_ptr<LoopCore>();
}

// create_future(): asyncio.Future(loop=self), without a Python frame.
PyObject* create_future(PyObject* self, PyObject*) {
  static PyObject* const future_type =
      py::object(py::module_::import("asyncio").attr("Future")).release().ptr();  // never released
  PyObject* args[] = {self};
  static PyObject* const loop_keyword = Py_BuildValue("(s)", "loop");
  return PyObject_Vectorcall(future_type, args, 0, loop_keyword);
}

namespace {

// Reads the keyword arguments: only `context` is accepted.
bool parse_context(const char* method, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** context) {
  *context = Py_None;
  if (kwnames == nullptr) return true;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_CompareWithASCIIString(name, "context") != 0) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", method, name);
      return false;
    }
    *context = args[nargs + i];
  }
  return true;
}

// Python's own message for missing arguments, naming those of `names` not given.
bool require_positional(const char* method, Py_ssize_t nargs, std::initializer_list<const char*> names) {
  const auto required = static_cast<Py_ssize_t>(names.size());
  if (nargs >= required) return true;
  std::string missing;
  for (Py_ssize_t i = nargs; i < required; ++i) {
    if (!missing.empty()) missing += i + 1 == required ? " and " : ", ";
    missing += std::string("'") + names.begin()[i] + "'";
  }
  const Py_ssize_t count = required - nargs;
  PyErr_Format(PyExc_TypeError, "%s() missing %zd required positional argument%s: %s", method, count,
               count == 1 ? "" : "s", missing.c_str());
  return false;
}

// asyncio's _check_closed, and in debug mode _check_thread and _check_callback.
bool check_loop(LoopCore* core, PyObject* callback, const char* method, bool check_thread) {
  try {
    core->check_closed();
    if (core->debug) {
      if (check_thread) core->check_thread();
      support("check_callback")(py::handle(callback), method);
    }
    return true;
  } catch (py::error_already_set& error) {
    error.restore();
    return false;
  }
}

PyObject* tuple_of(PyObject* const* items, Py_ssize_t count) {
  PyObject* tuple = PyTuple_New(count);
  if (tuple == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < count; ++i) PyTuple_SET_ITEM(tuple, i, Py_NewRef(items[i]));
  return tuple;
}

// Creates the handle for callback(*args) and gives the scheduler its own reference.
template <typename Enqueue>
PyObject* schedule(PyObject* self, LoopCore* core, PyTypeObject* type, double when, PyObject* const* args,
                   Py_ssize_t nargs, PyObject* context, Enqueue&& enqueue) {
  PyObject* callback_args = tuple_of(args + 1, nargs - 1);
  if (callback_args == nullptr) return nullptr;
  Handle* handle = new_handle(type, args[0], callback_args, context, self, core, when);
  Py_DECREF(callback_args);
  if (handle == nullptr) return nullptr;
  try {
    enqueue(HandleRef(reinterpret_cast<Handle*>(Py_NewRef(handle))));
  } catch (const std::bad_alloc&) {
    Py_DECREF(handle);
    return PyErr_NoMemory();
  }
  return reinterpret_cast<PyObject*>(handle);
}

PyObject* schedule_timer(PyObject* self, LoopCore* core, double when, PyObject* const* args, Py_ssize_t nargs,
                         PyObject* context) {
  if (!check_loop(core, args[0], "call_at", true)) return nullptr;
  return schedule(self, core, &TimerHandleType, when, args, nargs, context,
                  [&](HandleRef handle) { core->scheduler.call_at(when, std::move(handle)); });
}

// call_soon and call_soon_threadsafe: the same checks (asyncio skips the thread check for the
// thread-safe one), then `enqueue(core, handle)`.
template <typename Enqueue>
PyObject* schedule_soon(const char* method, bool check_thread, PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                        PyObject* kwnames, Enqueue&& enqueue) {
  PyObject* context;
  if (!parse_context(method, args, nargs, kwnames, &context)) return nullptr;
  if (!require_positional(method, nargs, {"callback"})) return nullptr;
  LoopCore* core = loop_core(self);
  if (core == nullptr || !check_loop(core, args[0], method, check_thread)) return nullptr;
  return schedule(self, core, &HandleType, 0.0, args, nargs, context,
                  [&](HandleRef handle) { enqueue(core, std::move(handle)); });
}

PyObject* call_soon(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return schedule_soon("call_soon", true, self, args, nargs, kwnames,
                       [](LoopCore* core, HandleRef handle) { core->scheduler.call_soon(std::move(handle)); });
}

PyObject* call_soon_threadsafe(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return schedule_soon("call_soon_threadsafe", false, self, args, nargs, kwnames, [](LoopCore* core, HandleRef handle) {
    // Debug mode ran Python code above, during which another thread may
    // have closed the loop.
    if (core->scheduler.call_soon_threadsafe(std::move(handle)) && core->uv) core->uv->wake();
  });
}

PyObject* call_at(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* context;
  if (!parse_context("call_at", args, nargs, kwnames, &context)) return nullptr;
  if (!require_positional("call_at", nargs, {"when", "callback"})) return nullptr;
  if (args[0] == Py_None) {
    PyErr_SetString(PyExc_TypeError, "when cannot be None");
    return nullptr;
  }
  const double when = PyFloat_AsDouble(args[0]);
  if (when == -1.0 && PyErr_Occurred()) return nullptr;
  LoopCore* core = loop_core(self);
  if (core == nullptr) return nullptr;
  return schedule_timer(self, core, when, args + 1, nargs - 1, context);
}

PyObject* call_later(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* context;
  if (!parse_context("call_later", args, nargs, kwnames, &context)) return nullptr;
  if (!require_positional("call_later", nargs, {"delay", "callback"})) return nullptr;
  PyObject* delay = args[0];
  if (delay == Py_None) {
    PyErr_SetString(PyExc_TypeError, "delay must not be None");
    return nullptr;
  }
  double when;
  if (PyFloat_CheckExact(delay)) {
    when = core::monotonic_seconds() + PyFloat_AS_DOUBLE(delay);
  } else {
    // time() + delay, computed by Python so that an odd delay fails exactly as in asyncio.
    PyObject* now = PyFloat_FromDouble(core::monotonic_seconds());
    if (now == nullptr) return nullptr;
    PyObject* sum = PyNumber_Add(now, delay);
    Py_DECREF(now);
    if (sum == nullptr) return nullptr;
    when = PyFloat_AsDouble(sum);
    Py_DECREF(sum);
    if (when == -1.0 && PyErr_Occurred()) return nullptr;
  }
  LoopCore* core = loop_core(self);
  if (core == nullptr) return nullptr;
  return schedule_timer(self, core, when, args + 1, nargs - 1, context);
}

// get_debug(): every Future asks it when it is made.
PyObject* get_debug(PyObject* self, PyObject*) {
  LoopCore* core = loop_core(self);
  if (core == nullptr) return nullptr;
  return PyBool_FromLong(core->debug);
}

PyMethodDef scheduling_methods[] = {
    {"get_debug", get_debug, METH_NOARGS, "Return the debug mode of the loop."},
    {"create_future", create_future, METH_NOARGS, "Create a Future object attached to the loop."},
    {"call_soon", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call_soon)), METH_FASTCALL | METH_KEYWORDS,
     "call_soon($self, callback, *args, context=None)\n--\n\n"
     "Arrange for callback(*args) to be called soon, in FIFO order. Returns a Handle."},
    {"call_later", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call_later)),
     METH_FASTCALL | METH_KEYWORDS,
     "call_later($self, delay, callback, *args, context=None)\n--\n\n"
     "Arrange for callback(*args) to be called after `delay` seconds. Returns a TimerHandle."},
    {"call_at", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call_at)), METH_FASTCALL | METH_KEYWORDS,
     "call_at($self, when, callback, *args, context=None)\n--\n\n"
     "Like call_later(), but at the absolute loop time `when`. Returns a TimerHandle."},
    {"call_soon_threadsafe", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call_soon_threadsafe)),
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n"
     "Like call_soon(), but safe to call from any thread: it wakes the loop up."},
};

}  // namespace

void add_scheduling_methods(py::handle loop_class) {
  for (PyMethodDef& method : scheduling_methods) {
    py::object descriptor = py::reinterpret_steal<py::object>(
        PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(loop_class.ptr()), &method));
    if (!descriptor) throw py::error_already_set();
    loop_class.attr(method.ml_name) = descriptor;
  }
}

}  // namespace turboloop::binding
