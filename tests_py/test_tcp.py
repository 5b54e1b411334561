"""TCP and Unix-socket behaviour every loop must share, checked against stock asyncio (Python 3.11).

Every test runs on each loop of ``conftest.LOOP_NAMES``; the ``asyncio`` case proves each
expectation.  Where uvloop is known to differ, the uvloop case alone is a non-strict xfail.  The
high-volume tests (echo integrity under backpressure, many concurrent connections) are in
``test_tcp_stress.py``.

Every wait is bounded (``asyncio.wait_for`` or a ``timeout=`` on ``asyncio.wait``), so a loop that
loses a callback fails the test rather than hanging it.  Everything a test opens is closed before
it ends: pytest runs with ``filterwarnings = error``, so an unclosed transport or socket fails.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import contextvars
import errno
import logging
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import uuid
from asyncio import selector_events

import pytest

TIMEOUT = 10.0  # seconds, for any single test's coroutine
LINGER_0 = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def run(loop, coro, timeout=TIMEOUT):
    """Run ``coro`` on ``loop``, failing (not hanging) after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def settle(futures, timeout=5.0):
    """Wait (bounded) for ``futures`` without raising: used in clean-up, so it never masks the
    test's own failure."""
    futures = [f for f in futures if f is not None]
    if futures:
        await asyncio.wait(futures, timeout=timeout)


def expect(exc_type, message, exc):
    assert type(exc) is exc_type, repr(exc)
    assert str(exc) == message


# ----------------------------------------------------------------------------------------------
# Protocols and helpers
# ----------------------------------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    """Records the callbacks a transport makes, in order (consecutive data_received merged)."""

    def __init__(self, loop, eof_result=None):
        self.loop = loop
        self.events: list[str] = []
        self.data = bytearray()
        self.transport = None
        self.eof_result = eof_result
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.data_waiters: list[tuple[int, asyncio.Future]] = []
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes), type(data)
        self.data += data
        if self.events[-1:] != ["data"]:
            self.events.append("data")
        for n, fut in self.data_waiters:
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.paused = True
        self.pauses += 1

    def resume_writing(self):
        self.paused = False
        self.resumes += 1

    async def wait_for_data(self, n, timeout=5.0):
        if len(self.data) < n:
            fut = self.loop.create_future()
            self.data_waiters.append((n, fut))
            await asyncio.wait_for(fut, timeout)
        return bytes(self.data)


@contextlib.asynccontextmanager
async def tcp_pair(loop, client_factory=Recorder, server_factory=Recorder, host="127.0.0.1"):
    """A server with one accepted connection: yields (server, client protocol, server protocol).

    Both transports are aborted (if still open) and the server closed on the way out, and the
    loop runs until both connection_lost callbacks ran (bounded), so nothing is left unclosed.
    """
    accepted = loop.create_future()

    def factory():
        proto = server_factory(loop)
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(factory, host, 0)
    client = None
    try:
        port = server.sockets[0].getsockname()[1]
        _, client = await loop.create_connection(lambda: client_factory(loop), host, port)
        srv = await asyncio.wait_for(accepted, 5)
        await asyncio.wait_for(srv.made, 5)
        yield server, client, srv
    finally:
        protos = [client, accepted.result() if accepted.done() else None]
        for proto in protos:
            if proto is not None and proto.transport is not None and not proto.lost.done():
                proto.transport.abort()
        await settle([p.lost for p in protos if p is not None])
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def flood_until_paused(transport, proto, limit=64 << 20):
    """Write 64 KiB chunks until the protocol is paused (the peer is not reading)."""
    chunk = b"\xa5" * 65536
    written = 0
    while not proto.paused and written < limit:
        transport.write(chunk)
        written += len(chunk)
    assert proto.paused, f"pause_writing never called after {written} bytes"
    return written


@pytest.fixture
def short_dir():
    """A short directory for Unix socket paths (sun_path holds only 108 bytes)."""
    path = tempfile.mkdtemp(prefix="tl", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 2. Peer reset mid-write
# ----------------------------------------------------------------------------------------------


def test_peer_reset_while_protocol_is_writing(loop):
    """The writer's connection_lost gets ConnectionResetError (not None), and the loop's exception
    handler is not called (asyncio only logs OSError at debug level)."""
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

    async def main():
        accepted = loop.create_future()

        def factory():
            proto = Recorder(loop)
            accepted.set_result(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            proto = await asyncio.wait_for(accepted, 5)
            await asyncio.wait_for(proto.made, 5)
            proto.transport.set_write_buffer_limits(high=65536)
            await flood_until_paused(proto.transport, proto)
            assert proto.transport.get_write_buffer_size() > 0
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            assert client.recv(4096)  # the peer reads a little, then resets
            client.close()
            exc = await asyncio.wait_for(asyncio.shield(proto.lost), 5)
            assert isinstance(exc, ConnectionResetError), repr(exc)
            assert proto.transport.is_closing()
            assert proto.events == ["made", "lost"]
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    run(loop, main())
    assert handled == []


def test_peer_reset_while_stream_drains(loop):
    """StreamWriter.drain() raises ConnectionResetError when the peer resets mid-write."""
    outcome = loop.create_future()
    started = loop.create_future()

    async def handler(reader, writer):
        writer.transport.set_write_buffer_limits(high=65536)
        try:
            started.set_result(None)
            for _ in range(10_000):  # 640 MiB at most: far more than the kernel buffers hold
                writer.write(b"\x5a" * 65536)
                await writer.drain()
            outcome.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcome.set_result(exc)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            await asyncio.wait_for(started, 5)
            await asyncio.sleep(0.05)  # let the writer fill the buffers and wait in drain()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            assert client.recv(4096)
            client.close()
            exc = await asyncio.wait_for(asyncio.shield(outcome), 5)
            assert isinstance(exc, ConnectionResetError), repr(exc)
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)  # let the handler's transport run connection_lost

    run(loop, main())


def test_peer_reset_while_stream_reads(loop):
    """StreamReader.read() raises ConnectionResetError when the idle peer resets."""
    outcome = loop.create_future()
    started = loop.create_future()

    async def handler(reader, writer):
        try:
            started.set_result(None)
            outcome.set_result(await reader.read(100))
        except BaseException as exc:  # noqa: BLE001
            outcome.set_result(exc)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            await asyncio.wait_for(started, 5)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            client.close()
            exc = await asyncio.wait_for(asyncio.shield(outcome), 5)
            assert isinstance(exc, ConnectionResetError), repr(exc)
            assert exc.errno == errno.ECONNRESET
        finally:
            client.close()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)

    run(loop, main())


