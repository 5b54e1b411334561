#!/usr/bin/env python3
"""Side-by-side sendfile benchmark: loop.sendfile on asyncio, uvloop, turboloop vs C sendfile(2).

One sender pushes a file (1 GiB by default, made in a temp dir) over loopback TCP to a native
receiver (``sendfile_c.c``, compiled at run time and cached like bench_echo.py's client) that
drains the socket and counts the bytes.  Senders:

* ``asyncio``, ``uvloop``, ``turboloop``: a subprocess running that loop does
  ``create_connection`` then ``await loop.sendfile(transport, f)``;
* ``c``: ``sendfile_c send``, a ``sendfile(2)`` loop on a blocking socket;
* ``c_epoll``: ``sendfile_c send --epoll 1``, ``sendfile(2)`` on a non-blocking socket with
  ``epoll_wait`` for EPOLLOUT after each EAGAIN -- what an event loop does, minus the loop.

Ratios ("vs C") are to the faster of the two C senders' medians.

The rate is measured by the receiver, from its first byte to EOF, in MB/s (10**6 bytes/s).
On loopback the receiver's copy costs as much CPU as the whole send, so in timed runs the
receiver has the kernel discard the bytes (``recv(MSG_TRUNC)``) and only counts them; before
its timed runs, every sender makes one untimed run against a receiver that copies and
checksums every byte (and the file position afterwards is checked).
Each measurement is repeated ``--repeats`` times (interleaved, order rotated every round) and the
table shows medians and each loop's rate relative to C.  A loop whose ``sendfile`` raises
NotImplementedError shows ``n/a``; a sender that fails, a short count or a wrong checksum shows
``ERR``, a ``FAILURES:`` section says why, and the exit status is 1.

Usage::

    python bench/bench_sendfile.py                  # 1 GiB, 5 repeats
    python bench/bench_sendfile.py --quick          # 64 MiB, 1 repeat: smoke run
    python bench/bench_sendfile.py --size 256M --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from _report import make_loop, nproc, print_run_header
from bench_echo import _stop, build, install_stamp, probe

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE_SRC = os.path.join(HERE, "sendfile_c.c")

LOOPS: List[str] = ["asyncio", "uvloop", "turboloop"]
C_SENDER = "c"
C_EPOLL = "c_epoll"
C_SENDERS = [C_SENDER, C_EPOLL]
SIZE = 1 << 30
QUICK_SIZE = 64 << 20
REPEATS = 5
TIMEOUT = 300.0


# --------------------------------------------------------------------------------------------
# Sender (runs inside ``--sender`` subprocesses only)
# --------------------------------------------------------------------------------------------

class _Sink(asyncio.Protocol):
    """The sender's protocol: nothing comes back; tells when the connection is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def send_file(loop: asyncio.AbstractEventLoop, port: int, path: str) -> Dict[str, Any]:
    transport, protocol = await loop.create_connection(lambda: _Sink(loop), "127.0.0.1", port)
    with open(path, "rb") as fh:
        t0, cpu0 = time.perf_counter(), time.process_time()
        sent = await loop.sendfile(transport, fh)
        t1, cpu1 = time.perf_counter(), time.process_time()
        position = fh.tell()
    transport.close()
    await protocol.lost
    return {"sent": sent, "seconds": t1 - t0, "cpu_s": cpu1 - cpu0, "position": position}


def sender_main(loop_name: str, port: int, path: str) -> None:
    """Entry point of a ``--sender`` subprocess: one JSON line, or {"unsupported": ...}."""
    loop = make_loop(loop_name)
    try:
        result = loop.run_until_complete(send_file(loop, port, path))
    except NotImplementedError as exc:
        result = {"unsupported": f"NotImplementedError: {exc}".rstrip(": ")}
    finally:
        loop.close()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Parent / harness
# --------------------------------------------------------------------------------------------

def build_native() -> str:
    return build(NATIVE_SRC, os.environ.get("CC", "cc"), [], [])


def make_file(directory: str, size: int) -> str:
    """A file of ``size`` pseudo-random bytes (random 1 MiB blocks, so page cache holds it)."""
    path = os.path.join(directory, "payload.bin")
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            fh.write(chunk)
            left -= len(chunk)
            # Shift the block so no two MiB of the file are alike (a stuck offset shows).
            block = block[1:] + block[:1]
    return path


