// DatagramCore: the hot paths of turboloop's datagram transport (python/turboloop/_datagram.py)
// for IPv4 and IPv6 sockets -- reading a datagram into the protocol, and sendto() when it can go
// out at once -- as asyncio's _SelectorDatagramTransport does them, in C. What they do not cover
// (a changed max_size, a buffer of unsent datagrams, a lost connection, addresses that need
// resolving or asyncio's checks, other data types) runs asyncio's own Python methods.
#include "binding/datagram_core.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <structmember.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/socket_io.hpp"

namespace turboloop::binding {
namespace {

struct DatagramCore {
  PyObject_HEAD PyObject* transport;  // the Python transport
  int fd;
  int family;      // AF_INET or AF_INET6
  bool connected;  // the socket has a peer: asyncio's send() instead of sendto()
  // The last sender's address, as a sockaddr and as the tuple handed to the protocol: datagrams
  // mostly come from the same few peers, and a tuple is immutable, so it is made once per run.
  sockaddr_storage from;
  socklen_t from_size;
  PyObject* from_address;
  // The last destination given to sendto() (often that very tuple) and its sockaddr.
  PyObject* to_address;
  sockaddr_storage to;
  socklen_t to_size;
};

// asyncio's _SelectorDatagramTransport (looked up at registration; never released).
PyObject* asyncio_class() {
  static PyObject* const cls =
      py::object(py::module_::import("asyncio.selector_events").attr("_SelectorDatagramTransport")).release().ptr();
  return cls;
}

// asyncio's own methods, for the cases left to them.
PyObject* asyncio_method(const char* name) { return PyObject_GetAttrString(asyncio_class(), name); }

PyObject* call_asyncio(const char* name, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* method = asyncio_method(name);
  if (method == nullptr) return nullptr;
  PyObject* result = PyObject_Vectorcall(method, args, static_cast<std::size_t>(nargs), kwnames);
  Py_DECREF(method);
  return result;
}

// The transport's attribute `name` as a C long (0 when it is not an int).
bool long_attribute(PyObject* transport, PyObject* name, long* value) {
  PyObject* attribute = PyObject_GetAttr(transport, name);
  if (attribute == nullptr) return false;
  *value = PyLong_Check(attribute) ? PyLong_AsLong(attribute) : 0;
  Py_DECREF(attribute);
  return !(*value == -1 && PyErr_Occurred());
}

// The address a datagram came from, as socket.recvfrom() gives it; nullptr for other families.
PyObject* address_of(const sockaddr_storage& from) {
  char text[INET6_ADDRSTRLEN];
  if (from.ss_family == AF_INET) {
    const auto& ipv4 = reinterpret_cast<const sockaddr_in&>(from);
    inet_ntop(AF_INET, &ipv4.sin_addr, text, sizeof text);
    return Py_BuildValue("(si)", text, ntohs(ipv4.sin_port));
  }
  if (from.ss_family == AF_INET6) {
    const auto& ipv6 = reinterpret_cast<const sockaddr_in6&>(from);
    inet_ntop(AF_INET6, &ipv6.sin6_addr, text, sizeof text);
    return Py_BuildValue("(siII)", text, ntohs(ipv6.sin6_port), ntohl(ipv6.sin6_flowinfo), ipv6.sin6_scope_id);
  }
  return nullptr;
}

// Calls protocol.`method`(*args) on the transport's current protocol.
PyObject* call_protocol(PyObject* transport, PyObject* method, PyObject* first, PyObject* second = nullptr) {
  PyObject* protocol = PyObject_GetAttr(transport, interned<"_protocol">().ptr());
  if (protocol == nullptr) return nullptr;
  PyObject* args[] = {protocol, first, second};
  PyObject* result = PyObject_VectorcallMethod(method, args, second == nullptr ? 2 : 3, nullptr);
  Py_DECREF(protocol);
  return result;
}

// protocol.error_received(OSError(errno)), as asyncio reports a failed read or send.
PyObject* report_error(PyObject* transport, int error) {
  errno = error;
  PyErr_SetFromErrno(PyExc_OSError);
  PyObject* value = fetch_exception();
  PyObject* result = call_protocol(transport, interned<"error_received">().ptr(), value);
  Py_DECREF(value);
  if (result == nullptr) return nullptr;
  Py_DECREF(result);
  Py_RETURN_NONE;
}

// asyncio's _read_ready: one datagram to protocol.datagram_received(data, addr).
PyObject* read_ready(PyObject* object, PyObject*) {
  auto* self = reinterpret_cast<DatagramCore*>(object);
  long conn_lost, max_size;
  if (!long_attribute(self->transport, interned<"_conn_lost">().ptr(), &conn_lost)) return nullptr;
  if (conn_lost != 0) Py_RETURN_NONE;
  if (!long_attribute(self->transport, interned<"max_size">().ptr(), &max_size)) return nullptr;
  if (max_size != static_cast<long>(core::kMaxRead)) return call_asyncio("_read_ready", &self->transport, 1, nullptr);
  char* const buffer = core::read_scratch();
  sockaddr_storage from{};
  socklen_t from_size = sizeof from;
  ssize_t count;
  do {
    count = recvfrom(self->fd, buffer, core::kMaxRead, 0, reinterpret_cast<sockaddr*>(&from), &from_size);
  } while (count < 0 && errno == EINTR);
  if (count < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) Py_RETURN_NONE;
    return report_error(self->transport, errno);
  }
  if (self->from_address == nullptr || from_size != self->from_size ||
      std::memcmp(&from, &self->from, from_size) != 0) {
    PyObject* address = address_of(from);
    if (address == nullptr) {
      if (PyErr_Occurred()) return nullptr;
      address = Py_NewRef(Py_None);  // as socket.recvfrom() for an address of no known family
    }
    Py_XSETREF(self->from_address, address);
    self->from = from;
    self->from_size = from_size;
  }
  PyObject* data = PyBytes_FromStringAndSize(buffer, count);
  if (data == nullptr) return nullptr;
  PyObject* address = Py_NewRef(self->from_address);
  PyObject* result = call_protocol(self->transport, interned<"datagram_received">().ptr(), data, address);
  Py_DECREF(data);
  Py_DECREF(address);
  return result;
}

// An IPv4 destination as asyncio passes it to socket.sendto(): (host, port) with a numeric host;
// false for anything else (which asyncio's code handles).
bool parse_destination(PyObject* addr, sockaddr_storage* to, socklen_t* size) {
  if (!PyTuple_CheckExact(addr) || PyTuple_GET_SIZE(addr) != 2) return false;
  PyObject* host = PyTuple_GET_ITEM(addr, 0);
  PyObject* port = PyTuple_GET_ITEM(addr, 1);
  if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port)) return false;
  Py_ssize_t length;
  const char* text = PyUnicode_AsUTF8AndSize(host, &length);
  if (text == nullptr) {
    PyErr_Clear();
    return false;
  }
  const long number = PyLong_AsLong(port);
  if (number < 0 || number > 65535 || static_cast<std::size_t>(length) != std::strlen(text)) {
    PyErr_Clear();
    return false;
  }
  *to = sockaddr_storage{};
  auto& ipv4 = reinterpret_cast<sockaddr_in&>(*to);
  if (inet_pton(AF_INET, text, &ipv4.sin_addr) == 1) {
    ipv4.sin_family = AF_INET;
    ipv4.sin_port = htons(static_cast<std::uint16_t>(number));
    *size = sizeof ipv4;
    return true;
  }
  return false;
}

