// loop.sock_recv(), loop.sock_recv_into() and loop.sock_sendall() as native coroutines: SockCall
// objects, which Tasks drive and `await` takes like any coroutine (send, throw, close,
// __await__). A call on a plain non-blocking socket.socket with arguments asyncio would pass
// through unchanged (an int size; a bytearray or a writable memoryview to read into; bytes or a
// bytearray to send) reads or sends at once and, when the socket is not ready, waits on a future
// with a native reader or writer; anything else (debug mode, a blocking or closed socket, a
// socket subclass, other argument types) runs asyncio's own coroutine, so its behaviour and
// errors stay asyncio's.
//
// asyncio stops reading or writing in a done callback of the future; here the reader or writer
// stops as soon as it completes the future, or when the coroutine is resumed, thrown into,
// closed or freed. A reader is parked (FdCallbacks::park_reader), as the next read on the socket
// usually follows at once.
#include "binding/sock_calls.hpp"

#include "binding/fd_callbacks.hpp"
#include "binding/handle.hpp"
#include "binding/loop.hpp"
#include "binding/schedule.hpp"
#include "binding/socket_read.hpp"
#include "core/socket_io.hpp"

namespace turboloop::binding {
namespace {

using core::FdWatchers;

enum class Kind : char { kRecv, kRecvInto, kSendall };
enum class State : char { kCreated, kWaiting, kDelegating, kFinished };

struct SockCall {
  PyObject_HEAD PyObject* loop;  // the Python loop
  PyObject* sock;                // the socket.socket
  PyObject* arg;                 // recv: the size (an int); recv_into: the buffer; sendall: the data
  PyObject* future;              // kWaiting: what the task waits on
  PyObject* handle;              // kWaiting: the reader or writer Handle, until it stops
  PyObject* delegate;            // kDelegating: asyncio's coroutine, which does the work instead
  Py_buffer view;                // sendall, kWaiting: the data
  Py_ssize_t size;               // recv: the most to read
  Py_ssize_t sent;               // sendall: bytes sent so far
  int fd;
  Kind kind;
  State state;
};

// future.done(): 1, 0, or -1 with a Python error set.
int future_done(PyObject* future) {
  PyObject* done = PyObject_CallMethodNoArgs(future, interned<"done">().ptr());
  if (done == nullptr) return -1;
  const int is_done = PyObject_IsTrue(done);
  Py_DECREF(done);
  return is_done;
}

// asyncio's own methods, for what the native path leaves to them.
PyObject* asyncio_method(Kind kind) {
  static PyObject* const cls = py::object(py::module_::import("asyncio.selector_events").attr("BaseSelectorEventLoop"))
                                   .release()
                                   .ptr();  // never released
  static PyObject* const recv = PyObject_GetAttrString(cls, "sock_recv");
  static PyObject* const recv_into = PyObject_GetAttrString(cls, "sock_recv_into");
  static PyObject* const sendall = PyObject_GetAttrString(cls, "sock_sendall");
  switch (kind) {
    case Kind::kRecv:
      return recv;
    case Kind::kRecvInto:
      return recv_into;
    case Kind::kSendall:
      break;
  }
  return sendall;
}

// Stops the reader or writer, unless another callback replaced it (add_reader on the same
// descriptor), as asyncio's _sock_read_done/_sock_write_done.
void stop_watching(SockCall* self) {
  PyObject* handle = self->handle;
  if (handle == nullptr || self->loop == nullptr) return;
  self->handle = nullptr;
  const bool replaced = reinterpret_cast<Handle*>(handle)->cancelled;
  Py_DECREF(handle);
  LoopCore* core = loop_core(self->loop);
  if (core == nullptr) {
    PyErr_Clear();
    return;
  }
  if (replaced || core->closed || !core->fds) return;
  try {
    if (self->kind != Kind::kSendall) {
      core->fds->park_reader(self->fd, self->sock);
    } else {
      core->fds->remove(self->fd, FdWatchers::kWritable);
    }
  } catch (py::error_already_set& error) {
    // Only a Handle's cancel() can fail here, and the coroutine's outcome stands.
    error.discard_as_unraisable(__func__);
  }
}

// The coroutine is over: nothing is watched or held for the wait any more.
void finish(SockCall* self) {
  stop_watching(self);
  Py_CLEAR(self->future);
  Py_CLEAR(self->delegate);
  if (self->view.obj != nullptr) PyBuffer_Release(&self->view);
  self->state = State::kFinished;
}

// finish() with the Python error set, which it keeps.
void finish_keeping_error(SockCall* self) {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  finish(self);
  PyErr_Restore(type, value, traceback);
}

// Ends the coroutine with the Python error set (or, for `result`, returning it).
PySendResult finish_with(SockCall* self, PyObject* result, PyObject** out) {
  if (result == nullptr) {
    finish_keeping_error(self);
    return PYGEN_ERROR;
  }
  finish(self);
  *out = result;
  return PYGEN_RETURN;
}

// One step of asyncio's coroutine.
PySendResult delegate_send(SockCall* self, PyObject* arg, PyObject** out) {
  const PySendResult status = PyIter_Send(self->delegate, arg, out);
  if (status == PYGEN_ERROR) finish_keeping_error(self);
  if (status == PYGEN_RETURN) finish(self);
  return status;
}

// From here on asyncio's coroutine does the work.
PySendResult delegate(SockCall* self, PyObject** out) {
  PyObject* args[] = {self->loop, self->sock, self->arg};
  self->delegate = PyObject_Vectorcall(asyncio_method(self->kind), args, 3, nullptr);
  if (self->delegate == nullptr) return finish_with(self, nullptr, out);
  self->state = State::kDelegating;
  return delegate_send(self, Py_None, out);
}

// The socket's descriptor; -1 when it is not one the native path takes (closed or blocking), -2
// with a Python error set when asking the socket failed.
int usable_fd(SockCall* self) {
  PyObject* timeout = PyObject_CallMethodNoArgs(self->sock, interned<"gettimeout">().ptr());
  if (timeout == nullptr) return -2;
  const bool non_blocking = PyFloat_CheckExact(timeout) && PyFloat_AS_DOUBLE(timeout) == 0.0;
  Py_DECREF(timeout);
  if (!non_blocking) return -1;
  const long fd = socket_fileno(self->sock);
  if (fd == -1 && PyErr_Occurred()) return -2;
  return fd < 0 || fd > INT_MAX ? -1 : static_cast<int>(fd);
}

// One recv_into(): the count as an int; nullptr with `error` = EAGAIN when nothing is waiting, or
// with a Python error set. The buffer is held only for the read, as socket.recv_into() holds it,
// and one it cannot take (a memoryview released meanwhile) fails with socket.recv_into()'s error.
PyObject* read_into(int fd, PyObject* buffer, int& error) {
  error = 0;
  Py_buffer view;
  if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "recv_into() argument 1 must be read-write bytes-like object, not %.50s",
                 Py_TYPE(buffer)->tp_name);
    return nullptr;
  }
  const ssize_t count = core::receive(fd, view.buf, static_cast<std::size_t>(view.len));
  PyBuffer_Release(&view);
  if (count >= 0) return PyLong_FromSsize_t(count);
  error = static_cast<int>(-count);
  if (error != EAGAIN) {
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
  }
  return nullptr;
}

