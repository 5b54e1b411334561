"""Soak: memory and descriptors stay flat over many operations of one kind (run by hand, and by
test_soak_memory.py at a CI-sized count).

    python tests_py/soak.py --kind tcp_proto --ops 1000000 [--loop turboloop|asyncio|uvloop]

Each kind sets up what it needs (an echo server and a client, a socket pair, ...), runs a warm-up
(allocator pools, caches, free lists, the first connections of a server), then the measured
operations in --checkpoints chunks. At the end of the warm-up and of every chunk, with nothing in
flight and after gc.collect(), it records:

* rss: the resident set size (/proc/self/statm), which sees everything, native allocations too;
* malloc: bytes in use by malloc (glibc's mallinfo2: in-use arena chunks plus mmapped chunks):
  native allocations and Python objects over 512 bytes, without the noise of RSS's pages;
* blocks: sys.getallocatedblocks(), the number of blocks Python's allocator holds: one more per
  operation for any object leaked per operation, tracked by gc or not (a bytes object is not);
* gc: the number of objects the garbage collector tracks (len(gc.get_objects()));
* fds: the number of open file descriptors (/proc/self/fd).

It prints a row per checkpoint, the growth of each from the end of the warm-up to the end and its
least-squares slope per operation, and exits 1 when a growth passes its bound (--json: one JSON
line at the end instead of the summary). The bounds, for N measured operations:

    fds: 0;  blocks and gc: 1,000 + N / 100;  malloc: 64 KiB + 4 bytes * N;  rss: 4 MiB + 16 bytes * N

so that one object leaked per operation (N more blocks) or 100 native bytes per operation (100 * N
more malloc) fails them once N passes about 1,000 (test_soak_memory.py checks both with
--self-test-leak),
while the bounded noise of a healthy process (caches filling, a list's spare capacity, a few
hundred blocks and a few KiB of malloc in practice) passes.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import resource
import socket
import struct
import sys
import tempfile
import time
from typing import Any, Callable

PAGE = resource.getpagesize()
MIB = 1024 * 1024


# -- measuring -------------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _mallinfo2() -> Callable[[], int] | None:
    try:
        libc = ctypes.CDLL(None)
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []

    def in_use() -> int:
        info = function()
        return int(info.uordblks + info.hblkhd)

    return in_use


_malloc_in_use = _mallinfo2()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


METRICS = ("rss", "malloc", "blocks", "gc", "fds")


def snapshot(ops: int, started: float) -> dict[str, Any]:
    for _ in range(3):
        gc.collect()
    return {
        "ops": ops,
        "seconds": time.perf_counter() - started,
        "rss": rss(),
        "malloc": _malloc_in_use() if _malloc_in_use is not None else 0,
        "blocks": sys.getallocatedblocks(),
        "gc": len(gc.get_objects()),
        "fds": open_fds(),
    }


def bounds(n: int) -> dict[str, float]:
    return {
        "fds": 0,
        "blocks": 1_000 + n / 100,
        "gc": 1_000 + n / 100,
        "malloc": 64 * 1024 + 4 * n,
        "rss": 4 * MIB + 16 * n,
    }


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


# -- shared protocols ----------------------------------------------------------------------------


class EchoServer(asyncio.Protocol):
    """Echoes what it gets; b"R" asks it to reset the connection instead. Counts live ones."""

    live = 0
    lost_with: dict[str, int] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        EchoServer.live += 1

    def data_received(self, data: bytes) -> None:
        if data == b"R":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        EchoServer.live -= 1
        name = type(exc).__name__ if exc is not None else "None"
        EchoServer.lost_with[name] = EchoServer.lost_with.get(name, 0) + 1
        self.transport = None


class PingClient(asyncio.Protocol):
    """Sends one message, waits for all of its echo, sends the next: strict ping-pong."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.size = len(message)
        self.got = 0
        self.remaining = 0
        self.done: asyncio.Future[None] | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def start(self, n: int, done: asyncio.Future[None]) -> None:
        self.remaining = n
        self.done = done
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got < self.size:
            return
        if self.got > self.size:
            raise AssertionError(f"got {self.got} bytes for a {self.size}-byte ping")
        self.got = 0
        self.remaining -= 1
        if self.remaining:
            self.transport.write(self.message)
        else:
            self.done.set_result(None)  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc or ConnectionError("lost before the last echo"))


# -- the kinds ----------------------------------------------------------------------------------


