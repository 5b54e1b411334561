// One read from a non-blocking socket into a new bytes object, shared by the socket transport and
// sock_recv. Where it lands depends on the last read's size: after a small one, in the core's
// scratch buffer, copied out at its size (no large allocation for a few bytes); after a large one,
// straight in a bytes object of the full size, then shrunk as socket.recv does (no copy: copying
// 64 KiB reads out of the scratch buffer was a tenth of a 100 KiB sock_* echo server's time).
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
  // A read this large says the next one on this thread will be large too (a guess: a wrong one
  // costs a copy, or an allocation that is shrunk at once).
  constexpr std::size_t kLargeRead = 16 * 1024;
  static thread_local std::size_t last_count = 0;
  error = 0;
  // As socket.recv(0): empty, at once, without asking the kernel (which would block for data).
  if (size == 0) return PyBytes_FromStringAndSize(nullptr, 0);
  if (size <= core::kMaxRead && last_count < kLargeRead) {
    char* const scratch = core::read_scratch();
    const ssize_t count = core::receive(fd, scratch, size);
    if (count >= 0) {
      last_count = static_cast<std::size_t>(count);
      return PyBytes_FromStringAndSize(scratch, count);
    }
    error = static_cast<int>(-count);
  } else {
    PyObject* data = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
    if (data == nullptr) return nullptr;
    const ssize_t count = core::receive(fd, PyBytes_AS_STRING(data), size);
    if (count >= 0) {
      last_count = static_cast<std::size_t>(count);
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