// One read of a recv or recv_into call on its descriptor: the bytes, or the count; nullptr with
// `error` = EAGAIN when nothing is waiting, or with a Python error set.
PyObject* read_once(SockCall* self, int& error) {
  if (self->kind == Kind::kRecvInto) return read_into(self->fd, self->arg, error);
  return read_socket(self->fd, static_cast<std::size_t>(self->size), error);
}

// The reader or writer the loop runs when the socket is ready (asyncio's _sock_recv and
// _sock_sendall): it completes the future, or waits on.
PyObject* ready(PyObject* object, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<SockCall*>(object);
  if (self->state != State::kWaiting) Py_RETURN_NONE;
  const int is_done = future_done(self->future);
  if (is_done != 0) return is_done < 0 ? nullptr : Py_NewRef(Py_None);
  // A socket closed meanwhile fails as socket.recv()/send() would, whatever now has its number.
  const long fd = socket_fileno(self->sock);
  if (fd == -1 && PyErr_Occurred()) return nullptr;
  const bool same = fd == self->fd;
  PyObject* result = nullptr;
  if (!same) {
    errno = EBADF;
    PyErr_SetFromErrno(PyExc_OSError);
  } else if (self->kind != Kind::kSendall) {
    int error;
    result = read_once(self, error);
    if (result == nullptr && error == EAGAIN) Py_RETURN_NONE;  // try again next time
  } else {
    const auto* bytes = static_cast<const char*>(self->view.buf);
    const ssize_t sent =
        core::send_some(self->fd, bytes + self->sent, static_cast<std::size_t>(self->view.len - self->sent));
    if (sent < 0) {
      errno = static_cast<int>(-sent);
      PyErr_SetFromErrno(PyExc_OSError);
    } else {
      self->sent += sent;
      if (self->sent < self->view.len) Py_RETURN_NONE;
      result = Py_NewRef(Py_None);
    }
  }
  PyObject* outcome;
  if (result != nullptr) {
    outcome = PyObject_CallMethodOneArg(self->future, interned<"set_result">().ptr(), result);
    Py_DECREF(result);
  } else {
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return nullptr;
    PyObject* value = fetch_exception();
    outcome = PyObject_CallMethodOneArg(self->future, interned<"set_exception">().ptr(), value);
    Py_DECREF(value);
  }
  if (outcome == nullptr) return nullptr;
  Py_DECREF(outcome);
  stop_watching(self);
  Py_RETURN_NONE;
}

