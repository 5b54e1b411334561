// The native path of sock_sendfile() (which loop.sendfile() uses for plain sockets): asyncio's
// _sock_sendfile_native_impl with sendfile(2) called from here and a native writer that stays
// registered until the future is done (asyncio removes and re-adds its writer after every call).
// Python's _sock_sendfile_native does the checks before it.
#include <unistd.h>

#include <cerrno>

#include "binding/fd_callbacks.hpp"
#include "binding/loop.hpp"
#include "core/socket_io.hpp"

namespace turboloop::binding {
namespace {

using core::FdWatchers;

// One pending sock_sendfile(): the writer the loop runs when the socket is writable, and the
// future's done callback.
struct SockSendfile {
  PyObject_HEAD PyObject* loop;  // the Python loop
  PyObject* future;
  PyObject* sock;    // the socket object, registered with the writer
  PyObject* handle;  // the writer Handle while registered, else nullptr
  int fd;
  int file;
  off_t offset;         // where the next byte comes from
  long long count;      // 0: until the end of the file
  long long blocksize;  // the most one sendfile(2) is asked for
  long long total_sent;
};

// Stops the writer, unless another writer replaced it (add_writer on the same descriptor).
int sock_sendfile_unregister(SockSendfile* self) {
  PyObject* handle = self->handle;
  if (handle == nullptr) return 0;
  self->handle = nullptr;
  const bool replaced = reinterpret_cast<Handle*>(handle)->cancelled;
  Py_DECREF(handle);
  if (replaced) return 0;
  try {
    auto& core = py::cast<LoopCore&>(py::handle(self->loop));
    if (!core.closed && core.fds) core.fds->remove(self->fd, FdWatchers::kWritable);
  } catch (py::error_already_set& error) {
    error.restore();
    return -1;
  }
  return 0;
}

// Whether asyncio seeks the file even when nothing was sent: its _sock_sendfile_update_filepos
// does from 3.13 on (it no longer takes total_sent); before, it left the file alone then.
bool seeks_when_nothing_sent = false;

// asyncio's _sock_sendfile_update_filepos: the file's position after the bytes sent.
int sock_sendfile_update_filepos(SockSendfile* self) {
  if ((self->total_sent > 0 || seeks_when_nothing_sent) && lseek(self->file, self->offset, SEEK_SET) < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
  }
  return 0;
}

// Completes the future with `result` (stolen), or with the Python error set when it is nullptr;
// stops the writer first, so it never runs for a finished sendfile.
int sock_sendfile_finish(SockSendfile* self, PyObject* result) {
  PyObject* value = result != nullptr ? result : fetch_exception();
  if (sock_sendfile_unregister(self) < 0) {
    Py_DECREF(value);
    return -1;
  }
  PyObject* outcome = PyObject_CallMethodOneArg(
      self->future, (result != nullptr ? interned<"set_result">() : interned<"set_exception">()).ptr(), value);
  Py_DECREF(value);
  if (outcome == nullptr) return -1;
  Py_DECREF(outcome);
  return 0;
}

// Keeps a writer on the socket until the future is done (asyncio's add_writer, and its
// _sock_add_cancellation_callback on the first registration).
int sock_sendfile_register(SockSendfile* self) {
  if (self->handle != nullptr) return 0;
  try {
    const py::handle loop(self->loop);
    auto& core = loop.cast<LoopCore&>();
    core.check_closed();
    const py::tuple no_args;
    Handle* handle =
        new_handle(&HandleType, reinterpret_cast<PyObject*>(self), no_args.ptr(), Py_None, self->loop, &core, 0.0);
    if (handle == nullptr) throw py::error_already_set();
    HandleRef writer(handle);
    self->handle = Py_NewRef(reinterpret_cast<PyObject*>(handle));
    // Registered under the number, as asyncio's add_writer(fd, ...) is.
    core.fds->add(self->fd, py::int_(self->fd), FdWatchers::kWritable, std::move(writer));
  } catch (py::error_already_set& error) {
    error.restore();
    return -1;
  }
  return 0;
}

// Sends until the socket is full, the count is reached or the file ends; `from_writer` when the
// loop ran this because the socket became writable (asyncio's `registered_fd is not None`).
// Returns -1 with a Python error set only when the future could not be completed.
int sock_sendfile_step(SockSendfile* self, bool from_writer) {
  for (;;) {
    if (self->count != 0) {
      self->blocksize = self->count - self->total_sent;
      if (self->blocksize <= 0) {
        if (sock_sendfile_update_filepos(self) < 0) return sock_sendfile_finish(self, nullptr);
        return sock_sendfile_finish(self, PyLong_FromLongLong(self->total_sent));
      }
    }
    off_t offset = self->offset;
    ssize_t sent;
    Py_BEGIN_ALLOW_THREADS sent =
        core::send_file(self->fd, self->file, &offset, static_cast<std::size_t>(self->blocksize));
    Py_END_ALLOW_THREADS if (sent == -EAGAIN) return sock_sendfile_register(self) < 0
        ? sock_sendfile_finish(self, nullptr)
        : 0;
    if (sent < 0) {
      const int error = static_cast<int>(-sent);
      // asyncio seeks before it reports the error.
      if (sock_sendfile_update_filepos(self) < 0) {
        // Its first call raises the lseek error from sock_sendfile() itself (a file sendfile(2)
        // refuses, such as a socket's, may not seek either). Later, asyncio's writer would log it
        // and leave the future pending: the sendfile error is reported instead.
        if (!from_writer && self->total_sent == 0) return -1;
        PyErr_Clear();
      }
      if (self->total_sent == 0) {
        // Most likely not a regular file: asyncio's caller falls back on plain sends.
        static PyObject* const not_available =
            py::object(py::module_::import("asyncio.exceptions").attr("SendfileNotAvailableError")).release().ptr();
        PyErr_SetString(not_available, "os.sendfile call failed");
      } else if (from_writer && error == ENOTCONN) {
        // The connection closed in the middle: ConnectionError, as asyncio normalises it.
        PyObject* cause = os_error(error).release().ptr();
        PyObject* exc = PyObject_CallFunction(PyExc_ConnectionError, "si", "socket is not connected", ENOTCONN);
        if (exc == nullptr) {
          Py_DECREF(cause);
          return sock_sendfile_finish(self, nullptr);
        }
        PyException_SetCause(exc, cause);  // steals cause
        PyErr_SetObject(PyExc_ConnectionError, exc);
        Py_DECREF(exc);
      } else {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
      }
      return sock_sendfile_finish(self, nullptr);
    }
    if (sent == 0) {  // the end of the file
      if (sock_sendfile_update_filepos(self) < 0) return sock_sendfile_finish(self, nullptr);
      return sock_sendfile_finish(self, PyLong_FromLongLong(self->total_sent));
    }
    self->offset = offset;
    self->total_sent += sent;
    // A short send means the socket's buffer is full (or the file ends): wait until writable
    // rather than making a call that would only say EAGAIN.
    if (sent < self->blocksize) return sock_sendfile_register(self) < 0 ? sock_sendfile_finish(self, nullptr) : 0;
  }
}

PyObject* sock_sendfile_ready(PyObject* object, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<SockSendfile*>(object);
  PyObject* done = PyObject_CallMethodNoArgs(self->future, interned<"done">().ptr());
  if (done == nullptr) return nullptr;
  const int is_done = PyObject_IsTrue(done);
  Py_DECREF(done);
  if (is_done != 0) {
    if (is_done < 0 || sock_sendfile_unregister(self) < 0) return nullptr;
    // As asyncio: a cancelled sendfile that still gets here leaves the file where it stopped.
    if (sock_sendfile_update_filepos(self) < 0) return nullptr;
    Py_RETURN_NONE;
  }
  if (sock_sendfile_step(self, true) < 0) return nullptr;
  Py_RETURN_NONE;
}

// The future's done callback: a cancelled sendfile stops writing (asyncio's cancellation callback).
PyObject* sock_sendfile_done(PyObject* object, PyObject*) {
  if (sock_sendfile_unregister(reinterpret_cast<SockSendfile*>(object)) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyMethodDef sock_sendfile_done_def = {"_sock_sendfile_done", sock_sendfile_done, METH_O, nullptr};

int sock_sendfile_traverse(PyObject* object, visitproc visit, void* arg) {
  auto* self = reinterpret_cast<SockSendfile*>(object);
  Py_VISIT(self->loop);
  Py_VISIT(self->future);
  Py_VISIT(self->sock);
  Py_VISIT(self->handle);
  return 0;
}

int sock_sendfile_clear(PyObject* object) {
  auto* self = reinterpret_cast<SockSendfile*>(object);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->future);
  Py_CLEAR(self->sock);
  Py_CLEAR(self->handle);
  return 0;
}

void sock_sendfile_dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  sock_sendfile_clear(object);
  PyObject_GC_Del(object);
}

PyTypeObject SockSendfileType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop._turboloop.SockSendfile";
  type.tp_basicsize = sizeof(SockSendfile);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "A pending loop.sock_sendfile(): the writer that sends the file and completes its future.";
  type.tp_call = sock_sendfile_ready;
  type.tp_traverse = sock_sendfile_traverse;
  type.tp_clear = sock_sendfile_clear;
  type.tp_dealloc = sock_sendfile_dealloc;
  return type;
}();

// Starts sending `count` bytes (0: to the end) of the open file `file` from `offset` on `sock`;
// returns the future of the count sent. _sock_sendfile_native made asyncio's checks already.
py::object sock_sendfile_start(py::handle self, py::handle sock, int file, long long offset, long long count,
                               long long blocksize) {
  auto& core = self.cast<LoopCore&>();
  core.check_closed();
  const int fd = sock.attr(interned<"fileno">())().cast<int>();
  ensure_fd_no_transport(self, fd);
  py::object future = self.attr(interned<"create_future">())();

  auto* op = PyObject_GC_New(SockSendfile, &SockSendfileType);
  if (op == nullptr) throw py::error_already_set();
  op->loop = Py_NewRef(self.ptr());
  op->future = Py_NewRef(future.ptr());
  op->sock = Py_NewRef(sock.ptr());
  op->handle = nullptr;
  op->fd = fd;
  op->file = file;
  op->offset = static_cast<off_t>(offset);
  op->count = count;
  op->blocksize = blocksize;
  op->total_sent = 0;
  PyObject_GC_Track(op);
  const auto owned_op = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(op));

  if (sock_sendfile_step(op, false) < 0) throw py::error_already_set();
  if (op->handle != nullptr) {
    auto done = py::reinterpret_steal<py::object>(PyCFunction_New(&sock_sendfile_done_def, owned_op.ptr()));
    if (!done) throw py::error_already_set();
    future.attr(interned<"add_done_callback">())(done);
  }
  return future;
}

}  // namespace

void add_sock_methods(py::class_<LoopCore>& cls) {
  if (PyType_Ready(&SockSendfileType) < 0) throw py::error_already_set();
  const py::object update_filepos =
      py::module_::import("asyncio.unix_events").attr("_UnixSelectorEventLoop").attr("_sock_sendfile_update_filepos");
  seeks_when_nothing_sent = !py::tuple(update_filepos.attr("__code__").attr("co_varnames")).contains("total_sent");
  cls.def("_sock_sendfile_start", &sock_sendfile_start, py::arg("sock"), py::arg("file"), py::arg("offset"),
          py::arg("count"), py::arg("blocksize"));
}

}  // namespace turboloop::binding
