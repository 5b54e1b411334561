"""The event loop policy, install() and run(): how programs get turboloop's loop."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

from turboloop._loop import Loop

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new turboloop event loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, except that the loops it makes are turboloop's."""

    def new_event_loop(self) -> Loop:
        """Return a new turboloop event loop."""
        return Loop()


def install() -> None:
    """Make turboloop the event loop of asyncio.run(), asyncio.new_event_loop() and friends."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new turboloop loop and return its result, exactly as asyncio.run()."""
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
