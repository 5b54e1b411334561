#!/usr/bin/env python3
"""Side-by-side TCP echo benchmark: stock asyncio vs uvloop vs turboloop vs plain libuv (C++).

A native closed-loop client (``echo_client.c``, compiled at run time) opens C connections to
an echo server; each connection sends S bytes, waits for all S to come back, checks them and
sends again.  Every measurement starts its own server in a fresh subprocess::

    python bench/bench_echo.py --server LOOP STYLE     # prints {"port": P}, echoes until killed

in one of three styles (``protocol``, ``streams``, ``sock``), or the C++ libuv server
(``echo_server_uv.cpp``, also compiled at run time) as the physical floor.  The client reports
requests/s, p99 latency and the server's CPU time (utime + stime from /proc) inside the measured
window.  Each measurement is repeated ``--repeats`` times (interleaved, order rotated every
round) and the tables show medians plus the ratios turboloop/asyncio, turboloop/uvloop and, for
CPU per request, turboloop/C.

A loop that cannot be imported shows ``n/a``.  A server or client that fails (crash, hang,
server error, wrong echo) shows ``ERR``, a ``FAILURES:`` section says why, and the exit status
is 1; otherwise it is 0.

Usage::

    python bench/bench_echo.py                  # full run (about 5 minutes on 2 cores)
    python bench/bench_echo.py --quick          # smoke run (under a minute)
    python bench/bench_echo.py --styles protocol --sizes 1024 --conns 10 --json out.json
    python bench/bench_echo.py --tls            # TLS echo: protocol and streams, 1 and 100 KiB

With ``--tls`` the servers get ``ssl=`` an SSLContext over a self-signed certificate made at
run time (``trustme``), the client is built with OpenSSL, and the C server (no TLS) sits out.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import select
import shlex
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional, Set, Tuple

from _report import fmt_rate, loop_version, make_loop, nproc, print_run_header, ratio

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_SRC = os.path.join(HERE, "echo_client.c")
C_SERVER_SRC = os.path.join(HERE, "echo_server_uv.cpp")

LOOPS: List[str] = ["asyncio", "uvloop", "turboloop"]
C_SERVER = "c_uv"                      # the libuv C++ server, one more column
STYLES: List[str] = ["protocol", "streams", "sock"]
SIZES: List[int] = [1024, 10 * 1024, 100 * 1024]
TLS_STYLES: List[str] = ["protocol", "streams"]   # sock_* has no TLS
TLS_SIZES: List[int] = [1024, 100 * 1024]
CONNS: List[int] = [10, 100]

DURATION = 1.0        # measured window per run, seconds (3 runs -> median)
WARMUP = 0.3          # untimed echo traffic before the window
REPEATS = 3
QUICK_DURATION = 0.2
QUICK_WARMUP = 0.1
BACKLOG = 1024        # 100 clients connect at once; don't make them retry SYNs
READ_SIZE = 65536
SERVER_START_TIMEOUT = 30.0
CLIENT_GRACE = 60.0   # client timeout = warm-up + window + this

Case = Tuple[str, int, int]  # (style, size, conns)


# --------------------------------------------------------------------------------------------
# Servers (run inside ``--server`` subprocesses only)
# --------------------------------------------------------------------------------------------

def report_error(message: str) -> None:
    """Tell the parent something went wrong; it turns any such line into ERR."""
    print(f"SERVER-ERROR: {message}", file=sys.stderr, flush=True)


def report_exception(exc: BaseException) -> None:
    report_error(f"{type(exc).__name__}: {exc}")
    traceback.print_exception(exc, file=sys.stderr)


class EchoProtocol(asyncio.Protocol):
    """``protocol`` style: every chunk received is written straight back."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def streams_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``streams`` style: read / write / drain until EOF."""
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the client went away; not a server bug
    except Exception as exc:  # noqa: BLE001 - any other failure must reach the parent
        report_exception(exc)
    finally:
        writer.close()


