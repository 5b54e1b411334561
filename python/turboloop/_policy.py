"""How programs get turboloop's loop: new_event_loop(), run(), and, while asyncio has event loop
policies, EventLoopPolicy and install().

asyncio deprecates its policies in 3.14 and removes them in 3.16. Which of its interfaces exist is
detected, never read off a version number: `events._set_event_loop_policy` (the setter asyncio
uses itself, without a warning) exists exactly where the public one is deprecated.
"""

from __future__ import annotations

import asyncio
import warnings
from asyncio import events, unix_events
from typing import Any, Coroutine, TypeVar

from turboloop._loop import Loop

_T = TypeVar("_T")
# asyncio's private names used here, which typeshed has for some versions only.
_events: Any = events

# Up to 3.15: asyncio's default policy, under the name that does not warn (the public
# asyncio.DefaultEventLoopPolicy warns from 3.14 on). None where policies are gone.
_DefaultPolicy: Any = getattr(unix_events, "_UnixDefaultEventLoopPolicy", None)
POLICIES_DEPRECATED = hasattr(events, "_set_event_loop_policy")


def new_event_loop() -> Loop:
    """Return a new turboloop event loop."""
    return Loop()


if _DefaultPolicy is not None:

    class EventLoopPolicy(_DefaultPolicy):  # type: ignore[misc]
        """asyncio's default policy, except that the loops it makes are turboloop's.

        asyncio deprecates policies from 3.14 on: there, prefer turboloop.run(main()) or
        asyncio.run(main(), loop_factory=turboloop.new_event_loop)."""

        def new_event_loop(self) -> Loop:
            """Return a new turboloop event loop."""
            return Loop()


def use_turboloop_everywhere() -> None:
    """For `python -m turboloop`: every loop asyncio makes for the program is turboloop's. asyncio's
    own new_event_loop() (which asyncio.run() and asyncio.Runner() call) makes one, and where
    policies exist turboloop's policy is set as well, without the deprecation warning asyncio gives
    from 3.14 on (the program did not ask for a policy)."""
    events.new_event_loop = new_event_loop
    asyncio.new_event_loop = new_event_loop
    if _DefaultPolicy is not None:
        _set_policy_quietly(EventLoopPolicy())


def _set_policy_quietly(policy: Any) -> None:
    if POLICIES_DEPRECATED:
        _events._set_event_loop_policy(policy)
    else:
        asyncio.set_event_loop_policy(policy)


def install() -> None:
    """Make turboloop the event loop of asyncio.run(), asyncio.new_event_loop() and friends, through
    asyncio's event loop policy. From 3.14, where asyncio deprecates policies, this warns as
    asyncio.set_event_loop_policy() does."""
    if POLICIES_DEPRECATED:
        warnings.warn(
            "turboloop.install() sets an asyncio event loop policy: policies are deprecated and slated "
            "for removal in Python 3.16; use turboloop.run(main()) or "
            "asyncio.run(main(), loop_factory=turboloop.new_event_loop) instead",
            DeprecationWarning,
            stacklevel=2,
        )
    if _DefaultPolicy is None:
        raise RuntimeError(
            "asyncio has no event loop policies on this Python: use turboloop.run(main()) or "
            "asyncio.run(main(), loop_factory=turboloop.new_event_loop)"
        )
    _set_policy_quietly(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new turboloop loop and return its result, exactly as asyncio.run()."""
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
