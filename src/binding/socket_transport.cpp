// The hot half of turboloop's socket transport, TransportCore: reading from the socket and handing
// the bytes to the protocol, and writing through a native buffer. python/turboloop/_transport.py
// holds the rest of the transport (asyncio's _SelectorSocketTransport behaviour); the cold paths
// here (errors, EOF, flow control, close) call back into it.
#include <sys/socket.h>

#include <cerrno>
#include <string>

#include "binding/common.hpp"
#include "core/write_buffer.hpp"

namespace turboloop::binding {
namespace {

// asyncio's max_size: the most one read takes from the socket.
constexpr std::size_t kMaxRead = 256 * 1024;
// asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES.
constexpr long kConnLostWritesBeforeWarning = 5;

class TransportCore {
 public:
  TransportCore(py::object transport, int fd) : transport(std::move(transport)), fd(fd) {}

  py::object transport;  // the Python transport
  py::object protocol;
  py::object empty_waiter = py::none();  // a future while sendfile() waits for the buffer to drain
  bool buffered = false;                 // protocol is an asyncio.BufferedProtocol
  int fd;
  long conn_lost = 0;  // connection_lost is scheduled once this is set
  bool closing = false;
  bool eof = false;  // write_eof() was called
  core::WriteBuffer buffer;
};

// The pending Python exception as an object with its traceback, as `except ... as exc` gives it.
py::object caught(py::error_already_set& error) {
  py::object exc = error.value();
  if (error.trace()) PyException_SetTraceback(exc.ptr(), error.trace().ptr());
  return exc;
}

py::object os_error(int number) {
  errno = number;
  PyErr_SetFromErrno(PyExc_OSError);
  py::error_already_set error;
  return caught(error);
}

void fatal_error(TransportCore& self, const py::object& exc, const char* message) {
  self.transport.attr("_fatal_error")(exc, message);
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

// recv(), or -errno; a would-block read returns -EAGAIN.
ssize_t receive(int fd, void* into, std::size_t size) {
  ssize_t count;
  do {
    count = recv(fd, into, size, 0);
  } while (count < 0 && errno == EINTR);
  if (count >= 0) return count;
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

// send(), or -errno; a would-block send returns 0. MSG_NOSIGNAL: a closed peer gives EPIPE,
// never SIGPIPE, whether or not the embedding program ignores that signal as Python does.
ssize_t send_some(int fd, const void* bytes, std::size_t size) {
  ssize_t count;
  do {
    count = send(fd, bytes, size, MSG_NOSIGNAL);
  } while (count < 0 && errno == EINTR);
  if (count >= 0) return count;
  return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
}

// One read for a data_received() protocol: into a scratch buffer, then a bytes object.
void read_bytes(TransportCore& self) {
  // One buffer for every transport: the GIL is held from the recv() until the bytes are copied
  // out. Static storage, not the heap: reads into an mmap'd heap block made the kernel's copy
  // several times slower (measured with perf on 100 KiB echoes).
  static char scratch[kMaxRead];
  const ssize_t count = receive(self.fd, scratch, kMaxRead);
  if (count == -EAGAIN) return;
  if (count < 0) return fatal_error(self, os_error(static_cast<int>(-count)), "Fatal read error on socket transport");
  if (count == 0) {
    self.transport.attr("_read_ready__on_eof")();
    return;
  }
  auto data = py::reinterpret_steal<py::object>(PyBytes_FromStringAndSize(scratch, count));
  if (!data) throw py::error_already_set();
  const py::object protocol = self.protocol;
  guarded(self, "Fatal error: protocol.data_received() call failed.",
          [&] { protocol.attr("data_received")(data); });
}

// One read for a BufferedProtocol: straight into the buffer the protocol gives.
void read_into_protocol(TransportCore& self) {
  const py::object protocol = self.protocol;
  py::object into;
  const bool got = guarded(self, "Fatal error: protocol.get_buffer() call failed.", [&] {
    into = protocol.attr("get_buffer")(-1);
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
      count = self.transport.attr("_sock").attr("recv_into")(into).cast<ssize_t>();
    } catch (py::error_already_set& error) {
      if (error.matches(PyExc_BlockingIOError) || error.matches(PyExc_InterruptedError)) return;
      if (error.matches(PyExc_SystemExit) || error.matches(PyExc_KeyboardInterrupt)) throw;
      return fatal_error(self, caught(error), "Fatal read error on socket transport");
    }
  }
  if (count == -EAGAIN) return;
  if (count < 0) return fatal_error(self, os_error(static_cast<int>(-count)), "Fatal read error on socket transport");
  if (count == 0) {
    self.transport.attr("_read_ready__on_eof")();
    return;
  }
  guarded(self, "Fatal error: protocol.buffer_updated() call failed.",
          [&] { protocol.attr("buffer_updated")(count); });
}

void read_ready(TransportCore& self) {
  if (self.conn_lost) return;
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

// A non-contiguous memoryview, as asyncio treats it: socket.send() refuses it (a fatal error of
// the transport) when nothing is buffered, and bytearray.extend() takes it when something is.
void write_non_contiguous(TransportCore& self, py::handle data, py::error_already_set& error) {
  if (py::len(data) == 0) return;
  if (self.conn_lost) return count_write_after_loss(self);
  if (self.buffer.empty()) return fatal_error(self, caught(error), "Fatal write error on socket transport");
  const auto copy = data.attr("tobytes")().cast<std::string>();
  self.buffer.append(copy.data(), copy.size());
  self.transport.attr("_maybe_pause_protocol")();
}

void write(TransportCore& self, py::handle data) {
  if (!is_bytes_like(data.ptr())) {
    const py::object name = py::type::handle_of(data).attr("__name__");
    PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not %R", name.ptr());
    throw py::error_already_set();
  }
  if (self.eof) raise(PyExc_RuntimeError, "Cannot call write() after write_eof()");
  if (!self.empty_waiter.is_none()) raise(PyExc_RuntimeError, "unable to write; sendfile is in progress");
  Py_buffer view;
  if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_SIMPLE) < 0) {
    py::error_already_set error;
    return write_non_contiguous(self, data, error);
  }
  struct Release {
    Py_buffer& view;
    ~Release() { PyBuffer_Release(&view); }
  } release{view};
  if (view.len == 0) return;
  if (self.conn_lost) return count_write_after_loss(self);
  const auto* bytes = static_cast<const char*>(view.buf);
  auto size = static_cast<std::size_t>(view.len);
  if (self.buffer.empty()) {
    const ssize_t sent = send_some(self.fd, bytes, size);
    if (sent < 0) return fatal_error(self, os_error(static_cast<int>(-sent)), "Fatal write error on socket transport");
    if (static_cast<std::size_t>(sent) == size) return;
    bytes += sent;
    size -= static_cast<std::size_t>(sent);
    // Not all was written: write the rest when the socket can take it.
    self.transport.attr("_loop").attr("_add_writer")(self.fd, self.transport.attr("_write_ready"));
  }
  self.buffer.append(bytes, size);
  self.transport.attr("_maybe_pause_protocol")();
}

void write_ready(TransportCore& self) {
  if (self.conn_lost || self.buffer.empty()) return;
  const py::object transport = self.transport;
  const ssize_t sent = send_some(self.fd, self.buffer.front(), self.buffer.size());
  if (sent < 0) {
    const py::object exc = os_error(static_cast<int>(-sent));
    transport.attr("_loop").attr("_remove_writer")(self.fd);
    self.buffer.clear();
    fatal_error(self, exc, "Fatal write error on socket transport");
    if (!self.empty_waiter.is_none()) self.empty_waiter.attr("set_exception")(exc);
    return;
  }
  self.buffer.consume(static_cast<std::size_t>(sent));
  transport.attr("_maybe_resume_protocol")();  // may write more
  if (!self.buffer.empty()) return;
  transport.attr("_loop").attr("_remove_writer")(self.fd);
  if (!self.empty_waiter.is_none()) self.empty_waiter.attr("set_result")(py::none());
  if (self.closing) {
    transport.attr("_call_connection_lost")(py::none());
  } else if (self.eof) {
    transport.attr("_sock").attr("shutdown")(static_cast<int>(SHUT_WR));
  }
}

int traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<TransportCore&>(py::handle(self));
  Py_VISIT(core.transport.ptr());
  Py_VISIT(core.protocol.ptr());
  Py_VISIT(core.empty_waiter.ptr());
  return 0;
}

int clear(PyObject* self) {
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& core = py::cast<TransportCore&>(py::handle(self));
  core.transport = py::none();
  core.protocol = py::none();
  core.empty_waiter = py::none();
  return 0;
}

}  // namespace

void register_socket_transport(py::module_& module) {
  py::class_<TransportCore>(module, "TransportCore", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                              auto* type = &heap_type->ht_type;
                              type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                              type->tp_traverse = traverse;
                              type->tp_clear = clear;
                            }))
      .def(py::init<py::object, int>())
      .def("read_ready", &read_ready, "Read once from the socket and hand the bytes to the protocol.")
      .def("write", &write, "Write bytes-like data: sent now when possible, else buffered.")
      .def("write_ready", &write_ready, "Send what is buffered, once the socket can take it.")
      .def("set_protocol",
           [](TransportCore& core, py::object protocol, bool buffered) {
             core.protocol = std::move(protocol);
             core.buffered = buffered;
           })
      .def("clear_buffer", [](TransportCore& core) { core.buffer.clear(); })
      .def_property_readonly("buffer_size", [](const TransportCore& core) { return core.buffer.size(); })
      .def_readwrite("conn_lost", &TransportCore::conn_lost)
      .def_readwrite("closing", &TransportCore::closing)
      .def_readwrite("eof", &TransportCore::eof)
      .def_readwrite("empty_waiter", &TransportCore::empty_waiter);
}

}  // namespace turboloop::binding
