"""loop.sendfile and loop.sock_sendfile, checked against stock asyncio.

turboloop sends with sendfile(2) driven natively (``binding/sock_ops.cpp``); asyncio calls
os.sendfile from Python.  Every test runs on asyncio and turboloop; uvloop implements neither
method (AbstractEventLoop's NotImplementedError), so its cases are skipped, except the one that
says so.  Every wait is bounded, and everything a test opens is closed.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import io
import os
import shutil
import socket
import struct
import tempfile

import pytest

TIMEOUT = 20.0
LINGER_0 = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
SIZE = 3 * 1024 * 1024 + 123  # more than a loopback socket takes at once
# From 3.13 asyncio's native sendfile seeks the file to where sending stopped even when it sent
# nothing (its _sock_sendfile_update_filepos no longer takes total_sent); before, it left it alone.
SEEKS_WHEN_NOTHING_SENT = "total_sent" not in inspect.signature(
    asyncio.unix_events._UnixSelectorEventLoop._sock_sendfile_update_filepos
).parameters


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture
def sendfile_loop(loop, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop has no loop.sendfile or loop.sock_sendfile (NotImplementedError)")
    return loop


@pytest.fixture(scope="module")
def payload():
    return os.urandom(SIZE)


@pytest.fixture
def data_file(payload):
    with tempfile.TemporaryFile() as fh:
        fh.write(payload)
        fh.seek(0)
        yield fh


class Collector(asyncio.Protocol):
    """The receiving end: keeps every byte; ``lost`` resolves with connection_lost's argument."""

    def __init__(self, loop):
        self.data = bytearray()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def connected_pair(loop):
    """(server, client transport, the server side's Collector)."""
    accepted = loop.create_future()

    def factory():
        proto = Collector(loop)
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0)
    transport, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
    receiver = await asyncio.wait_for(accepted, 5)
    return server, transport, receiver


async def close_pair(server, transport, receiver):
    transport.close()
    await asyncio.wait_for(receiver.lost, 10)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    "offset, count",
    [(0, None), (1000, None), (0, 12345), (777, 300_000), (5, SIZE - 5), (SIZE - 10, None), (SIZE, None)],
)
def test_sendfile_offset_count_and_position(sendfile_loop, data_file, payload, offset, count):
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        sent = await loop.sendfile(transport, data_file, offset, count)
        position = data_file.tell()
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    sent, position, received = run(loop, main())
    expected = payload[offset : None if count is None else offset + count]
    assert sent == len(expected)
    assert received == expected
    # As asyncio: the position is after the last byte sent (untouched when nothing was sent, before
    # 3.13).
    assert position == (offset + sent if sent or SEEKS_WHEN_NOTHING_SENT else 0)


def test_sendfile_count_past_end_of_file(sendfile_loop, data_file, payload):
    """The file ends before count: what there is is sent, and the position is the end."""
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        sent = await loop.sendfile(transport, data_file, SIZE - 1000, 5000)
        position = data_file.tell()
        # The transport still works afterwards.
        transport.write(b"after")
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    sent, position, received = run(loop, main())
    assert sent == 1000
    assert position == SIZE
    assert received == payload[-1000:] + b"after"


def test_sendfile_empty_file(sendfile_loop):
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        with tempfile.TemporaryFile() as empty:
            sent = await loop.sendfile(transport, empty)
            position = empty.tell()
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    assert run(loop, main()) == (0, 0, b"")


def test_sendfile_keeps_order_with_buffered_writes(sendfile_loop, data_file, payload):
    """Bytes written before sendfile go first, bytes written after go last."""
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        transport.write(b"head" * 100_000)  # more than the socket takes: some are buffered
        sent = await loop.sendfile(transport, data_file)
        transport.write(b"tail")
        await close_pair(server, transport, receiver)
        return sent, bytes(receiver.data)

    sent, received = run(loop, main())
    assert sent == SIZE
    assert received == b"head" * 100_000 + payload + b"tail"


def test_sendfile_on_closing_transport(sendfile_loop, data_file):
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        transport.close()
        with pytest.raises(RuntimeError, match="Transport is closing"):
            await loop.sendfile(transport, data_file)
        await asyncio.wait_for(receiver.lost, 10)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert data_file.tell() == 0


