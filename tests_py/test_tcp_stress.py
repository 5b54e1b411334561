"""TCP under load, on every loop of ``conftest.LOOP_NAMES``: no byte lost or reordered through an
echo pair under backpressure (protocols, streams and sock_* methods), and many concurrent
connections, a tenth of them reset at random, the others each served an echo.

Sizes are modest by default so that the file stays well under a minute in CI for all three loops;
``TURBOLOOP_STRESS=1`` runs the full sizes (1 GiB through each echo pair, 10,000 connections).
The many-connections clients run in a subprocess (``stress_client.py``), so that each process
needs one descriptor per connection, not two.
Every wait is bounded, so a loop that loses data or a wake-up fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import hashlib
import os
import json
import resource
import socket
import subprocess
import sys

import pytest
import stress_client
from chunk_stream import ChunkStream

STRESS = os.environ.get("TURBOLOOP_STRESS") == "1"
ECHO_BYTES = (1 << 30) if STRESS else (32 << 20)
CONNECTIONS = 10_000 if STRESS else 1_000
# Generous: the default sizes take well under a second per case on stock asyncio.
TIMEOUT = 900.0 if STRESS else 30.0

# Small write-buffer limits, so that pause_writing/resume_writing and drain() really engage.
HIGH, LOW = 16 * 1024, 4 * 1024

# The bytes every echo test sends, checksummed (see chunk_stream.py).
_STREAM = ChunkStream(20240501, (1, 7, 1000, 4096, 65_536, 65_537, 200_003, 262_144, 13))
chunks = _STREAM.chunks
expected_digest = _STREAM.digest


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(autouse=True)
def _longer_hang_guard():
    """conftest's guard exits after 120 s; stress-size runs may legitimately take longer."""
    if STRESS:
        faulthandler.dump_traceback_later(TIMEOUT + 120, exit=True)
    yield


# ----------------------------------------------------------------------------------------------
# 1. Echo integrity under backpressure
# ----------------------------------------------------------------------------------------------


class EchoServer(asyncio.Protocol):
    """Echoes everything; honours backpressure by pausing reading while its writes are paused."""

    def __init__(self, loop, log):
        self.hash = hashlib.sha256()
        self.received = 0
        self.log = log  # ("pause"/"resume", write buffer size) in order
        self.lost = loop.create_future()
        self.transport = None
        self.on_pause = None

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH, low=LOW)

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)
        self.transport.write(data)

    def eof_received(self):
        return None  # close() once everything echoed is flushed

    def pause_writing(self):
        self.log.append(("pause", self.transport.get_write_buffer_size()))
        self.transport.pause_reading()
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self):
        self.log.append(("resume", self.transport.get_write_buffer_size()))
        self.transport.resume_reading()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class EchoClient(asyncio.Protocol):
    """The test pauses its reading before writing, so that the server's writes back up, and
    resumes it when the server first pauses.  Both ends therefore go through pause/resume cycles.
    (Pausing after create_connection() returns, not in connection_made: uvloop ignores a
    pause_reading() made in connection_made; test_tcp.py checks that case on its own.)"""

    def __init__(self, loop):
        self.loop = loop
        self.hash = hashlib.sha256()
        self.received = 0
        self.log = []
        self.resumed = None
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH, low=LOW)

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)

    def pause_writing(self):
        self.log.append(("pause", self.transport.get_write_buffer_size()))
        self.resumed = self.loop.create_future()

    def resume_writing(self):
        self.log.append(("resume", self.transport.get_write_buffer_size()))
        self.resumed.set_result(None)
        self.resumed = None

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def check_flow_log(log, who):
    """pause_writing only above the high-water mark, resume_writing only at or below the low one,
    strictly alternating, starting with a pause; and backpressure happened at least once."""
    assert log, f"{who}: pause_writing was never called"
    for i, (event, size) in enumerate(log):
        assert event == ("pause" if i % 2 == 0 else "resume"), (who, log[: i + 1])
        if event == "pause":
            assert size > HIGH, (who, i, event, size)
        else:
            assert size <= LOW, (who, i, event, size)


