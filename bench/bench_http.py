#!/usr/bin/env python3
"""Real HTTP servers and clients side by side on stock asyncio, uvloop and turboloop.

bench_echo.py measures a loop under a bare echo; here the loop carries real libraries, so what a
user would see is measured: the loop's share of a request next to the framework's. Six workloads,
each run on every loop:

============== ====================================================================================
aiohttp-hello  aiohttp.web server, ``GET /`` -> text ``Hello, World!`` (access log off)
aiohttp-json   the same server, ``GET /json`` -> ``web.json_response({"message": "Hello, World!"})``
uvicorn-hello  uvicorn (``http="httptools"``, lifespan off, access log off, log level warning)
               serving a plain ASGI app (no framework), ``GET /``
uvicorn-json   the same app, ``GET /json`` (``json.dumps`` per request)
streams-client the *client* runs on the loop under test: C connections made with
               ``asyncio.open_connection``, each doing request/response pairs of a small line
               protocol the way redis-py does (``write`` + ``await drain()``, then
               ``readuntil(b"\\r\\n")`` and ``readexactly(n)``), every reply checked
aiohttp-client the *client* runs on the loop under test: ``aiohttp.ClientSession`` (default pool,
               keep-alive), C tasks fetching ``GET /`` in a loop, every body checked
============== ====================================================================================

Server workloads: the server runs in a fresh subprocess on the loop under test (its main
coroutine started by ``asyncio.run``, ``uvloop.run`` or ``turboloop.run``, on a listening socket
bound to 127.0.0.1, port 0), is checked to answer ``/`` and ``/json`` correctly, and is loaded
by ``wrk -t 1 -c 50 --latency`` for ``--warmup`` seconds, then for ``--duration`` seconds, the
timed run. Reported: wrk's Requests/sec and p99 latency, and the server's CPU time per request
(utime + stime of all its threads from /proc/PID/stat across the timed run, over wrk's request
count). Client workloads: the server is fixed (the line-protocol server or the aiohttp server,
both on uvloop), a client subprocess runs on the loop under test and reports the requests it
completed in its timed window and its own CPU time (os.times) in that window. Each figure is the
median of ``--rounds`` rounds; every round runs every workload on every loop, the loop order
rotated each round, so drift on a shared machine hits all loops alike. Any non-2xx answer, socket
error, wrong body, exception or traceback on a server's or client's stderr shows ``ERR``, its
stderr goes to a ``FAILURES:`` section, and the exit status is 1.

On a 2-core machine wrk (or the fixed server) and the process under test share the CPUs, so
requests/s depends on the scheduler and on anything else running; CPU per request less so.

``--instructions`` (server workloads): the server runs under valgrind's callgrind; after a
warm-up, wrk at ``--probe-conns`` connections drives it for ``--window`` seconds and then three
times as long, each window after zeroing the counters (``callgrind_control -z``) and ending with
a dump (``-d``). (I2 - I1) / (N2 - N1), instructions over completed requests, is the user-space
cost per request, wrk's connection set-up cancelling out, as in bench_echo_instructions.py.
Under callgrind a server runs some 50 times slower, so every poll finds more work than at full
speed: compare loops with each other, not with the timed figures.

``--syscalls`` (server workloads): after a warm-up, ``strace -f -c`` is attached to the running
server (all its threads), wrk drives it for ``--syscall-seconds`` seconds at ``--probe-conns``
connections, and strace is detached; the table gives system calls per request by name (and the
failed ones, such as reads that found nothing), so that turboloop can be checked to make no more
than uvloop. With several connections, how many requests one poll finds depends on timing;
``--probe-conns 1`` makes every request a strict round trip, the same on every run.

Usage::

    python bench/bench_http.py                                   # all workloads, 3 rounds x 5 s
    python bench/bench_http.py --workloads aiohttp-hello,uvicorn-hello --rounds 5 --json out.json
    python bench/bench_http.py --loops uvloop,turboloop --duration 10 --conns 100
    python bench/bench_http.py --instructions --workloads aiohttp-hello,uvicorn-hello
    python bench/bench_http.py --syscalls --probe-conns 1

Needs aiohttp, uvicorn and httptools (``python3 -m pip install aiohttp uvicorn httptools``),
and wrk; ``--instructions`` needs valgrind, ``--syscalls`` strace. A missing wrk, valgrind or
strace is installed with apt-get when running as root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Container, Coroutine, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import bench_echo
from _report import fmt_rate, nproc, print_run_header, ratio
from bench_echo_instructions import callgrind_total

if TYPE_CHECKING:
    import aiohttp

THIS = os.path.abspath(__file__)
LOOPS: list[str] = bench_echo.LOOPS
FIXED_LOOP = "uvloop"           # the server's loop in the client workloads
HELLO = "Hello, World!"
JSON_BODY = {"message": HELLO}
BACKLOG = 1024

ROUNDS = 3
DURATION = 5                   # seconds of the timed run (wrk takes whole seconds)
WARMUP = 1                     # seconds of untimed load before it
CONNS = 50                     # wrk connections
THREADS = 1                    # wrk threads
CLIENT_CONNS = 20              # connections (tasks) of the client workloads
PROBE_CONNS = 4                # wrk connections under callgrind / strace
WINDOW = 2                     # first callgrind window, s; the second is 3x
SYSCALL_SECONDS = 3            # wrk run under strace
PROBE_WARMUP = 2               # untimed wrk run before counting
START_TIMEOUT = 30.0           # server start, and its first correct answer
VALGRIND_START_TIMEOUT = 300.0
GRACE = 60.0                   # subprocess timeout = its planned run time + this
SETTLE = 0.5                   # lets a server finish the last requests before a dump / detach
DETAIL_LINES = 40              # stderr lines kept for the FAILURES section


@dataclass(frozen=True)
class Workload:
    name: str
    app: str      # the server program: "aiohttp", "uvicorn" or "line"
    path: str     # the HTTP path requested; "" for the line protocol
    client: bool  # True: the loop under test runs the client; the server runs on FIXED_LOOP


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("aiohttp-hello", "aiohttp", "/", False),
    Workload("aiohttp-json", "aiohttp", "/json", False),
    Workload("uvicorn-hello", "uvicorn", "/", False),
    Workload("uvicorn-json", "uvicorn", "/json", False),
    Workload("streams-client", "line", "", True),
    Workload("aiohttp-client", "aiohttp", "/", True),
]}
MODULES = {"aiohttp": ["aiohttp"], "uvicorn": ["uvicorn", "httptools"], "line": []}


class BenchError(Exception):
    """A measurement failed; ``detail`` holds what the process said (its stderr)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Servers and clients (run inside ``--server`` / ``--client`` subprocesses only)
