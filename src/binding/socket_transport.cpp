// The hot half of turboloop's socket transport, TransportCore: reading from the socket and handing
// the bytes to the protocol, and writing through a native buffer. python/turboloop/_transport.py
// holds the rest of the transport (asyncio's _SelectorSocketTransport behaviour); the cold paths
// here (errors, EOF, flow control, close) call back into it.
#include "binding/socket_transport.hpp"

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "binding/common.hpp"
#include "binding/loop.hpp"
#include "binding/socket_read.hpp"
#include "binding/write_queue.hpp"
#include "core/socket_io.hpp"

namespace turboloop::binding {
namespace {

using core::kMaxRead;
using core::receive;
using core::send_some;

// asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES.
constexpr long kConnLostWritesBeforeWarning = 5;

// Writes of bytes a callback makes while its loop runs are held back until the callback ends, up
// to this many bytes, and then sent in one sendmsg(): an HTTP server that writes a response's head
// and body apart makes one system call and one TCP segment of them, not two. Whatever looks at
// the transport (is_closing(), get_write_buffer_size(), close(), write_eof(), another kind of
// write, ...) sends them first, so only the peer can tell: they reach it when the callback ends.
// Never more than the high-water mark either: the socket would have taken them at once, so holding
// them back cannot delay a pause_writing(). Only a server's connections hold writes back: a client
// connection's peer may be a socket the same callback then reads synchronously (a test's), which
// would wait forever for bytes held until the callback ends. A server's peer cannot be such a
// socket: it could not even have connected while the loop was held up reading it.
constexpr std::size_t kMaxHeldBytes = 64 * 1024;

// Whether asyncio's transport counts the connection lost itself once a close() finished draining
// (gh-156512, in 3.14 and later releases): connection_lost then runs once even when the protocol
// closed from resume_writing(), and a later write() counts as one after the loss instead of
// failing on the dropped socket. Nothing but its code tells: whether it assigns _conn_lost.
bool drained_close_counts_loss = false;

// Whether asyncio's transport keeps the objects write() buffers (3.12 on) rather than copies of
// them (3.11, whose transports make their buffer with _buffer_factory).
bool keeps_written_objects = false;

}  // namespace

class TransportCore {
 public:
  TransportCore(py::object transport, py::object sock)
      : transport(std::move(transport)),
        sock(std::move(sock)),
        fd(this->sock.attr(interned<"fileno">())().cast<int>()),
        loop(native_loop(this->transport.attr(interned<"_loop">()))) {}

  static LoopCore* native_loop(py::handle loop) {
    return py::isinstance<LoopCore>(loop) ? loop.cast<LoopCore*>() : nullptr;
  }

