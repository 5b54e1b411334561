// DatagramCore: the native hot paths of turboloop's datagram transport (see datagram_core.cpp).
#pragma once

#include "binding/common.hpp"

namespace turboloop::binding {

// Adds the DatagramCore type to the module.
void register_datagram_core(py::module_& module);

}  // namespace turboloop::binding
