"""TLS reads through the loop's SSLProtocol, checked against stock asyncio (Python 3.11).

turboloop's SSLProtocol (``turboloop/_sslproto.py``) stops its read loop when neither the incoming
BIO nor the SSL object holds more, instead of waiting for SSLWantReadError. These tests feed the
server bytes in the shapes that could trip that: many records in one segment, records split
mid-way across segments, data and close_notify in one segment, a close_notify alone, and large
messages. The client is a raw socket with an ssl.SSLObject over memory BIOs, so the test decides
exactly which bytes arrive together. Every case runs on asyncio, turboloop and uvloop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl

import pytest

trustme = pytest.importorskip("trustme")

TIMEOUT = 20.0


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


class Server(asyncio.Protocol):
    """Records what the app protocol sees: the bytes, how many data_received calls, EOF."""

    def __init__(self, loop, echo):
        self.data = bytearray()
        self.calls = 0
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.echo = echo
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert data, "data_received with no bytes"
        self.calls += 1
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.eof.set_result(bytes(self.data))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class RawTLSClient:
    """A TLS client over a non-blocking socket, driven by hand through memory BIOs."""

    def __init__(self, loop, sock, ctx):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def feed(self):
        data = await self.loop.sock_recv(self.sock, 65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return data

    async def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self.feed()
        await self.flush()

    def records(self, payload):
        """The TLS records carrying payload (not sent yet)."""
        self.obj.write(payload)
        return self.outgoing.read()

    def close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    async def read_exactly(self, size):
        got = bytearray()
        while len(got) < size:
            try:
                got += self.obj.read(size - len(got))
            except ssl.SSLWantReadError:
                if not await self.feed():
                    raise ConnectionError(f"EOF after {len(got)} of {size} bytes")
        return bytes(got)


async def start(loop, tls, echo=False):
    server_ctx, client_ctx = tls
    protocols = []

    def factory():
        proto = Server(loop, echo)
        protocols.append(proto)
        return proto

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, server.sockets[0].getsockname())
    client = RawTLSClient(loop, sock, client_ctx)
    await client.handshake()
    for _ in range(200):
        if protocols and protocols[0].transport is not None:
            break
        await asyncio.sleep(0.01)
    return server, client, protocols[0]


async def stop(server, client):
    client.sock.close()
    server.close()
    await server.wait_closed()


def test_many_records_in_one_segment_then_close_notify_in_the_same(loop, tls):
    """Forty records and the close_notify arrive in one send: all bytes, then EOF."""
    payload = os.urandom(40 * 1000)

    async def main():
        server, client, proto = await start(loop, tls)
        try:
            wire = b"".join(client.records(payload[i : i + 1000]) for i in range(0, len(payload), 1000))
            await loop.sock_sendall(client.sock, wire + client.close_notify())
            got = await asyncio.wait_for(proto.eof, 10)
        finally:
            await stop(server, client)
        return got

    assert run(loop, main()) == payload


def test_records_split_across_segments(loop, tls):
    """Records cut at every awkward place (mid-header, mid-body) arrive whole and in order."""
    payload = os.urandom(100_000)

    async def main():
        server, client, proto = await start(loop, tls)
        try:
            wire = client.records(payload[:50_000]) + client.records(payload[50_000:])
            cuts = [1, 3, 5, 6, 700, 16_000, 16_389, 16_390, 40_000, len(wire) - 2, len(wire) - 1]
            start_at = 0
            for cut in cuts + [len(wire)]:
                await loop.sock_sendall(client.sock, wire[start_at:cut])
                start_at = cut
                await asyncio.sleep(0.005)  # let the server read this piece alone
            for _ in range(1000):
                if len(proto.data) >= len(payload):
                    break
                await asyncio.sleep(0.01)
        finally:
            await stop(server, client)
        return bytes(proto.data)

    assert run(loop, main()) == payload


def test_close_notify_alone_after_data(loop, tls):
    async def main():
        server, client, proto = await start(loop, tls)
        try:
            await loop.sock_sendall(client.sock, client.records(b"hello"))
            for _ in range(500):
                if proto.data:
                    break
                await asyncio.sleep(0.01)
            assert bytes(proto.data) == b"hello"
            assert not proto.eof.done()
            await loop.sock_sendall(client.sock, client.close_notify())
            got = await asyncio.wait_for(proto.eof, 10)
        finally:
            await stop(server, client)
        return got

    assert run(loop, main()) == b"hello"


@pytest.mark.parametrize("size", [1, 1024, 16_384, 16_385, 100 * 1024, 1024 * 1024])
def test_echo_sizes(loop, tls, size):
    """Echo through SSLProtocol both ways; checksummed."""
    payload = os.urandom(size)

    async def main():
        server, client, proto = await start(loop, tls, echo=True)
        try:
            for _ in range(3):
                await loop.sock_sendall(client.sock, client.records(payload))
                echoed = await client.read_exactly(size)
                assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        finally:
            await stop(server, client)
        return len(proto.data)

    assert run(loop, main()) == 3 * size


def test_turboloop_uses_its_sslprotocol(loop, loop_name, tls):
    """The read loop ends without SSLWantReadError once the records are used up (and with it on
    asyncio's SSLProtocol, which is what the change saves)."""
    if loop_name == "uvloop":
        pytest.skip("uvloop has its own SSLProtocol")
    raised = []
    original = ssl.SSLObject.read

    def counting_read(self, *args):
        try:
            return original(self, *args)
        except ssl.SSLWantReadError:
            raised.append(self.server_side)
            raise

    async def main():
        server, client, proto = await start(loop, tls)
        try:
            await asyncio.sleep(0.05)  # the server is done with the handshake's records
            raised.clear()
            ssl.SSLObject.read = counting_read
            try:
                await loop.sock_sendall(client.sock, client.records(b"x" * 5000))
                for _ in range(500):
                    if len(proto.data) == 5000:
                        break
                    await asyncio.sleep(0.01)
            finally:
                ssl.SSLObject.read = original
        finally:
            await stop(server, client)
        return bytes(proto.data), sum(raised)  # server-side raises only

    data, server_raises = run(loop, main())
    assert data == b"x" * 5000
    if loop_name == "turboloop":
        assert server_raises == 0
    else:
        assert server_raises >= 1
