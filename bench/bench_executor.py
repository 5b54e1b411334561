#!/usr/bin/env python3
"""Side-by-side executor benchmark: stdlib ThreadPoolExecutor vs turboloop's, and
run_in_executor(None, ...) on stock asyncio vs uvloop vs turboloop.

Every (implementation, workload) measurement runs in a fresh subprocess::

    python bench/bench_executor.py --worker IMPL WORKLOAD --n N

The parent runs each measurement ``--repeats`` times (default 5), interleaving workloads and
implementations and rotating their order every round, and prints the MEDIAN ops/s with the ratios
against turboloop.  An implementation that cannot be imported shows ``n/a``; a worker that crashes,
hangs or fails its self-check shows ``ERR`` and makes the exit status 1.

Usage::

    python bench/bench_executor.py              # full run (a few minutes)
    python bench/bench_executor.py --quick      # smoke run (a few seconds)
    python bench/bench_executor.py --only cf_submit_all --repeats 9 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from _report import fmt_rate, nproc, ratio

MAX_WORKERS = 4          # concurrent.futures workloads: ThreadPoolExecutor(max_workers=4)
GATHER_WIDTH = 1_000     # rie_gather: run_in_executor calls in flight per gather
WORKER_TIMEOUT = 300.0   # seconds before a worker is declared hung

# workload -> (kind, full N, quick N, description)
WORKLOADS: Dict[str, tuple] = {
    "cf_submit_all": ("pool", 200_000, 5_000,
                      "submit N trivial calls, then wait for all; ops = calls"),
    "cf_submit_all_10us": ("pool", 100_000, 3_000,
                           "as cf_submit_all with ~10 us of work per call"),
    "cf_submit_one": ("pool", 20_000, 1_000,
                      "submit one call, wait for its result, repeat; ops = calls (latency)"),
    "cf_map": ("pool", 200_000, 5_000, "list(executor.map(f, range(N))); ops = calls"),
    "cf_map_10us": ("pool", 100_000, 3_000, "as cf_map with ~10 us of work per call"),
    "cf_as_completed": ("pool", 200_000, 5_000,
                        "submit N trivial calls, then iterate as_completed(); ops = calls"),
    "rie_sequential": ("loop", 20_000, 1_000,
                       "await loop.run_in_executor(None, f) one at a time; ops = calls"),
    "rie_gather": ("loop", 200_000, 5_000,
                   f"gather({GATHER_WIDTH} x run_in_executor(None, f)), repeated; ops = calls"),
}
IMPLS = {
    "pool": ["stdlib", "turboloop"],           # which ThreadPoolExecutor
    "loop": ["asyncio", "uvloop", "turboloop"],  # which loop (each with its default executor)
}


def trivial(x: int) -> int:
    return x + 1


# Loop steps that take about 10 us on this machine's CPython 3.11.
_TEN_US_STEPS = 350


def ten_microseconds(x: int) -> int:
    """About 10 us of pure-Python work (it holds the GIL, as typical small tasks do)."""
    total = x
    for i in range(_TEN_US_STEPS):
        total += i
    return total - _TEN_US_STEPS * (_TEN_US_STEPS - 1) // 2 + 1


# --------------------------------------------------------------------------------------------
# Workloads (inside workers)
# --------------------------------------------------------------------------------------------

def pool_class(impl: str):
    if impl == "stdlib":
        from concurrent.futures.thread import ThreadPoolExecutor
        return ThreadPoolExecutor
    import turboloop
    return turboloop.ThreadPoolExecutor


def make_loop(impl: str) -> asyncio.AbstractEventLoop:
    if impl == "asyncio":
        return asyncio.SelectorEventLoop()
    if impl == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    import turboloop
    return turboloop.new_event_loop()


def wl_cf_submit_all(executor, n: int) -> int:
    from concurrent.futures import wait
    submit = executor.submit
    futures = [submit(trivial, i) for i in range(n)]
    wait(futures)
    for i, future in enumerate(futures):
        if future.result() != i + 1:
            raise AssertionError(f"wrong result for {i}")
    return n


def wl_cf_submit_all_10us(executor, n: int) -> int:
    from concurrent.futures import wait
    submit = executor.submit
    futures = [submit(ten_microseconds, i) for i in range(n)]
    wait(futures)
    if [f.result() for f in futures] != [i + 1 for i in range(n)]:
        raise AssertionError("wrong results")
    return n


def wl_cf_map(executor, n: int) -> int:
    if list(executor.map(trivial, range(n))) != [i + 1 for i in range(n)]:
        raise AssertionError("wrong map results")
    return n


def wl_cf_map_10us(executor, n: int) -> int:
    if list(executor.map(ten_microseconds, range(n))) != [i + 1 for i in range(n)]:
        raise AssertionError("wrong map results")
    return n


def wl_cf_as_completed(executor, n: int) -> int:
    from concurrent.futures import as_completed
    submit = executor.submit
    total = sum(f.result() for f in as_completed([submit(trivial, i) for i in range(n)]))
    if total != n * (n + 1) // 2:
        raise AssertionError("wrong as_completed results")
    return n


def wl_cf_submit_one(executor, n: int) -> int:
    submit = executor.submit
    for i in range(n):
        if submit(trivial, i).result() != i + 1:
            raise AssertionError(f"wrong result for {i}")
    return n


async def wl_rie_sequential(loop: asyncio.AbstractEventLoop, n: int) -> int:
    run = loop.run_in_executor
    for i in range(n):
        if await run(None, trivial, i) != i + 1:
            raise AssertionError(f"wrong result for {i}")
    return n


async def wl_rie_gather(loop: asyncio.AbstractEventLoop, n: int) -> int:
    run = loop.run_in_executor
    done = 0
    while done < n:
        width = min(GATHER_WIDTH, n - done)
        results = await asyncio.gather(*(run(None, trivial, i) for i in range(width)))
        if results != [i + 1 for i in range(width)]:
            raise AssertionError("wrong gather results")
        done += width
    return n


def run_once(impl: str, workload: str, n: int) -> float:
    """Untimed warm-up at n/20, then the timed run; returns ops/s."""
    kind = WORKLOADS[workload][0]
    warm = max(1, n // 20)
    if kind == "pool":
        fn: Callable = globals()[f"wl_{workload}"]
        cls = pool_class(impl)
        executor = cls(max_workers=MAX_WORKERS)
        try:
            fn(executor, warm)
            start = time.perf_counter()
            ops = fn(executor, n)
            elapsed = time.perf_counter() - start
        finally:
            executor.shutdown(wait=True)
        return ops / elapsed
    coro_fn = globals()[f"wl_{workload}"]
    loop = make_loop(impl)
    try:
        loop.run_until_complete(coro_fn(loop, warm))
        start = time.perf_counter()
        ops = loop.run_until_complete(coro_fn(loop, n))
        elapsed = time.perf_counter() - start
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return ops / elapsed


def worker_main(impl: str, workload: str, n: int) -> None:
    print(json.dumps({"ops_per_s": run_once(impl, workload, n)}), flush=True)


def probe_main(impl: str) -> None:
    version = None
    if impl in ("turboloop", "uvloop"):
        module = __import__(impl)
        version = getattr(module, "__version__", "?")
        if impl == "turboloop":
            module.ThreadPoolExecutor  # noqa: B018 -- must exist
    else:
        version = platform.python_version()
    print(json.dumps({"ok": True, "version": version}), flush=True)


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------

def _subprocess(args: List[str], timeout: float) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, 1 repeat: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only these")
    parser.add_argument("--json", help="write every sample here")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="IMPL", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker_main(args.worker[0], args.worker[1], args.n)
        return 0
    if args.probe:
        probe_main(args.probe)
        return 0

    repeats = args.repeats or (1 if args.quick else 5)
    workloads = args.only or list(WORKLOADS)
    sizes = {w: max(1, int((WORKLOADS[w][2] if args.quick else WORKLOADS[w][1]) * args.scale)) for w in workloads}

    all_impls = sorted({i for w in workloads for i in IMPLS[WORKLOADS[w][0]]})
    available: Dict[str, Optional[str]] = {}
    for impl in all_impls:
        info = _subprocess(["--probe", impl], timeout=60)
        available[impl] = info.get("version") if info.get("ok") else None

    print(f"# bench_executor  {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"Python {platform.python_version()}  nproc={nproc()}  repeats={repeats}  "
          f"max_workers={MAX_WORKERS} (cf_*), default executor (rie_*)")
    print("# " + "  ".join(f"{i}={v or 'n/a'}" for i, v in available.items()))
    for w in workloads:
        print(f"#   {w:15} N={sizes[w]:>8,}  {WORKLOADS[w][3]}")
    sys.stdout.flush()

    samples: Dict[str, Dict[str, List[float]]] = {w: {} for w in workloads}
    errors: Dict[str, Dict[str, List[str]]] = {w: {} for w in workloads}
    for round_ in range(repeats):
        for w in workloads:
            impls = [i for i in IMPLS[WORKLOADS[w][0]] if available.get(i)]
            shift = round_ % len(impls) if impls else 0
            for impl in impls[shift:] + impls[:shift]:
                result = _subprocess(["--worker", impl, w, "--n", str(sizes[w])], timeout=WORKER_TIMEOUT)
                if "error" in result:
                    errors[w].setdefault(impl, []).append(result["error"])
                else:
                    samples[w].setdefault(impl, []).append(result["ops_per_s"])
        print(f"# round {round_ + 1}/{repeats} done", file=sys.stderr, flush=True)

    def med(w: str, impl: str) -> Optional[float]:
        if errors[w].get(impl) or not samples[w].get(impl):
            return None
        return statistics.median(samples[w][impl])

    def cell(w: str, impl: str) -> str:
        if impl not in IMPLS[WORKLOADS[w][0]]:
            return ""
        if not available.get(impl):
            return "n/a"
        return "ERR" if errors[w].get(impl) else fmt_rate(med(w, impl))

    print()
    print("median ops/s (higher is better)")
    header = f"{'workload':16} {'stdlib/asyncio':>14} {'uvloop':>9} {'turboloop':>10}   {'tl/stdlib|asyncio':>17} {'tl/uvloop':>10}"
    print(header)
    print("-" * len(header))
    for w in workloads:
        kind = WORKLOADS[w][0]
        base = "stdlib" if kind == "pool" else "asyncio"
        uv = cell(w, "uvloop") if kind == "loop" else ""
        print(f"{w:16} {cell(w, base):>14} {uv:>9} {cell(w, 'turboloop'):>10}   "
              f"{ratio(med(w, 'turboloop'), med(w, base)):>17} "
              f"{ratio(med(w, 'turboloop'), med(w, 'uvloop')) if kind == 'loop' else '':>10}")
    failed = {w: e for w, e in errors.items() if e}
    if failed:
        print("\nFAILURES:")
        for w, per_impl in failed.items():
            for impl, messages in per_impl.items():
                print(f"  {w} / {impl}: {messages[0]}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"sizes": sizes, "repeats": repeats, "versions": available, "samples": samples,
                       "errors": errors, "median": {w: {i: med(w, i) for i in samples[w]} for w in workloads}},
                      out, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