def test_sendfile_not_a_regular_file_falls_back(sendfile_loop, payload):
    """A BytesIO (no fileno) goes through asyncio's read-and-send fallback."""
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        source = io.BytesIO(payload)
        sent = await loop.sendfile(transport, source, 10, 100_000)
        position = source.tell()
        with pytest.raises(asyncio.SendfileNotAvailableError, match="not a regular file"):
            await loop.sendfile(transport, io.BytesIO(payload), fallback=False)
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    assert run(loop, main()) == (100_000, 100_010, payload[10:100_010])


def test_sendfile_from_socket_is_not_available(sendfile_loop, payload):
    """A descriptor sendfile(2) refuses (a socket's makefile): the first call fails with nothing
    sent, which is SendfileNotAvailableError (asyncio's fallback would then read and send, but
    its final seek fails on such a file, so fallback=False here).  From 3.13, asyncio seeks the
    file first, which fails on a socket: that OSError is what sendfile() raises."""
    loop = sendfile_loop

    async def main():
        server, transport, receiver = await connected_pair(loop)
        left, right = socket.socketpair()
        reader = right.makefile("rb")
        try:
            left.sendall(payload[:1000])
            if SEEKS_WHEN_NOTHING_SENT:
                with pytest.raises(OSError) as info:
                    await loop.sendfile(transport, reader, 0, 1000, fallback=False)
                assert info.type is OSError and info.value.errno == errno.ESPIPE
            else:
                with pytest.raises(asyncio.SendfileNotAvailableError, match="os.sendfile call failed"):
                    await loop.sendfile(transport, reader, 0, 1000, fallback=False)
            transport.write(b"still usable")
        finally:
            reader.close()
            left.close()
            right.close()
        await close_pair(server, transport, receiver)
        return bytes(receiver.data)

    assert run(loop, main()) == b"still usable"


def test_sock_sendfile_offset_count_and_position(sendfile_loop, data_file, payload):
    loop = sendfile_loop

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            await loop.sock_connect(client, listener.getsockname())
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            received = bytearray()

            async def drain():
                while True:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:
                        return
                    received.extend(data)

            reading = asyncio.ensure_future(drain())
            sent = await loop.sock_sendfile(client, data_file, 4321, 2_000_000)
            position = data_file.tell()
            sent2 = await loop.sock_sendfile(client, data_file, SIZE - 3)
            position2 = data_file.tell()
            client.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(reading, 10)
            conn.close()
        finally:
            client.close()
            listener.close()
        return sent, position, sent2, position2, bytes(received)

    sent, position, sent2, position2, received = run(loop, main())
    assert (sent, position, sent2, position2) == (2_000_000, 2_004_321, 3, SIZE)
    assert received == payload[4321:2_004_321] + payload[-3:]


def test_sock_sendfile_fallback_false_on_bytesio(sendfile_loop):
    loop = sendfile_loop

    async def main():
        left, right = socket.socketpair()
        left.setblocking(False)
        try:
            with pytest.raises(asyncio.SendfileNotAvailableError, match="not a regular file"):
                await loop.sock_sendfile(left, io.BytesIO(b"x" * 10), fallback=False)
        finally:
            left.close()
            right.close()

    run(loop, main())


def test_sendfile_peer_reset(sendfile_loop, payload):
    """The peer resets while the file is being sent: a ConnectionError, and the file position
    says how far it got."""
    loop = sendfile_loop
    size = 64 * 1024 * 1024

    async def main():
        with tempfile.TemporaryFile() as fh:
            fh.truncate(size)  # a sparse file: 64 MiB of zeros, nothing written to disk
            listener = socket.create_server(("127.0.0.1", 0))
            listener.setblocking(False)
            try:
                transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
                conn, _ = await loop.sock_accept(listener)
            finally:
                listener.close()
            conn.setblocking(False)
            try:
                sending = asyncio.ensure_future(loop.sendfile(transport, fh))
                got = 0
                while got < 1024 * 1024:
                    got += len(await loop.sock_recv(conn, 65536))
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            finally:
                conn.close()
            with pytest.raises(ConnectionError) as info:
                await asyncio.wait_for(sending, 10)
            position = fh.tell()
            transport.close()
            return info.value, position

    exc, position = run(loop, main())
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionError)), repr(exc)
    assert 1024 * 1024 <= position < size


