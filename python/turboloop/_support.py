"""Cold-path helpers that the native handles and loop call: formatting, error reports, debug checks.

They reuse asyncio's own formatting so that reprs and messages match stock asyncio exactly.
"""

from __future__ import annotations

import sys
from asyncio import coroutines, format_helpers
from typing import Any, Callable


def format_handle(handle: Any) -> str:
    """Return the repr asyncio gives a Handle or TimerHandle in the same state."""
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if hasattr(handle, "_when"):
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    if handle._callback is not None:
        info.append(format_helpers._format_callback_source(handle._callback, handle._args))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def report_callback_error(handle: Any, exc: BaseException) -> None:
    """Send an exception raised by a handle's callback to its loop's exception handler."""
    callback = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        "message": f"Exception in callback {callback}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def extract_source_traceback() -> Any:
    """The stack of the Python code that is scheduling a callback (debug mode)."""
    # Frame 0 is this function; frame 1 is the caller of the native call_soon/call_at.
    return format_helpers.extract_stack(sys._getframe(1))


# asyncio's own test for coroutine functions: from 3.14, the public one warns (it goes in 3.16).
iscoroutinefunction: Callable[[Any], bool] = getattr(
    coroutines, "_iscoroutinefunction", coroutines.iscoroutinefunction
)


def check_callback(callback: Any, method: str) -> None:
    """asyncio's debug-mode check of a callback passed to call_soon() and friends."""
    if coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")
