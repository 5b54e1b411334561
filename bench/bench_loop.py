#!/usr/bin/env python3
"""Side-by-side micro-benchmark: stock asyncio vs uvloop vs turboloop.

Every (loop, workload) measurement runs in a fresh subprocess::

    python bench/bench_loop.py --worker LOOP WORKLOAD [--n N]

so that loops never share interpreter state.  The parent process probes
which loops are importable, runs each measurement ``--repeats`` times
(default 5, interleaving workloads and loops and rotating the loop order
every round to spread machine drift evenly), and reports the MEDIAN ops/s
per (loop, workload) plus the ratios turboloop/asyncio and
turboloop/uvloop.

Loops that cannot be imported are reported as ``n/a`` and skipped.  A
worker that crashes, times out or fails its self-check is reported as
``ERR`` and makes the run exit with status 1; otherwise the exit status
is 0.

Usage::

    python bench/bench_loop.py                 # full run (a few minutes)
    python bench/bench_loop.py --quick         # smoke run (a few seconds)
    python bench/bench_loop.py --only gather --only future --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Coroutine, Dict, List, Optional

from _report import fmt_rate, loop_version, make_loop, nproc, print_run_header, ratio

LOOPS: List[str] = ["asyncio", "uvloop", "turboloop"]

# Operation counts per workload: full run and --quick smoke run.
SIZES: Dict[str, int] = {
    "call_soon": 1_000_000,
    "call_later": 200_000,
    "call_later_cancel": 200_000,
    "gather": 200_000,
    "future": 200_000,
    "threadsafe": 200_000,
    "udp_echo": 100_000,
    "sock_recv_into": 50_000,
    "spawn_wait": 1_000,
}
QUICK_SIZES: Dict[str, int] = {
    "call_soon": 20_000,
    "call_later": 5_000,
    "call_later_cancel": 5_000,
    "gather": 5_000,
    "future": 5_000,
    "threadsafe": 5_000,
    "udp_echo": 2_000,
    "sock_recv_into": 2_000,
    "spawn_wait": 40,
}

CALL_SOON_BATCH = 1_000      # callbacks scheduled per driver step
TIMER_SPREAD = 0.001         # call_later delays drawn from [0, 1 ms)
CANCEL_FRACTION = 0.9        # share of timers cancelled in call_later_cancel
UDP_IN_FLIGHT = 8            # datagrams the udp_echo client keeps in flight
UDP_PAYLOAD = b"x" * 64
SOCK_MESSAGE = bytes(range(256)) * 4  # 1 KiB per sock_recv_into round trip
WORKER_TIMEOUT = 300.0       # seconds before a worker is declared hung


# --------------------------------------------------------------------------
# Loop factories (used inside workers only)
# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# Workloads.  Each is ``async def wl(loop, n) -> int`` returning ops done and
# raising AssertionError if the loop misbehaved.
# --------------------------------------------------------------------------

async def wl_call_soon(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """Run ``n`` trivial callbacks scheduled in batches via call_soon."""
    done = loop.create_future()
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    remaining = n

    def driver() -> None:
        nonlocal remaining
        batch = min(CALL_SOON_BATCH, remaining)
        remaining -= batch
        call_soon = loop.call_soon
        for _ in range(batch):
            call_soon(cb)
        if remaining:
            call_soon(driver)

    loop.call_soon(driver)
    await done
    assert count == n, (count, n)
    return n


def _timer_delays(n: int) -> List[float]:
    """Deterministic pseudo-random delays in [0, TIMER_SPREAD)."""
    rng = random.Random(12345)
    return [rng.random() * TIMER_SPREAD for _ in range(n)]


async def wl_call_later(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """Schedule ``n`` timers (0-1 ms) and wait until all have fired."""
    delays = _timer_delays(n)
    done = loop.create_future()
    fired = 0

    def cb() -> None:
        nonlocal fired
        fired += 1
        if fired == n:
            done.set_result(None)

    call_later = loop.call_later
    for d in delays:
        call_later(d, cb)
    await done
    assert fired == n, (fired, n)
    return n


async def wl_call_later_cancel(loop: asyncio.AbstractEventLoop,
                               n: int) -> int:
    """Schedule ``n`` timers, cancel 90% of them, wait for the rest.

    ops = timers scheduled (each is either cancelled or fired).
    """
    delays = _timer_delays(n)
    done = loop.create_future()
    keep_every = round(1 / (1 - CANCEL_FRACTION))
    expected = len(range(0, n, keep_every))
    fired = 0
    cancelled_fired = 0

    def cb() -> None:
        nonlocal fired
        fired += 1
        if fired == expected:
            done.set_result(None)

    def bad_cb() -> None:
        nonlocal cancelled_fired
        cancelled_fired += 1

    call_later = loop.call_later
    handles = []
    for i, d in enumerate(delays):
        handles.append(call_later(d, cb if i % keep_every == 0 else bad_cb))
    for i, h in enumerate(handles):
        if i % keep_every:
            h.cancel()
    del handles
    await done
    # Give cancelled timers (all due within 1 ms) a chance to misfire.
    await asyncio.sleep(TIMER_SPREAD * 2)
    assert fired == expected, (fired, expected)
    assert cancelled_fired == 0, f"{cancelled_fired} cancelled timers fired"
    return n


async def _sleep0_coro() -> int:
    await asyncio.sleep(0)
    return 1


async def wl_gather(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """gather() ``n`` tasks that each ``await asyncio.sleep(0)`` once."""
    results = await asyncio.gather(*(_sleep0_coro() for _ in range(n)))
    assert len(results) == n and sum(results) == n
    return n


async def wl_future(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """create_future / call_soon(set_result) / await, ``n`` times."""
    total = 0
    create_future = loop.create_future
    call_soon = loop.call_soon
    for i in range(n):
        fut = create_future()
        call_soon(fut.set_result, i)
        total += await fut
    assert total == n * (n - 1) // 2
    return n


async def wl_threadsafe(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """A producer thread issues ``n`` call_soon_threadsafe(cb) calls."""
    done = loop.create_future()
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    def producer() -> None:
        cst = loop.call_soon_threadsafe
        for _ in range(n):
            cst(cb)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    await done
    thread.join()
    assert count == n, (count, n)
    return n


async def wl_udp_echo(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """n datagrams echoed over loopback by a server endpoint on the same loop."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    done = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        sent = received = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def send(self) -> None:
            self.sent += 1
            self.transport.sendto(UDP_PAYLOAD)  # type: ignore[attr-defined]

        def datagram_received(self, data: bytes, addr: Any) -> None:
            assert data == UDP_PAYLOAD, data[:16]
            self.received += 1
            if self.received == n:
                done.set_result(None)
            elif self.sent < n:
                self.send()

        def error_received(self, exc: Exception) -> None:
            if not done.done():
                done.set_exception(exc)

    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client_transport, client = await loop.create_datagram_endpoint(
        Client, remote_addr=server.get_extra_info("sockname"))
    try:
        for _ in range(min(UDP_IN_FLIGHT, n)):
            client.send()
        # Loopback does not drop 8 small datagrams; a lost one would stall here, not pass.
        await asyncio.wait_for(done, 60)
    finally:
        client_transport.close()
        server.close()
    return client.received


