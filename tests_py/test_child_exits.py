"""Subprocess exits as asyncio reports them. turboloop's loop watches each child's pidfd itself
while the policy has no child watcher (python/turboloop/_child_exits.py); a watcher the program
gets or sets is used as on asyncio. Each test starts from a fresh default policy, so that no
watcher is left over from another test. From 3.14, asyncio has no child watchers: each loop waits
for its own children (turboloop's through the same pidfds)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
import warnings

import pytest

import turboloop

# Child watchers and the policy's get_child_watcher() exist up to 3.13.
HAS_CHILD_WATCHERS = hasattr(asyncio, "set_child_watcher")
needs_child_watchers = pytest.mark.skipif(not HAS_CHILD_WATCHERS, reason="asyncio has no child watchers from 3.14 on")


@pytest.fixture(autouse=True)
def fresh_policy():
    if not HAS_CHILD_WATCHERS:
        yield  # no watcher can be left over
        return
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    yield
    asyncio.set_event_loop_policy(previous)


def run(loop_factory, coro):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def gone(pid: int) -> bool:
    """The process is reaped: no zombie is left of it."""
    return not os.path.exists(f"/proc/{pid}")


def test_exit_statuses(loop_factory):
    async def main():
        codes = []
        for script in ("pass", "raise SystemExit(3)", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
            codes.append(await proc.wait())
        proc = await asyncio.create_subprocess_shell("exit 7")
        codes.append(await proc.wait())
        return codes

    assert run(loop_factory, main()) == [0, 3, -signal.SIGKILL, 7]


def test_many_children_at_once(loop_factory):
    async def main():
        procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({i % 7})") for i in range(50)]
        codes = await asyncio.gather(*(proc.wait() for proc in procs))
        return [proc.pid for proc in procs], codes

    pids, codes = run(loop_factory, main())
    assert codes == [i % 7 for i in range(50)]
    assert all(gone(pid) for pid in pids)


def test_turboloop_watches_children_without_a_watcher_or_threads():
    async def main():
        loop = asyncio.get_running_loop()
        threads = threading.active_count()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(0.2)")
        assert list(loop._child_exits._pidfds) == [proc.pid]
        assert threading.active_count() == threads
        assert await proc.wait() == 0
        assert loop._child_exits._pidfds == {}

    run(turboloop.new_event_loop, main())
    if HAS_CHILD_WATCHERS:
        assert asyncio.get_event_loop_policy()._watcher is None


@needs_child_watchers
def test_a_watcher_the_program_sets_is_used(loop_factory, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop watches its children through libuv, whatever the policy's watcher")

    async def main():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        return await proc.wait()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # child watchers are deprecated from 3.12

        class Counting(asyncio.ThreadedChildWatcher):
            added = 0

            def add_child_handler(self, pid, callback, *args):
                Counting.added += 1
                super().add_child_handler(pid, callback, *args)

        asyncio.set_child_watcher(Counting())
    assert run(loop_factory, main()) == 0
    assert Counting.added == 1


def test_a_child_left_running_when_the_loop_closes_is_reaped():
    loop = turboloop.new_event_loop()
    proc = loop.run_until_complete(asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(0.3)"))
    pid = proc.pid
    # The transport is left open on purpose: it says so when it goes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop.close()
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        del proc
        gc.collect()
    assert gone(pid)
