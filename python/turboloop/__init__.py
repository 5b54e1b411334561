"""turboloop: a C++ event loop on libuv for asyncio, a drop-in replacement for the default loop.

    import turboloop
    turboloop.run(main())            # like asyncio.run(main())
    turboloop.install()              # asyncio.run() and new_event_loop() now use turboloop
    turboloop.ThreadPoolExecutor()   # concurrent.futures.ThreadPoolExecutor on native workers

or, with no change to a program: ``python -m turboloop program.py``.
"""

from turboloop._executor import ThreadPoolExecutor
from turboloop._loop import Loop
from turboloop._policy import EventLoopPolicy, install, new_event_loop, run
from turboloop._turboloop import Handle, TimerHandle
from turboloop._watchdog import Stall, disable_watchdog, enable_watchdog

__version__ = "0.1.0"

# Public names read as turboloop.X in reprs and docs, wherever they are defined.
for _public in (Loop, EventLoopPolicy, Stall, ThreadPoolExecutor):
    _public.__module__ = __name__
del _public

__all__ = [
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "Stall",
    "ThreadPoolExecutor",
    "TimerHandle",
    "__version__",
    "disable_watchdog",
    "enable_watchdog",
    "install",
    "new_event_loop",
    "run",
]