# --------------------------------------------------------------------------------------------

def loop_runner(name: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``asyncio.run`` or its uvloop / turboloop counterpart: the loop under test runs main()."""
    if name == "asyncio":
        return asyncio.run
    if name == "uvloop":
        import uvloop
        return uvloop.run
    if name == "turboloop":
        import turboloop
        return turboloop.run
    raise ValueError(f"unknown loop {name!r}")


def report_loop_errors() -> None:
    """Turn whatever the running loop reports to its exception handler into an error line."""
    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        bench_echo.report_error(f"{context.get('message')}: {exc!r}")
        if exc is not None:
            traceback.print_exception(exc, file=sys.stderr)
    asyncio.get_running_loop().set_exception_handler(handler)


def listening_socket() -> socket.socket:
    """127.0.0.1, port 0, as create_server would make it. IPPROTO_TCP matters: asyncio (and
    turboloop with it) set TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and uvicorn's
    two writes per response then meet Nagle and delayed ACKs (some 40 ms a request)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def announce(sock: socket.socket) -> None:
    """Tell the parent where we listen and who we are (under valgrind the pid is ours)."""
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)


async def aiohttp_server(sock: socket.socket) -> None:
    from aiohttp import web

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=HELLO)

    async def json_message(_request: web.Request) -> web.Response:
        return web.json_response(JSON_BODY)

    report_loop_errors()
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/json", json_message)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    announce(sock)
    await asyncio.Event().wait()  # the parent ends us with SIGTERM


async def asgi_app(scope: dict[str, Any], _receive: Callable[[], Any],
                   send: Callable[[dict[str, Any]], Any]) -> None:
    """A framework-free ASGI app with aiohttp_server's two endpoints."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/":
        status, body, content_type = 200, HELLO.encode(), b"text/plain; charset=utf-8"
    elif scope["path"] == "/json":
        status, body, content_type = 200, json.dumps(JSON_BODY).encode(), b"application/json"
    else:
        status, body, content_type = 404, b"Not Found", b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def uvicorn_server(sock: socket.socket) -> None:
    import uvicorn

    report_loop_errors()
    # loop="none": uvicorn leaves the loop alone; the runner chose it already.
    config = uvicorn.Config(asgi_app, loop="none", http="httptools", ws="none", lifespan="off",
                            interface="asgi3", access_log=False, log_level="warning",
                            backlog=BACKLOG)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        announce(sock)
    await serving  # SIGTERM: uvicorn shuts down gracefully, then re-raises it


def line_reply(key: bytes) -> bytes:
    """The line server's answer to ``GET key``: a bulk string of ``value:key``."""
    value = b"value:" + key
    return b"$%d\r\n%s\r\n" % (len(value), value)


