// The native path of loop.sock_recv(): read at once when data is waiting, else wait for the
// socket with a native reader that completes the future. Only plain non-blocking socket.socket
// objects take it; anything else (subclasses that may override recv(), blocking sockets, odd
// sizes) goes through asyncio's own code, so behaviour stays asyncio's.
#include <cerrno>

#include "binding/fd_callbacks.hpp"
#include "binding/loop.hpp"
#include "binding/socket_read.hpp"

namespace turboloop::binding {
namespace {

using core::FdWatchers;

// One pending sock_recv(): called by the loop when the socket is readable (as asyncio's
// _sock_recv), and told by the future when it is done (as asyncio's _sock_read_done).
struct SockRecv {
  PyObject_HEAD
  PyObject* loop;    // the Python loop
  PyObject* future;
  PyObject* handle;  // the reader Handle, until the future is done
  int fd;
  Py_ssize_t size;
};

PyObject* sock_recv_ready(PyObject* object, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<SockRecv*>(object);
  PyObject* done = PyObject_CallMethod(self->future, "done", nullptr);
  if (done == nullptr) return nullptr;
  const int is_done = PyObject_IsTrue(done);
  Py_DECREF(done);
  if (is_done != 0) return is_done < 0 ? nullptr : Py_NewRef(Py_None);
  int error;
  PyObject* data = read_socket(self->fd, static_cast<std::size_t>(self->size), error);
  PyObject* outcome;
  if (data != nullptr) {
    outcome = PyObject_CallMethod(self->future, "set_result", "N", data);
  } else if (error == EAGAIN) {
    return Py_NewRef(Py_None);  // try again next time
  } else {
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return nullptr;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    outcome = PyObject_CallMethod(self->future, "set_exception", "O", value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
  }
  if (outcome == nullptr) return nullptr;
  Py_DECREF(outcome);
  Py_RETURN_NONE;
}

// The future's done callback: stop reading, unless another reader replaced this one.
PyObject* sock_recv_done(PyObject* object, PyObject*) {
  auto* self = reinterpret_cast<SockRecv*>(object);
  PyObject* handle = self->handle;
  self->handle = nullptr;
  const bool replaced = handle != nullptr && reinterpret_cast<Handle*>(handle)->cancelled;
  Py_XDECREF(handle);
  if (!replaced) {
    try {
      auto& core = py::cast<LoopCore&>(py::handle(self->loop));
      if (!core.closed && core.fds) core.fds->remove(self->fd, FdWatchers::kReadable);
    } catch (py::error_already_set& error) {
      error.restore();
      return nullptr;
    }
  }
  Py_RETURN_NONE;
}

int sock_recv_traverse(PyObject* object, visitproc visit, void* arg) {
  auto* self = reinterpret_cast<SockRecv*>(object);
  Py_VISIT(self->loop);
  Py_VISIT(self->future);
  Py_VISIT(self->handle);
  return 0;
}

int sock_recv_clear(PyObject* object) {
  auto* self = reinterpret_cast<SockRecv*>(object);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->future);
  Py_CLEAR(self->handle);
  return 0;
}

void sock_recv_dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  sock_recv_clear(object);
  PyObject_GC_Del(object);
}

PyMethodDef sock_recv_done_def = {"_sock_read_done", sock_recv_done, METH_O, nullptr};

PyTypeObject SockRecvType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop._turboloop.SockRecv";
  type.tp_basicsize = sizeof(SockRecv);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "A pending loop.sock_recv(): the reader that completes its future.";
  type.tp_call = sock_recv_ready;
  type.tp_traverse = sock_recv_traverse;
  type.tp_clear = sock_recv_clear;
  type.tp_dealloc = sock_recv_dealloc;
  return type;
}();

// socket.socket itself, looked up once and never released (see fileobj_to_fd).
PyObject* socket_type() {
  static PyObject* const type = py::object(py::module_::import("socket").attr("socket")).release().ptr();
  return type;
}

// bytes now, a future to await, or None when asyncio's own sock_recv must do it.
py::object sock_recv_now_or_later(py::handle self, py::handle sock, py::handle n) {
  if (reinterpret_cast<PyObject*>(Py_TYPE(sock.ptr())) != socket_type() || !PyLong_CheckExact(n.ptr())) return py::none();
  const Py_ssize_t size = PyLong_AsSsize_t(n.ptr());
  if (size < 0) {
    PyErr_Clear();
    return py::none();
  }
  const py::object timeout = sock.attr("gettimeout")();
  if (!PyFloat_CheckExact(timeout.ptr()) || PyFloat_AS_DOUBLE(timeout.ptr()) != 0.0) return py::none();
  const int fd = sock.attr("fileno")().cast<int>();
  if (fd < 0) return py::none();

  int error;
  PyObject* data = read_socket(fd, static_cast<std::size_t>(size), error);
  if (data != nullptr) return py::reinterpret_steal<py::object>(data);
  if (error != EAGAIN) throw py::error_already_set();

  auto& core = self.cast<LoopCore&>();
  const py::object transports = self.attr("_transports");
  if (PyDict_GET_SIZE(transports.attr("data").ptr()) > 0) self.attr("_ensure_fd_no_transport")(fd);
  py::object future = self.attr("create_future")();
  core.check_closed();

  auto* op = PyObject_GC_New(SockRecv, &SockRecvType);
  if (op == nullptr) throw py::error_already_set();
  op->loop = Py_NewRef(self.ptr());
  op->future = Py_NewRef(future.ptr());
  op->handle = nullptr;
  op->fd = fd;
  op->size = size;
  PyObject_GC_Track(op);
  const auto owned_op = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(op));

  const py::tuple no_args;
  Handle* handle = new_handle(&HandleType, owned_op.ptr(), no_args.ptr(), Py_None, self.ptr(), &core, 0.0);
  if (handle == nullptr) throw py::error_already_set();
  HandleRef reader(handle);
  op->handle = Py_NewRef(reinterpret_cast<PyObject*>(handle));
  core.fds->add(fd, py::int_(fd), FdWatchers::kReadable, std::move(reader));

  auto done = py::reinterpret_steal<py::object>(PyCFunction_New(&sock_recv_done_def, owned_op.ptr()));
  if (!done) throw py::error_already_set();
  future.attr("add_done_callback")(done);
  return future;
}

}  // namespace

void add_sock_methods(py::class_<LoopCore>& cls) {
  if (PyType_Ready(&SockRecvType) < 0) throw py::error_already_set();
  cls.def("_sock_recv_now_or_later", &sock_recv_now_or_later);
}

}  // namespace turboloop::binding
