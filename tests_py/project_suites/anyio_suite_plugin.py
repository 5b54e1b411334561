"""pytest plugin loaded (``-p anyio_suite_plugin``) into anyio's own test suite by run_anyio_suite.py.

Keeps the tests that run on anyio's plain asyncio backend (``("asyncio", {"debug": True})``, no
``loop_factory``) and the tests that use no backend at all, dropping the uvloop, eager-task and
trio variants (also where a second parameter names them, as a blocking portal's backend), so that
both runs have the same test ids and need no trio.  With ``ANYIO_SUITE_LOOP=turboloop`` it
installs turboloop's policy before anyio's conftest is imported: the suite is then unchanged, and
every loop it makes through the policy (``asyncio.Runner``, ``asyncio.new_event_loop()``) is a
turboloop loop.  The loops made are counted by class and shown at the end, as proof.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket

import pytest

MODE = os.environ.get("ANYIO_SUITE_LOOP", "asyncio")
LOOPS_MADE: collections.Counter[str] = collections.Counter()


def _counting(policy_class):
    class Counting(policy_class):
        def new_event_loop(self):
            loop = super().new_event_loop()
            LOOPS_MADE[f"{type(loop).__module__}.{type(loop).__qualname__}"] += 1
            return loop

    return Counting


if MODE == "turboloop":
    import turboloop

    asyncio.set_event_loop_policy(_counting(turboloop.EventLoopPolicy)())
elif MODE == "asyncio":
    asyncio.set_event_loop_policy(_counting(asyncio.DefaultEventLoopPolicy)())
else:
    raise RuntimeError(f"ANYIO_SUITE_LOOP must be asyncio or turboloop, not {MODE!r}")


def _plain_asyncio(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return True
    backend = callspec.params.get("anyio_backend", ("asyncio", {}))
    if not (isinstance(backend, tuple) and backend[0] == "asyncio" and "loop_factory" not in backend[1]):
        return False
    # Other parameters name a second backend too (a blocking portal's, say): "trio", "asyncio+uvloop".
    return not any(part == "trio" or part.startswith("asyncio+") for part in callspec.id.split("-"))


def _localhost_has_ipv6() -> bool:
    try:
        return bool(socket.getaddrinfo("localhost", 0, socket.AF_INET6))
    except socket.gaierror:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if _plain_asyncio(item)]
    config.hook.pytest_deselected(items=[item for item in items if not _plain_asyncio(item)])
    items[:] = kept
    # The suite's IPv6 cases bind to "localhost"; where it has no IPv6 address they fail in set-up
    # and leak the unbound socket, whose ResourceWarning then fails whichever test is running
    # when the garbage collector finds it.
    if not _localhost_has_ipv6():
        skip = pytest.mark.skip(reason="localhost has no IPv6 address on this machine")
        for item in kept:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and callspec.params.get("family") == socket.AF_INET6:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:
    made = ", ".join(f"{name}: {count}" for name, count in sorted(LOOPS_MADE.items())) or "none"
    terminalreporter.write_line(f"anyio suite on {MODE}: loops made through the policy -- {made}")