// Not ready at once: wait on a future with a reader or writer, as asyncio does.
PySendResult wait(SockCall* self, LoopCore* core, PyObject** out) {
  try {
    ensure_fd_no_transport(self->loop, self->fd);
  } catch (py::error_already_set& error) {
    error.restore();
    return finish_with(self, nullptr, out);
  }
  self->future = create_future(self->loop);
  if (self->future == nullptr) return finish_with(self, nullptr, out);
  const py::tuple no_args;
  try {
    core->check_closed();
    Handle* handle =
        new_handle(&HandleType, reinterpret_cast<PyObject*>(self), no_args.ptr(), Py_None, self->loop, core, 0.0);
    if (handle == nullptr) throw py::error_already_set();
    HandleRef callback(handle);
    self->handle = Py_NewRef(reinterpret_cast<PyObject*>(handle));
    const bool reading = self->kind != Kind::kSendall;
    core->fds->add(self->fd, py::int_(self->fd), reading ? FdWatchers::kReadable : FdWatchers::kWritable,
                   std::move(callback), reading ? py::handle(self->sock) : py::handle());
  } catch (py::error_already_set& error) {
    error.restore();
    Py_CLEAR(self->handle);
    return finish_with(self, nullptr, out);
  }
  // What Future.__await__ sets before it yields, which a Task checks.
  if (PyObject_SetAttr(self->future, interned<"_asyncio_future_blocking">().ptr(), Py_True) < 0)
    return finish_with(self, nullptr, out);
  self->state = State::kWaiting;
  *out = Py_NewRef(self->future);
  return PYGEN_NEXT;
}

// The first step: the read or send, and the wait when the socket is not ready.
PySendResult start(SockCall* self, PyObject** out) {
  LoopCore* core = loop_core(self->loop);
  if (core == nullptr) return finish_with(self, nullptr, out);
  if (core->debug) return delegate(self, out);
  const int fd = usable_fd(self);
  if (fd == -2) return finish_with(self, nullptr, out);
  if (fd < 0) return delegate(self, out);
  self->fd = fd;
  if (self->kind != Kind::kSendall) {
    int error;
    PyObject* result = read_once(self, error);
    if (result != nullptr || error != EAGAIN) return finish_with(self, result, out);
    return wait(self, core, out);
  }
  if (PyObject_GetBuffer(self->arg, &self->view, PyBUF_SIMPLE) < 0) return finish_with(self, nullptr, out);
  const ssize_t sent = core::send_some(fd, self->view.buf, static_cast<std::size_t>(self->view.len));
  if (sent < 0) {
    errno = static_cast<int>(-sent);
    PyErr_SetFromErrno(PyExc_OSError);
    return finish_with(self, nullptr, out);
  }
  self->sent = sent;
  if (self->sent == self->view.len) return finish_with(self, Py_NewRef(Py_None), out);
  return wait(self, core, out);
}

