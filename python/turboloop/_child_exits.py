"""Child processes' exits, watched by the loop itself: a pidfd per child in the loop's epoll set.

Up to 3.13, asyncio waits for children through the policy's child watcher (3.11's default policy
makes a ThreadedChildWatcher, a thread per child, on first use). While the program has no child
watcher (the policy has not made or been given one), turboloop's loop watches each child's pidfd
instead: no thread per child, no signal handler, and the exit is reported as asyncio's watchers
report it, through loop._child_watcher_callback. A program that gets or sets a watcher keeps
asyncio's behaviour with that watcher.

From 3.14 on, child watchers are gone and each loop waits for its own children through its
`_watcher` (a pidfd on the loop's selector where the kernel has pidfds): turboloop's loop gives
asyncio a ChildExits there, so asyncio's own subprocess code runs unchanged.
"""

from __future__ import annotations

import os
import threading
import warnings
from asyncio import events, unix_events
from asyncio.log import logger
from typing import Any, Callable

# asyncio's private names used here, which typeshed has for some versions only.
_events: Any = events
_unix_events: Any = unix_events

# Child watchers (and the policy's get_child_watcher()) exist up to 3.13.
HAS_CHILD_WATCHERS = hasattr(unix_events, "AbstractChildWatcher")


def loop_may_watch() -> bool:
    """Up to 3.13: True when the policy has no child watcher for the loop to defer to, and
    pidfds exist."""
    policy = _events.get_event_loop_policy()
    return (
        hasattr(os, "pidfd_open")
        and isinstance(policy, _unix_events._UnixDefaultEventLoopPolicy)
        and policy._watcher is None
    )


def policy_watcher() -> Any:
    """Up to 3.13: the policy's child watcher, got as asyncio's loop gets it (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _events.get_child_watcher()


def new_loop_watcher(loop: Any) -> Any:
    """From 3.14: what a new loop waits for its children with, as asyncio's loop chooses it."""
    if _unix_events.can_use_pidfd():
        return loop._child_exits
    return _unix_events._ThreadedChildWatcher()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class ChildExits:
    """The children one loop waits for, by pid, with their pidfds."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._pidfds: dict[int, int] = {}

    def add_child_handler(self, pid: int, callback: Callable[..., object], *args: Any) -> None:
        """Call callback(pid, returncode, *args) on the loop when `pid` exits (a child watcher's
        interface); raises OSError when no pidfd can be opened for it."""
        pidfd = os.pidfd_open(pid)
        try:
            self._loop._add_reader(pidfd, self._exited, pid, callback, args)
        except BaseException:
            os.close(pidfd)
            raise
        self._pidfds[pid] = pidfd

    def _exited(self, pid: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        # As asyncio's PidfdChildWatcher._do_wait.
        pidfd = self._pidfds.pop(pid)
        self._loop._remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            returncode = 255
            logger.warning("child process pid %d exit status already read:  will report returncode 255", pid)
        else:
            returncode = os.waitstatus_to_exitcode(status)
        callback(pid, returncode, *args)

    def close(self) -> None:
        """The loop closes: each child still running is reaped by a thread of its own, as asyncio's
        ThreadedChildWatcher would reap it, so that none is left a zombie."""
        for pid, pidfd in self._pidfds.items():
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(target=_reap, args=(pid,), name=f"turboloop-reaper-{pid}", daemon=True).start()
        self._pidfds.clear()
