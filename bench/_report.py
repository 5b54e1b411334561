"""Formatting shared by the benchmarks: rates, ratios, and the machine's CPU count."""

from __future__ import annotations

import os
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
