// Included first by every binding file: the pybind11 alias and the registration entry points.
#pragma once

#include <pybind11/eval.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

namespace py = pybind11;

namespace turboloop::binding {

void register_handle(py::module_& module);
void register_loop(py::module_& module);
void register_socket_transport(py::module_& module);
void register_executor_future(py::module_& module);
void register_thread_pool_executor(py::module_& module);

// A string literal as a template argument, for interned().
template <std::size_t N>
struct NameLiteral {
  char text[N];
  constexpr NameLiteral(const char (&literal)[N]) { std::copy_n(literal, N, text); }
};

// The interned str of an attribute name, made once. A lookup by it hits CPython's type attribute
// cache, keyed by the name object; by a str made for the call (pybind11's .attr("..."),
// PyObject_CallMethod(obj, "...")) it misses, and walks the type's MRO: on the loop, eight classes,
// which cost more than the call itself.
template <NameLiteral name>
py::handle interned() {
  static PyObject* const object = PyUnicode_InternFromString(name.text);  // never released
  return object;
}

// Raises `type(message)` as a Python exception through pybind11.
[[noreturn]] inline void raise(PyObject* type, const char* message) {
  PyErr_SetString(type, message);
  throw py::error_already_set();
}

// The exception `error` holds, with its traceback, as `except ... as exc` gives it.
// How the running Python behaves where no attribute or signature tells: runs `code`, which sets
// `answer` to a bool (once, at import).
inline bool ask_python(const char* code) {
  py::dict scope;
  py::exec(code, scope);
  return scope["answer"].cast<bool>();
}

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

// _socket.socket.fileno, the method descriptor (looked up once; never released).
inline PyObject* socket_fileno_method() {
  static PyObject* const method =
      py::object(py::module_::import("_socket").attr("socket").attr("fileno")).release().ptr();
  return method;
}

// sock.fileno(): the number, or -1 with a Python error set (a closed socket's -1 comes without
// one). The transport's writes and SockCall ask it on every call, so that a socket its user closed,
// whose number the kernel may have given to another file since, is never read or written.
//
// Looking the method up was most of its cost. For a socket type whose fileno is _socket.socket's
// own (socket.socket, and subclasses that neither override it nor give instances a dict to shadow
// it), the method descriptor is called directly. The type is remembered with its version tag,
// which CPython changes whenever the type or one of its bases is modified.
inline long socket_fileno(PyObject* sock) {
  PyObject* const native = socket_fileno_method();
  // The last type asked about, at its version tag (0: not remembered), and whether its fileno
  // is `native`.
  static PyTypeObject* known_type = nullptr;
  static unsigned int known_version = 0;
  static bool known_native = false;
  PyTypeObject* type = Py_TYPE(sock);
  if (type != known_type || known_version == 0 || type->tp_version_tag != known_version) {
    PyObject* found = nullptr;
    if (type->tp_getattro == PyObject_GenericGetAttr && type->tp_dictoffset == 0) {
      found = PyObject_GetAttr(reinterpret_cast<PyObject*>(type), interned<"fileno">().ptr());
      if (found == nullptr) PyErr_Clear();
    }
    known_type = type;
    known_version = type->tp_version_tag;
    known_native = found == native;
    Py_XDECREF(found);
  }
  PyObject* number = known_native ? PyObject_Vectorcall(native, &sock, 1, nullptr)
                                  : PyObject_CallMethodNoArgs(sock, interned<"fileno">().ptr());
  if (number == nullptr) return -1;
  const long fd = PyLong_AsLong(number);
  Py_DECREF(number);
  return fd;
}

// A function of the pure-Python helper module turboloop._support, looked up once.
py::object support(const char* name);

}  // namespace turboloop::binding
