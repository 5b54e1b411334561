// One read from a non-blocking socket into a new bytes object, shared by the socket transport and
// sock_recv: small reads land in the core's scratch buffer and are copied out at their size,
// larger ones go straight into a bytes object that is then shrunk (as socket.recv does).
#pragma once

#include <cerrno>
#include <cstddef>

#include "binding/common.hpp"
#include "core/socket_io.hpp"

namespace turboloop::binding {

// Reads up to `size` bytes: a new bytes object (empty at end of stream); nullptr with `error` =
// EAGAIN when nothing is waiting; nullptr with a Python exception set otherwise (`error` is the
// errno of an OSError, 0 for a MemoryError).
inline PyObject* read_socket(int fd, std::size_t size, int& error) {
  error = 0;
  // As socket.recv(0): empty, at once, without asking the kernel (which would block for data).
  if (size == 0) return PyBytes_FromStringAndSize(nullptr, 0);
  if (size <= core::kMaxRead) {
    char* const scratch = core::read_scratch();
    const ssize_t count = core::receive(fd, scratch, size);
    if (count >= 0) return PyBytes_FromStringAndSize(scratch, count);
    error = static_cast<int>(-count);
  } else {
    PyObject* data = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
    if (data == nullptr) return nullptr;
    const ssize_t count = core::receive(fd, PyBytes_AS_STRING(data), size);
    if (count >= 0) {
      if (_PyBytes_Resize(&data, count) < 0) return nullptr;
      return data;
    }
    Py_DECREF(data);
    error = static_cast<int>(-count);
  }
  if (error != EAGAIN) {
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
  }
  return nullptr;
}

}  // namespace turboloop::binding