def measure(native: str, sender_cmd: List[str], size: int,
            checksum: Optional[str]) -> Dict[str, Any]:
    """Start the receiver, run one sender against it; return the numbers or {"error": ...}.

    With ``checksum``, the receiver copies and checksums the bytes, and they must match."""
    recv_cmd = [native, "recv"] + (["--checksum"] if checksum else [])
    with tempfile.TemporaryFile("w+") as err_file:
        receiver = subprocess.Popen(recv_cmd, stdout=subprocess.PIPE, stderr=err_file, text=True)
        out = receiver.stdout
        assert out is not None
        try:
            ready, _, _ = select.select([out], [], [], 30)
            line = out.readline() if ready else ""
            if not line:
                return {"error": "receiver did not start"}
            port = json.loads(line)["port"]
            try:
                proc = subprocess.run([*sender_cmd, "--port", str(port)], capture_output=True,
                                      text=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                return {"error": "sender timed out"}
            if proc.returncode != 0 or not proc.stdout.strip():
                tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                return {"error": f"sender: {tail}"}
            sender: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            if "unsupported" in sender:
                return sender
            try:
                rest, _ = receiver.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                return {"error": "receiver saw no EOF"}
        finally:
            _stop(receiver)
        err_file.seek(0)
        recv_err = err_file.read().strip()
    if receiver.returncode != 0 or not rest.strip():
        return {"error": f"receiver: {recv_err or 'exit ' + str(receiver.returncode)}"}
    got = json.loads(rest.strip().splitlines()[-1])
    if sender["sent"] != size or got["bytes"] != size:
        return {"error": f"sent {sender['sent']}, received {got['bytes']}, expected {size}"}
    if checksum and got["checksum"] != checksum:
        return {"error": f"checksum {got['checksum']} != {checksum}"}
    if sender.get("position", size) != size:
        return {"error": f"file position {sender['position']} after sendfile, expected {size}"}
    return {"mb_s": size / got["seconds"] / 1e6, "seconds": got["seconds"],
            "sender_cpu_s": sender["cpu_s"], "recv_cpu_s": got["recv_cpu_s"],
            "sender_seconds": sender["seconds"]}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="64 MiB, 1 repeat: smoke run")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="file size, e.g. 1G, 256M or bytes (default 1G, 64M with --quick)")
    parser.add_argument("--loops", default=",".join(LOOPS + C_SENDERS),
                        help="comma-separated senders (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs per sender, median reported (default {REPEATS}, "
                             "or 1 with --quick)")
    parser.add_argument("--json", metavar="FILE", help="also write all results/samples to FILE")
    parser.add_argument("--sender", nargs=2, metavar=("LOOP", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.sender:
        sender_main(args.sender[0], args.port, args.sender[1])
        return 0

    impls = [x.strip() for x in args.loops.split(",") if x.strip()]
    for name in impls:
        if name not in LOOPS + C_SENDERS:
            parser.error(f"unknown sender {name!r}; choose from {LOOPS + C_SENDERS}")
    size = args.size or (QUICK_SIZE if args.quick else SIZE)
    repeats = args.repeats or (1 if args.quick else REPEATS)

    try:
        native = build_native()
    except (RuntimeError, OSError) as exc:
        print(f"cannot build {NATIVE_SRC}: {exc}", file=sys.stderr)
        return 1
    info: Dict[str, Dict[str, Any]] = {}
    for name in impls:
        if name == C_SENDER:
            info[name] = {"ok": True, "version": "sendfile(2), blocking socket"}
        elif name == C_EPOLL:
            info[name] = {"ok": True, "version": "sendfile(2), non-blocking socket + epoll"}
        else:
            info[name] = probe(name)

    started = print_run_header()
    for name in impls:
        status = info[name]["version"] if info[name]["ok"] else f"n/a ({info[name]['error']})"
        print(f"{name + ':':10} {status}")
    print(f"native:  {native}")
    print(f"stat:    {size} bytes ({size / (1 << 20):g} MiB) over loopback TCP, median of "
          f"{repeats} run(s), each sender a fresh process; senders interleaved")

    available = [name for name in impls if info[name]["ok"]]
    stamps = {name: install_stamp(info[name]) for name in available}
    samples: Dict[str, List[Dict[str, Any]]] = {name: [] for name in available}
    errors: Dict[str, List[str]] = {name: [] for name in available}
    unsupported: Dict[str, str] = {}
    verified: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="turboloop-sendfile-") as tmp:
        path = make_file(tmp, size)
        proc = subprocess.run([native, "sum", "--file", path], capture_output=True, text=True,
                              check=True)
        checksum = json.loads(proc.stdout)["checksum"]
        print(f"file:    {path} checksum {checksum}")
        print(flush=True)
        for rep in range(-1, repeats):  # round -1: the checksummed runs
            shift = rep % len(available) if available else 0
            for name in available[shift:] + available[:shift]:
                if errors[name] or name in unsupported:
                    continue
                if name in C_SENDERS:
                    cmd = [native, "send", "--file", path, "--epoll", str(int(name == C_EPOLL))]
                else:
                    cmd = [sys.executable, os.path.abspath(__file__), "--sender", name, path]
                res = measure(native, cmd, size, checksum if rep < 0 else None)
                label = (f"  [check] {name:9}" if rep < 0 else
                         f"  [{rep + 1}/{repeats}] {name:9}")
                if "unsupported" in res:
                    unsupported[name] = res["unsupported"]
                    print(f"{label} n/a ({res['unsupported']})", flush=True)
                elif "error" in res:
                    errors[name].append(res["error"])
                    print(f"{label} ERROR {res['error']}", flush=True)
                elif rep < 0:
                    verified[name] = res
                    print(f"{label} checksum ok, {res['mb_s']:8.0f} MB/s with a copying "
                          "receiver (not in the median)", flush=True)
                    continue
                else:
                    samples[name].append(res)
                    print(f"{label} {res['mb_s']:8.0f} MB/s  in {res['seconds']:.3f} s  "
                          f"sender CPU {res['sender_cpu_s']:.3f} s  "
                          f"receiver CPU {res['recv_cpu_s']:.3f} s", flush=True)

    results: Dict[str, Dict[str, Any]] = {}
    for name in impls:
        runs = samples.get(name, [])
        entry: Dict[str, Any] = {"samples": runs, "errors": errors.get(name, []),
                                 "checksummed_run": verified.get(name)}
        for metric in ("mb_s", "sender_cpu_s"):
            entry[metric] = statistics.median(r[metric] for r in runs) if runs else None
        if name in unsupported:
            entry["unsupported"] = unsupported[name]
        elif name in available and not runs and not entry["errors"]:
            entry["errors"] = ["no samples"]
        results[name] = entry

    c_rate = max((results[n]["mb_s"] for n in C_SENDERS
                  if n in results and results[n]["mb_s"]), default=None)
    rows = [["sender", "MB/s", "vs C", "sender CPU s/GiB"]]
    for name in impls:
        entry = results[name]
        if not info[name]["ok"] or "unsupported" in entry:
            rows.append([name, "n/a", "n/a", "n/a"])
        elif entry["errors"]:
            rows.append([name, "ERR", "ERR", "ERR"])
        else:
            rel = f"{entry['mb_s'] / c_rate:.2f}x" if c_rate else "n/a"
            rows.append([name, f"{entry['mb_s']:.0f}", rel,
                         f"{entry['sender_cpu_s'] * (1 << 30) / size:.3f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print("sendfile throughput (median; MB = 10**6 bytes; higher is better)")
    for idx, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if idx == 0:
            print("  ".join("-" * w for w in widths))
    for name, why in unsupported.items():
        print(f"  {name}: {why}")

    for name in available:
        if install_stamp(info[name]) != stamps[name]:
            print(f"WARNING: {name} was reinstalled during the run; its numbers mix builds")
    failed = [name for name in impls if results[name]["errors"]]
    if failed:
        print("\nFAILURES:")
        for name in failed:
            print(f"  {name}: {results[name]['errors'][0]}")
    if args.json:
        payload = {
            "date": started.isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "nproc": nproc(),
            "loadavg_at_start": os.getloadavg(),
            "size": size,
            "statistic": f"median of {repeats}",
            "senders": info,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
