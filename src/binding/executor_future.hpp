// The futures turboloop.ThreadPoolExecutor.submit() returns: turboloop._executor.Future, a
// subclass of concurrent.futures.Future whose state, lock and methods are native (see the .cpp).
#pragma once

#include "binding/common.hpp"

namespace turboloop::binding {

// A new turboloop._executor.Future: a new reference, or nullptr with the error set.
PyObject* new_executor_future();

// future.set_running_or_notify_cancel(): 1 when it is now running, 0 when it was cancelled,
// -1 with the error set.
int executor_future_start(PyObject* future);

// future.set_result(value), or future.set_exception(value) when `failed`: 0, or -1 with the
// error set.
int executor_future_finish(PyObject* future, PyObject* value, bool failed);

}  // namespace turboloop::binding