  py::object transport;  // the Python transport
  py::object sock;       // its socket.socket; None once detached
  py::object protocol = py::none();
  py::object empty_waiter = py::none();  // a future while sendfile() waits for the buffer to drain
  bool buffered = false;                 // protocol is an asyncio.BufferedProtocol
  int fd;                                // -1 once detached
  std::size_t max_read = kMaxRead;       // asyncio's max_size
  long conn_lost = 0;                    // connection_lost is scheduled once this is set
  bool closing = false;
  bool eof = false;  // write_eof() was called
  WriteQueue buffer;
  LoopCore* loop;              // the transport's loop when it is turboloop's; null once detached
  std::size_t held = 0;        // bytes in the buffer held back until the running callback ends
  bool holds_writes = false;   // a server's connection (see kMaxHeldBytes)
  std::size_t high_water = 0;  // the transport's high-water mark
  bool draining = false;       // write_ready() runs, and its writer is still registered
};

namespace {

bool asyncio_drained_close_counts_loss() {
  return ask_python(R"(
import dis
from asyncio.selector_events import _SelectorSocketTransport as transport

drain = getattr(transport, "_write_send", None) or transport._write_ready
answer = any(i.opname == "STORE_ATTR" and i.argval == "_conn_lost" for i in dis.get_instructions(drain))
)");
}

void fatal_error(TransportCore& self, const py::object& exc, const char* message) {
  self.transport.attr(interned<"_fatal_error">())(exc, message);
}

// Runs `call`; an exception from it is a fatal error of the transport, as asyncio's
// `except BaseException` clauses make it, except SystemExit and KeyboardInterrupt, which propagate.
template <typename Call>
bool guarded(TransportCore& self, const char* message, Call&& call) {
  try {
    call();
    return true;
  } catch (py::error_already_set& error) {
    if (error.matches(PyExc_SystemExit) || error.matches(PyExc_KeyboardInterrupt)) throw;
    fatal_error(self, caught(error), message);
    return false;
  }
}

// One read for a data_received() protocol.
void read_bytes(TransportCore& self) {
  int error;
  PyObject* read = read_socket(self.fd, self.max_read, error);
  if (read == nullptr) {
    if (error == EAGAIN) return;
    py::error_already_set failure;
    if (error == 0) throw failure;
    return fatal_error(self, caught(failure), "Fatal read error on socket transport");
  }
  const auto data = py::reinterpret_steal<py::object>(read);
  if (PyBytes_GET_SIZE(read) == 0) {
    self.transport.attr(interned<"_read_ready__on_eof">())();
    return;
  }
  const py::object protocol = self.protocol;
  guarded(self, "Fatal error: protocol.data_received() call failed.", [&] {
    // A vectorcall of the method by its interned name: no bound method, no argument tuple.
    PyObject* args[] = {protocol.ptr(), data.ptr()};
    PyObject* result = PyObject_VectorcallMethod(interned<"data_received">().ptr(), args, 2, nullptr);
    if (result == nullptr) throw py::error_already_set();
    Py_DECREF(result);
  });
}

// One read for a BufferedProtocol: straight into the buffer the protocol gives.
void read_into_protocol(TransportCore& self) {
  const py::object protocol = self.protocol;
  py::object into;
  const bool got = guarded(self, "Fatal error: protocol.get_buffer() call failed.", [&] {
    into = protocol.attr(interned<"get_buffer">())(-1);
    if (py::len(into) == 0) raise(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
  });
  if (!got) return;
  ssize_t count;
  Py_buffer view;
  if (PyObject_GetBuffer(into.ptr(), &view, PyBUF_WRITABLE) == 0) {
    count = receive(self.fd, view.buf, static_cast<std::size_t>(view.len));
    PyBuffer_Release(&view);
  } else {
    // Not a writable buffer: socket.recv_into() raises asyncio's exact error for it.
    PyErr_Clear();
    try {
      count = self.transport.attr(interned<"_sock">()).attr(interned<"recv_into">())(into).cast<ssize_t>();
    } catch (py::error_already_set& error) {
      if (error.matches(PyExc_BlockingIOError) || error.matches(PyExc_InterruptedError)) return;
      if (error.matches(PyExc_SystemExit) || error.matches(PyExc_KeyboardInterrupt)) throw;
      return fatal_error(self, caught(error), "Fatal read error on socket transport");
    }
  }
  if (count == -EAGAIN) return;
  if (count < 0) return fatal_error(self, os_error(static_cast<int>(-count)), "Fatal read error on socket transport");
  if (count == 0) {
    self.transport.attr(interned<"_read_ready__on_eof">())();
    return;
  }
  // The protocol now: get_buffer() may have switched it.
  guarded(self, "Fatal error: protocol.buffer_updated() call failed.",
          [&] { py::object(self.protocol).attr(interned<"buffer_updated">())(count); });
}

void read_ready(TransportCore& self) {
  if (self.conn_lost || self.fd < 0) return;
  if (self.buffered) {
    read_into_protocol(self);
  } else {
    read_bytes(self);
  }
}

bool is_bytes_like(PyObject* data) {
  return PyBytes_Check(data) || PyByteArray_Check(data) || PyMemoryView_Check(data);
}

// A write once the connection is lost: counted, and from the fifth on logged, as asyncio does.
void count_write_after_loss(TransportCore& self) {
  if (self.conn_lost >= kConnLostWritesBeforeWarning)
    py::module_::import("asyncio.log").attr("logger").attr("warning")("socket.send() raised exception.");
  ++self.conn_lost;
}

// The descriptor to write to, or -1 once the transport or its user closed the socket: a number
// the kernel may since have given another socket must never be written to.
int live_fd(const TransportCore& self) {
  if (self.fd < 0) return -1;
  const long fd = socket_fileno(self.sock.ptr());
  if (fd == -1 && PyErr_Occurred()) throw py::error_already_set();
  return fd == self.fd ? self.fd : -1;
}

// A non-contiguous memoryview, as asyncio treats it: socket.send() refuses it (a fatal error of
// the transport) when nothing is buffered. Behind buffered data, 3.11's bytearray slicing refuses
// it at once; from 3.12 it is queued, and refused when its turn to be sent comes.
void write_non_contiguous(TransportCore& self, py::handle data, py::error_already_set& error) {
  const std::size_t length = py::len(data);
  if (length == 0) return;
  if (self.conn_lost) return count_write_after_loss(self);
  if (self.buffer.empty()) return fatal_error(self, caught(error), "Fatal write error on socket transport");
  if (!keeps_written_objects) raise(PyExc_TypeError, "can't set bytearray slice from memoryview");
  self.buffer.push(py::reinterpret_borrow<py::object>(data), 0, length);
  self.transport.attr(interned<"_maybe_pause_protocol">())();
}

// What the queue keeps of `data` once `sent` of its bytes went out at once: a bytes object itself
// (nothing can change it). Of another, where asyncio keeps what it is given, the object itself
// while none of it was sent, else a memoryview of it (asyncio's memoryview(data)[n:], which keeps
// it exported); where asyncio copies (3.11), a copy of the rest.
WriteQueue::Chunk kept(py::handle data, const Py_buffer& view, std::size_t sent) {
  if (PyBytes_Check(data.ptr()) || (keeps_written_objects && sent == 0))
    return {py::reinterpret_borrow<py::object>(data), sent};
  PyObject* rest = keeps_written_objects ? PyMemoryView_FromObject(data.ptr())
                                         : PyBytes_FromStringAndSize(static_cast<const char*>(view.buf) + sent,
                                                                     view.len - static_cast<Py_ssize_t>(sent));
  if (rest == nullptr) throw py::error_already_set();
  return {py::reinterpret_steal<py::object>(rest), keeps_written_objects ? sent : 0};
}

// Releases a buffer view when it goes.
struct ReleaseView {
  Py_buffer& view;
  ~ReleaseView() { PyBuffer_Release(&view); }
};

void queue(TransportCore& self, py::handle data, const Py_buffer& view, std::size_t sent) {
  WriteQueue::Chunk chunk = kept(data, view, sent);
  self.buffer.push(std::move(chunk.data), chunk.offset, static_cast<std::size_t>(view.len) - sent);
}

// asyncio's _SelectorSocketTransport.write, for the data it refuses.
PyObject* asyncio_write() {
  static PyObject* const method =
      py::object(py::module_::import("asyncio.selector_events").attr("_SelectorSocketTransport").attr("write"))
          .release()
          .ptr();
  return method;
}

// Not all was written at once: the rest is sent when the socket can take it.
void send_rest_when_writable(TransportCore& self, int fd) {
  try {
    // The transport's _add_writer: it adds the writer in the protocol's context.
    self.transport.attr(interned<"_add_writer">())(fd, self.transport.attr(interned<"_write_ready">()));
  } catch (py::error_already_set&) {
    self.buffer.clear();  // as asyncio, which buffers only once the writer is added
    throw;
  }
  self.transport.attr(interned<"_maybe_pause_protocol">())();
}

// Sends what the transport held back, as write() would have sent it at once.
void send_held(TransportCore& self) {
  if (self.held == 0) return;
  self.held = 0;
  if (self.fd < 0 || self.conn_lost) return self.buffer.clear();
  const int fd = live_fd(self);
  const ssize_t sent = fd < 0 ? -EBADF : self.buffer.send(fd);
  if (sent < 0) {
    self.buffer.clear();
    return fatal_error(self, os_error(static_cast<int>(-sent)), "Fatal write error on socket transport");
  }
  if (!self.buffer.empty()) send_rest_when_writable(self, fd);
}

// Holds `data` back (see kMaxHeldBytes) if it may be: bytes, written while the loop runs a
// callback on this thread, with nothing else buffered and no writer registered, to an open transport.
bool hold(TransportCore& self, py::handle owner, py::handle data) {
  if (!PyBytes_Check(data.ptr()) || self.conn_lost || self.closing || self.draining) return false;
  const auto size = static_cast<std::size_t>(PyBytes_GET_SIZE(data.ptr()));
  if (size == 0) return self.held != 0;
  if (!self.holds_writes || self.held + size > std::min(self.high_water, kMaxHeldBytes)) return false;
  if (self.held == 0) {
    if (!self.buffer.empty() || self.loop == nullptr || !self.loop->runs_here()) return false;
    self.loop->held_writes.push_back({py::reinterpret_borrow<py::object>(owner), &self});
  }
  self.buffer.push(py::reinterpret_borrow<py::object>(data), 0, size);
  self.held += size;
  return true;
}

void write(TransportCore& self, py::handle owner, py::handle data) {
  if (!is_bytes_like(data.ptr())) {
    // asyncio's own write() refuses it first thing, with the TypeError of the running version.
    py::handle{asyncio_write()}(self.transport, data);
    raise(PyExc_TypeError, "data argument must be a bytes-like object");  // if asyncio's did not
  }
  if (self.eof) raise(PyExc_RuntimeError, "Cannot call write() after write_eof()");
  if (!self.empty_waiter.is_none()) raise(PyExc_RuntimeError, "unable to write; sendfile is in progress");
  if (hold(self, owner, data)) return;
  send_held(self);
  const bool send_now = self.buffer.empty() && !self.conn_lost;
  const int fd = send_now ? live_fd(self) : self.fd;
  Py_buffer view;
  if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) < 0) {
    py::error_already_set error;
    return write_non_contiguous(self, data, error);
  }
  std::size_t size;
  ssize_t sent = 0;
  {
    // The view is released before any Python code runs: a callback may resize `data`.
    const ReleaseView release{view};
    size = static_cast<std::size_t>(view.len);
    if (size != 0 && !self.conn_lost) {
      if (send_now) sent = fd < 0 ? -EBADF : send_some(fd, view.buf, size);
      if (sent >= 0 && static_cast<std::size_t>(sent) < size) queue(self, data, view, static_cast<std::size_t>(sent));
    }
  }
  if (size == 0) return;
  if (self.conn_lost) return count_write_after_loss(self);
  if (!send_now) {
    self.transport.attr(interned<"_maybe_pause_protocol">())();
    return;
  }
  if (sent < 0) return fatal_error(self, os_error(static_cast<int>(-sent)), "Fatal write error on socket transport");
  if (!self.buffer.empty()) send_rest_when_writable(self, fd);
}

// A send of the buffer failed with `exc`: the buffer is dropped and the transport closed.
void write_failed(TransportCore& self, const py::object& exc) {
  self.transport.attr(interned<"_loop">()).attr(interned<"_remove_writer">())(self.fd);
  self.buffer.clear();
  fatal_error(self, exc, "Fatal write error on socket transport");
  if (!self.empty_waiter.is_none()) self.empty_waiter.attr(interned<"set_exception">())(exc);
}

void write_ready(TransportCore& self) {
  if (self.conn_lost || self.fd < 0 || self.buffer.empty()) return;
  const py::object transport = self.transport;
  ssize_t sent;
  try {
    sent = self.buffer.send(self.fd);
  } catch (py::error_already_set& error) {
    if (error.matches(PyExc_SystemExit) || error.matches(PyExc_KeyboardInterrupt)) throw;
    return write_failed(self, caught(error));
  }
  if (sent < 0) return write_failed(self, os_error(static_cast<int>(-sent)));
  if (sent == 0 && !self.buffer.empty()) return;  // would block: try again next time
  {
    // resume_writing() may write more, at once: the writer is still registered, and what it
    // wrote must be sent or buffered before the writer's removal below looks at the buffer.
    self.draining = true;
    struct Drained {
      bool& draining;
      ~Drained() { draining = false; }
    } drained{self.draining};
    transport.attr(interned<"_maybe_resume_protocol">())();
  }
  if (!self.buffer.empty()) return;
  transport.attr(interned<"_loop">()).attr(interned<"_remove_writer">())(self.fd);
  if (!self.empty_waiter.is_none()) self.empty_waiter.attr(interned<"set_result">())(py::none());
  if (self.closing && !(drained_close_counts_loss && self.conn_lost)) {
    if (drained_close_counts_loss) ++self.conn_lost;
    transport.attr(interned<"_call_connection_lost">())(py::none());
  } else if (self.eof) {
    transport.attr(interned<"_sock">()).attr(interned<"shutdown">())(static_cast<int>(SHUT_WR));
  }
}

// bool(value), raising what it raises.
bool truthy(py::handle value) {
  const int result = PyObject_IsTrue(value.ptr());
  if (result < 0) throw py::error_already_set();
  return result == 1;
}

// asyncio's writelines() from 3.12 on: each non-empty item queued as a memoryview (refused as
// memoryview() refuses it, before any is queued), then one send of the whole buffer.
void writelines(TransportCore& self, py::handle list_of_data) {
  if (self.eof) raise(PyExc_RuntimeError, "Cannot call writelines() after write_eof()");
  if (!self.empty_waiter.is_none()) raise(PyExc_RuntimeError, "unable to writelines; sendfile is in progress");
  if (!truthy(list_of_data)) return;
  if (self.conn_lost) return count_write_after_loss(self);
  send_held(self);
  std::vector<py::object> views;
  for (py::handle data : list_of_data) {
    if (!truthy(data)) continue;  // an empty chunk is never buffered (gh-155888)
    PyObject* view = PyMemoryView_FromObject(data.ptr());
    if (view == nullptr) throw py::error_already_set();
    views.push_back(py::reinterpret_steal<py::object>(view));
  }
  for (py::object& view : views) {
    const auto size = static_cast<std::size_t>(PyMemoryView_GET_BUFFER(view.ptr())->len);
    self.buffer.push(std::move(view), 0, size);
  }
  if (self.buffer.empty()) return;
  const py::object transport = self.transport;
  write_ready(self);
  if (self.buffer.empty()) return;
  // Not all was written: write the rest when the socket can take it.
  transport.attr(interned<"_add_writer">())(self.fd, transport.attr(interned<"_write_ready">()));
  transport.attr(interned<"_maybe_pause_protocol">())();
}

int traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<TransportCore&>(py::handle(self));
  Py_VISIT(core.transport.ptr());
  Py_VISIT(core.sock.ptr());
  Py_VISIT(core.protocol.ptr());
  Py_VISIT(core.empty_waiter.ptr());
  return core.buffer.visit([&](PyObject* data) {
    Py_VISIT(data);
    return 0;
  });
}

