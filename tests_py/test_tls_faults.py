"""TLS faults and TLS under load, on every loop of ``conftest.LOOP_NAMES``, checked against stock
asyncio in the same test.

Every fault scenario is a coroutine that returns what a program sees (the exception's type and
message, the bytes read, the exception handler's calls). Each test runs the scenario on a fresh
stock asyncio loop (the reference) and then on the loop under test, and requires the same outcome.
Around each run it checks that nothing leaks: the process's open descriptors return to their count
before the run, and every transport the loop still knows of (``loop._transports``, which stock
asyncio and turboloop keep) is closing. Every run is bounded by ``asyncio.timeout``, so a hang fails.

The faulty peers are raw sockets driven through the loop's ``sock_*`` methods, with an
``ssl.SSLObject`` over memory BIOs where the peer must speak TLS, so that the test decides exactly
which bytes reach the loop's TLS transport and when the connection ends.

The load tests: 1,000 concurrent TLS connections to one server, each doing a few echo round trips;
and a checksummed echo of 256 MiB through a TLS pair under backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import socket
import ssl
import struct

import pytest
from chunk_stream import ChunkStream
from conftest import get_factory

trustme = pytest.importorskip("trustme")

TIMEOUT = 30.0  # a bound on each scenario run; the scenarios take well under a second
HANDSHAKE_TIMEOUT = 0.25
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------------------------
# Certificates and contexts
# ----------------------------------------------------------------------------------------------


class Certs:
    def __init__(self):
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()  # a CA the clients do not trust
        self.server_ctx = self.server_context(self.ca.issue_cert(HOST, "localhost"))
        # No TLS 1.3 session tickets: a raw client that reads none leaves nothing unread, so its
        # close() sends a FIN, not a RST.
        self.no_tickets_server_ctx = self.server_context(self.ca.issue_cert(HOST))
        self.no_tickets_server_ctx.num_tickets = 0
        self.untrusted_server_ctx = self.server_context(self.other_ca.issue_cert(HOST))
        self.wrong_name_server_ctx = self.server_context(self.ca.issue_cert("wrong.example"))
        self.client_ctx = ssl.create_default_context()
        self.ca.configure_trust(self.client_ctx)

    @staticmethod
    def server_context(cert):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        return ctx

    def raw_server_ctx(self):
        """For a hand-driven TLS server: no session tickets, so that after the handshake the
        server sends only what the test writes."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(HOST).configure_cert(ctx)
        ctx.num_tickets = 0
        return ctx


@pytest.fixture(scope="module")
def certs():
    return Certs()


# ----------------------------------------------------------------------------------------------
# Running a scenario on the reference loop and on the loop under test
# ----------------------------------------------------------------------------------------------


def open_fds():
    """The process's open descriptors (less the one listdir used to list them)."""
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


async def descriptors_back_to(before):
    """Wait (bounded) until the process's descriptors are those of ``before``. A transport closes
    its socket in a callback of its own after the connection is lost, and the peer's side of a
    connection closes when that side reads the end; there is no event to await for either, so this
    polls, and fails with the descriptors left over if they do not close within 5 seconds."""
    for _ in range(500):
        if open_fds() == before:
            return
        await asyncio.sleep(0.01)
    leaked = sorted(set(open_fds()) - set(before))
    details = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    raise AssertionError(f"descriptors leaked: {details}")