def test_peer_reset_during_sock_recv_and_sock_sendall(loop):
    """sock_recv raises ConnectionResetError on reset; so does a sock_sendall that was waiting."""

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        socks = [listener]
        try:
            # sock_recv on an idle connection
            client = socket.create_connection(listener.getsockname())
            socks.append(client)
            conn, _ = await loop.sock_accept(listener)
            socks.append(conn)
            assert conn.gettimeout() == 0  # sock_accept returns a non-blocking socket
            recv = asyncio.ensure_future(loop.sock_recv(conn, 100))
            await asyncio.sleep(0.02)
            assert not recv.done()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            client.close()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(recv, 5)

            # sock_sendall blocked on a full send buffer
            client = socket.create_connection(listener.getsockname())
            socks.append(client)
            conn, _ = await loop.sock_accept(listener)
            socks.append(conn)
            send = asyncio.ensure_future(loop.sock_sendall(conn, bytes(64 << 20)))
            await asyncio.sleep(0.05)
            assert not send.done()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            assert client.recv(4096)
            client.close()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(send, 5)
        finally:
            for sock in socks:
                sock.close()

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 3. Half-close
# ----------------------------------------------------------------------------------------------


def test_half_close_keep_open_and_reply(loop):
    """Client write_eof(); the server's eof_received returns True, so the server can still write;
    it replies and closes; the client sees data, eof_received, connection_lost(None)."""

    async def main():
        async with tcp_pair(loop, server_factory=lambda lp: Recorder(lp, eof_result=True)) as (_, cli, srv):
            ctr, st = cli.transport, srv.transport
            assert ctr.can_write_eof() is True
            assert st.can_write_eof() is True
            ctr.write(b"question")
            ctr.write_eof()
            assert not ctr.is_closing()
            ctr.write_eof()  # a second write_eof is a no-op
            with pytest.raises(RuntimeError) as info:
                ctr.write(b"more")
            expect(RuntimeError, "Cannot call write() after write_eof()", info.value)

            await asyncio.wait_for(asyncio.shield(srv.eof), 5)
            assert bytes(srv.data) == b"question"
            assert srv.events == ["made", "data", "eof"]
            assert not st.is_closing()  # eof_received returned True: still open for writing
            await asyncio.sleep(0.02)
            assert not srv.lost.done()

            st.write(b"answer")
            st.close()
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert await asyncio.wait_for(asyncio.shield(srv.lost), 5) is None
            assert bytes(cli.data) == b"answer"
            assert cli.events == ["made", "data", "eof", "lost"]
            assert srv.events == ["made", "data", "eof", "lost"]

    run(loop, main())


def test_half_close_falsy_eof_received_closes(loop):
    """eof_received returning None closes the transport: connection_lost(None) follows eof."""

    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            cli.transport.write_eof()
            assert await asyncio.wait_for(asyncio.shield(srv.lost), 5) is None
            assert srv.events == ["made", "eof", "lost"]
            assert srv.transport.is_closing()
            # the server's close reaches the half-closed client as EOF
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert cli.events == ["made", "eof", "lost"]

    run(loop, main())


def test_write_eof_flushes_buffered_data_first(loop):
    """write_eof() with data still buffered: the peer gets every byte, then EOF."""
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB

    async def main():
        async with tcp_pair(loop, server_factory=lambda lp: Recorder(lp, eof_result=True)) as (_, cli, srv):
            srv.transport.pause_reading()
            cli.transport.write(payload)
            cli.transport.write_eof()
            assert cli.transport.get_write_buffer_size() > 0  # it could not all go at once
            await asyncio.sleep(0.01)
            srv.transport.resume_reading()
            await asyncio.wait_for(asyncio.shield(srv.eof), 5)
            assert bytes(srv.data) == payload
            assert srv.events == ["made", "data", "eof"]
            assert cli.transport.get_write_buffer_size() == 0

    run(loop, main())


def test_streams_half_close(loop):
    """Streams: write_eof() from the client; the handler reads to EOF, replies, closes."""
    served = loop.create_future()

    async def handler(reader, writer):
        try:
            data = await reader.read()
            assert reader.at_eof()
            writer.write(data[::-1])
            await writer.drain()
            served.set_result(data)
        except BaseException as exc:  # noqa: BLE001
            served.set_exception(exc)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            try:
                assert writer.can_write_eof()
                writer.write(b"abcdef")
                writer.write_eof()
                assert await asyncio.wait_for(asyncio.shield(served), 5) == b"abcdef"
                assert await reader.read() == b"fedcba"
                assert reader.at_eof()
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 4. Server lifecycle
# ----------------------------------------------------------------------------------------------


async def assert_refused(host, port):
    with pytest.raises(ConnectionRefusedError):
        _, writer = await asyncio.open_connection(host, port)
        writer.close()


# From 3.12, Server.wait_closed() waits for the server's connections to close as well.
WAIT_CLOSED_WAITS_FOR_CONNECTIONS = sys.version_info >= (3, 12)


@pytest.mark.uvloop_xfail("uvloop's wait_closed() does not wait for the server's connections (asyncio 3.12+ does)")
def test_server_close_keeps_live_connections(loop):
    """close() stops listening (new connections refused, sockets empty, is_serving False) but an
    accepted connection keeps working; wait_closed() returns at once on 3.11, and from 3.12 on once
    the connection is closed too."""

    async def handler(reader, writer):
        try:
            while data := await reader.read(100):
                writer.write(data.upper())
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        assert len(server.sockets) == 1
        assert server.sockets[0].family == socket.AF_INET
        assert server.is_serving()
        assert server.get_loop() is loop
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"one")
            assert await asyncio.wait_for(reader.read(100), 5) == b"ONE"

            server.close()
            assert not server.is_serving()
            assert len(server.sockets) == 0
            closed = asyncio.ensure_future(server.wait_closed())
            if WAIT_CLOSED_WAITS_FOR_CONNECTIONS:
                await asyncio.sleep(0.1)
                assert not closed.done()
            else:
                await asyncio.wait_for(closed, 2)
            await assert_refused(host, port)

            writer.write(b"two")
            assert await asyncio.wait_for(reader.read(100), 5) == b"TWO"
            server.close()  # idempotent
        finally:
            writer.close()
            await writer.wait_closed()
        await asyncio.wait_for(closed, 2)
        await asyncio.sleep(0.01)

    run(loop, main())