// Resumed by the task once the future is done: its outcome is the coroutine's.
PySendResult resume(SockCall* self, PyObject** out) {
  const int is_done = future_done(self->future);
  if (is_done < 0) return finish_with(self, nullptr, out);
  if (is_done == 0) {
    PyErr_SetString(PyExc_RuntimeError, "await wasn't used with future");
    return finish_with(self, nullptr, out);
  }
  return finish_with(self, PyObject_CallMethodNoArgs(self->future, interned<"result">().ptr()), out);
}

PySendResult call_send(PyObject* object, PyObject* arg, PyObject** out) {
  auto* self = reinterpret_cast<SockCall*>(object);
  switch (self->state) {
    case State::kCreated:
      if (arg != Py_None) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
        return PYGEN_ERROR;
      }
      return start(self, out);
    case State::kWaiting:
      return resume(self, out);
    case State::kDelegating:
      return delegate_send(self, arg, out);
    case State::kFinished:
      break;
  }
  PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
  return PYGEN_ERROR;
}

// The outcome of a step as a generator's send() gives it: the yielded value, or StopIteration.
PyObject* as_generator_result(PySendResult status, PyObject* result) {
  if (status != PYGEN_RETURN) return result;
  if (result == Py_None) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return nullptr;
  }
  PyObject* stop = PyObject_CallOneArg(PyExc_StopIteration, result);
  Py_DECREF(result);
  if (stop != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return nullptr;
}

PyObject* call_iternext(PyObject* object) {
  PyObject* result = nullptr;
  const PySendResult status = call_send(object, Py_None, &result);
  if (status == PYGEN_RETURN && result == Py_None) {
    Py_DECREF(result);
    return nullptr;  // exhausted: StopIteration(None)
  }
  return as_generator_result(status, result);
}

PyObject* send_method(PyObject* object, PyObject* arg) {
  PyObject* result = nullptr;
  const PySendResult status = call_send(object, arg, &result);
  return as_generator_result(status, result);
}

// throw(exc) or throw(type[, value[, traceback]]): a delegate gets it; otherwise the coroutine
// ends with it raised at the await, as a generator does.
PyObject* throw_method(PyObject* object, PyObject* const* args, Py_ssize_t nargs) {
  auto* self = reinterpret_cast<SockCall*>(object);
  if (nargs < 1 || nargs > 3) {
    PyErr_Format(PyExc_TypeError, "throw expected at least 1 argument, got %zd", nargs);
    return nullptr;
  }
  if (self->state == State::kDelegating) {
    PyObject* method = PyObject_GetAttr(self->delegate, interned<"throw">().ptr());
    if (method == nullptr) return nullptr;
    PyObject* result = PyObject_Vectorcall(method, args, static_cast<std::size_t>(nargs), nullptr);
    Py_DECREF(method);
    if (result == nullptr) finish_keeping_error(self);
    return result;
  }
  PyObject* type = args[0];
  PyObject* value = nargs > 1 ? args[1] : Py_None;
  PyObject* traceback = nargs > 2 ? args[2] : Py_None;
  if (traceback != Py_None && !PyTraceBack_Check(traceback)) {
    PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
    return nullptr;
  }
  finish(self);
  if (PyExceptionInstance_Check(type)) {
    if (value != Py_None) {
      PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
      return nullptr;
    }
    if (traceback != Py_None) PyException_SetTraceback(type, traceback);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(type)), type);
    return nullptr;
  }
  if (!PyExceptionClass_Check(type)) {
    PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                 Py_TYPE(type)->tp_name);
    return nullptr;
  }
  PyObject* exc_type = Py_NewRef(type);
  PyObject* exc_value = Py_NewRef(value);
  PyObject* exc_traceback = traceback == Py_None ? nullptr : Py_NewRef(traceback);
  PyErr_NormalizeException(&exc_type, &exc_value, &exc_traceback);
  if (exc_traceback != nullptr) PyException_SetTraceback(exc_value, exc_traceback);
  PyErr_Restore(exc_type, exc_value, exc_traceback);
  return nullptr;
}