def describe(exc):
    """What a program sees of an exception: its type and message, and for certificate errors the
    verification code and message."""
    if exc is None:
        return None
    out = (type(exc).__name__, str(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):
        out += (exc.verify_code, exc.verify_message)
    return out


async def warm_up(loop):
    """One plain TCP connection through a server, so that descriptors a loop opens once, on first
    use, are open before the count (uvloop opens a socket and /dev/null on its first accept)."""
    lost = loop.create_future()

    class Closer(asyncio.Protocol):
        def data_received(self, data):
            self.transport.write(data)

        def connection_made(self, transport):
            self.transport = transport

        def connection_lost(self, exc):
            lost.set_result(exc)

    server = await loop.create_server(Closer, HOST, 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    writer.close()
    await writer.wait_closed()
    await lost
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0)


def observe(loop, scenario, *args, timeout=TIMEOUT):
    """Run ``scenario(loop, *args)`` on ``loop``; return its outcome and the exception handler's
    calls, after checking that no descriptor or transport is left open."""
    calls = []
    loop.set_exception_handler(lambda _loop, ctx: calls.append(ctx))

    async def main():
        async with asyncio.timeout(timeout):
            await warm_up(loop)
            before = open_fds()
            outcome = await scenario(loop, *args)
            await descriptors_back_to(before)
        return outcome

    outcome = loop.run_until_complete(main())
    transports = getattr(loop, "_transports", None)  # uvloop keeps none
    if transports is not None:
        still_open = [t for t in list(transports.values()) if not t.is_closing()]
        assert not still_open, f"transports left open: {still_open}"
    handler_calls = [(ctx.get("message"), describe(ctx.get("exception"))) for ctx in calls]
    return outcome, handler_calls


def compare(loop, scenario, *args):
    """The outcome on ``loop`` must be stock asyncio's. Returns it."""
    reference_loop = get_factory("asyncio")()
    try:
        expected = observe(reference_loop, scenario, *args)
    finally:
        reference_loop.close()
    got = observe(loop, scenario, *args)
    assert got == expected
    return got


async def outcome_of(aw):
    try:
        result = await aw
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome
        return describe(exc)
    return ("no exception", result)


# ----------------------------------------------------------------------------------------------
# Raw peers
# ----------------------------------------------------------------------------------------------


async def raw_listener(loop):
    lsock = socket.socket()
    lsock.bind((HOST, 0))
    lsock.listen(8)
    lsock.setblocking(False)
    return lsock


async def raw_connect(loop, addr):
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, addr)
    return sock


async def recv_exactly(loop, sock, n):
    got = bytearray()
    while len(got) < n:
        data = await loop.sock_recv(sock, n - len(got))
        if not data:
            raise ConnectionError(f"EOF after {len(got)} of {n} bytes")
        got += data
    return bytes(got)


async def recv_record(loop, sock):
    """One whole TLS record (header and body)."""
    header = await recv_exactly(loop, sock, 5)
    (length,) = struct.unpack("!H", header[3:5])
    return header + await recv_exactly(loop, sock, length)


async def recv_until_eof(loop, sock):
    got = bytearray()
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return bytes(got)
        got += data


def reset(sock):
    """Close with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawTLS:
    """One end of a TLS connection driven by hand through memory BIOs over a non-blocking socket."""

    def __init__(self, loop, sock, ctx, server_side):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=None if server_side else HOST
        )

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError("EOF during the handshake")
                self.incoming.write(data)
        await self.flush()

    def records(self, payload):
        self.obj.write(payload)
        return self.outgoing.read()


class Recorder(asyncio.Protocol):
    """What the application protocol sees; ``first`` resolves with the first bytes received."""

    def __init__(self, loop):
        self.made = False
        self.data = bytearray()
        self.eof = False
        self.transport = None
        self.first = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.made = True
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if not self.first.done():
            self.first.set_result(bytes(data))

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class BufferedRecorder(Recorder, asyncio.BufferedProtocol):
    """The same, as a BufferedProtocol (SSLProtocol's other read path)."""

    def __init__(self, loop):
        super().__init__(loop)
        self.buffer = bytearray(1000)

    def get_buffer(self, sizehint):
        # A memoryview: asyncio's SSLProtocol (3.11) fills the rest of a buffer through
        # ``buf[offset:]``, which for a bytearray is a copy, so bytes past the first read are lost.
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buffer[:nbytes]))


RESET = ("ConnectionResetError", "[Errno 104] Connection reset by peer")