def test_echo_integrity_protocols(loop):
    digest = expected_digest(ECHO_BYTES)

    async def main():
        server_log = []
        accepted = loop.create_future()

        def factory():
            proto = EchoServer(loop, server_log)
            accepted.set_result(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0)
        try:
            transport, client = await loop.create_connection(lambda: EchoClient(loop), *server.sockets[0].getsockname())
            srv = await asyncio.wait_for(accepted, 5)

            def start_reading():
                if not transport.is_closing() and not transport.is_reading():
                    transport.resume_reading()

            srv.on_pause = start_reading
            transport.pause_reading()
            try:
                sent = hashlib.sha256()
                for chunk in chunks(ECHO_BYTES):
                    if client.resumed is not None:
                        await client.resumed
                    transport.write(chunk)
                    sent.update(chunk)
                start_reading()  # in case the server never paused (that fails below)
                transport.write_eof()
                assert await asyncio.shield(srv.lost) is None
                assert await asyncio.shield(client.lost) is None
            finally:
                transport.abort()
                if accepted.done():
                    accepted.result().transport.abort()
                await asyncio.wait([client.lost] + ([srv.lost] if accepted.done() else []), timeout=5)
        finally:
            server.close()
            await server.wait_closed()

        assert sent.hexdigest() == digest
        assert (srv.received, srv.hash.hexdigest()) == (ECHO_BYTES, digest)
        assert (client.received, client.hash.hexdigest()) == (ECHO_BYTES, digest)
        check_flow_log(client.log, "client")
        check_flow_log(server_log, "server")

    run(loop, main())


def test_echo_integrity_streams(loop):
    digest = expected_digest(ECHO_BYTES)
    served = loop.create_future()

    async def handler(reader, writer):
        try:
            writer.transport.set_write_buffer_limits(high=HIGH, low=LOW)
            h = hashlib.sha256()
            n = worst = 0
            while data := await reader.read(65536):
                h.update(data)
                n += len(data)
                writer.write(data)
                await writer.drain()
                worst = max(worst, writer.transport.get_write_buffer_size())
            writer.write_eof()
            await writer.drain()
            served.set_result((n, h.hexdigest(), worst))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            served.set_exception(exc)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            try:
                writer.transport.set_write_buffer_limits(high=HIGH, low=LOW)

                async def send():
                    h = hashlib.sha256()
                    worst = 0
                    for chunk in chunks(ECHO_BYTES):
                        writer.write(chunk)
                        h.update(chunk)
                        await writer.drain()
                        worst = max(worst, writer.transport.get_write_buffer_size())
                    writer.write_eof()
                    return h.hexdigest(), worst

                async def receive():
                    h = hashlib.sha256()
                    n = 0
                    while data := await reader.read(65536):
                        h.update(data)
                        n += len(data)
                    return n, h.hexdigest()

                (sent_digest, send_worst), (received, received_digest) = await asyncio.gather(send(), receive())
                served_n, served_digest, serve_worst = await asyncio.shield(served)
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)

        assert sent_digest == digest
        assert (served_n, served_digest) == (ECHO_BYTES, digest)
        assert (received, received_digest) == (ECHO_BYTES, digest)
        # drain() returns only once the buffer is at or below the high-water mark
        assert send_worst <= HIGH, send_worst
        assert serve_worst <= HIGH, serve_worst

    run(loop, main())


