#!/usr/bin/env python3
"""User-space instructions per request of the echo servers, counted by valgrind's callgrind.

bench_echo.py's requests/s and CPU time per request move by tens of percent from run to run on a
shared VM. An instruction count hardly moves (about 1% between runs here for the protocol and
streams styles), so it shows the cost a server's own code adds per request where the timings
cannot: turboloop against uvloop, stock asyncio and the C++ libuv server, with the same servers
and client as bench_echo.py. It counts user space only: the kernel's share (the socket calls, the
same number per request for every server) is not in it.

The sock style's count moves more, up to 2x between runs: whether a sock_recv finds its data
waiting or has to wait for it, which the timing decides, picks between two paths of different
cost.

Each measurement starts the server under callgrind and runs the native client twice against it,
for ``--window`` seconds and then for three times that, each time after zeroing the counters and
ending with a dump. The difference of the two counts over the difference of their requests is the
cost per request: what each client run costs once (its connections opened and closed) cancels
out. Under callgrind a server runs some 50 times slower, so the client always waits for it and
finds more replies per poll than at full speed: compare servers with each other, not with
bench_echo.py's timings. Copies weigh far more than they cost: glibc copies large blocks with
``rep movsb``, which callgrind counts as one instruction per byte. So 1 KiB messages, the
default, show the servers' own code best; at 10 KiB and more the copies dominate.

Usage::

    python bench/bench_echo_instructions.py                     # 1 KiB, x10
    python bench/bench_echo_instructions.py --styles streams --sizes 1024,10240 --conns 100

Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import bench_echo
from _report import loop_version, print_run_header, ratio

STYLES = bench_echo.STYLES
SIZES = [1024]
CONNS = [10]
WINDOW = 2.0          # seconds of the first window; the second is three times longer
WARMUP = 1.0          # untimed client run before counting (imports, caches, first allocations)
START_TIMEOUT = 120.0  # a Python server under callgrind takes seconds to start
SETTLE = 0.5          # lets the server finish closing the client's connections before a dump


def callgrind_total(path: str) -> int:
    """The instruction total of one callgrind dump."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in {path}")


def run_client(client: str, port: int, size: int, conns: int, seconds: float) -> int:
    """One client run; returns the requests it completed."""
    cmd = [client, "--port", str(port), "--conns", str(conns), "--size", str(size),
           "--duration", str(seconds), "--warmup", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=seconds + bench_echo.CLIENT_GRACE)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"client: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    requests: int = json.loads(proc.stdout.strip().splitlines()[-1])["requests"]
    return requests


def counted_window(pid: int, out_prefix: str, client: str, port: int, size: int, conns: int,
                   seconds: float) -> Tuple[int, int]:
    """Zero the server's counters, run the client, dump: (instructions, requests)."""
    before = set(glob.glob(f"{out_prefix}.*"))
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    requests = run_client(client, port, size, conns, seconds)
    time.sleep(SETTLE)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dumps = sorted(set(glob.glob(f"{out_prefix}.*")) - before)
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    return callgrind_total(dumps[-1]), requests