async def wl_sock_recv_into(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """n 1 KiB round trips over a socket pair: sock_sendall, then sock_recv_into a reused buffer,
    echoed by a task doing the same."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def echo() -> None:
        buffer = bytearray(65536)
        while True:
            count = await loop.sock_recv_into(b, buffer)
            if not count:
                return
            await loop.sock_sendall(b, buffer[:count])

    echoing = loop.create_task(echo())
    buffer = bytearray(65536)
    received = bytearray()
    try:
        for _ in range(n):
            await loop.sock_sendall(a, SOCK_MESSAGE)
            del received[:]
            while len(received) < len(SOCK_MESSAGE):
                count = await loop.sock_recv_into(a, buffer)
                assert count, "the echo closed early"
                received += buffer[:count]
            assert received == SOCK_MESSAGE, bytes(received[:16])
    finally:
        a.close()
        await echoing
        b.close()
    return n


async def wl_spawn_wait(loop: asyncio.AbstractEventLoop, n: int) -> int:
    """create_subprocess_exec('true') and wait for it, n times in a row."""
    true = shutil.which("true") or "/bin/true"
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec(true)
        status = await proc.wait()
        assert status == 0, status
    return n


WORKLOADS: Dict[str, Callable[[asyncio.AbstractEventLoop, int],
                              Coroutine[Any, Any, int]]] = {
    "call_soon": wl_call_soon,
    "call_later": wl_call_later,
    "call_later_cancel": wl_call_later_cancel,
    "gather": wl_gather,
    "future": wl_future,
    "threadsafe": wl_threadsafe,
    "udp_echo": wl_udp_echo,
    "sock_recv_into": wl_sock_recv_into,
    "spawn_wait": wl_spawn_wait,
}


def run_once(loop_name: str, workload: str, n: int) -> float:
    """Run one workload on a fresh loop; return elapsed wall seconds."""
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        t0 = time.perf_counter()
        ops = loop.run_until_complete(WORKLOADS[workload](loop, n))
        elapsed = time.perf_counter() - t0
        assert ops == n
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return elapsed


def worker_main(loop_name: str, workload: str, n: int) -> None:
    """Entry point of a ``--worker`` subprocess: print one JSON result line."""
    run_once(loop_name, workload, max(1, n // 20))  # warm-up, untimed
    elapsed = run_once(loop_name, workload, n)
    print(json.dumps({"loop": loop_name, "workload": workload, "n": n,
                      "seconds": elapsed, "ops_per_s": n / elapsed}))


def probe_main(loop_name: str) -> None:
    """Entry point of a ``--probe`` subprocess: report availability."""
    try:
        loop = make_loop(loop_name)
        loop.close()
        info = {"ok": True, "version": loop_version(loop_name)}
    except Exception as exc:  # noqa: BLE001 - report any import failure
        info = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(info))


# --------------------------------------------------------------------------
# Parent / harness
# --------------------------------------------------------------------------

def _subprocess(args: List[str], timeout: float) -> Dict[str, Any]:
    """Run this script with ``args``; parse the last stdout line as JSON."""
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f}s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"bad output: {lines[-1][:200]}"}


def probe(loop_name: str) -> Dict[str, Any]:
    """Check in a subprocess whether ``loop_name`` is usable."""
    info = _subprocess(["--probe", loop_name], timeout=60)
    if "error" in info:  # the probe itself crashed (e.g. segfault on import)
        return {"ok": False, "error": info["error"]}
    return info


def print_table(workloads: List[str], results: Dict[str, Dict[str, Any]],
                loops_info: Dict[str, Dict[str, Any]]) -> None:
    """Print the results table (median ops/s and ratios)."""
    def cell(loop: str, wl: str) -> str:
        if not loops_info[loop]["ok"]:
            return "n/a"
        res = results[wl][loop]
        return "ERR" if res.get("errors") else fmt_rate(res.get("median"))

    def med(loop: str, wl: str) -> Optional[float]:
        res = results[wl].get(loop, {})
        return None if res.get("errors") else res.get("median")

    header = ["workload", "asyncio ops/s", "uvloop ops/s",
              "turboloop ops/s", "tl/asyncio", "tl/uvloop", "uv/asyncio"]
    rows = [header]
    for wl in workloads:
        rows.append([
            wl,
            cell("asyncio", wl), cell("uvloop", wl), cell("turboloop", wl),
            ratio(med("turboloop", wl), med("asyncio", wl)),
            ratio(med("turboloop", wl), med("uvloop", wl)),
            ratio(med("uvloop", wl), med("asyncio", wl)),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for idx, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if idx == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small N, 1 repeat: smoke run of a few seconds")
    parser.add_argument("--only", action="append", choices=list(WORKLOADS),
                        metavar="WORKLOAD",
                        help="run only this workload (repeatable); one of "
                             + ", ".join(WORKLOADS))
    parser.add_argument("--loops", default=",".join(LOOPS),
                        help="comma-separated loops to try "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per measurement, median reported "
                             "(default 5, or 1 with --quick)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every N by this factor")
    parser.add_argument("--json", metavar="FILE",
                        help="also write all results/samples to FILE")
    parser.add_argument("--worker", nargs=2, metavar=("LOOP", "WORKLOAD"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="LOOP", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe:
        probe_main(args.probe)
        return 0
    if args.worker:
        loop_name, workload = args.worker
        worker_main(loop_name, workload, args.n or SIZES[workload])
        return 0

    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    for name in loops:
        if name not in LOOPS:
            parser.error(f"unknown loop {name!r}; choose from {LOOPS}")
    workloads = args.only or list(WORKLOADS)
    workloads = [wl for wl in WORKLOADS if wl in workloads]  # dedupe, order
    repeats = args.repeats or (1 if args.quick else 5)
    sizes = QUICK_SIZES if args.quick else SIZES
    sizes = {wl: max(1, int(n * args.scale)) for wl, n in sizes.items()}

    loops_info = {name: {"ok": False, "error": "not selected"}
                  for name in LOOPS}
    for name in loops:
        loops_info[name] = probe(name)

    started = print_run_header()
    if os.environ.get("PYTHONASYNCIODEBUG"):
        print("WARNING: PYTHONASYNCIODEBUG is set; numbers are not "
              "representative")
    for name in LOOPS:
        info = loops_info[name]
        status = info["version"] if info["ok"] else f"n/a ({info['error']})"
        print(f"{name + ':':10} {status}")
    print(f"stat:    median of {repeats} run(s), each in a fresh subprocess "
          f"(untimed warm-up at N/20 first); loops interleaved")
    print("sizes:   " + ", ".join(f"{wl}={sizes[wl]:,}" for wl in workloads))
    print(flush=True)

    available = [name for name in loops if loops_info[name]["ok"]]
    samples: Dict[str, Dict[str, List[float]]] = {
        wl: {name: [] for name in available} for wl in workloads}
    errors: Dict[str, Dict[str, List[str]]] = {
        wl: {name: [] for name in available} for wl in workloads}
    t_start = time.perf_counter()
    for rep in range(repeats):
        # Rotate loop order each round so no loop always runs first/last.
        order = available[rep % len(available):] + \
            available[:rep % len(available)] if available else []
        for wl in workloads:
            for name in order:
                if errors[wl][name]:
                    continue  # don't keep re-running a broken combination
                res = _subprocess(
                    ["--worker", name, wl, "--n", str(sizes[wl])],
                    timeout=WORKER_TIMEOUT)
                if "error" in res:
                    errors[wl][name].append(res["error"])
                    print(f"  [{rep + 1}/{repeats}] {wl:18} {name:9} "
                          f"ERROR {res['error']}", flush=True)
                else:
                    samples[wl][name].append(res["ops_per_s"])
                    print(f"  [{rep + 1}/{repeats}] {wl:18} {name:9} "
                          f"{fmt_rate(res['ops_per_s']):>8} ops/s "
                          f"({res['seconds']:.3f}s)", flush=True)
    elapsed = time.perf_counter() - t_start

    results: Dict[str, Dict[str, Any]] = {}
    for wl in workloads:
        results[wl] = {}
        for name in available:
            s = samples[wl][name]
            results[wl][name] = {
                "n": sizes[wl],
                "samples": s,
                "median": statistics.median(s) if s else None,
                "best": max(s) if s else None,
                "errors": errors[wl][name],
            }

    print()
    print_table(workloads, results, loops_info)
    print(f"\n(ops/s = median of {repeats}; total bench time "
          f"{elapsed:.1f}s)")

    failed = [(wl, name) for wl in workloads for name in available
              if errors[wl][name]]
    if failed:
        print("\nFAILURES:")
        for wl, name in failed:
            print(f"  {wl} on {name}: {errors[wl][name][0]}")

    if args.json:
        payload = {
            "date": started.isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "nproc": nproc(),
            "loadavg_at_start": os.getloadavg(),
            "statistic": f"median of {repeats}",
            "quick": args.quick,
            "loops": loops_info,
            "sizes": {wl: sizes[wl] for wl in workloads},
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