async def sock_echo(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    """``sock`` style, one task per connection: sock_recv / sock_sendall until EOF."""
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except ConnectionError:
        pass
    except Exception as exc:  # noqa: BLE001
        report_exception(exc)
    finally:
        conn.close()


async def sock_accept_loop(loop: asyncio.AbstractEventLoop, listener: socket.socket,
                           tasks: Set[asyncio.Task[None]]) -> None:
    """Accept forever, one ``sock_echo`` task per connection."""
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            # asyncio/uvloop transports set TCP_NODELAY; do the same for raw sockets.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(sock_echo(loop, conn))
            tasks.add(task)  # keep a reference: the loop only holds tasks weakly
            task.add_done_callback(tasks.discard)
    except Exception as exc:  # noqa: BLE001
        report_exception(exc)


async def start_server(loop: asyncio.AbstractEventLoop, style: str,
                       keep: List[Any], sslctx: Optional[ssl.SSLContext] = None) -> int:
    """Start a ``style`` echo server on 127.0.0.1, port 0; return the port."""
    if style == "protocol":
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=BACKLOG,
                                          ssl=sslctx)
    elif style == "streams":
        server = await asyncio.start_server(streams_handler, "127.0.0.1", 0, backlog=BACKLOG,
                                            ssl=sslctx)
    elif style == "sock" and sslctx is None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        tasks: Set[asyncio.Task[None]] = set()
        keep.extend([listener, tasks, loop.create_task(sock_accept_loop(loop, listener, tasks))])
        return int(listener.getsockname()[1])
    else:
        raise ValueError(f"unknown style {style!r}")
    keep.append(server)
    return int(server.sockets[0].getsockname()[1])


def server_main(loop_name: str, style: str, tls_files: Optional[List[str]] = None) -> None:
    """Entry point of a ``--server`` subprocess: print the port, then serve until killed."""
    sslctx = None
    if tls_files:
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sslctx.load_cert_chain(*tls_files)
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(
        lambda _loop, ctx: report_error(f"{ctx.get('message')}: {ctx.get('exception')!r}"))
    keep: List[Any] = []
    port = loop.run_until_complete(start_server(loop, style, keep, sslctx))
    print(json.dumps({"port": port}), flush=True)
    loop.run_forever()  # the parent ends us with SIGTERM


def probe_main(loop_name: str) -> None:
    """Entry point of a ``--probe`` subprocess: report availability."""
    try:
        loop = make_loop(loop_name)
        loop.close()
        info: Dict[str, Any] = {"ok": True, "version": loop_version(loop_name)}
        module_file = getattr(sys.modules.get(loop_name), "__file__", None)
        if module_file:
            info["path"] = os.path.dirname(os.path.abspath(module_file))
    except Exception as exc:  # noqa: BLE001 - report any import failure
        info = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(info))


# --------------------------------------------------------------------------------------------
# Native binaries: compiled once, cached by a hash of source and command
# --------------------------------------------------------------------------------------------

def build(src: str, compiler: str, flags: List[str], libs: List[str]) -> str:
    """Compile ``src`` with -O2 into the cache dir (if not there yet); return the binary."""
    cache = os.path.join(tempfile.gettempdir(), f"turboloop-bench-{os.getuid()}")
    os.makedirs(cache, exist_ok=True)
    with open(src, "rb") as fh:
        key = hashlib.sha256(fh.read() + " ".join([compiler] + flags + libs).encode())
    name = os.path.splitext(os.path.basename(src))[0]
    binary = os.path.join(cache, f"{name}-{key.hexdigest()[:12]}")
    if os.path.exists(binary):
        return binary
    tmp = f"{binary}.{os.getpid()}.tmp"
    cmd = [compiler, "-O2", *flags, "-o", tmp, src, *libs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, binary)  # atomic: a concurrent run never sees half a binary
    return binary


def build_client(tls: bool = False) -> str:
    if not tls:
        return build(CLIENT_SRC, os.environ.get("CC", "cc"), [], [])
    proc = subprocess.run(["pkg-config", "--cflags", "--libs", "openssl"],
                          capture_output=True, text=True)
    libs = proc.stdout.split() if proc.returncode == 0 else ["-lssl", "-lcrypto"]
    return build(CLIENT_SRC, os.environ.get("CC", "cc"), ["-DECHO_TLS"], libs)


