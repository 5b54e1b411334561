// Included first by every binding file: the pybind11 alias and the registration entry points.
#pragma once

#include <pybind11/pybind11.h>

#include <cerrno>

namespace py = pybind11;

namespace turboloop::binding {

void register_handle(py::module_& module);
void register_loop(py::module_& module);
void register_socket_transport(py::module_& module);
void register_executor_future(py::module_& module);
void register_thread_pool_executor(py::module_& module);

// Raises `type(message)` as a Python exception through pybind11.
[[noreturn]] inline void raise(PyObject* type, const char* message) {
  PyErr_SetString(type, message);
  throw py::error_already_set();
}

// The exception `error` holds, with its traceback, as `except ... as exc` gives it.
inline py::object caught(py::error_already_set& error) {
  py::object exc = error.value();
  if (error.trace()) PyException_SetTraceback(exc.ptr(), error.trace().ptr());
  return exc;
}

// The exception being raised, with its traceback, as `except ... as exc` gives it (a new
// reference); the error indicator is cleared.
inline PyObject* fetch_exception() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr) PyException_SetTraceback(value, traceback);
  Py_XDECREF(type);
  Py_XDECREF(traceback);
  return value;
}

// The OSError (of the subclass Python picks for the number) for errno `number`, not raised.
inline py::object os_error(int number) {
  errno = number;
  PyErr_SetFromErrno(PyExc_OSError);
  py::error_already_set error;
  return caught(error);
}

// sock.fileno() by an interned name (no str or bound method made on every call): the number, or
// -1 with a Python error set (a closed socket's -1 comes without one).
inline long socket_fileno(PyObject* sock) {
  static PyObject* const name = PyUnicode_InternFromString("fileno");  // never released
  PyObject* number = PyObject_CallMethodNoArgs(sock, name);
  if (number == nullptr) return -1;
  const long fd = PyLong_AsLong(number);
  Py_DECREF(number);
  return fd;
}

// A function of the pure-Python helper module turboloop._support, looked up once.
py::object support(const char* name);

}  // namespace turboloop::binding