def test_echo_integrity_sock_methods(loop):
    """sock_sendall / sock_recv (server side) / sock_recv_into (client side) on non-blocking
    sockets, with small kernel buffers so that sock_sendall really has to wait."""
    digest = expected_digest(ECHO_BYTES)

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.socket()
        socks = [listener, client]
        try:
            listener.setblocking(False)
            client.setblocking(False)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            accept = asyncio.ensure_future(loop.sock_accept(listener))
            await loop.sock_connect(client, listener.getsockname())
            conn, _ = await asyncio.wait_for(accept, 5)
            socks.append(conn)
            assert conn.gettimeout() == 0

            async def serve():
                h = hashlib.sha256()
                n = 0
                while data := await loop.sock_recv(conn, 65536):
                    h.update(data)
                    n += len(data)
                    await loop.sock_sendall(conn, data)
                conn.shutdown(socket.SHUT_WR)
                return n, h.hexdigest()

            async def send():
                h = hashlib.sha256()
                for i, chunk in enumerate(chunks(ECHO_BYTES)):
                    # bytes, bytearray and memoryview are all accepted
                    data = (chunk, bytearray(chunk), memoryview(chunk))[i % 3]
                    await loop.sock_sendall(client, data)
                    h.update(chunk)
                client.shutdown(socket.SHUT_WR)
                return h.hexdigest()

            async def receive():
                h = hashlib.sha256()
                buf = bytearray(100_000)
                view = memoryview(buf)
                n = 0
                while got := await loop.sock_recv_into(client, buf):
                    h.update(view[:got])
                    n += got
                return n, h.hexdigest()

            (served, served_digest), sent_digest, (received, received_digest) = await asyncio.gather(
                serve(), send(), receive()
            )
        finally:
            for sock in socks:
                sock.close()

        assert sent_digest == digest
        assert (served, served_digest) == (ECHO_BYTES, digest)
        assert (received, received_digest) == (ECHO_BYTES, digest)

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 5. Many concurrent connections
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def nofile_limit(needed):
    """Raise the RLIMIT_NOFILE soft limit to at least ``needed`` (up to the hard limit), restoring
    it afterwards; skip when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; RLIMIT_NOFILE hard limit is {hard}")
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        except (ValueError, OSError) as exc:
            pytest.skip(f"cannot raise RLIMIT_NOFILE soft limit to {needed}: {exc}")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


RESETS = CONNECTIONS // 10
SEED = 20240917


def test_many_concurrent_connections_with_resets(loop, loop_name):
    """CONNECTIONS clients (a subprocess on a loop of the same kind) all connected at once: the
    server sees them all live together and sends each a go byte.  Then a seeded random RESETS of
    them reset (SO_LINGER 0) before, while or after sending their message, and the others send
    theirs, half-close, and get it echoed.  The server survives with no error reported; it
    checksums what each clean connection sent, and counts connection_lost exactly: once per
    connection, with ConnectionError for the resets and None for the others."""
    n = CONNECTIONS
    # one descriptor per connection (the clients are in another process), plus headroom
    with nofile_limit(n + 256):
        run(loop, many_connections(loop, loop_name, n), timeout=TIMEOUT * 2 if STRESS else TIMEOUT)


class StressServer(asyncio.Protocol):
    """Echoes; sends the go byte to everyone once all connections are in; records its end."""

    def __init__(self, state):
        self.state = state
        self.hash = hashlib.sha256()
        self.received = 0
        self.head = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        state = self.state
        state["live"].append(self)
        state["peak"] = max(state["peak"], len(state["live"]))
        if len(state["live"]) == state["n"]:
            for proto in state["live"]:
                proto.transport.write(stress_client.GO)

    def data_received(self, data):
        if b"\n" not in self.head:
            self.head += data[:16]
        self.hash.update(data)
        self.received += len(data)
        self.transport.write(data)

    def eof_received(self):
        return None  # close once the echo is flushed

    def connection_lost(self, exc):
        state = self.state
        state["live"].remove(self)
        if exc is None:
            state["clean"][int(self.head.split(b"\n")[0])] = (self.received, self.hash.hexdigest())
        elif isinstance(exc, ConnectionError):
            state["reset"] += 1
        else:
            state["other"].append(exc)
        state["lost"] += 1
        if state["lost"] == state["n"]:
            state["done"].set_result(None)


async def many_connections(loop, loop_name, n):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    state = {"n": n, "live": [], "peak": 0, "clean": {}, "reset": 0, "other": [], "lost": 0}
    state["done"] = loop.create_future()
    server = await loop.create_server(lambda: StressServer(state), "127.0.0.1", 0, backlog=min(n, 4096))
    client = subprocess.Popen(
        [sys.executable, stress_client.__file__, loop_name, str(server.sockets[0].getsockname()[1])]
        + [str(n), str(SEED), str(RESETS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = await loop.run_in_executor(None, client.communicate, None, TIMEOUT)
        assert client.returncode == 0, err
        assert json.loads(out) == {"echoed": n - RESETS, "reset": RESETS, "bad": 0, "example": []}
        await asyncio.wait_for(asyncio.shield(state["done"]), 30)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        server.close()
        await server.wait_closed()

    assert state["peak"] == n
    assert state["lost"] == n
    assert state["other"] == []
    assert state["reset"] == RESETS
    reset = stress_client.resets(SEED, n, RESETS)
    assert sorted(state["clean"]) == [i for i in range(n) if i not in reset]
    for i, (received, digest) in state["clean"].items():
        data = stress_client.message(SEED, i)
        assert (received, digest) == (len(data), hashlib.sha256(data).hexdigest()), i
    assert contexts == []
