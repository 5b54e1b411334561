"""The blocking-call watchdog: finds the code that keeps the event loop from coming back to poll.

A native thread watches each running turboloop loop. When the loop thread has been away from its
poll for longer than the threshold, the watchdog takes the GIL and captures the loop thread's
Python stack *while it is still blocked* (the frame that blocks, not just the callback's name).
When the loop is back, the stall is reported once, with its duration, through the ``asyncio``
logger and an optional callback.

Switch it on with ``turboloop.enable_watchdog(0.1)``, ``loop.set_watchdog(0.1)``, the environment
variable ``TURBOLOOP_WATCHDOG=0.1`` or ``python -m turboloop --watchdog 0.1 program.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import traceback
from asyncio import events
from asyncio.base_events import _format_handle  # type: ignore[attr-defined]
from typing import Any, Callable

ENVIRONMENT_VARIABLE = "TURBOLOOP_WATCHDOG"


@dataclasses.dataclass(frozen=True)
class Stall:
    """A stretch of time in which the event loop did not come back to poll for I/O for longer
    than the watchdog's threshold."""

    duration: float
    """Seconds the loop thread was away from its poll."""
    threshold: float
    """The watchdog's threshold, in seconds."""
    handle: events.Handle | None
    """The callback that was running when the watchdog noticed the stall (None outside one)."""
    stack: traceback.StackSummary | None
    """The loop thread's Python stack while it was blocked, innermost frame last; None when it
    could not be captured (C code that holds the GIL throughout, such as a huge json.dumps)."""

    def format(self) -> str:
        """The report the watchdog logs."""
        where = "" if self.handle is None else f" running {_format_handle(self.handle)}"
        lines = [f"Event loop blocked for {self.duration:.3f} seconds (watchdog threshold {self.threshold:.3f}){where}"]
        if self.stack is None:
            lines.append("The loop thread's stack could not be captured: it held the GIL throughout.")
        else:
            lines.append("Stack of the loop thread while it was blocked (most recent call last):")
            lines.append("".join(self.stack.format()).rstrip("\n"))
        return "\n".join(lines)


def capture_stack(thread_ident: int) -> traceback.StackSummary | None:
    """The Python stack of the thread `thread_ident` (called by the watchdog thread)."""
    frame = sys._current_frames().get(thread_ident)
    return None if frame is None else traceback.extract_stack(frame)


def check_threshold(threshold: Any) -> float:
    """`threshold` as seconds, or asyncio-style errors for what cannot be one."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"the watchdog threshold must be a number of seconds, not {type(threshold).__name__}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"the watchdog threshold must be a positive, finite number of seconds, got {threshold!r}")
    return float(threshold)


def check_callback(callback: object) -> Callable[[Stall], object] | None:
    if callback is not None and not callable(callback):
        raise TypeError(f"the watchdog callback must be callable or None, not {type(callback).__name__}")
    return callback


# What loops made from now on use: (threshold, callback), or None for off.
default: tuple[float, Callable[[Stall], object] | None] | None = None


def enable_watchdog(threshold: float = 0.1, callback: Callable[[Stall], object] | None = None) -> None:
    """Watch every turboloop loop made from now on, and the one running in this thread, for
    stalls longer than `threshold` seconds; report each through the ``asyncio`` logger and, if
    given, ``callback(stall)`` (on the loop's thread)."""
    global default
    default = (check_threshold(threshold), check_callback(callback))
    _apply_to_running_loop()


def disable_watchdog() -> None:
    """Stop watching loops made from now on, and the one running in this thread."""
    global default
    default = None
    _apply_to_running_loop()


def _apply_to_running_loop() -> None:
    from turboloop._loop import Loop  # here, not at the top: _loop imports this module

    loop = events._get_running_loop()
    if isinstance(loop, Loop):
        loop.set_watchdog(*(default or (None, None)))


def _default_from_environment() -> None:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return
    try:
        threshold = check_threshold(float(value))
    except ValueError:
        raise ValueError(
            f"{ENVIRONMENT_VARIABLE} must be a positive number of seconds (such as 0.1), got {value!r}"
        ) from None
    global default
    default = (threshold, None)


_default_from_environment()