class LineProtocol(asyncio.Protocol):
    """``GET key\\r\\n`` -> ``$N\\r\\nvalue:key\\r\\n``, requests split or batched anyhow."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\r\n")
        self.buffer = lines.pop()
        self.transport.write(b"".join(
            line_reply(line[4:]) if line.startswith(b"GET ") else b"-ERR unknown command\r\n"
            for line in lines))


async def line_server(sock: socket.socket) -> None:
    report_loop_errors()
    server = await asyncio.get_running_loop().create_server(LineProtocol, sock=sock,
                                                            backlog=BACKLOG)
    announce(sock)
    await server.serve_forever()


SERVERS: dict[str, Callable[[socket.socket], Coroutine[Any, Any, None]]] = {
    "aiohttp": aiohttp_server, "uvicorn": uvicorn_server, "line": line_server}


def server_main(app: str, loop_name: str) -> None:
    """Entry point of a ``--server`` subprocess: announce the port, then serve until killed."""
    loop_runner(loop_name)(SERVERS[app](listening_socket()))


class ClientState:
    """What the client tasks share: the requests completed so far, and when to stop."""

    def __init__(self) -> None:
        self.requests = 0
        self.stop = False


async def line_connection(port: int, index: int, state: ClientState) -> None:
    """One redis-py-like connection: request, drain, read the header line, read the value."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        count = 0
        while not state.stop:
            key = b"k%d:%d" % (index, count)
            writer.write(b"GET " + key + b"\r\n")
            await writer.drain()
            header = await reader.readuntil(b"\r\n")
            if not header.startswith(b"$"):
                raise RuntimeError(f"bad reply header {header!r} to GET {key!r}")
            reply = header + await reader.readexactly(int(header[1:-2]) + 2)
            if reply != line_reply(key):
                raise RuntimeError(f"wrong reply {reply!r} to GET {key!r}")
            count += 1
            state.requests += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def aiohttp_fetcher(session: aiohttp.ClientSession, url: str,
                          state: ClientState) -> None:
    """One task of the aiohttp client: GET url over the session's pool, check, repeat."""
    expected = HELLO.encode()
    while not state.stop:
        async with session.get(url) as response:
            body = await response.read()
        if response.status != 200 or body != expected:
            raise RuntimeError(f"GET {url}: status {response.status}, body {body[:80]!r}")
        state.requests += 1