class Kind:
    """Setup, operations and teardown of one kind; run() does n operations, all complete."""

    description = ""
    default_size = 100

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.message = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        self.notes: dict[str, Any] = {}

    async def setup(self) -> None:
        pass

    async def run(self, n: int) -> None:
        raise NotImplementedError

    async def settle(self) -> None:
        """Wait until nothing is in flight (e.g. the server side of closed connections)."""

    async def teardown(self) -> None:
        pass


class _ProtoPair(Kind):
    unix = False

    async def setup(self) -> None:
        loop = self.loop
        if self.unix:
            self.tmp = tempfile.TemporaryDirectory()
            path = os.path.join(self.tmp.name, "echo.sock")
            self.server = await loop.create_unix_server(EchoServer, path)
            self.transport, self.client = await loop.create_unix_connection(lambda: PingClient(self.message), path)
        else:
            self.server = await loop.create_server(EchoServer, "127.0.0.1", 0)
            port = self.server.sockets[0].getsockname()[1]
            self.transport, self.client = await loop.create_connection(
                lambda: PingClient(self.message), "127.0.0.1", port
            )

    async def run(self, n: int) -> None:
        done = self.loop.create_future()
        self.client.start(n, done)
        await done

    async def teardown(self) -> None:
        self.transport.close()
        self.server.close()
        await self.server.wait_closed()
        await _until(lambda: EchoServer.live == 0)
        if self.unix:
            self.tmp.cleanup()


class TcpProto(_ProtoPair):
    description = "write + echo round trips over a TCP pair (protocols)"


class UnixProto(_ProtoPair):
    description = "write + echo round trips over a Unix socket pair (protocols)"
    unix = True


class TcpBulk(TcpProto):
    description = (
        "write + echo round trips of --size bytes (256 KiB unless given) over a TCP pair with 16 KiB "
        "socket buffers and small write-buffer limits: writes that queue, pause and resume (protocols)"
    )
    default_size = 256 * 1024

    async def setup(self) -> None:
        await super().setup()
        sock = self.transport.get_extra_info("socket")
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, 16 * 1024)
        self.transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        self.notes["peak_write_buffer"] = 0
        client, transport = self.client, self.transport
        received = client.data_received

        def data_received(data: bytes) -> None:
            received(data)
            self.notes["peak_write_buffer"] = max(self.notes["peak_write_buffer"], transport.get_write_buffer_size())

        client.data_received = data_received  # type: ignore[method-assign]


class _StreamPair(Kind):
    unix = False

    async def setup(self) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        if self.unix:
            self.tmp = tempfile.TemporaryDirectory()
            path = os.path.join(self.tmp.name, "echo.sock")
            self.server = await asyncio.start_unix_server(echo, path)
            self.reader, self.writer = await asyncio.open_unix_connection(path)
        else:
            self.server = await asyncio.start_server(echo, "127.0.0.1", 0)
            port = self.server.sockets[0].getsockname()[1]
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)

    async def run(self, n: int) -> None:
        reader, writer, message = self.reader, self.writer, self.message
        for _ in range(n):
            writer.write(message)
            await writer.drain()
            if await reader.readexactly(len(message)) != message:
                raise AssertionError("the echo differs from the message")

    async def teardown(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
        self.server.close()
        await self.server.wait_closed()
        if self.unix:
            self.tmp.cleanup()


class TcpStream(_StreamPair):
    description = "write + echo round trips over a TCP pair (streams)"


class UnixStream(_StreamPair):
    description = "write + echo round trips over a Unix socket pair (streams)"
    unix = True


class _OneShot(asyncio.Protocol):
    """A client connection: sends one message, and on its echo closes (or resets, or asks the
    server to reset); `lost` gets the outcome."""

    def __init__(self, message: bytes, mode: str, lost: asyncio.Future[Any]) -> None:
        self.message = message
        self.mode = mode
        self.lost = lost
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"R" if self.mode == "server_reset" else self.message)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got < len(self.message):
            return
        if self.mode == "client_reset":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.lost.set_result(type(exc).__name__ if exc is not None else "None")