def test_serve_forever_cancellation_closes_server(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert not task.done()
        assert server.is_serving()

        with pytest.raises(RuntimeError) as info:
            await server.serve_forever()
        assert re.fullmatch(r"server .* is already being awaited on serve_forever\(\)", str(info.value))

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert not server.is_serving()
        assert len(server.sockets) == 0
        await assert_refused(host, port)

        with pytest.raises(RuntimeError) as info:
            await server.serve_forever()
        assert re.fullmatch(r"server .* is closed", str(info.value))

    run(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
        assert not server.is_serving()
        assert len(server.sockets) == 0
        await assert_refused(host, port)
        await asyncio.sleep(0.01)

    run(loop, main())


def test_start_serving_false_then_start_serving(loop):
    """With start_serving=False the socket is bound but not listening (connect is refused);
    start_serving() starts it, and a second call is harmless."""

    async def main():
        made = loop.create_future()

        class P(asyncio.Protocol):
            def connection_made(self, transport):
                made.set_result(transport)

        server = await loop.create_server(P, "127.0.0.1", 0, start_serving=False)
        try:
            assert not server.is_serving()
            assert len(server.sockets) == 1
            host, port = server.sockets[0].getsockname()
            assert port != 0
            await assert_refused(host, port)

            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()
            assert server.is_serving()
            _, writer = await asyncio.open_connection(host, port)
            transport = await asyncio.wait_for(made, 5)
            writer.close()
            await writer.wait_closed()
            transport.close()
            await asyncio.sleep(0.01)
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 6. Transport API
# ----------------------------------------------------------------------------------------------


def test_get_extra_info_and_nodelay(loop):
    """socket / sockname / peername on both ends agree with the socket module, and asyncio sets
    TCP_NODELAY on both the connecting and the accepted socket."""

    async def main():
        async with tcp_pair(loop) as (server, cli, srv):
            listen_addr = server.sockets[0].getsockname()
            ctr, st = cli.transport, srv.transport
            csock, ssock = ctr.get_extra_info("socket"), st.get_extra_info("socket")
            for sock in (csock, ssock):
                assert sock.family == socket.AF_INET
                assert sock.type == socket.SOCK_STREAM
                assert sock.fileno() >= 0
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert ctr.get_extra_info("peername") == listen_addr
            assert st.get_extra_info("sockname") == listen_addr
            assert ctr.get_extra_info("sockname") == csock.getsockname()
            assert st.get_extra_info("peername") == ctr.get_extra_info("sockname")
            assert csock.getpeername() == listen_addr
            assert ctr.get_extra_info("no-such-key") is None
            assert ctr.get_extra_info("no-such-key", "dflt") == "dflt"

    run(loop, main())


def test_pause_and_resume_reading(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            ctr = cli.transport
            assert ctr.is_reading()
            ctr.pause_reading()
            assert not ctr.is_reading()
            ctr.pause_reading()  # idempotent since 3.7
            assert not ctr.is_reading()
            srv.transport.write(b"held back")
            await asyncio.sleep(0.05)
            assert cli.data == b""
            ctr.resume_reading()
            assert ctr.is_reading()
            ctr.resume_reading()
            assert await cli.wait_for_data(9) == b"held back"
            ctr.close()
            assert ctr.is_closing()
            assert not ctr.is_reading()
            ctr.pause_reading()  # no-ops on a closing transport
            ctr.resume_reading()
            assert not ctr.is_reading()
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert cli.events == ["made", "data", "lost"]

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop starts reading after connection_made, undoing its pause_reading()")
def test_pause_reading_in_connection_made(loop):
    class PausedAtStart(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        async with tcp_pair(loop, client_factory=PausedAtStart, server_factory=PausedAtStart) as (_, cli, srv):
            assert not cli.transport.is_reading()
            assert not srv.transport.is_reading()
            srv.transport.write(b"to client")
            cli.transport.write(b"to server")
            await asyncio.sleep(0.05)
            assert (cli.data, srv.data) == (b"", b"")
            cli.transport.resume_reading()
            srv.transport.resume_reading()
            assert await cli.wait_for_data(9) == b"to client"
            assert await srv.wait_for_data(9) == b"to server"

    run(loop, main())


def test_close_is_closing_and_connection_lost_once(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            ctr = cli.transport
            assert not ctr.is_closing()
            ctr.write(b"bye")
            ctr.close()
            assert ctr.is_closing()
            ctr.close()  # idempotent
            assert not cli.lost.done()  # connection_lost is never called synchronously
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert await asyncio.wait_for(asyncio.shield(srv.lost), 5) is None
            assert bytes(srv.data) == b"bye"  # close() flushes what was written
            await asyncio.sleep(0.02)
            assert cli.events == ["made", "lost"]
            assert srv.events == ["made", "data", "eof", "lost"]

    run(loop, main())


def test_abort_discards_buffer(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            srv.transport.pause_reading()
            ctr = cli.transport
            ctr.set_write_buffer_limits(high=65536)
            await flood_until_paused(ctr, cli)
            assert ctr.get_write_buffer_size() > 65536
            ctr.abort()
            assert ctr.is_closing()
            assert not cli.lost.done()
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert ctr.get_write_buffer_size() == 0
            assert cli.events == ["made", "lost"]
            srv.transport.resume_reading()
            # the peer's connection ends (EOF, or a reset if it had unread data)
            exc = await asyncio.wait_for(asyncio.shield(srv.lost), 5)
            assert exc is None or isinstance(exc, ConnectionResetError), repr(exc)

    run(loop, main())


def test_writelines_and_mixed_buffer_types(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            ctr = cli.transport
            ctr.writelines([b"ab", bytearray(b"cd"), memoryview(b"efgh")[1:3], b""])
            ctr.writelines([])
            ctr.write(bytearray(b"ij"))
            ctr.write(memoryview(b"kl"))
            ctr.write(b"")
            assert await srv.wait_for_data(10) == b"abcdfgijkl"
            await asyncio.sleep(0.02)
            assert bytes(srv.data) == b"abcdfgijkl"

    run(loop, main())


def test_write_buffer_size_and_pause_writing(loop):
    """With the peer not reading, the buffer grows past the high-water mark and pause_writing is
    called exactly once; once the peer reads, resume_writing is called and the buffer empties."""

    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            srv.transport.pause_reading()
            ctr = cli.transport
            assert ctr.get_write_buffer_size() == 0
            ctr.set_write_buffer_limits(high=65536, low=4096)
            assert ctr.get_write_buffer_limits() == (4096, 65536)
            written = await flood_until_paused(ctr, cli)
            assert cli.pauses == 1
            assert ctr.get_write_buffer_size() > 65536
            ctr.write(b"x" * 100_000)  # more writes while paused: no second pause_writing
            assert cli.pauses == 1
            srv.transport.resume_reading()
            total = written + 100_000
            await srv.wait_for_data(total, timeout=10)
            for _ in range(100):
                if ctr.get_write_buffer_size() == 0 and cli.resumes:
                    break
                await asyncio.sleep(0.01)
            assert ctr.get_write_buffer_size() == 0
            assert (cli.pauses, cli.resumes) == (1, 1)
            assert not cli.paused

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop's default low-water mark is 16, not 16384")
def test_write_buffer_limits_defaults(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            assert cli.transport.get_write_buffer_limits() == (16384, 65536)

    run(loop, main())


def test_set_write_buffer_limits(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            tr = cli.transport
            tr.set_write_buffer_limits(high=100)
            assert tr.get_write_buffer_limits() == (25, 100)
            tr.set_write_buffer_limits(low=100)
            assert tr.get_write_buffer_limits() == (100, 400)
            tr.set_write_buffer_limits(high=0)
            assert tr.get_write_buffer_limits() == (0, 0)
            tr.set_write_buffer_limits(high=50, low=50)
            assert tr.get_write_buffer_limits() == (50, 50)
            for high, low in [(1, 2), (-1, None)]:
                with pytest.raises(ValueError) as info:
                    tr.set_write_buffer_limits(high=high, low=low)
                shown_low = high // 4 if low is None else low
                expect(ValueError, f"high ({high!r}) must be >= low ({shown_low!r}) must be >= 0", info.value)
            assert tr.get_write_buffer_limits() == (50, 50)

    run(loop, main())


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size=8192):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.events: list[str] = []
        self.hints: list[int] = []
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        if self.events[-1:] != ["data"]:
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_buffered_protocol_receives_everything(loop):
    payload = os.urandom(4 << 20)

    async def main():
        async with tcp_pair(loop, client_factory=BufferedRecorder) as (_, cli, srv):
            srv.transport.write(payload)
            srv.transport.close()
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert bytes(cli.data) == payload
            assert cli.events == ["made", "data", "eof", "lost"]
            assert all(isinstance(h, int) for h in cli.hints)
            assert len(cli.hints) >= len(payload) // 8192  # one get_buffer per buffer_updated

    run(loop, main())


def test_buffered_protocol_memoryview_buffer(loop):
    """get_buffer may return a memoryview slice; data lands in that window only."""
    backing = bytearray(b"\xff" * 64)

    class P(BufferedRecorder):
        def get_buffer(self, sizehint):
            self.hints.append(sizehint)
            return memoryview(backing)[16:32]

        def buffer_updated(self, nbytes):
            self.data += backing[16 : 16 + nbytes]
            if self.events[-1:] != ["data"]:
                self.events.append("data")

    async def main():
        async with tcp_pair(loop, client_factory=P) as (_, cli, srv):
            srv.transport.write(b"0123456789abcdefghijklmnopqrstuvwxyz")
            srv.transport.close()
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            assert bytes(cli.data) == b"0123456789abcdefghijklmnopqrstuvwxyz"
            assert backing[:16] == b"\xff" * 16 and backing[32:] == b"\xff" * 32

    run(loop, main())


class Raises(Recorder):
    """data_received / eof_received raise, as chosen."""

    def __init__(self, loop, where):
        super().__init__(loop)
        self.where = where

    def data_received(self, data):
        super().data_received(data)
        if self.where == "data_received":
            raise ZeroDivisionError("from data_received")

    def eof_received(self):
        super().eof_received()
        if self.where == "eof_received":
            raise ZeroDivisionError("from eof_received")


class BadBuffers(BufferedRecorder):
    """get_buffer / buffer_updated misbehave, as chosen."""

    def __init__(self, loop, where):
        super().__init__(loop)
        self.where = where

    def get_buffer(self, sizehint):
        if self.where == "get_buffer raises":
            raise ZeroDivisionError("from get_buffer")
        if self.where == "get_buffer empty":
            return bytearray()
        if self.where == "get_buffer read-only":
            return b"read-only buffer"
        if self.where == "get_buffer list":
            return [0] * 16
        return super().get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        super().buffer_updated(nbytes)
        if self.where == "buffer_updated raises":
            raise ZeroDivisionError("from buffer_updated")


_UV_FATAL = (
    "uvloop's context message is 'Fatal error on transport TCPTransport', and its get_buffer errors "
    "become RuntimeError('unhandled error (or an empty buffer) in get_buffer()')"
)


@pytest.mark.parametrize(
    "where, message, exc_type, exc_message",
    [
        pytest.param(
            "data_received",
            "Fatal error: protocol.data_received() call failed.",
            ZeroDivisionError,
            "from data_received",
            id="data_received",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "eof_received",
            "Fatal error: protocol.eof_received() call failed.",
            ZeroDivisionError,
            "from eof_received",
            id="eof_received",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "get_buffer raises",
            "Fatal error: protocol.get_buffer() call failed.",
            ZeroDivisionError,
            "from get_buffer",
            id="get_buffer-raises",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "get_buffer empty",
            "Fatal error: protocol.get_buffer() call failed.",
            RuntimeError,
            "get_buffer() returned an empty buffer",
            id="get_buffer-empty",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "get_buffer read-only",
            "Fatal read error on socket transport",
            TypeError,
            "recv_into() argument 1 must be read-write bytes-like object, not bytes",
            id="get_buffer-read-only",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "get_buffer list",
            "Fatal read error on socket transport",
            TypeError,
            "recv_into() argument 1 must be read-write bytes-like object, not list",
            id="get_buffer-list",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
        pytest.param(
            "buffer_updated raises",
            "Fatal error: protocol.buffer_updated() call failed.",
            ZeroDivisionError,
            "from buffer_updated",
            id="buffer_updated-raises",
            marks=pytest.mark.uvloop_xfail(_UV_FATAL),
        ),
    ],
)
def test_protocol_callback_errors(loop, where, message, exc_type, exc_message):
    """An exception from a protocol callback (or an unusable buffer) is a fatal error: the loop's
    exception handler gets asyncio's context, then connection_lost gets the same exception."""
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    if where in ("data_received", "eof_received"):
        factory = lambda lp: Raises(lp, where)  # noqa: E731
    else:
        factory = lambda lp: BadBuffers(lp, where)  # noqa: E731

    async def main():
        async with tcp_pair(loop, client_factory=factory) as (_, cli, srv):
            srv.transport.write(b"some data")
            if where == "eof_received":
                srv.transport.write_eof()
            exc = await asyncio.wait_for(asyncio.shield(cli.lost), 5)
            assert type(exc) is exc_type, repr(exc)
            assert str(exc) == exc_message
            assert [set(c) for c in contexts] == [{"message", "exception", "transport", "protocol"}]
            (context,) = contexts
            assert context["message"] == message
            assert context["exception"] is exc
            assert context["transport"] is cli.transport
            assert context["protocol"] is cli
            assert cli.transport.is_closing()

    run(loop, main())


# asyncio 3.11 copies what write() cannot send at once; from 3.12 it keeps a reference to it, so
# that later changes to a bytearray are sent (its bytearray _buffer_factory went then).
ASYNCIO_COPIES_WRITES = hasattr(selector_events._SelectorSocketTransport, "_buffer_factory")


def test_write_of_a_changed_bytearray_as_asyncio(request, loop, loop_name):
    """Data written but not yet sent is the data as it was at write() time on 3.11; from 3.12 on,
    what the bytearray holds when it is sent."""
    if loop_name == "uvloop" and ASYNCIO_COPIES_WRITES:
        request.applymarker(pytest.mark.xfail(reason="uvloop keeps a reference to a written bytearray"))

    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            srv.transport.pause_reading()
            data = bytearray(b"a" * (16 << 20))
            cli.transport.write(data)
            assert cli.transport.get_write_buffer_size() > 0  # the kernel did not take it all
            data[:] = b"b" * len(data)
            srv.transport.resume_reading()
            received = await srv.wait_for_data(16 << 20, timeout=10)
            if ASYNCIO_COPIES_WRITES:
                assert received.count(b"a") == 16 << 20
            else:
                assert received.count(b"b") > 0

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop raises TypeError 'memoryview: casts are restricted to C-contiguous views'")
def test_write_non_contiguous_memoryview(loop):
    """asyncio's write() accepts any memoryview, and the failing send() is a fatal write error
    (exception handler, then connection_lost(exc)); write() itself does not raise."""
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            cli.transport.write(memoryview(b"abcdef")[::2])
            exc = await asyncio.wait_for(asyncio.shield(cli.lost), 5)
            assert type(exc) is BufferError
            assert str(exc) == "memoryview: underlying buffer is not C-contiguous"
            assert [c["message"] for c in contexts] == ["Fatal write error on socket transport"]
            assert contexts[0]["exception"] is exc

    run(loop, main())


def test_set_protocol_switches_the_receiver(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            cli.transport.write(b"one")
            assert await srv.wait_for_data(3) == b"one"
            second = Recorder(loop)
            srv.transport.set_protocol(second)
            assert srv.transport.get_protocol() is second
            cli.transport.write(b"two")
            assert await second.wait_for_data(3) == b"two"
            cli.transport.close()
            assert await asyncio.wait_for(asyncio.shield(second.lost), 5) is None
            assert bytes(srv.data) == b"one"
            assert not srv.lost.done()
            assert second.events == ["data", "eof", "lost"]
            srv.lost.set_result(None)  # for tcp_pair's clean-up: the transport is gone

    run(loop, main())


def test_connect_accepted_socket(loop):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        try:
            transport, proto = await loop.connect_accepted_socket(lambda: Recorder(loop), conn)
            try:
                assert transport.get_extra_info("peername") == client.getsockname()
                assert transport.get_extra_info("sockname") == listener.getsockname()
                client.sendall(b"accepted")
                assert await proto.wait_for_data(8) == b"accepted"
                transport.write(b"back")
                transport.write_eof()
                client.setblocking(False)
                assert await asyncio.wait_for(loop.sock_recv(client, 100), 5) == b"back"
                assert await asyncio.wait_for(loop.sock_recv(client, 100), 5) == b""
            finally:
                transport.close()
                await asyncio.wait_for(asyncio.shield(proto.lost), 5)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
                with pytest.raises(ValueError) as info:
                    await loop.connect_accepted_socket(asyncio.Protocol, dgram)
                expect(ValueError, f"A Stream Socket was expected, got {dgram!r}", info.value)
        finally:
            client.close()
            conn.close()
            listener.close()

    run(loop, main())


def test_create_connection_with_connected_socket(loop):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        sock = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        try:
            transport, proto = await loop.create_connection(lambda: Recorder(loop), sock=sock)
            try:
                assert transport.get_extra_info("socket").fileno() == sock.fileno()
                assert sock.gettimeout() == 0  # made non-blocking
                conn.sendall(b"over a given socket")
                assert await proto.wait_for_data(19) == b"over a given socket"
            finally:
                transport.close()
                await asyncio.wait_for(asyncio.shield(proto.lost), 5)
            assert sock.fileno() == -1  # the transport closed it
        finally:
            sock.close()
            conn.close()
            listener.close()

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 7. Unix sockets
# ----------------------------------------------------------------------------------------------


async def upper_handler(reader, writer):
    try:
        while data := await reader.read(1000):
            writer.write(data.upper())
            await writer.drain()
    finally:
        writer.close()


async def unix_round_trip(path, message=b"hello unix"):
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(message)
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), 5)
        return reply, writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    finally:
        writer.close()
        await writer.wait_closed()


def test_unix_round_trip(loop, short_dir):
    path = os.path.join(short_dir, "s.sock")

    async def main():
        server = await asyncio.start_unix_server(upper_handler, path)
        try:
            assert server.is_serving()
            assert server.sockets[0].family == socket.AF_UNIX
            assert server.sockets[0].getsockname() == path
            assert os.path.exists(path)
            reply, peername, sockname = await unix_round_trip(path)
            assert reply == b"HELLO UNIX"
            assert peername == path
            assert sockname == ""  # an unbound client socket
        finally:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.01)

    run(loop, main())


def test_unix_protocol_transport(loop, short_dir):
    """create_unix_server / create_unix_connection with protocols: extra info, write_eof, order."""
    path = os.path.join(short_dir, "p.sock")

    async def main():
        accepted = loop.create_future()

        def factory():
            proto = Recorder(loop, eof_result=True)
            accepted.set_result(proto)
            return proto

        server = await loop.create_unix_server(factory, path)
        try:
            ctr, cli = await loop.create_unix_connection(lambda: Recorder(loop), path)
            srv = await asyncio.wait_for(accepted, 5)
            # The server's protocol is made before its connection_made() runs.
            await asyncio.wait_for(asyncio.shield(srv.made), 5)
            try:
                assert ctr.get_extra_info("socket").family == socket.AF_UNIX
                assert ctr.get_extra_info("peername") == path
                assert srv.transport.get_extra_info("sockname") == path
                assert ctr.can_write_eof()
                ctr.write(b"ping")
                ctr.write_eof()
                await asyncio.wait_for(asyncio.shield(srv.eof), 5)
                srv.transport.write(b"pong")
                srv.transport.close()
                assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
                assert bytes(srv.data) == b"ping" and bytes(cli.data) == b"pong"
                assert cli.events == ["made", "data", "eof", "lost"]
                assert srv.events == ["made", "data", "eof", "lost"]
            finally:
                ctr.abort()
                srv.transport.abort()
                await settle([cli.lost, srv.lost])
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())


def test_unix_stale_socket_file_is_replaced(loop, short_dir):
    """A socket file left by a dead server is removed; the new server binds the same path."""
    path = os.path.join(short_dir, "stale.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()
    assert os.path.exists(path)

    async def main():
        server = await asyncio.start_unix_server(upper_handler, path)
        try:
            reply, _, _ = await unix_round_trip(path, b"again")
            assert reply == b"AGAIN"
        finally:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.01)

    run(loop, main())


def test_unix_path_is_a_regular_file(loop, short_dir):
    """A non-socket file at the path is left alone: OSError(EADDRINUSE) naming the path."""
    path = os.path.join(short_dir, "file")
    with open(path, "w") as f:
        f.write("not a socket")

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(asyncio.Protocol, path)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use"

    run(loop, main())
    with open(path) as f:
        assert f.read() == "not a socket"


def test_unix_connect_to_missing_path(loop, short_dir):
    path = os.path.join(short_dir, "missing.sock")

    async def main():
        with pytest.raises(FileNotFoundError) as info:
            await loop.create_unix_connection(asyncio.Protocol, path)
        assert info.value.errno == errno.ENOENT

    run(loop, main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract namespace is Linux only")
@pytest.mark.uvloop_xfail("uvloop's create_unix_connection to an abstract name fails with EINVAL")
def test_unix_abstract_namespace(loop):
    name = f"\0turboloop-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def main():
        server = await asyncio.start_unix_server(upper_handler, name)
        try:
            assert server.sockets[0].getsockname() == name.encode()
            assert not os.path.exists(name[1:])
            reply, peername, _ = await unix_round_trip(name, b"abstract")
            assert reply == b"ABSTRACT"
            assert peername == name.encode()
        finally:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.01)

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 8. add_reader / add_writer
# ----------------------------------------------------------------------------------------------


class FileLike:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def test_add_reader_called_and_removed(loop, socket_pair):
    a, b = socket_pair
    calls = []

    def on_readable(*args):
        calls.append((args, a.recv(100)))

    async def main():
        loop.add_reader(a.fileno(), on_readable, "x", 2)
        await asyncio.sleep(0.02)
        assert calls == []
        b.send(b"ping")
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.005)
        assert calls == [(("x", 2), b"ping")]
        loop.remove_reader(a.fileno())
        b.send(b"more")
        await asyncio.sleep(0.02)
        assert len(calls) == 1

    run(loop, main())


def test_add_reader_accepts_file_objects_and_replaces(loop, socket_pair):
    """A socket or any object with fileno() is accepted, and is the same key as its fd; a second
    add_reader on the same fd replaces the first callback."""
    a, b = socket_pair
    calls = []

    async def main():
        loop.add_reader(a, calls.append, "first")
        loop.add_reader(FileLike(a.fileno()), lambda: (calls.append("second"), a.recv(100)))
        b.send(b"x")
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.005)
        assert calls == ["second"]
        loop.remove_reader(a)
        b.send(b"y")
        await asyncio.sleep(0.02)
        assert calls == ["second"]

    run(loop, main())


def test_add_writer_called_and_removed(loop, socket_pair):
    a, _ = socket_pair
    calls = []

    def on_writable(tag):
        calls.append(tag)
        if len(calls) == 3:
            done.set_result(None)

    async def main():
        nonlocal done
        done = loop.create_future()
        loop.add_writer(a, on_writable, "w")  # writable at once, and again on each iteration
        await asyncio.wait_for(done, 5)
        loop.remove_writer(FileLike(a.fileno()))
        seen = len(calls)
        await asyncio.sleep(0.02)
        assert len(calls) == seen

    done = None
    run(loop, main())


def test_reader_and_writer_on_the_same_fd(loop, socket_pair):
    a, b = socket_pair
    events = []

    async def main():
        loop.add_writer(a, lambda: (events.append("w"), loop.remove_writer(a)))
        loop.add_reader(a, lambda: (events.append("r"), loop.remove_reader(a), a.recv(10)))
        b.send(b"1")
        for _ in range(200):
            if len(events) == 2:
                break
            await asyncio.sleep(0.005)
        assert sorted(events) == ["r", "w"]
        await asyncio.sleep(0.02)
        assert sorted(events) == ["r", "w"]  # each removed itself

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_remove_reader_and_writer_return_whether_registered(loop, socket_pair):
    a, _ = socket_pair
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, print)
    loop.add_writer(FileLike(a.fileno()), print)
    assert loop.remove_reader(FileLike(a.fileno())) is True
    assert loop.remove_reader(a.fileno()) is False
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a) is False
    # an fd closed while registered: removing it still says True
    loop.add_reader(a, print)
    fd = a.fileno()
    a.close()
    assert loop.remove_reader(fd) is True
    assert loop.remove_reader(fd) is False


def test_add_reader_is_level_triggered(loop, socket_pair):
    """A reader that does not consume the data is called again on the next iterations."""
    a, b = socket_pair
    calls = []

    async def main():
        loop.add_reader(a, calls.append, None)
        b.send(b"x")
        for _ in range(500):
            if len(calls) >= 5:
                break
            await asyncio.sleep(0)
        loop.remove_reader(a)
        assert len(calls) >= 5

    run(loop, main())


def test_reader_removed_by_an_earlier_callback_is_not_called(loop):
    """Two fds ready in the same iteration; whichever callback runs first removes the other's
    reader, and the removed callback must not run (asyncio cancels its handle)."""
    pairs = [socket.socketpair() for _ in range(2)]
    calls = []

    def make(i):
        def cb():
            calls.append(i)
            loop.remove_reader(pairs[1 - i][0])
            loop.remove_reader(pairs[i][0])

        return cb

    async def main():
        for i, (a, _) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a, make(i))
        for _, b in pairs:
            b.send(b"x")
        await asyncio.sleep(0.05)  # both were ready for many iterations
        assert len(calls) == 1, calls

    try:
        run(loop, main())
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_cancelled_sock_recv_loses_nothing(loop, socket_pair):
    a, b = socket_pair

    async def main():
        pending = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        b.send(b"after cancel")
        assert await asyncio.wait_for(loop.sock_recv(a, 100), 5) == b"after cancel"
        # the fd is free again for add_reader
        got = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(100)))
        b.send(b"reader")
        assert await asyncio.wait_for(got, 5) == b"reader"
        loop.remove_reader(a)

    run(loop, main())


