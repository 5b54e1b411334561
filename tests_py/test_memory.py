"""No leaks: memory stays flat over many loops, callbacks and timers.

Each test warms up first (allocator pools, interned objects, caches), then measures the resident
set size (``/proc/self/statm``, which sees native allocations too) across the full run, and the
Python heap (``tracemalloc``, which slows everything down several times) across a tenth of it.
The bounds are generous: leaking one small object per operation is 20+ MB of RSS over a million
operations and 2+ MB of traced heap over a hundred thousand.  Stock asyncio runs as the control.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import tracemalloc

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm"),
    pytest.mark.parametrize("loop_name", ["asyncio", "turboloop"]),
]

PAGE = resource.getpagesize()
RSS_BOUND = 20 * 1024 * 1024
TRACED_BOUND = 2 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


MIB = 1024 * 1024


def check_rss(what, run):
    gc.collect()
    before = rss()
    run()
    gc.collect()
    grown = rss() - before
    assert grown < RSS_BOUND, f"{what}: RSS grew by {grown / MIB:.1f} MiB"


def check_traced(what, run):
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < TRACED_BOUND, f"{what}: Python heap grew by {grown / MIB:.2f} MiB"


def noop(*args):
    pass


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_create_and_close_10000_loops(raw_loop_factory):
    factory = raw_loop_factory

    def churn(n):
        for _ in range(n):
            loop = factory()
            loop.call_soon(noop)
            loop.call_later(3600, noop)
            run_once(loop)
            loop.close()

    churn(1000)  # warm-up
    fds_before = len(os.listdir("/proc/self/fd"))
    check_rss("10,000 loops", lambda: churn(10_000))
    assert len(os.listdir("/proc/self/fd")) <= fds_before, "file descriptors leaked"
    check_traced("1,000 loops", lambda: churn(1000))


def test_1m_call_soon(loop_factory):
    loop = loop_factory()
    batch = 10_000

    def churn(n_batches):
        for _ in range(n_batches):
            for i in range(batch):
                loop.call_soon(noop, i)
            run_once(loop)
        # and some cancelled ones
        handles = [loop.call_soon(noop) for _ in range(batch)]
        for h in handles:
            h.cancel()
        del handles
        run_once(loop)

    churn(10)  # warm-up: 100,000
    check_rss("1,000,000 call_soon", lambda: churn(100))
    check_traced("100,000 call_soon", lambda: churn(10))


def test_1m_call_later_with_cancellation(loop_factory):
    loop = loop_factory()
    batch = 10_000

    def churn(n_batches):
        for _ in range(n_batches):
            # half fire at once, half are far in the future and get cancelled
            fired = [loop.call_later(0, noop, i) for i in range(batch // 2)]
            pending = [loop.call_later(3600 + i, noop, i) for i in range(batch // 2)]
            for h in pending:
                h.cancel()
            del fired, pending
            run_once(loop)
            run_once(loop)

    churn(10)  # warm-up: 100,000
    check_rss("1,000,000 call_later", lambda: churn(100))
    check_traced("100,000 call_later", lambda: churn(10))