int clear(PyObject* self) {
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<TransportCore&>(py::handle(self));
  core.transport = py::none();
  core.sock = py::none();
  core.protocol = py::none();
  core.empty_waiter = py::none();
  core.buffer.clear();
  return 0;
}

// The hot entry points as plain CPython methods: pybind11's dispatch cost more than the rest of
// a small write (measured with timeit).

TransportCore* core_of(PyObject* self) {
  auto holder = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
  if (!holder.holder_constructed()) {
    PyErr_SetString(PyExc_RuntimeError, "TransportCore.__init__() was not called");
    return nullptr;
  }
  return holder.value_ptr<TransportCore>();
}

template <typename Body>
PyObject* run_native(PyObject* self, Body&& body) {
  TransportCore* core = core_of(self);
  if (core == nullptr) return nullptr;
  try {
    body(*core);
  } catch (py::error_already_set& error) {
    error.restore();
    return nullptr;
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* read_ready_method(PyObject* self, PyObject*) { return run_native(self, read_ready); }

// The transport's is_closing(), which StreamWriter.drain() asks on every call. It looks at the
// transport: what a callback held back is sent first (a failure closes the transport).
PyObject* is_closing_method(PyObject* self, PyObject*) {
  TransportCore* core = core_of(self);
  if (core == nullptr) return nullptr;
  if (core->held != 0) {
    PyObject* sent = run_native(self, send_held);
    if (sent == nullptr) return nullptr;
    Py_DECREF(sent);
  }
  return PyBool_FromLong(core->closing);
}

PyObject* write_method(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* data = nargs > 0 ? args[0] : nullptr;
  const Py_ssize_t keywords = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < keywords; ++i) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_CompareWithASCIIString(name, "data") != 0 || data != nullptr) {
      PyErr_Format(PyExc_TypeError, "write() got an unexpected keyword argument '%U'", name);
      if (data != nullptr && PyUnicode_CompareWithASCIIString(name, "data") == 0)
        PyErr_SetString(PyExc_TypeError, "write() got multiple values for argument 'data'");
      return nullptr;
    }
    data = args[nargs + i];
  }
  if (nargs > 1) {
    PyErr_Format(PyExc_TypeError, "write() takes 1 positional argument but %zd were given", nargs);
    return nullptr;
  }
  if (data == nullptr) {
    PyErr_SetString(PyExc_TypeError, "write() missing 1 required positional argument: 'data'");
    return nullptr;
  }
  return run_native(self, [self, data](TransportCore& core) { write(core, self, data); });
}

