// The scheduling methods of the loop -- call_soon, call_later, call_at, call_soon_threadsafe --
// as METH_FASTCALL entries: they are the hottest calls a program makes (every Task step and
// every Future callback goes through call_soon), so they skip pybind11's dispatch. So do
// create_future and get_debug, which every Future made on the loop calls.
#pragma once

#include "binding/common.hpp"

namespace turboloop::binding {

class LoopCore;

// The LoopCore inside a Python loop object (the caller has checked its type); nullptr with
// RuntimeError set when the loop's __init__() did not run.
LoopCore* loop_core(PyObject* self);

// The loop's create_future(): a new asyncio.Future on loop `self`.
PyObject* create_future(PyObject* self, PyObject* = nullptr);

// Adds these methods to the LoopCore class.
void add_scheduling_methods(py::handle loop_class);

}  // namespace turboloop::binding
