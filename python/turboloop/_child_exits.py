"""Child processes' exits, watched by the loop itself: a pidfd per child in the loop's epoll set.

asyncio 3.11 waits for each child in a thread of its own (ThreadedChildWatcher, the watcher its
default policy makes on first use). While the program has no child watcher (the policy has not
made or been given one), turboloop's loop watches each child's pidfd instead: no thread per
child, no signal handler, and the exit is reported as asyncio's watchers report it, through
loop._child_watcher_callback. A program that gets or sets a watcher keeps asyncio's behaviour
with that watcher.
"""

from __future__ import annotations

import os
import threading
from asyncio import events, unix_events
from asyncio.log import logger
from typing import Any


def loop_may_watch() -> bool:
    """True when the policy has no child watcher for the loop to defer to, and pidfds exist."""
    policy = events.get_event_loop_policy()
    return (
        hasattr(os, "pidfd_open")
        and isinstance(policy, unix_events._UnixDefaultEventLoopPolicy)
        and policy._watcher is None  # type: ignore[attr-defined]
    )


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

    def watch(self, pid: int, transport: Any) -> bool:
        """Report `pid`'s exit to `transport`; False when no pidfd could be opened for it."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            self._loop._add_reader(pidfd, self._exited, pid, transport)
        except BaseException:
            os.close(pidfd)
            raise
        self._pidfds[pid] = pidfd
        return True

    def _exited(self, pid: int, transport: Any) -> None:
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
        self._loop._child_watcher_callback(pid, returncode, transport)

    def close(self) -> None:
        """The loop closes: each child still running is reaped by a thread of its own, as asyncio's
        ThreadedChildWatcher would reap it, so that none is left a zombie."""
        for pid, pidfd in self._pidfds.items():
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
            threading.Thread(target=_reap, args=(pid,), name=f"turboloop-reaper-{pid}", daemon=True).start()
        self._pidfds.clear()