// asyncio's sendto(data, addr=None), when the datagram can be sent at once.
PyObject* sendto(PyObject* object, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* self = reinterpret_cast<DatagramCore*>(object);
  PyObject* data = nargs >= 1 ? args[0] : nullptr;
  PyObject* addr = nargs >= 2 ? args[1] : Py_None;
  // An empty datagram goes through asyncio's code: it sends one from 3.13 on, and before sends nothing.
  bool native =
      kwnames == nullptr && nargs >= 1 && nargs <= 2 && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0;
  sockaddr_storage to;
  socklen_t to_size;
  if (native && !self->connected && addr != self->to_address) {
    native = self->family == AF_INET && parse_destination(addr, &to, &to_size);
    if (native) {
      Py_XSETREF(self->to_address, Py_NewRef(addr));
      self->to = to;
      self->to_size = to_size;
    }
  } else if (native && self->connected) {
    native = addr == Py_None;
  }
  long conn_lost = 0;
  if (native && !long_attribute(self->transport, interned<"_conn_lost">().ptr(), &conn_lost)) return nullptr;
  if (native && conn_lost == 0) {
    PyObject* buffer = PyObject_GetAttr(self->transport, interned<"_buffer">().ptr());
    if (buffer == nullptr) return nullptr;
    const Py_ssize_t queued = PyObject_Length(buffer);
    Py_DECREF(buffer);
    if (queued < 0) return nullptr;
    native = queued == 0;
  }
  if (!native || conn_lost != 0) {
    const Py_ssize_t total = nargs + (kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames));
    std::vector<PyObject*> all(static_cast<std::size_t>(total) + 1);
    all[0] = self->transport;
    std::copy(args, args + total, all.begin() + 1);
    return call_asyncio("sendto", all.data(), nargs + 1, kwnames);
  }
  const char* bytes = PyBytes_AS_STRING(data);
  const auto size = static_cast<std::size_t>(PyBytes_GET_SIZE(data));
  ssize_t sent;
  do {
    sent = self->connected ? send(self->fd, bytes, size, 0)
                           : ::sendto(self->fd, bytes, size, 0, reinterpret_cast<sockaddr*>(&self->to), self->to_size);
  } while (sent < 0 && errno == EINTR);
  if (sent >= 0) Py_RETURN_NONE;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    // asyncio's code waits for the socket and buffers the datagram (its own send fails again).
    PyObject* all[3] = {self->transport, data, addr};
    return call_asyncio("sendto", all, 3, nullptr);
  }
  return report_error(self->transport, errno);
}