async def watch(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Wait ``seconds``; a client task that fails or ends meanwhile fails the run."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()
    if done:
        raise RuntimeError("a client task ended early")


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    times = os.times()
    return times.user + times.system


async def client_run(workload: Workload, port: int, conns: int, warmup: float,
                     duration: float) -> dict[str, float]:
    """Run ``conns`` client tasks; count requests and CPU time in the window after warm-up."""
    report_loop_errors()
    state = ClientState()
    async with contextlib.AsyncExitStack() as stack:
        if workload.app == "line":
            tasks = [asyncio.create_task(line_connection(port, i, state)) for i in range(conns)]
        else:
            import aiohttp
            session = await stack.enter_async_context(aiohttp.ClientSession())
            url = f"http://127.0.0.1:{port}{workload.path}"
            tasks = [asyncio.create_task(aiohttp_fetcher(session, url, state))
                     for _ in range(conns)]
        await watch(tasks, warmup)
        requests0, cpu0, t0 = state.requests, cpu_seconds(), time.perf_counter()
        await watch(tasks, duration)
        requests1, cpu1, t1 = state.requests, cpu_seconds(), time.perf_counter()
        state.stop = True
        await asyncio.gather(*tasks)
    return {"requests": requests1 - requests0, "seconds": t1 - t0, "cpu_s": cpu1 - cpu0}


def client_main(workload: Workload, loop_name: str, port: int, conns: int, warmup: float,
                duration: float) -> None:
    """Entry point of a ``--client`` subprocess: prints one JSON line."""
    result = loop_runner(loop_name)(client_run(workload, port, conns, warmup, duration))
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Parent / harness
# --------------------------------------------------------------------------------------------

def tail(text: str) -> str:
    """The last DETAIL_LINES lines of a process's output, for the FAILURES section."""
    return "\n".join(text.strip().splitlines()[-DETAIL_LINES:])


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    pid: int
    stderr: IO[str]

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def check(self) -> None:
        """Raise if the server reported an error or is gone."""
        text = self.stderr_text()
        problem = bench_echo._server_problem(text)
        if problem:
            raise BenchError(f"server: {problem}", tail(text))
        if self.proc.poll() is not None:
            raise BenchError(f"server exited early with status {self.proc.returncode}",
                             tail(text))


def check_answers(app: str, port: int, timeout: float) -> None:
    """One request per endpoint, answers compared; BenchError on a wrong one."""
    if app == "line":
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET check\r\n")
            expected = line_reply(b"check")
            reply = b""
            while len(reply) < len(expected):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        if reply != expected:
            raise BenchError(f"line server answered {reply!r} to GET check")
        return
    for path in ("/", "/json"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            content_type = response.getheader("Content-Type", "")
        finally:
            conn.close()
        if path == "/":
            good = body == HELLO.encode() and content_type.startswith("text/plain")
        else:
            good = (content_type.startswith("application/json")
                    and json.loads(body or b"null") == JSON_BODY)
        if response.status != 200 or not good:
            raise BenchError(f"GET {path}: status {response.status}, {content_type!r}, "
                             f"body {body[:80]!r}")


@contextlib.contextmanager
def running_server(app: str, loop_name: str, wrapper: list[str] | None = None,
                   timeout: float = START_TIMEOUT) -> Iterator[Server]:
    """A ``--server`` subprocess (under ``wrapper``, e.g. valgrind) that answers correctly;
    stopped on the way out, whatever happens."""
    cmd = (wrapper or []) + [sys.executable, THIS, "--server", app, loop_name]
    with tempfile.TemporaryFile("w+") as err_file:
        # stderr to a file, so a chatty server (valgrind) never blocks on a full pipe.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True)
        try:
            assert proc.stdout is not None  # stdout=PIPE
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline() if ready else ""
            if not line:
                bench_echo._stop(proc)
                err_file.seek(0)
                text = err_file.read()
                why = bench_echo._server_problem(text) or "no port announced"
                raise BenchError(f"server did not start (exit {proc.returncode}): {why}",
                                 tail(text))
            info = json.loads(line)
            server = Server(proc, int(info["port"]), int(info["pid"]), err_file)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    check_answers(app, server.port, timeout)
                    break
                except ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
                except BenchError as exc:
                    raise BenchError(str(exc), tail(server.stderr_text())) from None
            server.check()
            yield server
        finally:
            bench_echo._stop(proc)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid``, all its threads, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
WRK_P99 = re.compile(r"^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
WRK_SOCKET_ERRORS = re.compile(r"Socket errors: (.*)")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
TO_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def run_wrk(url: str, conns: int, threads: int, seconds: int,
            timeout: int | None = None) -> dict[str, Any]:
    """One wrk run; its requests, duration, requests/s and p99 latency (us)."""
    cmd = ["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d", f"{seconds}s",
           "--latency", url] + (["--timeout", f"{timeout}s"] if timeout else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + GRACE,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish in {seconds + GRACE:g} s") from None
    out = proc.stdout
    requests, rps, p99 = WRK_REQUESTS.search(out), WRK_RPS.search(out), WRK_P99.search(out)
    if proc.returncode != 0 or not (requests and rps and p99):
        raise BenchError(f"wrk failed (exit {proc.returncode})", tail(out + proc.stderr))
    socket_errors, non_2xx = WRK_SOCKET_ERRORS.search(out), WRK_NON_2XX.search(out)
    if socket_errors:
        raise BenchError(f"wrk: socket errors: {socket_errors.group(1)}", tail(out))
    if non_2xx:
        raise BenchError(f"wrk: {non_2xx.group(1)} non-2xx/3xx responses", tail(out))
    return {"requests": int(requests.group(1)),
            "seconds": float(requests.group(2)) * TO_US[requests.group(3)] / 1e6,
            "rps": float(rps.group(1)),
            "p99_us": float(p99.group(1)) * TO_US[p99.group(2)]}


def measure_server(workload: Workload, loop_name: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    """One timed wrk run against a fresh server on ``loop_name``."""
    with running_server(workload.app, loop_name) as server:
        url = f"http://127.0.0.1:{server.port}{workload.path}"
        run_wrk(url, args.conns, args.threads, args.warmup)
        cpu0 = proc_cpu_seconds(server.pid)
        result = run_wrk(url, args.conns, args.threads, args.duration)
        cpu1 = proc_cpu_seconds(server.pid)
        server.check()
    result["cpu_s"] = cpu1 - cpu0
    result["cpu_us_per_req"] = result["cpu_s"] / result["requests"] * 1e6
    return result


def measure_client(workload: Workload, loop_name: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    """One client run on ``loop_name`` against a fresh server on FIXED_LOOP."""
    with running_server(workload.app, FIXED_LOOP) as server:
        cmd = [sys.executable, THIS, "--client", workload.name, loop_name,
               "--port", str(server.port), "--client-conns", str(args.client_conns),
               "--warmup", str(args.warmup), "--duration", str(args.duration)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  timeout=args.warmup + args.duration + GRACE)
        except subprocess.TimeoutExpired:
            raise BenchError("client did not finish in time") from None
        server.check()
    problem = bench_echo._server_problem(proc.stderr)
    if proc.returncode != 0 or problem or not proc.stdout.strip():
        raise BenchError(f"client: {problem or f'exit {proc.returncode}'}", tail(proc.stderr))
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["requests"] <= 0:
        raise BenchError("client completed no requests in its window")
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_us_per_req"] = result["cpu_s"] / result["requests"] * 1e6
    return result


def counted_window(server: Server, out_prefix: str, url: str, conns: int,
                   seconds: int) -> tuple[int, int]:
    """Zero the server's callgrind counters, run wrk, dump: (instructions, requests)."""
    before = set(glob.glob(f"{out_prefix}.*"))
    subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                   capture_output=True)
    requests: int = run_wrk(url, conns, 1, seconds, timeout=30)["requests"]
    time.sleep(SETTLE)
    subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                   capture_output=True)
    dumps = sorted(set(glob.glob(f"{out_prefix}.*")) - before)
    if not dumps:
        raise BenchError("callgrind wrote no dump")
    return callgrind_total(dumps[-1]), requests


def measure_instructions(workload: Workload, loop_name: str, args: argparse.Namespace,
                         workdir: str) -> dict[str, Any]:
    """User-space instructions per request of one server, from two callgrind windows."""
    out_prefix = os.path.join(workdir, f"callgrind.{workload.name}.{loop_name}")
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}.%p"]
    with running_server(workload.app, loop_name, wrapper, VALGRIND_START_TIMEOUT) as server:
        url = f"http://127.0.0.1:{server.port}{workload.path}"
        run_wrk(url, args.probe_conns, 1, PROBE_WARMUP, timeout=30)
        short = counted_window(server, out_prefix, url, args.probe_conns, args.window)
        long = counted_window(server, out_prefix, url, args.probe_conns, 3 * args.window)
        server.check()
    if long[1] <= short[1]:
        raise BenchError("the longer window completed no more requests")
    return {"short": {"instructions": short[0], "requests": short[1]},
            "long": {"instructions": long[0], "requests": long[1]},
            "per_request": (long[0] - short[0]) / (long[1] - short[1])}


def traced_by(pid: int, tracer: int) -> bool:
    """Whether every thread of ``pid`` is ptrace-attached by ``tracer``."""
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status, encoding="ascii") as fh:
            line = next((x for x in fh if x.startswith("TracerPid:")), "")
        if line.split()[1:] != [str(tracer)]:
            return False
    return True


def parse_strace_summary(text: str) -> dict[str, dict[str, int]]:
    """``strace -c`` table -> {syscall: {"calls": n, "errors": n}} (without the total)."""
    counts: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) not in (5, 6) or not re.fullmatch(r"[\d.]+", parts[0]):
            continue
        if parts[-1] != "total":
            counts[parts[-1]] = {"calls": int(parts[3]),
                                 "errors": int(parts[4]) if len(parts) == 6 else 0}
    return counts


def measure_syscalls(workload: Workload, loop_name: str, args: argparse.Namespace,
                     workdir: str) -> dict[str, Any]:
    """System calls per request of one server: strace attached across one wrk run."""
    out = os.path.join(workdir, f"strace.{workload.name}.{loop_name}")
    with running_server(workload.app, loop_name) as server:
        url = f"http://127.0.0.1:{server.port}{workload.path}"
        run_wrk(url, args.probe_conns, 1, PROBE_WARMUP)
        with tempfile.TemporaryFile("w+") as strace_err:
            tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(server.pid)],
                                      stdout=subprocess.DEVNULL, stderr=strace_err, text=True)
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while not traced_by(server.pid, tracer.pid):
                    if tracer.poll() is not None or time.monotonic() > deadline:
                        strace_err.seek(0)
                        raise BenchError("strace did not attach", tail(strace_err.read()))
                    time.sleep(0.05)
                wrk = run_wrk(url, args.probe_conns, 1, args.syscall_seconds, timeout=30)
                time.sleep(SETTLE)
            finally:
                tracer.send_signal(signal.SIGINT)  # detach and write the summary
                try:
                    tracer.wait(timeout=GRACE)
                except subprocess.TimeoutExpired:
                    tracer.kill()
                    tracer.wait()
        server.check()
    with open(out, encoding="utf-8") as fh:
        counts = parse_strace_summary(fh.read())
    if not counts:
        raise BenchError("strace wrote no summary")
    return {"requests": wrk["requests"], "counts": counts}


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def print_rows(title: str, rows: list[list[str]], left: int = 1) -> None:
    """A table: rows[0] is the header; the first ``left`` columns are left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(title)
    for index, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i < left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print()


def loop_columns(loops: list[str], values: dict[str, float | None], failed: Container[str],
                 fmt: Callable[[float], str]) -> list[str]:
    """The loops' cells (ERR for the ``failed`` ones), then turboloop/uvloop and /asyncio."""
    cells = []
    for name in loops:
        value = values.get(name)
        cells.append("ERR" if name in failed else "n/a" if value is None else fmt(value))
    tl = values.get("turboloop")
    return cells + [ratio(tl, values.get("uvloop")), ratio(tl, values.get("asyncio"))]


