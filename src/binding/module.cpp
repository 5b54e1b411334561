// The extension module turboloop._turboloop: creates the module and registers each area.
#include <system_error>

#include "binding/common.hpp"
#include "binding/datagram_core.hpp"
#include "core/uv_loop.hpp"

namespace turboloop::binding {

py::object support(const char* name) { return py::module_::import("turboloop._support").attr(name); }

}  // namespace turboloop::binding

PYBIND11_MODULE(_turboloop, module) {
  module.doc() = "The native core of turboloop: the event loop and its handles.";
  // A failed system call in the core (out of descriptors, say) is an OSError, as in Python.
  py::register_exception_translator([](std::exception_ptr failure) {
    try {
      if (failure) std::rethrow_exception(failure);
    } catch (const std::system_error& error) {
      if (error.code().category() != std::generic_category() && error.code().category() != std::system_category())
        throw;
      errno = error.code().value();
      PyErr_SetFromErrno(PyExc_OSError);
    }
  });
  turboloop::core::UvLoop::prepare_process();
  turboloop::binding::register_handle(module);
  turboloop::binding::register_loop(module);
  turboloop::binding::register_socket_transport(module);
  turboloop::binding::register_datagram_core(module);
  turboloop::binding::register_executor_future(module);
  turboloop::binding::register_thread_pool_executor(module);
}
