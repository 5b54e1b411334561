// Included first by every binding file: the pybind11 alias and the registration entry points.
#pragma once

#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace turboloop::binding {

void register_handle(py::module_& module);
void register_loop(py::module_& module);
void register_socket_transport(py::module_& module);
void register_thread_pool_executor(py::module_& module);

// Raises `type(message)` as a Python exception through pybind11.
[[noreturn]] inline void raise(PyObject* type, const char* message) {
  PyErr_SetString(type, message);
  throw py::error_already_set();
}

// A function of the pure-Python helper module turboloop._support, looked up once.
py::object support(const char* name);

}  // namespace turboloop::binding
