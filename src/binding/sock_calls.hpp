// loop.sock_recv(), sock_recv_into() and sock_sendall() as native coroutines (see sock_calls.cpp).
#pragma once

#include "binding/common.hpp"

namespace turboloop::binding {

// Adds sock_recv, sock_recv_into and sock_sendall to the LoopCore class, and the SockCall type to the module.
void add_sock_calls(py::handle loop_class, py::module_& module);

}  // namespace turboloop::binding
