"""What the benchmarks share: making each kind of loop, its version, rates, ratios, the CPU count,
the header of a run."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import sys
from typing import Optional


def nproc() -> int:
    """CPUs usable by this process (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def fmt_rate(value: Optional[float]) -> str:
    """Human-readable ops/s."""
    if value is None:
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def ratio(num: Optional[float], den: Optional[float]) -> str:
    """Format num/den as ``1.23x``, or ``n/a`` when either is missing."""
    if not num or not den:
        return "n/a"
    return f"{num / den:.2f}x"


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    """Create a new, not-yet-running event loop of the given kind."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "turboloop":
        import turboloop
        return turboloop.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


def loop_version(name: str) -> str:
    """Return the version string of the library implementing loop ``name``."""
    if name == "asyncio":
        return f"stdlib (Python {platform.python_version()})"
    module = __import__(name)
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version(name)
        except Exception:  # noqa: BLE001 - best effort only
            version = "unknown"
    return str(version)


def print_run_header() -> datetime.datetime:
    """Prints the run's date, Python and machine (with its load); returns the start time."""
    started = datetime.datetime.now().astimezone()
    print(f"date:    {started.isoformat(timespec='seconds')}")
    print(f"python:  {platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    print(f"machine: {platform.platform()}, nproc={nproc()}, "
          f"loadavg={'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    return started