def test_fd_of_a_closed_transport_is_free(loop):
    """Once a transport's connection_lost has run, its fd number (reused by a new socket) can be
    given to add_reader."""

    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            fd = cli.transport.get_extra_info("socket").fileno()
            cli.transport.close()
            await asyncio.wait_for(asyncio.shield(cli.lost), 5)
        socks = []
        try:
            while len(socks) < 8:
                socks.append(socket.socket())
                if socks[-1].fileno() == fd:
                    break
            else:
                pytest.skip(f"fd {fd} was not reused")
            sock = socks[-1]
            loop.add_reader(sock, print)
            loop.add_writer(sock.fileno(), print)
            loop.remove_reader(sock)
            loop.remove_writer(sock)
        finally:
            for sock in socks:
                sock.close()

    run(loop, main())


def test_unpollable_fds(loop, tmp_path):
    """A regular file: PermissionError (epoll's EPERM); a closed fd: OSError EBADF."""
    with open(tmp_path / "regular", "wb") as f:
        for method in (loop.add_reader, loop.add_writer):
            with pytest.raises(PermissionError) as info:
                method(f.fileno(), print)
            assert info.value.errno == errno.EPERM
    sock = socket.socket()
    fd = sock.fileno()
    sock.close()
    for method in (loop.add_reader, loop.add_writer):
        with pytest.raises(OSError) as info:
            method(fd, print)
        expect(OSError, "[Errno 9] Bad file descriptor", info.value)
    # the loop still works
    seen = []
    loop.call_soon(seen.append, 1)
    run(loop, asyncio.sleep(0.01))
    assert seen == [1]