# ----------------------------------------------------------------------------------------------
# Certificate errors
# ----------------------------------------------------------------------------------------------


HOW = ["create_connection", "open_connection", "create_unix_connection", "start_tls"]


def recorder_factory(loop):
    """A server's protocol factory for one connection, and the future of the Recorder it makes."""
    made = loop.create_future()

    def factory():
        proto = Recorder(loop)
        made.set_result(proto)
        return proto

    return made, factory


async def _connect_to_tls_server(loop, server_ctx, client_ctx, how, **kwargs):
    """Connect to a TLS server with ``server_ctx`` by ``how``: ``create_connection``,
    ``open_connection``, ``create_unix_connection`` (to a Unix TLS server) or ``start_tls`` (a
    plain connection first, then ``loop.start_tls``); return the outcome."""
    if how == "create_unix_connection":
        path = f"/tmp/turboloop-tls-faults-{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await loop.create_unix_server(asyncio.Protocol, path, ssl=server_ctx)
    else:
        server = await loop.create_server(asyncio.Protocol, HOST, 0, ssl=server_ctx)
    try:
        if how == "create_unix_connection":
            kwargs.setdefault("server_hostname", HOST)
            connect = loop.create_unix_connection(asyncio.Protocol, path, ssl=client_ctx, **kwargs)
            return await outcome_of(connect)
        port = server.sockets[0].getsockname()[1]
        if how == "create_connection":
            connect = loop.create_connection(asyncio.Protocol, HOST, port, ssl=client_ctx, **kwargs)
            return await outcome_of(connect)
        if how == "open_connection":
            return await outcome_of(asyncio.open_connection(HOST, port, ssl=client_ctx, **kwargs))
        assert how == "start_tls"
        transport, protocol = await loop.create_connection(asyncio.Protocol, HOST, port)
        kwargs.setdefault("server_hostname", HOST)
        outcome = await outcome_of(loop.start_tls(transport, protocol, client_ctx, **kwargs))
        # asyncio closes the plain transport when the upgrade fails
        return outcome, transport.is_closing()
    finally:
        server.close()
        await server.wait_closed()
        if how == "create_unix_connection":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def certificate_error(outcome, how):
    """The exception's description, whichever way the connection was made."""
    if how == "start_tls":
        outcome, plain_transport_closing = outcome
        assert plain_transport_closing
    return outcome


@pytest.mark.parametrize("how", HOW)
def test_untrusted_ca(loop, certs, how):
    """A server whose certificate is signed by a CA the client does not trust."""

    async def scenario(loop):
        return await _connect_to_tls_server(loop, certs.untrusted_server_ctx, certs.client_ctx, how)

    outcome, handler_calls = compare(loop, scenario)
    outcome = certificate_error(outcome, how)
    assert outcome[0] == "SSLCertVerificationError"
    assert "certificate verify failed: unable to get local issuer certificate" in outcome[1]
    assert handler_calls == []


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(
    "server_hostname, message",
    [
        (None, "IP address mismatch, certificate is not valid for '127.0.0.1'."),
        ("localhost", "Hostname mismatch, certificate is not valid for 'localhost'."),
    ],
)
def test_hostname_mismatch(loop, certs, how, server_hostname, message):
    """A certificate (trusted) for another name than the one the client checks: the address
    connected to, or ``server_hostname``."""
    kwargs = {} if server_hostname is None else {"server_hostname": server_hostname}

    async def scenario(loop):
        return await _connect_to_tls_server(loop, certs.wrong_name_server_ctx, certs.client_ctx, how, **kwargs)

    outcome, handler_calls = compare(loop, scenario)
    outcome = certificate_error(outcome, how)
    assert outcome[0] == "SSLCertVerificationError"
    assert outcome[3] == message
    assert handler_calls == []


