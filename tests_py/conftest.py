"""Shared fixtures: every behaviour test runs on each loop implementation.

``loop_name`` is parametrised over ``asyncio`` (the stock loop of the default policy, the
reference), ``turboloop`` and ``uvloop`` (skipped when uvloop is not installed).  turboloop is
imported lazily, inside the fixture, so that a turboloop that is not importable makes the
turboloop cases *error* (never skip) while the reference cases still run.

``loop_factory`` is a zero-argument callable making a new loop of that kind; every loop it makes
is closed at teardown.  ``loop`` is one such loop per test.  ``raw_loop_factory`` is the bare
``new_event_loop`` (no bookkeeping, for tests that make thousands of loops).

A test may carry ``@pytest.mark.uvloop_xfail(reason)``: the uvloop case (and only that one) is
then a non-strict xfail -- used where uvloop is known to differ from asyncio.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import importlib
import os
import signal
import socket

import pytest

# TURBOLOOP_TEST_LOOPS=asyncio,turboloop leaves uvloop out (CI's runs on the newer Pythons, whose
# reference is stock asyncio of that version).
LOOP_NAMES = tuple(os.environ.get("TURBOLOOP_TEST_LOOPS", "asyncio,turboloop,uvloop").split(","))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "uvloop_xfail(reason): uvloop differs from asyncio here; xfail (non-strict) for uvloop only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("uvloop_xfail")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("loop_name") != "uvloop":
            continue
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        item.add_marker(pytest.mark.xfail(strict=False, reason=f"uvloop differs from asyncio: {reason}"))


def _stock_factory():
    # The stock loop, whatever policy a test may have installed.
    return asyncio.SelectorEventLoop()


def get_factory(name: str):
    """The raw ``new_event_loop`` of the named implementation."""
    if name == "asyncio":
        return _stock_factory
    if name == "turboloop":
        # Deliberately not importorskip: a missing turboloop is an error, not a skip.
        return importlib.import_module("turboloop").new_event_loop
    if name == "uvloop":
        return pytest.importorskip("uvloop").new_event_loop
    raise ValueError(name)


@pytest.fixture(params=LOOP_NAMES)
def loop_name(request: pytest.FixtureRequest):
    # Last resort against a loop that never returns: dump every thread's stack and exit, rather
    # than hang the whole run.  (Only for the tests that use these fixtures.)
    faulthandler.dump_traceback_later(120, exit=True)
    yield request.param
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def raw_loop_factory(loop_name: str):
    """The implementation's own ``new_event_loop``; the test closes what it makes."""
    return get_factory(loop_name)


@pytest.fixture
def loop_factory(loop_name: str):
    raw = get_factory(loop_name)
    made: list[asyncio.AbstractEventLoop] = []

    def factory():
        loop = raw()
        made.append(loop)
        return loop

    factory.loop_name = loop_name  # type: ignore[attr-defined]
    yield factory
    for loop in made:
        if not loop.is_closed() and not loop.is_running():
            loop.close()
    del made
    # Collect now, so that garbage a test leaves (un-awaited coroutines, pending tasks) is
    # reported against that test rather than a later one.
    gc.collect()


@pytest.fixture
def loop(loop_factory):
    loop = loop_factory()
    yield loop
    if not loop.is_closed():
        loop.close()


@pytest.fixture
def default_sigint():
    """Make sure SIGINT has Python's default handler for the test, and restore it afterwards."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def socket_pair():
    """A connected pair of non-blocking Unix stream sockets, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
