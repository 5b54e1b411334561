// What the rest of the binding asks of the socket transport (socket_transport.cpp).
#pragma once

#include <vector>

#include "binding/common.hpp"

namespace turboloop::binding {

class TransportCore;

// A transport holding writes back until the running callback ends: its TransportCore, and the
// Python object that owns it (kept alive meanwhile).
struct HeldWrites {
  py::object owner;
  TransportCore* core;
};

// Sends what the transports in `held` held back while a callback ran, and empties `held`. The loop
// calls it when the callback ends.
void send_held_writes(std::vector<HeldWrites>& held);

}  // namespace turboloop::binding