def measure(server_cmd: List[str], client: str, size: int, conns: int, window: float,
            workdir: str) -> float:
    """Instructions per request of one server in one case."""
    out_prefix = os.path.join(workdir, f"callgrind.{time.monotonic_ns()}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}.%p"] + server_cmd
    with tempfile.TemporaryFile("w+") as err_file:
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True)
        try:
            assert server.stdout is not None  # stdout=PIPE
            ready, _, _ = select.select([server.stdout], [], [], START_TIMEOUT)
            line = server.stdout.readline() if ready else ""
            if not line:
                err_file.seek(0)
                raise RuntimeError(f"server did not start: {err_file.read().strip()[-300:]}")
            port = json.loads(line)["port"]
            run_client(client, port, size, conns, WARMUP)
            short = counted_window(server.pid, out_prefix, client, port, size, conns, window)
            long = counted_window(server.pid, out_prefix, client, port, size, conns, 3 * window)
        finally:
            bench_echo._stop(server)
    if long[1] <= short[1]:
        raise RuntimeError("the longer window completed no more requests")
    return (long[0] - short[0]) / (long[1] - short[1])


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loops", default=",".join(bench_echo.LOOPS + [bench_echo.C_SERVER]),
                        help="comma-separated servers (default: %(default)s)")
    parser.add_argument("--styles", default=",".join(STYLES),
                        help="comma-separated Python server styles (default: %(default)s)")
    parser.add_argument("--sizes", type=bench_echo.int_list, default=SIZES,
                        help="comma-separated message sizes in bytes (default: 1024)")
    parser.add_argument("--conns", type=bench_echo.int_list, default=CONNS,
                        help="comma-separated connection counts (default: 10)")
    parser.add_argument("--window", type=float, default=WINDOW,
                        help="first counted window, s; the second is 3x (default %(default)s)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is needed: apt-get install valgrind", file=sys.stderr)
        return 1
    impls = [x.strip() for x in args.loops.split(",") if x.strip()]
    styles = [x.strip() for x in args.styles.split(",") if x.strip()]
    for name in impls:
        if name not in bench_echo.LOOPS + [bench_echo.C_SERVER]:
            parser.error(f"unknown server {name!r}")
    for style in styles:
        if style not in STYLES:
            parser.error(f"unknown style {style!r}; choose from {STYLES}")

    client = bench_echo.build_client()
    c_server = bench_echo.build_c_server() if bench_echo.C_SERVER in impls else ""
    print_run_header()
    for name in impls:
        version = (f"libuv {bench_echo.libuv_version()}" if name == bench_echo.C_SERVER
                   else loop_version(name))
        print(f"{name + ':':10} {version}")
    print(f"stat:    callgrind instructions per request, over a {args.window:g} s and a "
          f"{3 * args.window:g} s window (their difference)\n", flush=True)

    results: Dict[Tuple[str, str, int, int], float] = {}
    failures: List[str] = []
    cases = [(style, size, conns) for size in args.sizes for conns in args.conns
             for style in styles]
    with tempfile.TemporaryDirectory(prefix="turboloop-callgrind-") as workdir:
        for size in args.sizes:
            for conns in args.conns:
                jobs = [(name, style) for style in styles for name in impls
                        if name != bench_echo.C_SERVER]
                if bench_echo.C_SERVER in impls:
                    jobs.insert(0, (bench_echo.C_SERVER, "-"))
                for name, style in jobs:
                    cmd = ([c_server] if name == bench_echo.C_SERVER else
                           [sys.executable, os.path.abspath(bench_echo.__file__), "--server", name, style])
                    label = f"  {style:8} {bench_echo.fmt_size(size):>7} x{conns:<3} {name:9}"
                    try:
                        per_request = measure(cmd, client, size, conns, args.window, workdir)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        failures.append(f"{label.strip()}: {exc}")
                        print(f"{label} ERROR {exc}", flush=True)
                        continue
                    results[(name, style, size, conns)] = per_request
                    print(f"{label} {per_request:9,.0f} instructions/request", flush=True)

    def cell(name: str, style: str, size: int, conns: int) -> Optional[float]:
        key_style = "-" if name == bench_echo.C_SERVER else style
        return results.get((name, key_style, size, conns))

    header = ["style", "size", "conns"] + impls + ["tl/uvloop", "tl/asyncio", "tl/C"]
    rows = [header]
    for style, size, conns in cases:
        values = {name: cell(name, style, size, conns) for name in impls}
        tl = values.get("turboloop")
        rows.append([style, bench_echo.fmt_size(size), str(conns)]
                    + [f"{v:,.0f}" if v is not None else "n/a" for v in values.values()]
                    + [ratio(tl, values.get("uvloop")), ratio(tl, values.get("asyncio")),
                       ratio(tl, values.get(bench_echo.C_SERVER))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print("\nuser-space instructions per request (lower is better, so are ratios below 1.00x)")
    for index, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    if failures:
        print("\nFAILURES:")
        for failure in failures:
            print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