def test_fd_used_by_transport_is_refused(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            sock = cli.transport.get_extra_info("socket")
            fd = sock.fileno()
            for method, args in [
                (loop.add_reader, (fd, print)),
                (loop.add_writer, (fd, print)),
                (loop.remove_reader, (fd,)),
                (loop.remove_writer, (fd,)),
            ]:
                with pytest.raises(RuntimeError) as info:
                    method(*args)
                assert re.fullmatch(rf"File descriptor {fd} is used by transport <.*>", str(info.value)), str(info.value)
                assert repr(cli.transport) in str(info.value)

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# 9. Bad input
# ----------------------------------------------------------------------------------------------


async def expect_failure(exc_type, make):
    """Await ``make()`` expecting ``exc_type``; whatever it returns instead is closed first."""
    try:
        result = await make()
    except exc_type as exc:
        return exc
    if hasattr(result, "wait_closed"):  # a Server (uvloop's is no AbstractServer)
        result.close()
        await result.wait_closed()
    elif isinstance(result, tuple):
        result[0].abort()
        await asyncio.sleep(0.01)
    pytest.fail(f"no {exc_type.__name__}; got {result!r}")


@pytest.mark.uvloop_xfail("uvloop truncates the port to 16 bits and gets ConnectionRefusedError")
@pytest.mark.parametrize("port", [65536, 70000, -1])
def test_create_connection_port_out_of_range(loop, port):
    async def main():
        exc = await expect_failure(OverflowError, lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", port))
        expect(OverflowError, "connect(): port must be 0-65535.", exc)

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop serves on port 65536 truncated to 0, and gives socket.gaierror for -1")
@pytest.mark.parametrize("port", [65536, -1])
def test_create_server_port_out_of_range(loop, port):
    async def main():
        exc = await expect_failure(OverflowError, lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", port))
        expect(OverflowError, "bind(): port must be 0-65535.", exc)

    run(loop, main())


def test_bad_host_raises_gaierror(loop):
    host = "no-such-host.invalid"
    with pytest.raises(socket.gaierror) as reference:
        socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)

    async def main():
        for make in (
            lambda: loop.create_connection(asyncio.Protocol, host, 80),
            lambda: loop.create_server(asyncio.Protocol, host, 0),
            lambda: asyncio.open_connection(host, 80),
        ):
            with pytest.raises(socket.gaierror) as info:
                await make()
            assert type(info.value) is socket.gaierror
            assert info.value.args == reference.value.args
            assert info.value.errno == reference.value.errno

    run(loop, main(), timeout=30)


@pytest.mark.uvloop_xfail("uvloop's message is '[Errno 111] Connection refused'")
def test_connection_refused_message(loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens on port now

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert info.value.errno == errno.ECONNREFUSED
        assert str(info.value) == f"[Errno 111] Connect call failed ('127.0.0.1', {port})"

    run(loop, main())


def test_create_connection_argument_errors(loop):
    async def main():
        with socket.socket() as sock:
            cases = [
                (
                    lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 80, sock=sock),
                    "host/port and sock can not be specified at the same time",
                ),
                (lambda: loop.create_connection(asyncio.Protocol), "host and port was not specified and no sock specified"),
                (
                    lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 80, server_hostname="x"),
                    "server_hostname is only meaningful with ssl",
                ),
                (
                    lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 80, ssl_handshake_timeout=1),
                    "ssl_handshake_timeout is only meaningful with ssl",
                ),
                (
                    lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=sock),
                    "host/port and sock can not be specified at the same time",
                ),
                (lambda: loop.create_server(asyncio.Protocol), "Neither host/port nor sock were specified"),
                (
                    lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1),
                    "ssl_handshake_timeout is only meaningful with ssl",
                ),
            ]
            for make, message in cases:
                with pytest.raises(ValueError) as info:
                    await make()
                expect(ValueError, message, info.value)

    run(loop, main())


