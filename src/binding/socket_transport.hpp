// What the rest of the binding asks of the socket transport (socket_transport.cpp).
#pragma once

#include <vector>

#include "binding/common.hpp"

namespace turboloop::binding {

// Sends the writes the transports in `cores` (TransportCore objects) held back while a callback
// ran, and empties `cores`. The loop calls it when the callback ends.
void send_held_writes(std::vector<py::object>& cores);

}  // namespace turboloop::binding