class _Connections(Kind):
    modes: tuple[str, ...] = ("close",)
    concurrency = 8

    async def setup(self) -> None:
        self.server = await self.loop.create_server(EchoServer, "127.0.0.1", 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        self.count = 0
        self.notes["client_lost_with"] = {}
        self.notes["server_lost_with"] = EchoServer.lost_with

    async def one(self) -> None:
        mode = self.modes[self.count % len(self.modes)]
        self.count += 1
        lost = self.loop.create_future()
        await self.loop.create_connection(lambda: _OneShot(self.message, mode, lost), "127.0.0.1", self.port)
        outcome = await lost
        seen = self.notes["client_lost_with"]
        seen[f"{mode}:{outcome}"] = seen.get(f"{mode}:{outcome}", 0) + 1

    async def run(self, n: int) -> None:
        async def worker(k: int) -> None:
            for _ in range(k):
                await self.one()

        per, extra = divmod(n, self.concurrency)
        await asyncio.gather(*(worker(per + (i < extra)) for i in range(self.concurrency)))

    async def settle(self) -> None:
        await _until(lambda: EchoServer.live == 0)

    async def teardown(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        await self.settle()


class TcpConnect(_Connections):
    description = "TCP connections opened, one echo, closed by the client (8 at a time)"


class TcpReset(_Connections):
    description = (
        "TCP connections opened, then reset: in turn by the client after an echo (SO_LINGER 0 + "
        "abort) and by the server (8 at a time)"
    )
    modes = ("client_reset", "server_reset")


class ServerCycle(Kind):
    description = "create_server / close / wait_closed cycles (TCP, port 0)"

    async def run(self, n: int) -> None:
        for _ in range(n):
            server = await self.loop.create_server(EchoServer, "127.0.0.1", 0)
            server.close()
            await server.wait_closed()


class SockMethods(Kind):
    description = (
        "sock_sendall + sock_recv round trips over a TCP socket pair: a client and an echo task, "
        "each recv waiting for its data"
    )

    async def setup(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.a = socket.create_connection(listener.getsockname())
        self.b, _ = listener.accept()
        listener.close()
        for sock in (self.a, self.b):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.echo_task = asyncio.create_task(self.echo())

    async def recv_exactly(self, sock: socket.socket, n: int) -> bytes:
        data = await self.loop.sock_recv(sock, n)
        while len(data) < n:
            more = await self.loop.sock_recv(sock, n - len(data))
            if not more:
                raise ConnectionError("EOF in a round trip")
            data += more
        return data

    async def echo(self) -> None:
        # Waits in sock_recv() before each message arrives: the native reader path.
        loop, b = self.loop, self.b
        while data := await loop.sock_recv(b, 65536):
            await loop.sock_sendall(b, data)

    async def run(self, n: int) -> None:
        loop, a, message, size = self.loop, self.a, self.message, self.size
        for _ in range(n):
            await loop.sock_sendall(a, message)
            # The echo task has not run yet: this sock_recv() waits too.
            if await self.recv_exactly(a, size) != message:
                raise AssertionError("the echo differs from the message")

    async def teardown(self) -> None:
        self.a.shutdown(socket.SHUT_WR)
        await self.echo_task
        self.a.close()
        self.b.close()


class SockReady(SockMethods):
    description = (
        "sock_sendall + sock_recv round trips over a TCP socket pair, each recv finding its data "
        "already there (loopback delivers within send())"
    )

    async def setup(self) -> None:
        await super().setup()
        self.echo_task.cancel()
        try:
            await self.echo_task
        except asyncio.CancelledError:
            pass

    async def run(self, n: int) -> None:
        loop, a, b, message, size = self.loop, self.a, self.b, self.message, self.size
        for _ in range(n):
            await loop.sock_sendall(a, message)
            data = await self.recv_exactly(b, size)
            await loop.sock_sendall(b, data)
            if await self.recv_exactly(a, size) != message:
                raise AssertionError("the echo differs from the message")

    async def teardown(self) -> None:
        self.a.close()
        self.b.close()


class SockRecvCancelled(SockReady):
    description = "sock_recv calls left waiting (nothing to read), then cancelled, as a timeout does"

    async def run(self, n: int) -> None:
        loop, b = self.loop, self.b
        for _ in range(n):
            task = loop.create_task(loop.sock_recv(b, 100))
            await asyncio.sleep(0)  # the task starts and waits
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("sock_recv() returned data nobody sent")


class _Subprocess(Kind):
    pipes = False

    async def run(self, n: int) -> None:
        pipe = asyncio.subprocess.PIPE if self.pipes else None
        for _ in range(n):
            process = await asyncio.create_subprocess_exec("true", stdin=pipe, stdout=pipe, stderr=pipe)
            if self.pipes:
                out, err = await process.communicate()
                if out or err:
                    raise AssertionError(f"`true` wrote {out!r} {err!r}")
            else:
                await process.wait()
            if process.returncode != 0:
                raise AssertionError(f"`true` exited with {process.returncode}")


class Subprocess(_Subprocess):
    description = "spawn + wait of `true` (asyncio.create_subprocess_exec, no pipes)"


class SubprocessPipes(_Subprocess):
    description = "spawn + communicate of `true` with stdin, stdout and stderr PIPEs"
    pipes = True


class UdpEchoServer(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class UdpPing(asyncio.DatagramProtocol):
    def __init__(self, message: bytes) -> None:
        self.message = message
        self.remaining = 0
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def start(self, n: int, done: asyncio.Future[None]) -> None:
        self.remaining = n
        self.done = done
        self.transport.sendto(self.message)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) != len(self.message):
            raise AssertionError(f"a {len(data)}-byte echo of a {len(self.message)}-byte datagram")
        self.remaining -= 1
        if self.remaining:
            self.transport.sendto(self.message)
        else:
            self.done.set_result(None)  # type: ignore[union-attr]

    def error_received(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)


class Udp(Kind):
    description = "sendto + datagram_received round trips between two UDP endpoints"

    async def setup(self) -> None:
        self.server_transport, _ = await self.loop.create_datagram_endpoint(
            UdpEchoServer, local_addr=("127.0.0.1", 0)
        )
        address = self.server_transport.get_extra_info("sockname")
        self.transport, self.client = await self.loop.create_datagram_endpoint(
            lambda: UdpPing(self.message), remote_addr=address
        )

    async def run(self, n: int) -> None:
        done = self.loop.create_future()
        self.client.start(n, done)
        # Loopback drops nothing in a strict ping-pong; a lost datagram would stall here, so fail
        # rather than hang.
        await asyncio.wait_for(done, timeout=max(60.0, n / 1000))

    async def teardown(self) -> None:
        self.transport.close()
        self.server_transport.close()
        await asyncio.sleep(0)


KINDS: dict[str, type[Kind]] = {
    "tcp_proto": TcpProto,
    "tcp_stream": TcpStream,
    "tcp_bulk": TcpBulk,
    "unix_proto": UnixProto,
    "unix_stream": UnixStream,
    "tcp_connect": TcpConnect,
    "tcp_reset": TcpReset,
    "server_cycle": ServerCycle,
    "sock": SockMethods,
    "sock_ready": SockReady,
    "sock_recv_cancelled": SockRecvCancelled,
    "subprocess": Subprocess,
    "subprocess_pipes": SubprocessPipes,
    "udp": Udp,
}


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the other side did not settle")
        await asyncio.sleep(0.001)


class _LeakyKind(Kind):
    """Wraps a kind and leaks `leak` bytes per operation: a bytes object kept in a list
    ("python"), or a malloc() block never freed ("native"). The detector's own sensitivity
    check, never a mode to soak with."""

    def __init__(self, inner: Kind, leak: int, how: str) -> None:
        super().__init__(inner.loop, inner.size)
        self.inner = inner
        self.leak = leak
        self.how = how
        self.kept: list[bytes] = []
        self.notes = inner.notes
        if how == "native":
            self.malloc = ctypes.CDLL(None).malloc
            self.malloc.restype = ctypes.c_void_p
            self.malloc.argtypes = [ctypes.c_size_t]

    async def setup(self) -> None:
        await self.inner.setup()

    async def run(self, n: int) -> None:
        await self.inner.run(n)
        if self.how == "native":
            for _ in range(n):
                self.malloc(self.leak)
        else:
            self.kept.extend(b"%*d" % (self.leak, len(self.kept) + i) for i in range(n))

    async def settle(self) -> None:
        await self.inner.settle()

    async def teardown(self) -> None:
        await self.inner.teardown()


# -- the run --------------------------------------------------------------------------------------


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "turboloop":
        import turboloop

        return turboloop.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    raise ValueError(f"unknown loop {name!r}")


async def soak(
    kind_name: str,
    ops: int,
    warmup: int,
    checkpoints: int,
    size: int,
    report: Callable[[dict[str, Any]], None],
    leak: int = 0,
    leak_how: str = "python",
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    kind: Kind = KINDS[kind_name](loop, size)
    if leak:
        kind = _LeakyKind(kind, leak, leak_how)
    started = time.perf_counter()
    await kind.setup()
    await kind.run(warmup)
    await kind.settle()
    rows = [snapshot(0, started)]
    report(rows[0])
    measured_since = time.perf_counter()
    done = 0
    for i in range(checkpoints):
        n = (ops - done) // (checkpoints - i)
        await kind.run(n)
        done += n
        await kind.settle()
        rows.append(snapshot(done, started))
        report(rows[-1])
    seconds = time.perf_counter() - measured_since
    await kind.teardown()
    after_teardown = snapshot(done, started)
    return {"rows": rows, "seconds": seconds, "after_teardown": after_teardown, "notes": kind.notes}


def verdict(rows: list[dict[str, Any]], ops: int) -> tuple[dict[str, Any], list[str]]:
    first, last = rows[0], rows[-1]
    limit = bounds(ops)
    growth = {m: last[m] - first[m] for m in METRICS}
    slopes = {m: slope([(r["ops"], r[m]) for r in rows]) for m in METRICS}
    failures = [
        f"{m} grew by {growth[m]:,} after the warm-up (bound {limit[m]:,.0f} for {ops:,} operations)"
        for m in METRICS
        if growth[m] > limit[m]
    ]
    return {"growth": growth, "slope_per_op": slopes, "bounds": limit}, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--ops", type=int, default=100_000, help="measured operations, after the warm-up")
    parser.add_argument("--warmup", type=int, help="warm-up operations (default: a tenth of --ops, 1,000 to 100,000)")
    parser.add_argument("--loop", default="turboloop", choices=("turboloop", "asyncio", "uvloop"))
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--size", type=int, help="message size in bytes (transports, sock_*, UDP; default 100, tcp_bulk 256 KiB)")
    parser.add_argument("--self-test-leak", type=int, default=0, metavar="BYTES",
                        help="leak BYTES bytes per operation, to see the check fail")
    parser.add_argument("--self-test-leak-how", choices=("python", "native"), default="python",
                        help="leak a bytes object kept in a list, or a malloc() block never freed")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end instead of a summary")
    args = parser.parse_args(argv)
    if args.ops < args.checkpoints or args.checkpoints < 1:
        parser.error("--ops must be at least --checkpoints, which must be at least 1")
    warmup = args.warmup if args.warmup is not None else min(100_000, max(1_000, args.ops // 10))
    factory = loop_factory(args.loop)
    size = args.size if args.size is not None else KINDS[args.kind].default_size

    def report(row: dict[str, Any]) -> None:
        if args.json:
            return
        print(
            f"{row['ops']:>10,} ops {row['seconds']:8.1f} s  rss {row['rss'] / MIB:8.2f} MiB  "
            f"malloc {row['malloc'] / MIB:8.2f} MiB  blocks {row['blocks']:>9,}  gc {row['gc']:>8,}  "
            f"fds {row['fds']:>4}",
            flush=True,
        )

    if not args.json:
        print(f"{args.kind} on {args.loop}: {KINDS[args.kind].description}; {warmup:,} warm-up, then {args.ops:,}", flush=True)
    start_rss = rss()
    start_fds = open_fds()
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(
            soak(args.kind, args.ops, warmup, args.checkpoints, size, report, args.self_test_leak, args.self_test_leak_how)
        )
    summary, failures = verdict(result["rows"], args.ops)
    gc.collect()
    end_fds = open_fds()
    if end_fds > start_fds:
        failures.append(f"{end_fds - start_fds} descriptors left open after the loop closed")
    out = {
        "kind": args.kind,
        "loop": args.loop,
        "ops": args.ops,
        "warmup": warmup,
        "ops_per_second": args.ops / result["seconds"],
        "rss_start": start_rss,
        "rss_after_warmup": result["rows"][0]["rss"],
        "rss_end": result["rows"][-1]["rss"],
        "fds_start": start_fds,
        "fds_after_warmup": result["rows"][0]["fds"],
        "fds_end": result["rows"][-1]["fds"],
        "fds_after_close": end_fds,
        "notes": result["notes"],
        "failures": failures,
        **summary,
        "rows": result["rows"],
    }
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        g, s = summary["growth"], summary["slope_per_op"]
        print(
            f"{args.ops:,} ops in {result['seconds']:.1f} s ({out['ops_per_second']:,.0f}/s); "
            f"RSS {start_rss / MIB:.1f} MiB at start, {out['rss_after_warmup'] / MIB:.1f} after the warm-up, "
            f"{out['rss_end'] / MIB:.1f} at the end"
        )
        print(
            "growth after the warm-up: "
            + ", ".join(f"{m} {g[m]:+,} ({s[m]:+.4f}/op)" for m in METRICS)
        )
        print(f"fds: {start_fds} at start, {out['fds_after_warmup']} after the warm-up, {out['fds_end']} at the end, "
              f"{end_fds} after the loop closed")
        if result["notes"]:
            print(f"notes: {result['notes']}")
        print("FAIL: " + "; ".join(failures) if failures else "OK: flat")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