PyObject* writelines_method(PyObject* self, PyObject* list_of_data) {
  return run_native(self, [list_of_data](TransportCore& core) { writelines(core, list_of_data); });
}

PyMethodDef hot_methods[] = {
    {"read_ready", read_ready_method, METH_NOARGS, "Read once from the socket and hand the bytes to the protocol."},
    {"is_closing", is_closing_method, METH_NOARGS, "Whether the transport is closing or closed."},
    {"write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(write_method)), METH_FASTCALL | METH_KEYWORDS,
     "write($self, data)\n--\n\nWrite bytes-like data: sent now when possible, else buffered."},
    {"writelines", writelines_method, METH_O,
     "writelines($self, list_of_data)\n--\n\nWrite each bytes-like item, as asyncio's own writelines() (3.12 on)."},
};

}  // namespace

void send_held_writes(std::vector<HeldWrites>& held) {
  // By index: sending may run Python code that holds more writes back, appending to `held`.
  std::size_t sent = 0;
  try {
    for (; sent < held.size(); ++sent) {
      TransportCore& core = *held[sent].core;
      guarded(core, "Fatal write error on socket transport", [&] { send_held(core); });
    }
  } catch (py::error_already_set&) {
    // SystemExit or KeyboardInterrupt: the others are sent when the next callback ends.
    held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(sent) + 1);
    throw;
  }
  held.clear();  // keeps its capacity: no allocation per callback
}