def make_tls_files(directory: str) -> List[str]:
    """A self-signed CA and a server certificate for 127.0.0.1: [cert chain PEM, key PEM]."""
    import trustme  # only --tls needs it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain = os.path.join(directory, "server-chain.pem")
    key = os.path.join(directory, "server-key.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(chain)
    cert.private_key_pem.write_to_path(key)
    return [chain, key]


def build_c_server() -> str:
    proc = subprocess.run(["pkg-config", "--cflags", "--libs", "libuv"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pkg-config libuv: {proc.stderr.strip() or 'not found'}")
    flags = proc.stdout.split()
    return build(C_SERVER_SRC, os.environ.get("CXX", "c++"), ["-std=c++17"], flags)


# --------------------------------------------------------------------------------------------
# Parent / harness
# --------------------------------------------------------------------------------------------

def probe(loop_name: str) -> Dict[str, Any]:
    """Check in a subprocess whether ``loop_name`` is usable."""
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", loop_name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "probe timed out"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"exit {proc.returncode}: {tail}"}
    info: Dict[str, Any] = json.loads(lines[-1])
    return info


def install_stamp(info: Dict[str, Any]) -> float:
    """Newest mtime among a loop package's files (0 for the stdlib), to spot reinstalls."""
    path = info.get("path")
    if not path or not os.path.isdir(path):
        return 0.0
    return max((os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)),
               default=0.0)


def _server_problem(stderr_text: str) -> Optional[str]:
    """The first error the server reported on stderr, if any."""
    lines = stderr_text.strip().splitlines()
    for line in lines:
        if line.startswith("SERVER-ERROR: "):
            return line[len("SERVER-ERROR: "):]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]
    return None


def _stop(proc: "subprocess.Popen[str]") -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(server_cmd: List[str], client: str, size: int, conns: int,
            duration: float, warmup: float, tls: bool = False) -> Dict[str, Any]:
    """Start a server, run the client against it once; return its JSON or {"error": ...}."""
    with tempfile.TemporaryFile("w+") as err_file:
        # stderr to a file, so a chatty server can never block on a full pipe.
        server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=err_file,
                                  text=True)
        out = server.stdout
        assert out is not None  # stdout=PIPE
        try:
            ready, _, _ = select.select([out], [], [], SERVER_START_TIMEOUT)
            line = out.readline() if ready else ""
            if not line:
                _stop(server)
                err_file.seek(0)
                text = err_file.read()
                why = _server_problem(text) or (text.strip().splitlines() or ["no output"])[-1]
                return {"error": f"server did not start (exit {server.returncode}): {why}"}
            port = json.loads(line)["port"]
            cmd = [client, "--port", str(port), "--conns", str(conns), "--size", str(size),
                   "--duration", str(duration), "--warmup", str(warmup),
                   "--pid", str(server.pid)] + (["--tls", "1"] if tls else [])
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=warmup + duration + CLIENT_GRACE)
                client_out, client_err, rc = proc.stdout, proc.stderr, proc.returncode
            except subprocess.TimeoutExpired:
                client_out, client_err, rc = "", "client timed out", -1
            exited = server.poll()
        finally:
            _stop(server)
        err_file.seek(0)
        problem = _server_problem(err_file.read())
    if problem:
        return {"error": f"server: {problem}"}
    if exited is not None:
        return {"error": f"server exited early with status {exited}"}
    if rc != 0 or not client_out.strip():
        tail = (client_err.strip().splitlines() or [f"exit {rc}"])[-1]
        return {"error": f"client: {tail}"}
    result: Dict[str, Any] = json.loads(client_out.strip().splitlines()[-1])
    return result