def ensure_tool(tool: str, package: str) -> bool:
    """Whether ``tool`` is on PATH, installing Debian's ``package`` when we are root."""
    if shutil.which(tool):
        return True
    if os.geteuid() != 0:
        print(f"{tool} is needed: apt-get install -y {package}", file=sys.stderr)
        return False
    print(f"{tool} is missing: apt-get install -y {package}", flush=True)
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(install, stdout=subprocess.DEVNULL, check=False)
    return shutil.which(tool) is not None


def wrk_version() -> str:
    """wrk's version, from the first line of ``wrk -v`` ("wrk 4.1.0 [epoll] ...")."""
    if shutil.which("wrk") is None:
        return "not installed"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    return (out.split() + ["?", "?"])[1]


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_timed(workloads: list[Workload], loops: list[str], args: argparse.Namespace,
              failures: dict[str, dict[str, BenchError]]) -> dict[str, dict[str, Any]]:
    """Interleaved rounds of every workload on every loop; medians and the samples."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        w.name: {name: [] for name in loops} for w in workloads}
    for rnd in range(args.rounds):
        shift = rnd % len(loops)
        for workload in workloads:
            for name in loops[shift:] + loops[:shift]:  # rotate: spread drift evenly
                if name in failures[workload.name]:
                    continue  # don't keep re-running a broken combination
                label = f"  [{rnd + 1}/{args.rounds}] {workload.name:14} {name:9}"
                try:
                    res = (measure_client if workload.client else measure_server)(
                        workload, name, args)
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    error = exc if isinstance(exc, BenchError) else BenchError(repr(exc))
                    failures[workload.name][name] = error
                    print(f"{label} ERROR {error}", flush=True)
                    continue
                samples[workload.name][name].append(res)
                who = "client" if workload.client else "server"
                p99 = "" if workload.client else f"  p99 {bench_echo.fmt_ms(res['p99_us']):>7}"
                print(f"{label} {fmt_rate(res['rps']):>7} req/s{p99}  {who} "
                      f"{res['cpu_us_per_req']:6.1f} us/req", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for workload in workloads:
        results[workload.name] = {}
        for name in loops:
            runs = samples[workload.name][name]
            entry: dict[str, Any] = {"samples": runs}
            for metric in ("rps", "p99_us", "cpu_us_per_req"):
                values = [r[metric] for r in runs if metric in r]
                entry[metric] = statistics.median(values) if values else None
            results[workload.name][name] = entry
    return results


def print_timed(workloads: list[Workload], loops: list[str], results: dict[str, dict[str, Any]],
                failures: dict[str, dict[str, BenchError]], rounds: int) -> None:
    head = loops + ["tl/uvloop", "tl/asyncio"]

    def values(workload: Workload, metric: str) -> dict[str, float | None]:
        return {name: results[workload.name].get(name, {}).get(metric) for name in loops}

    rows = [["workload"] + head] + [
        [w.name] + loop_columns(loops, values(w, "rps"), failures[w.name], fmt_rate)
        for w in workloads]
    print_rows(f"requests/s (median of {rounds}; higher is better, so are ratios above 1.00x)",
               rows)
    servers = [w for w in workloads if not w.client]
    if servers:
        rows = [["workload"] + head] + [
            [w.name] + loop_columns(loops, values(w, "p99_us"), failures[w.name], bench_echo.fmt_ms)
            for w in servers]
        print_rows("p99 latency, wrk (median of the runs' p99; lower is better, so are ratios "
                   "below 1.00x)", rows)
    rows = [["workload", "CPU of"] + head] + [
        [w.name, "client" if w.client else "server"]
        + loop_columns(loops, values(w, "cpu_us_per_req"), failures[w.name], bench_echo.fmt_us)
        for w in workloads]
    print_rows("CPU time per request (utime+stime in the timed window / requests, median; "
               "lower is better, so are ratios below 1.00x)", rows, left=2)


def run_probes(kind: str, workloads: list[Workload], loops: list[str], args: argparse.Namespace,
               failures: dict[str, dict[str, BenchError]]) -> dict[str, dict[str, Any]]:
    """``kind`` "instructions" or "syscalls": one measurement per server workload and loop."""
    measure = measure_instructions if kind == "instructions" else measure_syscalls
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix=f"turboloop-http-{kind}-") as workdir:
        for workload in workloads:
            results[workload.name] = {}
            for name in loops:
                label = f"  {workload.name:14} {name:9}"
                try:
                    res = measure(workload, name, args, workdir)
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    error = exc if isinstance(exc, BenchError) else BenchError(repr(exc))
                    failures[workload.name][name] = error
                    print(f"{label} ERROR {error}", flush=True)
                    continue
                results[workload.name][name] = res
                if kind == "instructions":
                    print(f"{label} {res['per_request']:11,.0f} instructions/request", flush=True)
                else:
                    total = sum(c["calls"] for c in res["counts"].values())
                    print(f"{label} {total / res['requests']:6.2f} syscalls/request "
                          f"({res['requests']} requests)", flush=True)
    return results


def print_instructions(workloads: list[Workload], loops: list[str],
                       results: dict[str, dict[str, Any]],
                       failures: dict[str, dict[str, BenchError]]) -> None:
    rows = [["workload"] + loops + ["tl/uvloop", "tl/asyncio"]]
    for w in workloads:
        values = {name: results[w.name][name]["per_request"] if name in results[w.name]
                  else None for name in loops}
        rows.append([w.name] + loop_columns(loops, values, failures[w.name],
                                            lambda v: f"{v:,.0f}"))
    print_rows("user-space instructions per request, callgrind (lower is better, so are ratios "
               "below 1.00x)", rows)


SYSCALL_KINDS = {
    "poll": ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select",
             "pselect6"),
    "receive": ("read", "readv", "recvfrom", "recvmsg", "recvmmsg"),
    "send": ("write", "writev", "sendto", "sendmsg", "sendmmsg"),
}
MINOR = 0.01  # syscalls per request below which a name joins the "other" row


def syscall_rows(loops: list[str], per_loop: dict[str, Any],
                 failed: Container[str]) -> list[list[str]]:
    """One workload's table: syscalls per request by name (failed ones apart), by kind, total."""
    def cells(row: dict[str, float]) -> list[str]:
        # 0 where a measured loop made no such call, n/a where the loop was not measured
        values = {name: row.get(name, 0.0) if name in per_loop else None for name in loops}
        return loop_columns(loops, values, failed, lambda v: f"{v:.3f}")

    by_name: dict[str, dict[str, float]] = {}
    by_kind: dict[str, dict[str, float]] = {kind: {} for kind in SYSCALL_KINDS}
    for name, res in per_loop.items():
        for call, count in res["counts"].items():
            calls, errors = count["calls"] / res["requests"], count["errors"] / res["requests"]
            by_name.setdefault(call, {})[name] = calls
            if errors:
                by_name.setdefault(f"{call} (failed)", {})[name] = errors
            for kind, members in SYSCALL_KINDS.items():
                if call in members:
                    by_kind[kind][name] = by_kind[kind].get(name, 0.0) + calls
    major = sorted((c for c in by_name if max(by_name[c].values()) >= MINOR),
                   key=lambda c: -max(by_name[c].values()))
    other: dict[str, float] = {}
    for call, row in by_name.items():
        if call not in major and not call.endswith(" (failed)"):
            for name, value in row.items():
                other[name] = other.get(name, 0.0) + value
    totals = {name: sum(c["calls"] for c in res["counts"].values()) / res["requests"]
              for name, res in per_loop.items()}
    rows = [["syscall"] + loops + ["tl/uvloop", "tl/asyncio"]]
    rows += [[call] + cells(by_name[call]) for call in major]
    rows.append([f"other (< {MINOR}/request each)"] + cells(other))
    rows += [[f"= {kind}: {'/'.join(m for m in members if m in by_name)}"] + cells(by_kind[kind])
             for kind, members in SYSCALL_KINDS.items()]
    rows.append(["total"] + cells(totals))
    return rows