def test_create_connection_with_datagram_socket(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError) as info:
                await loop.create_connection(asyncio.Protocol, sock=sock)
            expect(ValueError, f"A Stream Socket was expected, got {sock!r}", info.value)

    run(loop, main())


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_sendall", "sock_accept", "sock_connect"])
def test_sock_methods_refuse_blocking_socket_in_debug_mode(loop, method):
    """In debug mode every sock_* method checks the socket is non-blocking first.  (In normal mode
    asyncio does not check, and a blocking socket blocks the loop; that is not tested.)"""
    args = {
        "sock_recv": (100,),
        "sock_recv_into": (bytearray(10),),
        "sock_sendall": (b"x",),
        "sock_accept": (),
        "sock_connect": (("127.0.0.1", 9),),
    }[method]
    loop.set_debug(True)

    async def main():
        with socket.socket() as sock:
            assert sock.gettimeout() is None
            with pytest.raises(ValueError) as info:
                await getattr(loop, method)(sock, *args)
            expect(ValueError, "the socket must be non-blocking", info.value)

    run(loop, main())


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("sock_recv", marks=pytest.mark.uvloop_xfail("ValueError 'Invalid file descriptor: -1'")),
        pytest.param("sock_recv_into", marks=pytest.mark.uvloop_xfail("ValueError 'Invalid file descriptor: -1'")),
        "sock_sendall",
    ],
)
def test_sock_methods_on_closed_socket(loop, method):
    args = {"sock_recv": (100,), "sock_recv_into": (bytearray(10),), "sock_sendall": (b"x",)}[method]

    async def main():
        sock = socket.socket()
        sock.setblocking(False)
        sock.close()
        with pytest.raises(OSError) as info:
            await getattr(loop, method)(sock, *args)
        expect(OSError, "[Errno 9] Bad file descriptor", info.value)
        assert info.value.errno == errno.EBADF

    run(loop, main())