PyObject* close_method(PyObject* object, PyObject*) {
  auto* self = reinterpret_cast<SockCall*>(object);
  if (self->state == State::kDelegating) {
    PyObject* result = PyObject_CallMethodNoArgs(self->delegate, interned<"close">().ptr());
    if (result == nullptr) {
      finish_keeping_error(self);
    } else {
      finish(self);
    }
    return result;
  }
  finish(self);
  Py_RETURN_NONE;
}

PyObject* await_method(PyObject* object) { return Py_NewRef(object); }

const char* method_name(Kind kind) {
  switch (kind) {
    case Kind::kRecv:
      return "sock_recv";
    case Kind::kRecvInto:
      return "sock_recv_into";
    case Kind::kSendall:
      break;
  }
  return "sock_sendall";
}

PyObject* get_name(PyObject* object, void*) {
  return PyUnicode_FromString(method_name(reinterpret_cast<SockCall*>(object)->kind));
}

PyObject* get_qualname(PyObject* object, void*) {
  return PyUnicode_FromFormat("BaseSelectorEventLoop.%s", method_name(reinterpret_cast<SockCall*>(object)->kind));
}

int traverse(PyObject* object, visitproc visit, void* arg) {
  auto* self = reinterpret_cast<SockCall*>(object);
  Py_VISIT(self->loop);
  Py_VISIT(self->sock);
  Py_VISIT(self->arg);
  Py_VISIT(self->future);
  Py_VISIT(self->handle);
  Py_VISIT(self->delegate);
  return 0;
}

int clear(PyObject* object) {
  auto* self = reinterpret_cast<SockCall*>(object);
  finish(self);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->sock);
  Py_CLEAR(self->arg);
  return 0;
}

void dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  // Stopping the reader may run Python code (a Handle's cancel): keep any pending error.
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  clear(object);
  PyErr_Restore(type, value, traceback);
  PyObject_GC_Del(object);
}

PyAsyncMethods async_methods = {await_method, nullptr, nullptr, call_send};