def print_syscalls(workloads: list[Workload], loops: list[str],
                   results: dict[str, dict[str, Any]],
                   failures: dict[str, dict[str, BenchError]]) -> None:
    for w in workloads:
        print_rows(f"{w.name}: system calls per request, strace -f -c (lower is better, so are "
                   "ratios below 1.00x)", syscall_rows(loops, results[w.name], failures[w.name]))


def selection(text: str, known: list[str], what: str,
              parser: argparse.ArgumentParser) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    for name in chosen:
        if name not in known:
            parser.error(f"unknown {what} {name!r}; choose from {','.join(known)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated workloads (default: %(default)s)")
    parser.add_argument("--loops", default=",".join(LOOPS),
                        help="comma-separated loops (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="interleaved rounds, median reported (default %(default)s)")
    parser.add_argument("--duration", type=int, default=DURATION,
                        help="timed run, whole seconds (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=WARMUP,
                        help="untimed load before it, whole seconds (default %(default)s)")
    parser.add_argument("--conns", type=int, default=CONNS,
                        help="wrk connections (default %(default)s)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="wrk threads (default %(default)s)")
    parser.add_argument("--client-conns", type=int, default=CLIENT_CONNS,
                        help="connections / tasks of the client workloads (default %(default)s)")
    parser.add_argument("--instructions", action="store_true",
                        help="callgrind instructions per request of the server workloads")
    parser.add_argument("--syscalls", action="store_true",
                        help="strace system calls per request of the server workloads")
    parser.add_argument("--probe-conns", type=int, default=PROBE_CONNS,
                        help="wrk connections under callgrind / strace (default %(default)s)")
    parser.add_argument("--window", type=int, default=WINDOW,
                        help="first callgrind window, s; the second is 3x (default %(default)s)")
    parser.add_argument("--syscall-seconds", type=int, default=SYSCALL_SECONDS,
                        help="wrk run under strace, s (default %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write all raw figures to PATH")
    parser.add_argument("--server", nargs=2, metavar=("APP", "LOOP"), help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, metavar=("WORKLOAD", "LOOP"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.server:
        server_main(args.server[0], args.server[1])
        return 0
    if args.client:
        client_main(WORKLOADS[args.client[0]], args.client[1], args.port, args.client_conns,
                    args.warmup, args.duration)
        return 0

    workloads = [WORKLOADS[n] for n in selection(args.workloads, list(WORKLOADS), "workload",
                                                 parser)]
    loops = selection(args.loops, LOOPS, "loop", parser)
    probing = args.instructions or args.syscalls
    if probing:
        skipped = [w.name for w in workloads if w.client]
        if skipped:
            print(f"--instructions/--syscalls measure servers only; skipping {','.join(skipped)}")
        workloads = [w for w in workloads if not w.client]
    missing = sorted({m for w in workloads for m in MODULES[w.app]
                      if importlib.util.find_spec(m) is None})
    if missing:
        print(f"missing Python packages: python3 -m pip install {' '.join(missing)}",
              file=sys.stderr)
        return 1
    tools = [("wrk", "wrk")] if any(w.app != "line" for w in workloads) else []
    tools += [("valgrind", "valgrind"), ("callgrind_control", "valgrind")] \
        if args.instructions else []
    tools += [("strace", "strace")] if args.syscalls else []
    if not all(ensure_tool(tool, package) for tool, package in tools):
        return 1

    info = {name: bench_echo.probe(name)
            for name in set(loops) | ({FIXED_LOOP} if any(w.client for w in workloads)
                                      else set())}
    started = print_run_header()
    for name in loops:
        status = info[name]["version"] if info[name]["ok"] else f"n/a ({info[name]['error']})"
        print(f"{name + ':':10} {status}")
    print(f"libs:    aiohttp {dist_version('aiohttp')}, uvicorn {dist_version('uvicorn')}, "
          f"httptools {dist_version('httptools')}, wrk {wrk_version()}")
    if args.instructions:
        print(f"stat:    callgrind instructions per request, wrk -c {args.probe_conns}, over a "
              f"{args.window} s and a {3 * args.window} s window (their difference)")
    if args.syscalls:
        print(f"stat:    strace -f -c over a {args.syscall_seconds} s wrk run at "
              f"-c {args.probe_conns}, per request")
    if not probing:
        print(f"stat:    median of {args.rounds} interleaved round(s); wrk -t {args.threads} "
              f"-c {args.conns}, {args.warmup} s warm-up + {args.duration} s timed; client "
              f"workloads: {args.client_conns} connections, server on {FIXED_LOOP}")
    print(flush=True)
    if any(w.client for w in workloads) and not info[FIXED_LOOP]["ok"]:
        print(f"the client workloads' server needs {FIXED_LOOP}", file=sys.stderr)
        return 1

    available = [name for name in loops if info[name]["ok"]]
    stamps = {name: bench_echo.install_stamp(info[name]) for name in info if info[name]["ok"]}
    failures: dict[str, dict[str, BenchError]] = {w.name: {} for w in workloads}
    payload: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"), "python": platform.python_version(),
        "platform": platform.platform(), "nproc": nproc(), "loadavg_at_start": os.getloadavg(),
        "loops": info, "args": {k: v for k, v in vars(args).items()
                                if k not in ("server", "client", "port")}}
    t_start = time.perf_counter()
    if not probing:
        results = run_timed(workloads, available, args, failures)
        print()
        print_timed(workloads, loops, results, failures, args.rounds)
        payload["timed"] = results
    if args.instructions:
        results = run_probes("instructions", workloads, available, args, failures)
        print()
        print_instructions(workloads, loops, results, failures)
        payload["instructions"] = results
    if args.syscalls:
        results = run_probes("syscalls", workloads, available, args, failures)
        print()
        print_syscalls(workloads, loops, results, failures)
        payload["syscalls"] = results
    print(f"(ratios are turboloop / other; total bench time {time.perf_counter() - t_start:.1f}s)")

    for name, stamp in stamps.items():
        if bench_echo.install_stamp(info[name]) != stamp:
            print(f"WARNING: {name} was reinstalled during the run; its numbers mix builds")
    failed = [(w, name, exc) for w, per_loop in failures.items() for name, exc in per_loop.items()]
    if failed:
        print("\nFAILURES:")
        for workload_name, name, exc in failed:
            print(f"  {workload_name} on {name}: {exc}")
            for line in exc.detail.splitlines():
                print(f"      {line}")
    payload["failures"] = {w: {name: {"error": str(exc), "detail": exc.detail}
                               for name, exc in per_loop.items()}
                           for w, per_loop in failures.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