def test_create_connection_with_closed_socket(loop):
    async def main():
        sock = socket.socket()
        sock.close()
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, sock=sock)
        assert info.value.errno == errno.EBADF

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop drops writes after close() without a warning, then raises RuntimeError")
def test_write_after_close_warns_after_five_writes(loop, caplog):
    """write() after close() raises nothing; from the 5th such write on, each logs a warning
    'socket.send() raised exception.' on the asyncio logger (LOG_THRESHOLD_FOR_CONNLOST_WRITES)."""

    async def main():
        async with tcp_pair(loop) as (_, cli, srv):
            cli.transport.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for i in range(1, 8):
                    caplog.clear()
                    cli.transport.write(b"x")
                    warned = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
                    assert warned == (["socket.send() raised exception."] if i >= 5 else []), i
            assert await asyncio.wait_for(asyncio.shield(cli.lost), 5) is None
            # still no exception once connection_lost has run
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                caplog.clear()
                cli.transport.write(b"x")
                assert [r.getMessage() for r in caplog.records] == ["socket.send() raised exception."]
            await asyncio.sleep(0.02)
            assert srv.data == b""

    run(loop, main())


# asyncio's words for it changed in 3.12 (the asyncio case checks them on each version).
WRITE_TYPE_ERROR = (
    "data argument must be a bytes, bytearray, or memoryview object"
    if sys.version_info >= (3, 12)
    else "data argument must be a bytes-like object"
)