void register_socket_transport(py::module_& module) {
  asyncio_write();  // where an import error can be raised
  drained_close_counts_loss = asyncio_drained_close_counts_loss();
  keeps_written_objects =
      !py::hasattr(py::module_::import("asyncio.selector_events").attr("_SelectorSocketTransport"), "_buffer_factory");
  auto cls =
      py::class_<TransportCore>(module, "TransportCore", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                                  auto* type = &heap_type->ht_type;
                                  type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                                  type->tp_traverse = traverse;
                                  type->tp_clear = clear;
                                }))
          .def(py::init<py::object, py::object>())
          .def("write_ready", &write_ready, "Send what is buffered, once the socket can take it.")
          .def("set_protocol",
               [](TransportCore& core, py::object protocol, bool buffered) {
                 core.protocol = std::move(protocol);
                 core.buffered = buffered;
               })
          .def("clear_buffer", [](TransportCore& core) { core.buffer.clear(); })
          .def("send_held", &send_held,
               "Send the writes held back until the running callback ends, before anything looks at the "
               "transport's state.")
          .def_readwrite("holds_writes", &TransportCore::holds_writes,
                         "Whether a callback's small writes are held back until it ends (a server's connection).")
          .def_readwrite("high_water", &TransportCore::high_water,
                         "The transport's high-water mark, which bounds the bytes held back.")
          .def(
              "detach",
              [](TransportCore& core) {
                core.fd = -1;
                core.sock = py::none();
                core.loop = nullptr;
                // No cycle left with the transport (which holds this core): a closed transport is
                // freed at once, as asyncio's, also with the garbage collector off.
                core.transport = py::none();
              },
              "Forget the socket and the transport once the transport closed it: no read or write "
              "reaches the socket's number again.")
          .def_readwrite("max_read", &TransportCore::max_read)
          .def_property_readonly("buffer_size", [](const TransportCore& core) { return core.buffer.size(); })
          .def_property_readonly("buffered", [](const TransportCore& core) { return !core.buffer.empty(); })
          .def_readwrite("conn_lost", &TransportCore::conn_lost)
          .def_readwrite("closing", &TransportCore::closing)
          .def_readwrite("eof", &TransportCore::eof)
          .def_readwrite("empty_waiter", &TransportCore::empty_waiter);
  for (PyMethodDef& method : hot_methods) {
    auto descriptor =
        py::reinterpret_steal<py::object>(PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &method));
    if (!descriptor) throw py::error_already_set();
    cls.attr(method.ml_name) = descriptor;
  }
}

}  // namespace turboloop::binding
