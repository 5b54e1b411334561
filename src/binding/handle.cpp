// Handle and TimerHandle (see handle.hpp). Cold paths (repr, error reports, debug tracebacks) call
// the pure-Python helpers of turboloop._support, which reuse asyncio's own formatting.
#include "binding/handle.hpp"

#include <vector>

#include "binding/loop.hpp"

namespace turboloop::binding {
namespace {

// Calls turboloop._support.<name>(*args); returns a new reference, or nullptr with the error set.
template <typename... Args>
PyObject* call_support(const char* name, Args... args) {
  try {
    return support(name)(py::handle(reinterpret_cast<PyObject*>(args))...).release().ptr();
  } catch (py::error_already_set& error) {
    error.restore();
    return nullptr;
  }
}

bool is_timer(const Handle* self) { return Py_IS_TYPE(self, &TimerHandleType); }

int handle_traverse(Handle* self, visitproc visit, void* arg) {
  Py_VISIT(self->callback);
  Py_VISIT(self->args);
  Py_VISIT(self->context);
  Py_VISIT(self->loop);
  Py_VISIT(self->repr);
  Py_VISIT(self->source_traceback);
  return 0;
}

int handle_clear(Handle* self) {
  Py_CLEAR(self->callback);
  Py_CLEAR(self->args);
  Py_CLEAR(self->context);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->repr);
  Py_CLEAR(self->source_traceback);
  self->core = nullptr;
  return 0;
}

void handle_dealloc(Handle* self) {
  PyObject_GC_UnTrack(self);
  if (self->weakrefs != nullptr) PyObject_ClearWeakRefs(reinterpret_cast<PyObject*>(self));
  handle_clear(self);
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* handle_repr(Handle* self) {
  if (self->repr != nullptr) return Py_NewRef(self->repr);
  return call_support("format_handle", self);
}

PyObject* handle_cancel(Handle* self, PyObject*) {
  if (self->cancelled) Py_RETURN_NONE;
  if (is_timer(self) && self->scheduled && self->core != nullptr) self->core->scheduler.timer_cancelled();
  self->cancelled = true;
  if (self->core != nullptr && self->core->debug) {
    // asyncio keeps the repr in debug mode so that a later slow-callback warning can name it.
    PyObject* repr = handle_repr(self);
    if (repr == nullptr) return nullptr;
    Py_XSETREF(self->repr, repr);
  }
  Py_CLEAR(self->callback);
  Py_CLEAR(self->args);
  Py_RETURN_NONE;
}

PyObject* handle_cancelled(Handle* self, PyObject*) { return PyBool_FromLong(self->cancelled); }

PyObject* handle_get_context(Handle* self, PyObject*) { return Py_NewRef(self->context); }

PyObject* handle_run_method(Handle* self, PyObject*) {
  if (run_handle(self) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* timer_when(Handle* self, PyObject*) { return PyFloat_FromDouble(self->when); }

PyObject* or_none(PyObject* value) { return Py_NewRef(value != nullptr ? value : Py_None); }

PyObject* get_callback(Handle* self, void*) { return or_none(self->callback); }
PyObject* get_args(Handle* self, void*) { return or_none(self->args); }
PyObject* get_context(Handle* self, void*) { return or_none(self->context); }
PyObject* get_loop(Handle* self, void*) { return or_none(self->loop); }
PyObject* get_repr(Handle* self, void*) { return or_none(self->repr); }
PyObject* get_source_traceback(Handle* self, void*) { return or_none(self->source_traceback); }
PyObject* get_cancelled(Handle* self, void*) { return PyBool_FromLong(self->cancelled); }
PyObject* get_scheduled(Handle* self, void*) { return PyBool_FromLong(self->scheduled); }
PyObject* get_when(Handle* self, void*) { return PyFloat_FromDouble(self->when); }

PyObject* timer_richcompare(PyObject* a, PyObject* b, int op) {
  if (!Py_IS_TYPE(a, &TimerHandleType) || !Py_IS_TYPE(b, &TimerHandleType)) Py_RETURN_NOTIMPLEMENTED;
  auto* self = reinterpret_cast<Handle*>(a);
  auto* other = reinterpret_cast<Handle*>(b);
  // asyncio's TimerHandle.__eq__: same deadline, callback, arguments and cancelled state.
  auto equal = [&]() -> int {
    if (self->when != other->when || self->cancelled != other->cancelled) return 0;
    int same = PyObject_RichCompareBool(self->callback ? self->callback : Py_None,
                                        other->callback ? other->callback : Py_None, Py_EQ);
    if (same != 1) return same;
    PyObject* mine = self->args ? self->args : Py_None;
    PyObject* theirs = other->args ? other->args : Py_None;
    return PyObject_RichCompareBool(mine, theirs, Py_EQ);
  };
  int result = 0;
  switch (op) {
    case Py_LT:
      result = self->when < other->when;
      break;
    case Py_GT:
      result = self->when > other->when;
      break;
    case Py_LE:
      result = self->when < other->when ? 1 : equal();
      break;
    case Py_GE:
      result = self->when > other->when ? 1 : equal();
      break;
    case Py_EQ:
      result = equal();
      break;
    case Py_NE:
      result = equal();
      if (result >= 0) result = !result;
      break;
    default:
      Py_RETURN_NOTIMPLEMENTED;
  }
  if (result < 0) return nullptr;
  return PyBool_FromLong(result);
}

Py_hash_t timer_hash(PyObject* self) {
  PyObject* when = PyFloat_FromDouble(reinterpret_cast<Handle*>(self)->when);
  if (when == nullptr) return -1;
  Py_hash_t hash = PyObject_Hash(when);
  Py_DECREF(when);
  return hash;
}

PyMethodDef handle_methods[] = {
    {"cancel", reinterpret_cast<PyCFunction>(handle_cancel), METH_NOARGS,
     "Cancel the callback. If the callback has already been cancelled or executed, this does nothing."},
    {"cancelled", reinterpret_cast<PyCFunction>(handle_cancelled), METH_NOARGS,
     "Return True if the callback was cancelled."},
    {"get_context", reinterpret_cast<PyCFunction>(handle_get_context), METH_NOARGS,
     "Return the contextvars.Context the callback runs in."},
    {"_run", reinterpret_cast<PyCFunction>(handle_run_method), METH_NOARGS,
     "Run the callback now, reporting its errors to the loop's exception handler."},
    {nullptr, nullptr, 0, nullptr}};

PyMethodDef timer_methods[] = {{"when", reinterpret_cast<PyCFunction>(timer_when), METH_NOARGS,
                                "Return the scheduled callback time as a float in the loop's clock."},
                               {nullptr, nullptr, 0, nullptr}};

PyGetSetDef handle_getset[] = {
    {"_callback", reinterpret_cast<getter>(get_callback), nullptr, nullptr, nullptr},
    {"_args", reinterpret_cast<getter>(get_args), nullptr, nullptr, nullptr},
    {"_context", reinterpret_cast<getter>(get_context), nullptr, nullptr, nullptr},
    {"_loop", reinterpret_cast<getter>(get_loop), nullptr, nullptr, nullptr},
    {"_repr", reinterpret_cast<getter>(get_repr), nullptr, nullptr, nullptr},
    {"_source_traceback", reinterpret_cast<getter>(get_source_traceback), nullptr, nullptr, nullptr},
    {"_cancelled", reinterpret_cast<getter>(get_cancelled), nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyGetSetDef timer_getset[] = {{"_when", reinterpret_cast<getter>(get_when), nullptr, nullptr, nullptr},
                              {"_scheduled", reinterpret_cast<getter>(get_scheduled), nullptr, nullptr, nullptr},
                              {nullptr, nullptr, nullptr, nullptr, nullptr}};

}  // namespace

PyTypeObject HandleType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop.Handle";
  type.tp_basicsize = sizeof(Handle);
  type.tp_dealloc = reinterpret_cast<destructor>(handle_dealloc);
  type.tp_repr = reinterpret_cast<reprfunc>(handle_repr);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE;
  type.tp_doc = "A callback scheduled by call_soon() and friends (asyncio.Handle's interface).";
  type.tp_traverse = reinterpret_cast<traverseproc>(handle_traverse);
  type.tp_clear = reinterpret_cast<inquiry>(handle_clear);
  type.tp_weaklistoffset = offsetof(Handle, weakrefs);
  type.tp_methods = handle_methods;
  type.tp_getset = handle_getset;
  return type;
}();

PyTypeObject TimerHandleType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop.TimerHandle";
  type.tp_basicsize = sizeof(Handle);
  type.tp_dealloc = reinterpret_cast<destructor>(handle_dealloc);
  type.tp_hash = timer_hash;
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "A callback scheduled by call_later()/call_at() (asyncio.TimerHandle's interface).";
  type.tp_traverse = reinterpret_cast<traverseproc>(handle_traverse);
  type.tp_clear = reinterpret_cast<inquiry>(handle_clear);
  type.tp_richcompare = timer_richcompare;
  type.tp_methods = timer_methods;
  type.tp_getset = timer_getset;
  type.tp_base = &HandleType;
  return type;
}();

Handle* new_handle(PyTypeObject* type, PyObject* callback, PyObject* args, PyObject* context, PyObject* loop,
                   LoopCore* core, double when) {
  PyObject* own_context = (context == nullptr || context == Py_None) ? PyContext_CopyCurrent() : Py_NewRef(context);
  if (own_context == nullptr) return nullptr;
  Handle* self = PyObject_GC_New(Handle, type);
  if (self == nullptr) {
    Py_DECREF(own_context);
    return nullptr;
  }
  self->callback = Py_NewRef(callback);
  self->args = Py_NewRef(args);
  self->context = own_context;
  self->loop = Py_NewRef(loop);
  self->repr = nullptr;
  self->source_traceback = nullptr;
  self->weakrefs = nullptr;
  self->core = core;
  self->when = when;
  self->cancelled = false;
  self->scheduled = false;
  if (core->debug) {
    self->source_traceback = call_support("extract_source_traceback");
    if (self->source_traceback == nullptr) {
      Py_DECREF(self);
      return nullptr;
    }
  }
  PyObject_GC_Track(self);
  return self;
}

// asyncio's Handle runs `context.run(callback, *args)`: a context= that is not a
// contextvars.Context is used (and fails) the same way.
static PyObject* run_in_other_context(PyObject* context, PyObject* callback, PyObject* args) {
  PyObject* run = PyObject_GetAttr(context, interned<"run">().ptr());
  if (run == nullptr) return nullptr;
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  std::vector<PyObject*> stack(static_cast<size_t>(nargs) + 1);
  stack[0] = callback;
  for (Py_ssize_t i = 0; i < nargs; ++i) stack[static_cast<size_t>(i) + 1] = PyTuple_GET_ITEM(args, i);
  PyObject* result = PyObject_Vectorcall(run, stack.data(), stack.size(), nullptr);
  Py_DECREF(run);
  return result;
}

int run_handle(Handle* self) {
  PyObject* result = nullptr;
  if (self->callback == nullptr) {
    PyErr_SetString(PyExc_TypeError, "'NoneType' object is not callable");
  } else {
    // Strong references for the call: the callback may cancel its own handle.
    PyObject* callback = Py_NewRef(self->callback);
    PyObject* args = Py_NewRef(self->args);
    PyObject* context = Py_NewRef(self->context);
    if (!PyContext_CheckExact(context)) {
      result = run_in_other_context(context, callback, args);
    } else if (PyContext_Enter(context) == 0) {
      result = PyObject_Call(callback, args, nullptr);
      if (PyContext_Exit(context) < 0) Py_CLEAR(result);
    }
    Py_DECREF(callback);
    Py_DECREF(args);
    Py_DECREF(context);
  }
  if (result != nullptr) {
    Py_DECREF(result);
    return 0;
  }
  if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return -1;
  PyObject* value = fetch_exception();
  PyObject* reported = call_support("report_callback_error", self, value);
  Py_DECREF(value);
  if (reported == nullptr) return -1;
  Py_DECREF(reported);
  return 0;
}

void register_handle(py::module_& module) {
  if (PyType_Ready(&HandleType) < 0 || PyType_Ready(&TimerHandleType) < 0) throw py::error_already_set();
  module.add_object("Handle", reinterpret_cast<PyObject*>(&HandleType));
  module.add_object("TimerHandle", reinterpret_cast<PyObject*>(&TimerHandleType));
}

}  // namespace turboloop::binding