@pytest.mark.uvloop_xfail("uvloop's message is 'memoryview: a bytes-like object is required, not ...'")
def test_write_non_bytes(loop):
    async def main():
        async with tcp_pair(loop) as (_, cli, _srv):
            with pytest.raises(TypeError) as info:
                cli.transport.write("text")
            expect(TypeError, f"{WRITE_TYPE_ERROR}, not 'str'", info.value)
            with pytest.raises(TypeError) as info:
                cli.transport.write(123)
            expect(TypeError, f"{WRITE_TYPE_ERROR}, not 'int'", info.value)
            with pytest.raises(TypeError) as info:
                cli.transport.write(array.array("b", [1, 2]))
            expect(TypeError, f"{WRITE_TYPE_ERROR}, not 'array'", info.value)

    run(loop, main())


@pytest.mark.parametrize(
    "fd, message",
    [("x", "Invalid file object: 'x'"), (-1, "Invalid file descriptor: -1"), (1.5, "Invalid file object: 1.5")],
)
@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_bad_fd_for_readers_and_writers(loop, method, fd, message):
    args = (fd, print) if method.startswith("add") else (fd,)
    with pytest.raises(ValueError) as info:
        getattr(loop, method)(*args)
    expect(ValueError, message, info.value)


@pytest.mark.uvloop_xfail("uvloop runs all of a connection's callbacks in one context, whatever the version")
def test_protocol_callbacks_see_context_as_asyncio(loop_factory):
    """Which contextvars.Context a server's protocol callbacks run in follows asyncio of the
    running version: from 3.15, one copy of the server's context per connection, shared by all of
    its callbacks (native reads included); before, a copy per scheduled callback."""
    var = contextvars.ContextVar("var", default="unset")

    def scenario(new_loop):
        seen = []
        loop = new_loop()

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport):
                seen.append(("made", var.get()))
                var.set("set by connection_made")
                self.transport = transport

            def data_received(self, data):
                seen.append(("data", var.get()))
                self.transport.write(b"bye")
                self.transport.close()

            def connection_lost(self, exc):
                seen.append(("lost", var.get()))

        async def main():
            var.set("set before create_server")
            server = await loop.create_server(Protocol, "127.0.0.1", 0)
            var.set("set after create_server")
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"hi")
            assert await reader.read() == b"bye"
            writer.close()
            server.close()
            await server.wait_closed()

        try:
            run(loop, main())
        finally:
            loop.close()
        return seen

    assert scenario(loop_factory) == scenario(asyncio.SelectorEventLoop)