PyMethodDef methods[] = {
    {"send", send_method, METH_O, "send(value) -> the next value yielded, or StopIteration."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(throw_method)), METH_FASTCALL,
     "throw(value) or throw(type[, value[, traceback]]): raise it at the await."},
    {"close", close_method, METH_NOARGS, "close(): stop waiting and end the coroutine."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef getset[] = {
    {"__name__", get_name, nullptr, nullptr, nullptr},
    {"__qualname__", get_qualname, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject SockCallType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop._turboloop.SockCall";
  type.tp_basicsize = sizeof(SockCall);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "The coroutine of a loop.sock_recv(), sock_recv_into() or sock_sendall() call.";
  type.tp_as_async = &async_methods;
  type.tp_iternext = call_iternext;
  type.tp_call = ready;
  type.tp_methods = methods;
  type.tp_getset = getset;
  type.tp_traverse = traverse;
  type.tp_clear = clear;
  type.tp_dealloc = dealloc;
  return type;
}();

// socket.socket itself, looked up once and never released.
PyTypeObject* socket_type() {
  static PyObject* const type = py::object(py::module_::import("socket").attr("socket")).release().ptr();
  return reinterpret_cast<PyTypeObject*>(type);
}

// A buffer sock_recv_into() reads into natively: a bytearray, or a writable C-contiguous
// memoryview, not empty (recv_into() of nothing is left to asyncio's code, as other buffers are).
bool native_read_buffer(PyObject* buffer) {
  if (PyByteArray_CheckExact(buffer)) return PyByteArray_GET_SIZE(buffer) > 0;
  if (!PyMemoryView_Check(buffer)) return false;
  const Py_buffer* view = PyMemoryView_GET_BUFFER(buffer);
  return !view->readonly && PyBuffer_IsContiguous(view, 'C') && view->len > 0;
}

// sock_recv(sock, n), sock_recv_into(sock, buf) and sock_sendall(sock, data): a SockCall when the
// arguments are the plain ones it takes, else asyncio's coroutine (which also gives the argument
// errors).
PyObject* make_call(Kind kind, PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  bool native = kwnames == nullptr && nargs == 2 && Py_TYPE(args[0]) == socket_type();
  Py_ssize_t size = 0;
  if (native && kind == Kind::kRecv) {
    native = PyLong_CheckExact(args[1]);
    if (native) {
      size = PyLong_AsSsize_t(args[1]);
      if (size == -1 && PyErr_Occurred()) PyErr_Clear();
      native = size >= 0;
    }
  } else if (native && kind == Kind::kRecvInto) {
    native = native_read_buffer(args[1]);
  } else if (native) {
    native = PyBytes_CheckExact(args[1]) || PyByteArray_CheckExact(args[1]);
  }
  if (!native) {
    PyObject* bound = PyMethod_New(asyncio_method(kind), self);
    if (bound == nullptr) return nullptr;
    PyObject* result = PyObject_Vectorcall(bound, args, static_cast<std::size_t>(nargs), kwnames);
    Py_DECREF(bound);
    return result;
  }
  auto* call = PyObject_GC_New(SockCall, &SockCallType);
  if (call == nullptr) return nullptr;
  call->loop = Py_NewRef(self);
  call->sock = Py_NewRef(args[0]);
  call->arg = Py_NewRef(args[1]);
  call->future = nullptr;
  call->handle = nullptr;
  call->delegate = nullptr;
  call->view = Py_buffer{};
  call->size = size;
  call->sent = 0;
  call->fd = -1;
  call->kind = kind;
  call->state = State::kCreated;
  PyObject_GC_Track(call);
  return reinterpret_cast<PyObject*>(call);
}

PyObject* sock_recv(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return make_call(Kind::kRecv, self, args, nargs, kwnames);
}

PyObject* sock_recv_into(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return make_call(Kind::kRecvInto, self, args, nargs, kwnames);
}

PyObject* sock_sendall(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return make_call(Kind::kSendall, self, args, nargs, kwnames);
}

PyMethodDef loop_methods[] = {
    {"sock_recv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(sock_recv)), METH_FASTCALL | METH_KEYWORDS,
     "sock_recv($self, sock, n)\n--\n\n"
     "Receive up to n bytes from the non-blocking socket sock (a coroutine)."},
    {"sock_recv_into", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(sock_recv_into)),
     METH_FASTCALL | METH_KEYWORDS,
     "sock_recv_into($self, sock, buf)\n--\n\n"
     "Receive into buf from the non-blocking socket sock; the number of bytes received (a coroutine)."},
    {"sock_sendall", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(sock_sendall)),
     METH_FASTCALL | METH_KEYWORDS,
     "sock_sendall($self, sock, data)\n--\n\n"
     "Send all of data to the non-blocking socket sock (a coroutine)."},
};

}  // namespace

void add_sock_calls(py::handle loop_class, py::module_& module) {
  if (PyType_Ready(&SockCallType) < 0) throw py::error_already_set();
  // Looked up now, where an import error can be raised, not first inside a coroutine step.
  socket_type();
  socket_fileno_method();
  if (asyncio_method(Kind::kRecv) == nullptr || asyncio_method(Kind::kRecvInto) == nullptr ||
      asyncio_method(Kind::kSendall) == nullptr)
    throw py::error_already_set();
  module.attr("SockCall") = py::handle(reinterpret_cast<PyObject*>(&SockCallType));
  for (PyMethodDef& method : loop_methods) {
    auto descriptor = py::reinterpret_steal<py::object>(
        PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(loop_class.ptr()), &method));
    if (!descriptor) throw py::error_already_set();
    loop_class.attr(method.ml_name) = descriptor;
  }
}

}  // namespace turboloop::binding