# ----------------------------------------------------------------------------------------------
# Handshake timeout
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["create_connection", "open_connection", "start_tls"])
def test_client_handshake_timeout(loop, certs, how):
    """The server reads the ClientHello and never answers."""

    async def scenario(loop):
        lsock = await raw_listener(loop)
        try:

            async def silent_server():
                conn, _ = await loop.sock_accept(lsock)
                with conn:
                    await recv_record(loop, conn)  # the ClientHello
                    return await recv_until_eof(loop, conn)  # the client gives up and closes

            server = asyncio.ensure_future(silent_server())
            addr = lsock.getsockname()
            kwargs = {"ssl_handshake_timeout": HANDSHAKE_TIMEOUT}
            if how == "create_connection":
                coro = loop.create_connection(asyncio.Protocol, *addr, ssl=certs.client_ctx, **kwargs)
            elif how == "open_connection":
                coro = asyncio.open_connection(*addr, ssl=certs.client_ctx, **kwargs)
            else:
                transport, protocol = await loop.create_connection(asyncio.Protocol, *addr)
                coro = loop.start_tls(transport, protocol, certs.client_ctx, server_hostname=HOST, **kwargs)
            outcome = await outcome_of(coro)
            if how == "start_tls":
                assert transport.is_closing()
            return outcome, await server
        finally:
            lsock.close()

    (outcome, server_got), handler_calls = compare(loop, scenario)
    assert outcome[0] == "ConnectionAbortedError", outcome
    assert f"longer than {HANDSHAKE_TIMEOUT} seconds" in outcome[1]
    assert server_got == b""
    assert handler_calls == []