def test_sendfile_cancelled(sendfile_loop, data_file, payload):
    """Cancelled while the peer is not reading: CancelledError; the transport works afterwards
    (the sendfile's writer is gone) and what arrives is a prefix of the file, then the write."""
    loop = sendfile_loop
    size = 32 * 1024 * 1024

    async def main():
        with tempfile.TemporaryFile() as fh:
            fh.truncate(size)
            listener = socket.create_server(("127.0.0.1", 0))
            listener.setblocking(False)
            try:
                transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
                conn, _ = await loop.sock_accept(listener)
            finally:
                listener.close()
            conn.setblocking(False)
            try:
                sending = asyncio.ensure_future(loop.sendfile(transport, fh))
                for _ in range(20):  # let it fill the socket buffers and wait
                    await asyncio.sleep(0)
                assert not sending.done()
                sending.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await sending
                position = fh.tell()
                transport.write(b"END")
                transport.close()
                received = bytearray()
                while True:
                    data = await loop.sock_recv(conn, 1 << 20)
                    if not data:
                        break
                    received.extend(data)
            finally:
                conn.close()
            return position, bytes(received)

    position, received = run(loop, main())
    assert received.endswith(b"END")
    body = received[:-3]
    assert 0 < len(body) < size
    assert body == bytes(len(body))  # the sparse file's zeros, nothing lost in between
    # As asyncio: a cancelled sendfile leaves the file position alone.
    assert position == 0


def test_uvloop_has_no_sendfile(loop, loop_name):
    """Why uvloop's cases are skipped (this fails the day uvloop implements it)."""
    if loop_name != "uvloop":
        pytest.skip("about uvloop only")

    async def main():
        left, right = socket.socketpair()
        left.setblocking(False)
        try:
            with tempfile.TemporaryFile() as fh, pytest.raises(NotImplementedError):
                await loop.sock_sendfile(left, fh)
        finally:
            left.close()
            right.close()

    run(loop, main())


def test_turboloop_sends_natively(loop, loop_name, data_file, payload, monkeypatch):
    """turboloop's sendfile does not go through asyncio's os.sendfile loop."""
    if loop_name != "turboloop":
        pytest.skip("about turboloop's native path only")

    def refuse(*args):
        raise AssertionError("os.sendfile called")

    monkeypatch.setattr(os, "sendfile", refuse)

    async def main():
        server, transport, receiver = await connected_pair(loop)
        sent = await loop.sendfile(transport, data_file, 0, 2_000_000)
        await close_pair(server, transport, receiver)
        return sent, bytes(receiver.data)

    assert run(loop, main()) == (2_000_000, payload[:2_000_000])


def test_sendfile_over_tls_uses_the_fallback(sendfile_loop, data_file, payload):
    """A TLS transport cannot sendfile(2): asyncio's fallback reads and writes through
    SSLProtocol; every byte arrives, and the position is updated as by the native path."""
    trustme = pytest.importorskip("trustme")
    import ssl

    loop = sendfile_loop
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        accepted = loop.create_future()

        def factory():
            proto = Collector(loop)
            accepted.set_result(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
        transport, _ = await loop.create_connection(
            asyncio.Protocol, *server.sockets[0].getsockname(), ssl=client_ctx, server_hostname="127.0.0.1"
        )
        receiver = await asyncio.wait_for(accepted, 5)
        with pytest.raises(RuntimeError, match="fallback is disabled"):
            await loop.sendfile(transport, data_file, fallback=False)
        sent = await loop.sendfile(transport, data_file, 100, 1_000_000)
        position = data_file.tell()
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    assert run(loop, main()) == (1_000_000, 1_000_100, payload[100:1_000_100])


def test_sendfile_over_unix_socket(sendfile_loop, data_file, payload):
    loop = sendfile_loop
    directory = tempfile.mkdtemp(prefix="tl", dir="/tmp")
    path = os.path.join(directory, "s")

    async def main():
        accepted = loop.create_future()

        def factory():
            proto = Collector(loop)
            accepted.set_result(proto)
            return proto

        server = await loop.create_unix_server(factory, path)
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, path)
        receiver = await asyncio.wait_for(accepted, 5)
        sent = await loop.sendfile(transport, data_file, 10)
        position = data_file.tell()
        await close_pair(server, transport, receiver)
        return sent, position, bytes(receiver.data)

    try:
        assert run(loop, main()) == (SIZE - 10, SIZE, payload[10:])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
