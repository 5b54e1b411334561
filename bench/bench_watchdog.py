#!/usr/bin/env python3
"""The watchdog's overhead: turboloop with the watchdog off and on, side by side in one run.

Runs bench_loop.py's call_soon and gather workers and bench_echo.py's protocol-style echo
server (1 KiB, 10 connections, the native client) on turboloop, each measurement in a fresh
process, alternating off and on (on = ``TURBOLOOP_WATCHDOG=0.1`` in the process's environment),
and prints the medians and the on/off ratio.  Loop metrics are always on, so they are in both.

With ``--instructions`` it instead counts the instructions each operation costs under valgrind's
callgrind (call_soon, and a 1 KiB TCP ping-pong between a protocol server and a streams client in
one process): a count does not depend on what else the machine runs, so it shows an overhead of
a percent or two that timings on a shared machine cannot.

Usage::

    python bench/bench_watchdog.py                  # about 2 minutes
    python bench/bench_watchdog.py --quick          # smoke run
    python bench/bench_watchdog.py --instructions   # about 3 minutes (needs valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional

import bench_echo
from _report import fmt_rate

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLD = "0.1"
MODES = ("off", "on")


# Under callgrind everything runs some 50 times slower: the threshold is scaled alike, so that the
# watchdog wakes as often per operation as it does at THRESHOLD at full speed.
CALLGRIND_THRESHOLD = "5"


def environment(mode: str, threshold: str = THRESHOLD) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TURBOLOOP_WATCHDOG"}
    if mode == "on":
        env["TURBOLOOP_WATCHDOG"] = threshold
    return env


def loop_workload(workload: str, n: int, mode: str) -> Optional[float]:
    """ops/s of one bench_loop worker run, or None when it failed."""
    cmd = [sys.executable, os.path.join(HERE, "bench_loop.py"), "--worker", "turboloop", workload, "--n", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=environment(mode))
    if done.returncode != 0:
        print(f"  {workload} ({mode}) failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ops_per_s"])


def echo(client: str, duration: float, warmup: float, mode: str) -> Optional[Dict[str, Any]]:
    """One protocol-style echo measurement (1 KiB, 10 connections), or None when it failed."""
    server_cmd = [sys.executable, os.path.join(HERE, "bench_echo.py"), "--server", "turboloop", "protocol"]
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment(mode))  # the server process inherits it
    try:
        result = bench_echo.measure(server_cmd, client, 1024, 10, duration, warmup)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if "error" in result:
        print(f"  echo ({mode}) failed: {result['error']}", file=sys.stderr)
        return None
    result["cpu_us_per_req"] = result["server_cpu_s"] / result["requests"] * 1e6
    return result


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def ping_pong(rounds: int) -> None:
    """`rounds` 1 KiB round trips between a protocol echo server and a streams client."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    payload = b"x" * 1024
    for _ in range(rounds):
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


def count_worker(workload: str, n: int) -> None:
    """Runs `n` operations of `workload` on turboloop (under callgrind, from the parent)."""
    import turboloop

    if workload == "echo":
        turboloop.run(ping_pong(n))
        return
    import bench_loop

    loop = turboloop.new_event_loop()
    try:
        loop.run_until_complete(bench_loop.wl_call_soon(loop, n))
    finally:
        loop.close()


def instructions(workload: str, n: int, mode: str) -> int:
    """Instructions the whole process executed (callgrind's count) for `n` operations."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           os.path.abspath(__file__), "--count-worker", workload, str(n)]
    # A fixed hash seed: with a random one, dict and set layouts change the count from run to run.
    env = {**environment(mode, CALLGRIND_THRESHOLD), "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed: {done.stderr.strip()[-500:]}")
    return int(found.group(1))


def count_instructions() -> int:
    sizes = {"call_soon": 100_000, "echo": 2_000}
    print(f"\nturboloop, watchdog off vs on (threshold {CALLGRIND_THRESHOLD} s under callgrind): instructions per operation")
    print(f"{'measure':<24} {'off':>10} {'on':>10} {'on/off':>8}")
    for workload, n in sizes.items():
        per_op = {}
        for mode in MODES:
            # Two sizes, so that start-up and imports cancel out.
            per_op[mode] = (instructions(workload, 2 * n, mode) - instructions(workload, n, mode)) / n
        print(row(f"{workload} instr/op", per_op["off"], per_op["on"], lambda v: f"{v:.0f}", False))
    return 0


def median(values: List[Optional[float]]) -> Optional[float]:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def row(name: str, off: Optional[float], on: Optional[float], fmt: Any, higher_is_better: bool) -> str:
    if off is None or on is None:
        return f"{name:<24} {'ERR':>10} {'ERR':>10} {'n/a':>8}"
    ratio = on / off
    overhead = (1 - ratio) if higher_is_better else (ratio - 1)
    return f"{name:<24} {fmt(off):>10} {fmt(on):>10} {ratio:>7.3f}x  overhead {overhead * 100:+.1f}%"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="runs per mode (default 7, 1 with --quick)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind instead")
    parser.add_argument("--count-worker", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_worker:
        count_worker(args.count_worker[0], int(args.count_worker[1]))
        return 0
    if args.instructions:
        return count_instructions()
    repeats = args.repeats or (1 if args.quick else 7)
    sizes = {"call_soon": 20_000, "gather": 5_000} if args.quick else {"call_soon": 1_000_000, "gather": 200_000}
    duration, warmup = (1.0, 0.3) if args.quick else (4.0, 1.0)
    client = bench_echo.build_client()

    samples: Dict[str, Dict[str, List[Optional[float]]]] = {
        name: {mode: [] for mode in MODES} for name in (*sizes, "echo rps", "echo cpu")
    }
    for round_number in range(repeats):
        # Alternate which mode goes first, so that drift of the machine hits both alike.
        modes = MODES if round_number % 2 == 0 else tuple(reversed(MODES))
        for mode in modes:
            for workload, n in sizes.items():
                samples[workload][mode].append(loop_workload(workload, n, mode))
            result = echo(client, duration, warmup, mode)
            samples["echo rps"][mode].append(None if result is None else result["rps"])
            samples["echo cpu"][mode].append(None if result is None else result["cpu_us_per_req"])
        print(f"  round {round_number + 1}/{repeats} done", file=sys.stderr)

    print(f"\nturboloop, watchdog off vs on (threshold {THRESHOLD} s); median of {repeats}")
    print(f"{'measure':<24} {'off':>10} {'on':>10} {'on/off':>8}")
    failed = False
    for workload in sizes:
        off, on = median(samples[workload]["off"]), median(samples[workload]["on"])
        failed |= off is None or on is None
        print(row(f"{workload} ops/s", off, on, fmt_rate, True))
    for name, fmt, higher in (("echo rps", fmt_rate, True), ("echo cpu", lambda v: f"{v:.2f} us", False)):
        off, on = median(samples[name]["off"]), median(samples[name]["on"])
        failed |= off is None or on is None
        label = "echo 1KiB x10 req/s" if name == "echo rps" else "echo server CPU/req"
        print(row(label, off, on, fmt, higher))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