def fmt_size(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def fmt_ms(us: Optional[float]) -> str:
    if us is None:
        return "n/a"
    ms = us / 1000
    return f"{ms:.2f}ms" if ms < 10 else f"{ms:.1f}ms"


def fmt_us(us: Optional[float]) -> str:
    return "n/a" if us is None else f"{us:.1f}us"


def print_table(title: str, metric: str, fmt: Any, cases: List[Case],
                results: Dict[str, Dict[str, Any]], impls_ok: Dict[str, bool],
                with_c_ratio: bool) -> None:
    """One table: rows = cases, columns = implementations, then turboloop's ratios."""
    def med(impl: str, case: Case) -> Optional[float]:
        res = results.get(case_key(impl, case), {}).get(impl)
        return None if not res or res["errors"] else res[metric]

    def cell(impl: str, case: Case) -> str:
        if not impls_ok[impl]:
            return "n/a"
        res = results.get(case_key(impl, case), {}).get(impl)
        if res is None:
            return "n/a"
        return "ERR" if res["errors"] else fmt(res[metric])

    header = ["style", "size", "conns", "asyncio", "uvloop", "turboloop", "C libuv",
              "tl/asyncio", "tl/uvloop"] + (["tl/C"] if with_c_ratio else [])
    rows = [header]
    for case in cases:
        tl = med("turboloop", case)
        row = [case[0], fmt_size(case[1]), str(case[2])]
        row += [cell(impl, case) for impl in LOOPS + [C_SERVER]]
        row += [ratio(tl, med("asyncio", case)), ratio(tl, med("uvloop", case))]
        if with_c_ratio:
            row.append(ratio(tl, med(C_SERVER, case)))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(title)
    for idx, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if idx == 0:
            print("  ".join("-" * w for w in widths))
    print()


def case_key(impl: str, case: Case) -> str:
    """Results key; the C server has no style, so it shares one entry per (size, conns)."""
    style = "-" if impl == C_SERVER else case[0]
    return f"{style}/{case[1]}/{case[2]}"


def int_list(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_DURATION} s windows, 1 repeat: smoke run")
    parser.add_argument("--loops", default=",".join(LOOPS + [C_SERVER]),
                        help="comma-separated servers to run (default: %(default)s)")
    parser.add_argument("--styles", default=None,
                        help="comma-separated Python server styles (default: "
                             f"{','.join(STYLES)}; {','.join(TLS_STYLES)} with --tls)")
    parser.add_argument("--sizes", type=int_list, default=None,
                        help="comma-separated message sizes in bytes (default: 1024,10240,102400;"
                             " 1024,102400 with --tls)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS echo: servers get ssl=, the client speaks TLS (OpenSSL)")
    parser.add_argument("--conns", type=int_list, default=CONNS,
                        help="comma-separated connection counts (default: 10,100)")
    parser.add_argument("--duration", type=float, default=None,
                        help=f"measured window per run, s (default {DURATION}, "
                             f"{QUICK_DURATION} with --quick)")
    parser.add_argument("--warmup", type=float, default=None,
                        help=f"untimed traffic before each window, s (default {WARMUP})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs per measurement, median reported (default {REPEATS}, "
                             "or 1 with --quick)")
    parser.add_argument("--json", metavar="FILE", help="also write all results/samples to FILE")
    parser.add_argument("--server", nargs=2, metavar=("LOOP", "STYLE"), help=argparse.SUPPRESS)
    parser.add_argument("--tls-files", nargs=2, metavar=("CHAIN", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="LOOP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe:
        probe_main(args.probe)
        return 0
    if args.server:
        server_main(args.server[0], args.server[1], tls_files=args.tls_files)
        return 0

    impls = [x.strip() for x in args.loops.split(",") if x.strip()]
    if args.styles is None:
        args.styles = ",".join(TLS_STYLES if args.tls else STYLES)
    if args.sizes is None:
        args.sizes = TLS_SIZES if args.tls else SIZES
    styles = [x.strip() for x in args.styles.split(",") if x.strip()]
    for name in impls:
        if name not in LOOPS + [C_SERVER]:
            parser.error(f"unknown server {name!r}; choose from {LOOPS + [C_SERVER]}")
    for style in styles:
        if style not in (TLS_STYLES if args.tls else STYLES):
            parser.error(f"unknown style {style!r}; choose from "
                         f"{TLS_STYLES if args.tls else STYLES}")
    duration = args.duration or (QUICK_DURATION if args.quick else DURATION)
    warmup = args.warmup if args.warmup is not None else (
        QUICK_WARMUP if args.quick else WARMUP)
    repeats = args.repeats or (1 if args.quick else REPEATS)

    try:
        client = build_client(args.tls)
    except (RuntimeError, OSError) as exc:
        print(f"cannot build the echo client: {exc}", file=sys.stderr)
        return 1
    tls_dir = tempfile.TemporaryDirectory(prefix="turboloop-echo-tls-")
    tls_args = ["--tls-files", *make_tls_files(tls_dir.name)] if args.tls else []
    info: Dict[str, Dict[str, Any]] = {
        name: {"ok": False, "error": "not selected"} for name in LOOPS + [C_SERVER]}
    c_server = ""
    for name in impls:
        if name == C_SERVER and args.tls:
            info[name] = {"ok": False, "error": "the C server has no TLS"}
        elif name == C_SERVER:
            try:
                c_server = build_c_server()
                info[name] = {"ok": True, "version": f"libuv {libuv_version()}"}
            except (RuntimeError, OSError) as exc:
                info[name] = {"ok": False, "error": str(exc)}
        else:
            info[name] = probe(name)

    started = print_run_header()
    for name in LOOPS + [C_SERVER]:
        status = info[name]["version"] if info[name]["ok"] else f"n/a ({info[name]['error']})"
        print(f"{name + ':':10} {status}")
    print(f"client:  {client}")
    print(f"stat:    median of {repeats} run(s) of {duration:g} s (after {warmup:g} s warm-up), "
          "each against a fresh server subprocess; servers interleaved")
    print(f"cases:   styles={','.join(styles)} sizes={','.join(map(str, args.sizes))} "
          f"conns={','.join(map(str, args.conns))}" + (" over TLS (OpenSSL client)"
                                                       if args.tls else ""))
    print(flush=True)

    available = [name for name in impls if info[name]["ok"]]
    stamps = {name: install_stamp(info[name]) for name in available}
    cases: List[Case] = [(style, size, conns) for size in args.sizes for conns in args.conns
                         for style in styles]
    # Jobs per (size, conns): every loop in every style, plus the C server once.
    groups: List[List[Tuple[str, Case]]] = []
    for size in args.sizes:
        for conns in args.conns:
            group = [(name, (style, size, conns)) for style in styles for name in available
                     if name != C_SERVER]
            if C_SERVER in available:
                group.insert(0, (C_SERVER, ("-", size, conns)))
            groups.append(group)

    samples: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    errors: Dict[str, Dict[str, List[str]]] = {}
    t_start = time.perf_counter()
    for rep in range(repeats):
        for group in groups:
            shift = rep % len(group) if group else 0
            for name, case in group[shift:] + group[:shift]:  # rotate: spread drift evenly
                key = case_key(name, case)
                samples.setdefault(key, {}).setdefault(name, [])
                errs = errors.setdefault(key, {}).setdefault(name, [])
                if errs:
                    continue  # don't keep re-running a broken combination
                cmd = ([c_server] if name == C_SERVER else
                       [sys.executable, os.path.abspath(__file__), "--server", name, case[0],
                        *tls_args])
                res = measure(cmd, client, case[1], case[2], duration, warmup, args.tls)
                label = f"  [{rep + 1}/{repeats}] {case[0]:8} {fmt_size(case[1]):>7} " \
                        f"x{case[2]:<3} {name:9}"
                if "error" in res:
                    errs.append(res["error"])
                    print(f"{label} ERROR {res['error']}", flush=True)
                    continue
                res["cpu_us_per_req"] = res["server_cpu_s"] / res["requests"] * 1e6
                samples[key][name].append(res)
                print(f"{label} {fmt_rate(res['rps']):>7} req/s  p99 {fmt_ms(res['p99_us']):>7}"
                      f"  server {res['cpu_us_per_req']:6.1f} us/req"
                      f"  client {res['client_cpu_s'] / res['requests'] * 1e6:5.1f} us/req",
                      flush=True)
    elapsed = time.perf_counter() - t_start
    tls_dir.cleanup()

    results: Dict[str, Dict[str, Any]] = {}
    for key, per_impl in samples.items():
        results[key] = {}
        for name, runs in per_impl.items():
            entry: Dict[str, Any] = {"samples": runs, "errors": errors[key][name]}
            for metric in ("rps", "p99_us", "cpu_us_per_req"):
                values = [r[metric] for r in runs]
                entry[metric] = statistics.median(values) if values else None
            if not runs and not entry["errors"]:
                entry["errors"] = ["no samples"]
            results[key][name] = entry

    ok = {name: info[name]["ok"] for name in LOOPS + [C_SERVER]}
    print()
    print_table("requests/s (median; higher is better, so are ratios above 1.00x)",
                "rps", fmt_rate, cases, results, ok, with_c_ratio=False)
    print_table("p99 latency (median of the runs' p99; lower is better, so are ratios "
                "below 1.00x)", "p99_us", fmt_ms, cases, results, ok, with_c_ratio=False)
    print_table("server CPU time per request (utime+stime in the window / requests, median; "
                "lower is better, so are ratios below 1.00x)", "cpu_us_per_req", fmt_us,
                cases, results, ok, with_c_ratio=True)
    print(f"(ratios are turboloop / other; total bench time {elapsed:.1f}s)")

    for name in available:
        if install_stamp(info[name]) != stamps[name]:
            # Seen in practice: a concurrent `pip install` mid-run mixes two builds.
            print(f"WARNING: {name} was reinstalled during the run; its numbers mix builds")

    failed = [(key, name) for key, per_impl in results.items() for name, entry in
              per_impl.items() if entry["errors"]]
    if failed:
        print("\nFAILURES:")
        for key, name in failed:
            print(f"  {key} on {name}: {results[key][name]['errors'][0]}")

    if args.json:
        payload = {
            "date": started.isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "nproc": nproc(),
            "loadavg_at_start": os.getloadavg(),
            "statistic": f"median of {repeats}",
            "duration_s": duration,
            "warmup_s": warmup,
            "quick": args.quick,
            "tls": args.tls,
            "servers": info,
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


def libuv_version() -> str:
    proc = subprocess.run(["pkg-config", "--modversion", "libuv"], capture_output=True,
                          text=True)
    return proc.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