def test_server_handshake_timeout(loop, certs):
    """A client connects to a TLS server and never sends a ClientHello: the server drops it after
    its ``ssl_handshake_timeout``, and the application never sees the connection."""

    async def scenario(loop):
        made, factory = recorder_factory(loop)
        server = await loop.create_server(
            factory, HOST, 0, ssl=certs.server_ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
        try:
            with await raw_connect(loop, server.sockets[0].getsockname()) as sock:
                got = await outcome_of(recv_until_eof(loop, sock))
        finally:
            server.close()
            await server.wait_closed()
        proto = await made
        return got, proto.made, proto.lost.done()

    outcome, handler_calls = compare(loop, scenario)
    assert outcome == (("no exception", b""), False, False)
    assert handler_calls == []


@pytest.mark.parametrize("api", ["protocol", "stream"])
def test_shutdown_timeout(loop, certs, api):
    """The client closes a TLS connection whose server never answers the close_notify (nor
    closes): after ``ssl_shutdown_timeout`` the client aborts the connection."""
    raw_ctx = certs.raw_server_ctx()

    async def scenario(loop):
        lsock = await raw_listener(loop)
        try:

            async def server():
                conn, _ = await loop.sock_accept(lsock)
                with conn:
                    tls = RawTLS(loop, conn, raw_ctx, server_side=True)
                    await tls.handshake()
                    tls.incoming.write(await recv_until_eof(loop, conn))  # close_notify, then the end
                    try:
                        data = tls.obj.read()
                    except ssl.SSLError as exc:
                        return describe(exc)
                    return "close_notify" if data == b"" else data

            task = asyncio.ensure_future(server())
            addr = lsock.getsockname()
            kwargs = {"ssl": certs.client_ctx, "ssl_shutdown_timeout": HANDSHAKE_TIMEOUT}
            if api == "protocol":
                transport, proto = await loop.create_connection(lambda: Recorder(loop), *addr, **kwargs)
                transport.close()
                result = describe(await proto.lost)
            else:
                reader, writer = await asyncio.open_connection(*addr, **kwargs)
                writer.close()
                result = await outcome_of(writer.wait_closed())
            return result, await task
        finally:
            lsock.close()

    (result, server_got), handler_calls = compare(loop, scenario)
    assert result == ("TimeoutError", "SSL shutdown timed out")
    assert server_got == "close_notify"
    assert handler_calls == []


# ----------------------------------------------------------------------------------------------
# The peer goes away mid-handshake
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close_after_client_hello", "half_server_flight", "reset_after_client_hello"])
def test_server_closes_mid_handshake(loop, certs, how):
    raw_ctx = certs.raw_server_ctx()

    async def scenario(loop):
        lsock = await raw_listener(loop)
        try:

            async def server():
                conn, _ = await loop.sock_accept(lsock)
                hello = await recv_record(loop, conn)
                if how == "reset_after_client_hello":
                    reset(conn)
                    return
                with conn:
                    if how == "half_server_flight":
                        tls = RawTLS(loop, conn, raw_ctx, server_side=True)
                        tls.incoming.write(hello)
                        with contextlib.suppress(ssl.SSLWantReadError):
                            tls.obj.do_handshake()
                        flight = tls.outgoing.read()
                        await loop.sock_sendall(conn, flight[: len(flight) // 2])

            task = asyncio.ensure_future(server())
            outcome = await outcome_of(
                loop.create_connection(asyncio.Protocol, *lsock.getsockname(), ssl=certs.client_ctx)
            )
            await task
            return outcome
        finally:
            lsock.close()

    outcome, handler_calls = compare(loop, scenario)
    assert outcome == (RESET if how.startswith("reset") else ("ConnectionResetError", ""))
    assert handler_calls == []


@pytest.mark.parametrize("how", ["close_before_hello", "half_client_hello", "reset_after_server_answer"])
def test_client_closes_mid_handshake(loop, certs, how):
    """A client goes away before its handshake is done: the TLS server drops the connection; the
    application's protocol (made when the connection is accepted) never gets ``connection_made``;
    nothing is reported."""

    async def scenario(loop):
        made, factory = recorder_factory(loop)
        server = await loop.create_server(factory, HOST, 0, ssl=certs.server_ctx)
        try:
            sock = await raw_connect(loop, server.sockets[0].getsockname())
            if how == "close_before_hello":
                sock.close()
            else:
                tls = RawTLS(loop, sock, certs.client_ctx, server_side=False)
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.obj.do_handshake()
                hello = tls.outgoing.read()
                if how == "half_client_hello":
                    await loop.sock_sendall(sock, hello[: len(hello) // 2])
                    sock.close()
                else:
                    await loop.sock_sendall(sock, hello)
                    await recv_record(loop, sock)  # the server answered: it is mid-handshake
                    reset(sock)
            proto = await made
        finally:
            server.close()
            await server.wait_closed()
        return proto.made, proto.lost.done()

    outcome, handler_calls = compare(loop, scenario)
    assert outcome == (False, False)
    assert handler_calls == []


# ----------------------------------------------------------------------------------------------
# The peer goes away mid-record
# ----------------------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes: one record


UVLOOP_NO_EOF = "uvloop calls no eof_received when the peer ends (FIN) mid-record; asyncio does"


@pytest.mark.parametrize(
    "api, end",
    [
        pytest.param("protocol", "close", marks=pytest.mark.uvloop_xfail(UVLOOP_NO_EOF)),
        ("protocol", "reset"),
        pytest.param("buffered", "close", marks=pytest.mark.uvloop_xfail(UVLOOP_NO_EOF)),
        ("buffered", "reset"),
        ("stream", "close"),
        ("stream", "reset"),
    ],
)
def test_server_closes_mid_record(loop, certs, api, end):
    """After the handshake the server sends one whole record; once the client has answered it,
    the server sends half of the next record and closes (FIN) or resets the connection."""
    raw_ctx = certs.raw_server_ctx()

    async def scenario(loop):
        lsock = await raw_listener(loop)
        try:

            async def server():
                conn, _ = await loop.sock_accept(lsock)
                tls = RawTLS(loop, conn, raw_ctx, server_side=True)
                await tls.handshake()
                await loop.sock_sendall(conn, tls.records(b"whole record"))
                tls.incoming.write(await recv_record(loop, conn))
                assert tls.obj.read() == b"ack"
                half = tls.records(PAYLOAD)
                await loop.sock_sendall(conn, half[: len(half) // 2])
                if end == "reset":
                    reset(conn)
                else:
                    conn.close()

            task = asyncio.ensure_future(server())
            addr = lsock.getsockname()
            if api in ("protocol", "buffered"):
                cls = Recorder if api == "protocol" else BufferedRecorder
                transport, proto = await loop.create_connection(lambda: cls(loop), *addr, ssl=certs.client_ctx)
                await proto.first
                transport.write(b"ack")
                exc = await proto.lost
                result = (bytes(proto.data), proto.eof, describe(exc))
            else:
                reader, writer = await asyncio.open_connection(*addr, ssl=certs.client_ctx)
                first = await reader.readexactly(len(b"whole record"))
                writer.write(b"ack")
                rest = await outcome_of(reader.read())
                writer.close()
                closed = await outcome_of(writer.wait_closed())
                result = (first, rest, closed)
            await task
            return result
        finally:
            lsock.close()

    result, handler_calls = compare(loop, scenario)
    assert result[0] == b"whole record"
    if api == "stream":
        # asyncio: a FIN ends the stream (the half record is dropped); a reset raises
        assert result[1] == (("no exception", b"") if end == "close" else RESET)
    else:
        # asyncio: a FIN is eof_received() then connection_lost(None); a reset is connection_lost(exc)
        assert result[1:] == ((True, None) if end == "close" else (False, RESET))
    assert handler_calls == []


@pytest.mark.parametrize("end", [pytest.param("close", marks=pytest.mark.uvloop_xfail(UVLOOP_NO_EOF)), "reset"])
def test_client_closes_mid_record(loop, certs, end):
    """A client sends one whole record; once the server's protocol has it, the client sends half
    of the next record and closes or resets: the server's protocol gets ``connection_lost`` with
    asyncio's exception (or none), and never a partial record."""

    async def scenario(loop):
        made, factory = recorder_factory(loop)
        server = await loop.create_server(factory, HOST, 0, ssl=certs.no_tickets_server_ctx)
        try:
            sock = await raw_connect(loop, server.sockets[0].getsockname())
            tls = RawTLS(loop, sock, certs.client_ctx, server_side=False)
            await tls.handshake()
            await loop.sock_sendall(sock, tls.records(b"whole record"))
            proto = await made
            await proto.first
            half = tls.records(PAYLOAD)
            await loop.sock_sendall(sock, half[: len(half) // 2])
            if end == "reset":
                reset(sock)
            else:
                sock.close()
            exc = await proto.lost
            return bytes(proto.data), proto.eof, describe(exc)
        finally:
            server.close()
            await server.wait_closed()

    (data, eof, exc), handler_calls = compare(loop, scenario)
    assert data == b"whole record"
    assert (eof, exc) == ((True, None) if end == "close" else (False, RESET))
    assert handler_calls == []


UVLOOP_KEEPS_DATA = "on a reset, uvloop's buffered read path delivers all the SSL object held; asyncio drops it"


@pytest.mark.parametrize(
    "api, end",
    [
        ("protocol", "close_notify"),
        pytest.param("protocol", "close", marks=pytest.mark.uvloop_xfail(UVLOOP_NO_EOF)),
        ("protocol", "reset"),
        ("buffered", "close_notify"),
        pytest.param("buffered", "close", marks=pytest.mark.uvloop_xfail(UVLOOP_NO_EOF)),
        pytest.param("buffered", "reset", marks=pytest.mark.uvloop_xfail(UVLOOP_KEEPS_DATA)),
    ],
)
def test_server_ends_while_client_reading_is_paused(loop, certs, api, end):
    """The client pauses reading after the first record; the server then sends more records
    (and half of one more) and ends the connection with a close_notify, a FIN or a RST. On
    ``resume_reading()`` the client gets what asyncio gives it: the records it had not read and
    the end as asyncio reports it."""
    raw_ctx = certs.raw_server_ctx()

    async def scenario(loop):
        lsock = await raw_listener(loop)
        try:
            sent = loop.create_future()

            async def server():
                conn, _ = await loop.sock_accept(lsock)
                tls = RawTLS(loop, conn, raw_ctx, server_side=True)
                await tls.handshake()
                await loop.sock_sendall(conn, tls.records(b"whole record"))
                tls.incoming.write(await recv_record(loop, conn))
                assert tls.obj.read() == b"ack"
                more = b"".join(tls.records(PAYLOAD) for _ in range(3))
                if end == "close_notify":
                    with contextlib.suppress(ssl.SSLWantReadError):
                        tls.obj.unwrap()
                    await loop.sock_sendall(conn, more + tls.outgoing.read())
                    sent.set_result(None)
                    with conn:
                        return await recv_until_eof(loop, conn) != b""
                half = tls.records(PAYLOAD)
                await loop.sock_sendall(conn, more + half[: len(half) // 2])
                if end == "reset":
                    reset(conn)
                else:
                    conn.close()
                sent.set_result(None)
                return None

            task = asyncio.ensure_future(server())
            cls = Recorder if api == "protocol" else BufferedRecorder
            transport, proto = await loop.create_connection(
                lambda: cls(loop), *lsock.getsockname(), ssl=certs.client_ctx
            )
            await proto.first
            transport.pause_reading()
            transport.write(b"ack")
            await sent  # everything is on its way, and the connection ended, while reading is paused
            transport.resume_reading()
            exc = await proto.lost
            server_result = await task
            return bytes(proto.data), proto.eof, describe(exc), server_result
        finally:
            lsock.close()

    (data, eof, exc, server_result), handler_calls = compare(loop, scenario)
    sent = b"whole record" + 3 * PAYLOAD
    if api == "protocol" or end == "close_notify":
        assert data == sent
    else:
        # asyncio's buffered read path hands over one buffer (here 1,000 bytes) per read and
        # schedules the next; a FIN or RST ends the connection first, and what the SSL object
        # still held is dropped. The loop under test must drop exactly as much (compare()).
        assert sent.startswith(data) and len(data) < len(sent)
    if end == "close_notify":
        assert (eof, exc, server_result) == (True, None, True)
    assert handler_calls == []


# ----------------------------------------------------------------------------------------------
# Load: 1,000 concurrent connections
# ----------------------------------------------------------------------------------------------

CONNECTIONS = 1000
ROUNDS = 3


@contextlib.contextmanager
def nofile_at_hard_limit(needed):
    """Raise the RLIMIT_NOFILE soft limit to the hard limit for the test, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors; RLIMIT_NOFILE hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def message(i, rnd):
    """A line of a length that depends on the connection and round (no newline inside)."""
    body = (b"%d.%d:" % (i, rnd)) * (1 + (i * 7 + rnd * 13) % 300)
    return body + b"\n"


def test_many_concurrent_tls_connections(loop, certs):
    """1,000 TLS clients connect to one TLS server at once (in one process, so 2,000 sockets);
    only when the server holds all of them does each do its echo round trips. Every round trip
    comes back intact, the server serves every connection to its end, nothing reaches the
    exception handler, and the descriptors return to their count before the test."""

    async def scenario(loop):
        all_connected = loop.create_future()
        all_served = loop.create_future()
        state = {"open": 0, "most": 0, "served": 0}
        failures = []

        async def handler(reader, writer):
            state["open"] += 1
            state["most"] = max(state["most"], state["open"])
            if state["most"] == CONNECTIONS and not all_connected.done():
                all_connected.set_result(None)
            try:
                while line := await reader.readline():
                    writer.write(line)
                    await writer.drain()
                writer.close()
                await writer.wait_closed()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                failures.append(("server", describe(exc)))
            finally:
                state["open"] -= 1
                state["served"] += 1
                if state["served"] == CONNECTIONS:
                    all_served.set_result(None)

        server = await asyncio.start_server(handler, HOST, 0, ssl=certs.server_ctx, backlog=CONNECTIONS)
        addr = server.sockets[0].getsockname()

        async def client(i):
            reader, writer = await asyncio.open_connection(*addr, ssl=certs.client_ctx)
            try:
                await all_connected
                for rnd in range(ROUNDS):
                    msg = message(i, rnd)
                    writer.write(msg)
                    await writer.drain()
                    got = await reader.readline()
                    if got != msg:
                        failures.append(("client", i, rnd, len(got), len(msg)))
            finally:
                writer.close()
                await writer.wait_closed()
            return i

        try:
            results = await asyncio.gather(*(client(i) for i in range(CONNECTIONS)), return_exceptions=True)
            await all_served
        finally:
            server.close()
            await server.wait_closed()
        errors = [describe(r) for r in results if isinstance(r, BaseException)]
        return errors, failures, state

    with nofile_at_hard_limit(2 * CONNECTIONS + 100):
        (errors, failures, state), handler_calls = observe(loop, scenario, timeout=90)  # < conftest's guard
    assert errors == []
    assert failures == []
    assert state == {"open": 0, "most": CONNECTIONS, "served": CONNECTIONS}
    assert handler_calls == []


# ----------------------------------------------------------------------------------------------
# No byte lost: a checksummed echo through a TLS pair under backpressure
# ----------------------------------------------------------------------------------------------

# Sizes around TLS's 16 KiB records too (see chunk_stream.py).
chunks = ChunkStream(20251126, (1, 7, 1000, 4096, 16_384, 16_385, 65_537, 200_003, 262_144, 13)).chunks
HIGH, LOW = 64 * 1024, 16 * 1024
ECHO_TIMEOUT = 90.0  # under conftest's 120 s guard


def echo_through_tls(loop, certs, total):
    async def scenario(loop):
        served = loop.create_future()

        async def handler(reader, writer):
            n = 0
            h = hashlib.sha256()
            try:
                writer.transport.set_write_buffer_limits(high=HIGH, low=LOW)
                while data := await reader.read(65536):
                    n += len(data)
                    h.update(data)
                    writer.write(data)
                    await writer.drain()
                writer.close()
                await writer.wait_closed()
                served.set_result((n, h.hexdigest()))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                served.set_exception(exc)

        server = await asyncio.start_server(handler, HOST, 0, ssl=certs.server_ctx)
        try:
            addr = server.sockets[0].getsockname()
            reader, writer = await asyncio.open_connection(*addr, ssl=certs.client_ctx)
            writer.transport.set_write_buffer_limits(high=HIGH, low=LOW)

            async def send():
                h = hashlib.sha256()
                n = 0
                for chunk in chunks(total):
                    writer.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    await writer.drain()
                return n, h.hexdigest()

            async def receive():
                h = hashlib.sha256()
                n = 0
                while n < total:
                    data = await reader.read(262_144)
                    if not data:
                        break
                    n += len(data)
                    h.update(data)
                return n, h.hexdigest()

            sent, received = await asyncio.gather(send(), receive())
            writer.close()
            await writer.wait_closed()
            at_server = await served
        finally:
            server.close()
            await server.wait_closed()
        return sent, at_server, received

    (sent, at_server, received), handler_calls = observe(loop, scenario, timeout=ECHO_TIMEOUT)
    assert sent[0] == total
    assert at_server == sent
    assert received == sent
    assert handler_calls == []


def test_tls_echo_integrity_256_mib(loop, certs):
    """256 MiB through a TLS echo pair, both ends under backpressure (small write-buffer limits,
    drain() on every write): the SHA-256 of what came back, and of what the server got, is that
    of what was sent, and nothing more arrives. (About 2.5 s per loop on a 2-core machine; a lost
    byte leaves the client waiting, which the timeout turns into a failure.)"""
    echo_through_tls(loop, certs, 256 << 20)
