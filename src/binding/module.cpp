// The extension module turboloop._turboloop: creates the module and registers each area.
#include "binding/common.hpp"

namespace turboloop::binding {

py::object support(const char* name) {
  return py::module_::import("turboloop._support").attr(name);
}

}  // namespace turboloop::binding

PYBIND11_MODULE(_turboloop, module) {
  module.doc() = "The native core of turboloop: the event loop and its handles.";
  turboloop::binding::register_handle(module);
  turboloop::binding::register_loop(module);
  turboloop::binding::register_socket_transport(module);
  turboloop::binding::register_thread_pool_executor(module);
}