int traverse(PyObject* object, visitproc visit, void* arg) {
  Py_VISIT(reinterpret_cast<DatagramCore*>(object)->transport);
  return 0;
}

int clear(PyObject* object) {
  auto* self = reinterpret_cast<DatagramCore*>(object);
  Py_CLEAR(self->transport);
  Py_CLEAR(self->from_address);
  Py_CLEAR(self->to_address);
  return 0;
}

void dealloc(PyObject* object) {
  PyObject_GC_UnTrack(object);
  clear(object);
  PyObject_GC_Del(object);
}

int init(PyObject* object, PyObject* args, PyObject* kwargs) {
  auto* self = reinterpret_cast<DatagramCore*>(object);
  static const char* keywords[] = {"transport", "fd", "family", "connected", nullptr};
  PyObject* transport;
  int fd;
  int family;
  int connected;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oiip:DatagramCore", const_cast<char**>(keywords), &transport, &fd,
                                   &family, &connected))
    return -1;
  Py_XSETREF(self->transport, Py_NewRef(transport));
  self->fd = fd;
  self->family = family;
  self->connected = connected != 0;
  return 0;
}

PyMethodDef methods[] = {
    {"read_ready", read_ready, METH_NOARGS, "Read one datagram and hand it to the protocol (asyncio's _read_ready)."},
    {"sendto", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(sendto)), METH_FASTCALL | METH_KEYWORDS,
     "sendto($self, data, addr=None)\n--\n\nSend data to addr (or the peer): asyncio's DatagramTransport.sendto()."},
    {nullptr, nullptr, 0, nullptr},
};

PyMemberDef members[] = {
    {"connected", T_BOOL, offsetof(DatagramCore, connected), 0,
     "Whether the socket has a peer (asyncio's extra 'peername'): send() rather than sendto()."},
    {nullptr, 0, 0, 0, nullptr},
};

PyTypeObject DatagramCoreType = [] {
  PyTypeObject type{};
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&type), 1);
  type.tp_name = "turboloop._turboloop.DatagramCore";
  type.tp_basicsize = sizeof(DatagramCore);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  type.tp_doc = "DatagramCore(transport, fd, family, connected): the native hot paths of a datagram transport.";
  type.tp_new = PyType_GenericNew;
  type.tp_init = init;
  type.tp_methods = methods;
  type.tp_members = members;
  type.tp_traverse = traverse;
  type.tp_clear = clear;
  type.tp_dealloc = dealloc;
  return type;
}();

}  // namespace

void register_datagram_core(py::module_& module) {
  if (PyType_Ready(&DatagramCoreType) < 0) throw py::error_already_set();
  asyncio_class();  // where an import error can be raised
  module.attr("DatagramCore") = py::handle(reinterpret_cast<PyObject*>(&DatagramCoreType));
}

}  // namespace turboloop::binding
