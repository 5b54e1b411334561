"""No leaks in I/O: memory and descriptors stay flat over many transport, connection, server,
sock_*, subprocess and datagram operations on turboloop.

Each kind runs through soak.py (beside this file) in a fresh interpreter, at a CI-sized count: a
warm-up, then the measured operations; soak.py compares, after the warm-up and at the end, the
resident set, the bytes malloc holds, Python's allocated blocks, the objects the garbage collector
tracks and the open descriptors, and exits 1 when one grew past its bound (see its docstring).
One object leaked per operation, or 100 native bytes per operation, breaks the bounds at these
counts: ``test_the_check_catches_a_leak_of_100_bytes_per_operation`` proves it on the smallest.

The full runs (1,000,000 operations of each kind) are by hand: ``python tests_py/soak.py --kind
tcp_proto --ops 1000000``; docs/reliability.md has their numbers. stock asyncio and uvloop run
there too (``--loop``); here only turboloop, to stay in the CI budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")

SOAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.py")

# kind: (measured operations, warm-up operations). Smallest N here: 2,000, where one leaked
# object per operation is 2,000 blocks against a bound of 1,020 and 100 native bytes per operation
# 200,000 bytes of malloc against 73,536.
COUNTS = {
    "tcp_proto": (30_000, 3_000),
    "tcp_stream": (20_000, 2_000),
    "tcp_bulk": (2_000, 300),
    "unix_proto": (30_000, 3_000),
    "unix_stream": (20_000, 2_000),
    "sock": (10_000, 1_000),
    "sock_ready": (30_000, 3_000),
    "sock_recv_cancelled": (10_000, 1_000),
    "udp": (30_000, 3_000),
    "server_cycle": (10_000, 1_000),
    "tcp_connect": (5_000, 1_000),
    "tcp_reset": (5_000, 1_000),
    "subprocess": (2_000, 200),
    "subprocess_pipes": (2_000, 200),
}


def soak(kind: str, ops: int, warmup: int, *extra: str) -> tuple[int, dict, str]:
    command = [sys.executable, SOAK, "--kind", kind, "--ops", str(ops), "--warmup", str(warmup)]
    command += ["--checkpoints", "4", "--loop", "turboloop", "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    # A crash or a failed import leaves no JSON line: that is a failure too, never a skip.
    assert lines, f"soak.py printed nothing (status {done.returncode}):\n{done.stderr}"
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"soak.py's last line is not JSON (status {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, result, done.stderr


def describe(result: dict) -> str:
    growth = ", ".join(f"{m} {g:+,}" for m, g in result["growth"].items())
    return f"{result['kind']}: {result['ops']:,} ops after {result['warmup']:,}; growth {growth}; notes {result['notes']}"


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_memory_and_descriptors_stay_flat(kind):
    ops, warmup = COUNTS[kind]
    status, result, stderr = soak(kind, ops, warmup)
    assert result["failures"] == [], describe(result)
    assert status == 0, stderr
    # Nothing the loop made is left open once it is closed, either.
    assert result["fds_after_close"] <= result["fds_start"], describe(result)
    assert not stderr.strip(), stderr


@pytest.mark.parametrize("how", ["python", "native"])
def test_the_check_catches_a_leak_of_100_bytes_per_operation(how):
    # The smallest count of the table above, on the cheapest kind: a bytes object of 100 bytes
    # kept per operation must break the blocks bound; 100 bytes malloc'd and never freed (what a
    # native leak looks like: invisible to the Python heap) the malloc bound.
    status, result, _ = soak("udp", 2_000, 300, "--self-test-leak", "100", "--self-test-leak-how", how)
    assert status == 1, describe(result)
    broken = {failure.split()[0] for failure in result["failures"]}
    assert ("blocks" if how == "python" else "malloc") in broken, result["failures"]
