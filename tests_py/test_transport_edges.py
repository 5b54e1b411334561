"""Edge cases of socket transports and descriptor watchers, checked against stock asyncio.

Each test pins down one behaviour where turboloop once differed from asyncio: a write() on a
transport whose close() already drained and released its socket, keyword and unbound calls of
write(), a non-contiguous buffer written behind buffered data, a caller's buffer recycled from
pause_writing(), ``transport.max_size``, descriptor numbers that do not fit a C int, a closed
descriptor that is still registered, the file object a registration keeps, file objects whose
``__del__`` re-enters add_reader/remove_reader, and the order of a call_soon_threadsafe()
callback against a reader that became ready after it.

Every test runs on each loop of ``conftest.LOOP_NAMES``; the ``asyncio`` case proves each
expectation.  Where uvloop differs, the uvloop case alone is a non-strict xfail.  Every wait is
bounded, and everything a test opens is closed before it ends (pytest runs with
``filterwarnings = error``).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import struct
import tempfile
import threading
import weakref

import pytest

TIMEOUT = 10.0  # seconds, for any single test's coroutine
# Up to 3.11 asyncio's socket transport copies what write() cannot send at once into a bytearray;
# from 3.12 it keeps the caller's object (a memoryview of it) instead. turboloop copies.
ASYNCIO_COPIES_WRITES = hasattr(asyncio.selector_events._SelectorSocketTransport, "_buffer_factory")


def run(loop, coro, timeout=TIMEOUT):
    """Run ``coro`` on ``loop``, failing (not hanging) after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def run_until(loop, predicate, timeout=5.0):
    async def wait():
        while not predicate():
            await asyncio.sleep(0.001)

    run(loop, wait(), timeout)


async def recv_exactly(loop, sock, n, timeout=5.0):
    """Read ``n`` bytes from the non-blocking ``sock`` (fewer only at EOF), bounded in time."""

    async def read():
        data = bytearray()
        while len(data) < n:
            chunk = await loop.sock_recv(sock, min(n - len(data), 1 << 20))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    return await asyncio.wait_for(read(), timeout)


class Recorder(asyncio.Protocol):
    """Keeps the transport, the pause/resume calls, the data and connection_lost's argument."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.chunks: list[bytes] = []
        self.pauses = 0
        self.resumes = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.chunks.append(data)

    def pause_writing(self):
        self.pauses += 1

    def resume_writing(self):
        self.resumes += 1

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def accepted_transport(loop, protocol_factory=None, sndbuf=None):
    """A transport (connect_accepted_socket) over one end of a socketpair, and the other end,
    non-blocking.  ``sndbuf`` shrinks the transport's send buffer, so writes back up."""
    a, b = socket.socketpair()
    if sndbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    b.setblocking(False)
    if protocol_factory is None:
        protocol_factory = lambda: Recorder(loop)  # noqa: E731
    try:
        transport, proto = await loop.connect_accepted_socket(protocol_factory, a)
    except BaseException:
        a.close()
        b.close()
        raise
    return transport, proto, b


async def until(predicate):
    while not predicate():
        await asyncio.sleep(0)


async def served_transport(loop, protocol_factory=None, sndbuf=None):
    """As accepted_transport, but the transport is a connection a Unix server accepted (the server
    is closed once it has): what a server's protocol gets."""
    if protocol_factory is None:
        protocol_factory = lambda: Recorder(loop)  # noqa: E731
    accepted = loop.create_future()

    def factory():
        proto = protocol_factory()
        accepted.set_result(proto)
        return proto

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "server.sock")
        server = await loop.create_unix_server(factory, path)
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            peer.connect(path)
            proto = await asyncio.wait_for(accepted, 5)
            run_until_made = asyncio.wait_for(until(lambda: proto.transport is not None), 5)
            await run_until_made
        except BaseException:
            peer.close()
            raise
        finally:
            server.close()
    peer.setblocking(False)
    transport = proto.transport
    if sndbuf is not None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return transport, proto, peer


async def close_transport(transport, proto, peer):
    """Abort ``transport`` (if still open), let connection_lost run (bounded), close ``peer``."""
    if not transport.is_closing():
        transport.abort()
    await asyncio.wait([proto.lost], timeout=5)
    peer.close()


# ----------------------------------------------------------------------------------------------
# Writes
# ----------------------------------------------------------------------------------------------


async def write_after_a_drained_close(loop):
    """close() with data buffered: the transport drains it, then calls connection_lost and closes
    its socket; a new socket then takes the descriptor number.  What write() does next (the name
    of what it raised, or None), having sent nothing on that number."""
    transport, proto, peer = await accepted_transport(loop, sndbuf=4096)
    old_fd = transport.get_extra_info("socket").fileno()
    spares = []
    try:
        transport.write(b"x" * 1_000_000)
        assert transport.get_write_buffer_size() > 0  # most of it is buffered
        transport.close()  # closing with a non-empty buffer: connection_lost after the drain
        received = await recv_exactly(loop, peer, 2_000_000)  # to EOF
        assert received == b"x" * 1_000_000
        assert await asyncio.wait_for(asyncio.shield(proto.lost), 5) is None
        await asyncio.sleep(0.01)

        # A new socket takes the freed descriptor number (the lowest free one is used).
        reuser = reuser_peer = None
        for _ in range(64):
            pair = socket.socketpair()
            spares.append(pair)
            for end, other in (pair, pair[::-1]):
                if end.fileno() == old_fd:
                    reuser, reuser_peer = end, other
            if reuser is not None:
                break
        assert reuser is not None, f"no new socket reused descriptor {old_fd}"
        reuser_peer.setblocking(False)

        try:
            transport.write(b"SECRET")
            outcome = None
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcome = type(exc).__name__
        await asyncio.sleep(0.01)
        with pytest.raises(BlockingIOError):
            data = reuser_peer.recv(100)
            pytest.fail(f"the socket reusing descriptor {old_fd} received {data!r}")
        return outcome
    finally:
        for pair in spares:
            for sock in pair:
                sock.close()
        await close_transport(transport, proto, peer)


@pytest.mark.uvloop_xfail("uvloop's write() on the closed transport raises RuntimeError (the handler is closed)")
def test_write_after_a_drained_close_reaches_no_reused_descriptor(loop):
    """A write() after a close() that drained the buffer does what stock asyncio's does: raises
    AttributeError (its transport dropped its socket and loop), or, from gh-156512 (3.14), which
    counts the connection lost there, does nothing.  Either way nothing reaches the descriptor
    number another socket now holds."""
    stock = asyncio.SelectorEventLoop()
    try:
        expected = run(stock, write_after_a_drained_close(stock))
    finally:
        stock.close()
    assert expected in ("AttributeError", None)
    assert run(loop, write_after_a_drained_close(loop)) == expected


@pytest.mark.uvloop_xfail("uvloop's write() takes no keyword argument 'data'")
def test_write_by_keyword_and_through_the_class(loop):
    """write(data=...) and type(transport).write(transport, ...) both write, as asyncio's method;
    write() without data is a TypeError."""

    async def main():
        transport, proto, peer = await accepted_transport(loop)
        try:
            transport.write(data=b"ab")
            type(transport).write(transport, b"cd")
            with pytest.raises(TypeError):
                transport.write()
            assert await recv_exactly(loop, peer, 4) == b"abcd"
            assert not transport.is_closing()
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


class SlottedSocket(socket.socket):
    """A socket subclass whose instances have no __dict__, as socket.socket's."""

    __slots__ = ()


class DictSocket(socket.socket):
    """A socket subclass whose instances have a __dict__ (an attribute could shadow fileno)."""


class OwnFilenoSocket(socket.socket):
    """A socket subclass with its own fileno()."""

    __slots__ = ()

    def fileno(self):
        return super().fileno()


@pytest.mark.uvloop_xfail("uvloop's write() on a socket closed under it reports no error: no connection_lost")
@pytest.mark.parametrize("socket_class", [socket.socket, SlottedSocket, DictSocket, OwnFilenoSocket])
def test_write_after_the_user_closed_the_socket_is_fatal(loop, socket_class):
    """Writes go out on a socket of any socket class; once the user closes the socket under the
    transport, the next write() is a fatal error, connection_lost(OSError EBADF), and the peer
    gets the close's EOF and nothing else."""

    async def main():
        a, peer = socket.socketpair()
        sock = socket_class(fileno=a.detach())
        peer.setblocking(False)
        loop.set_exception_handler(lambda _loop, context: None)  # the fatal error is logged
        transport, proto = await loop.connect_accepted_socket(lambda: Recorder(loop), sock)
        try:
            for _ in range(3):
                transport.write(b"abc")
            assert await recv_exactly(loop, peer, 9) == b"abc" * 3
            sock.close()
            transport.write(b"lost")
            exc = await asyncio.wait_for(asyncio.shield(proto.lost), 2)
            assert isinstance(exc, OSError) and exc.errno == errno.EBADF
            assert await recv_exactly(loop, peer, 100) == b""  # the close's EOF, and nothing else
        finally:
            loop.set_exception_handler(None)
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop refuses a non-contiguous memoryview at once (TypeError)")
def test_non_contiguous_write_behind_buffered_data(loop):
    """With data already buffered, write() of a non-contiguous memoryview.  An asyncio that copies
    (3.11) raises TypeError and leaves the buffer and the connection as they were; one that keeps
    the caller's object buffers it, and the next send fails on it: a fatal BufferError, which drops
    the buffer and loses the connection."""
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

    async def main():
        transport, proto, peer = await accepted_transport(loop, sndbuf=4096)
        try:
            transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing
            transport.write(b"x" * 500_000)
            before = transport.get_write_buffer_size()
            assert before > 0
            if ASYNCIO_COPIES_WRITES:
                with pytest.raises(TypeError):
                    transport.write(memoryview(b"abcdef")[::2])
                assert transport.get_write_buffer_size() == before
                assert not transport.is_closing()
                transport.write(b"END")
                data = await recv_exactly(loop, peer, 500_003)
                assert data == b"x" * 500_000 + b"END"
                assert not proto.lost.done()
            else:
                transport.write(memoryview(b"abcdef")[::2])
                assert transport.get_write_buffer_size() == before + 3
                data = await recv_exactly(loop, peer, 500_003)  # to the EOF of the fatal error
                assert 0 < len(data) < 500_000 and data == b"x" * len(data)
                assert isinstance(await asyncio.wait_for(asyncio.shield(proto.lost), 5), BufferError)
                assert [ctx["message"] for ctx in handled] == ["Fatal write error on socket transport"]
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop still exports the buffer while it calls pause_writing(): BufferError on resize")
def test_pause_writing_may_recycle_the_buffer_just_written(loop):
    """An asyncio that copies what write() cannot send at once (3.11) holds no export of the
    caller's buffer while it calls pause_writing(): the protocol can clear its bytearray there.
    One that keeps the caller's object still exports it: clearing it is a BufferError.  Either way
    every byte written reaches the peer."""
    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

    class Recycler(Recorder):
        buf: bytearray
        error = None

        def pause_writing(self):
            super().pause_writing()
            try:
                self.buf.clear()  # BufferError if the transport still exported it
            except BaseException as exc:  # noqa: BLE001 - the outcome under test
                self.error = exc

    async def main():
        transport, proto, peer = await accepted_transport(loop, lambda: Recycler(loop), sndbuf=4096)
        try:
            proto.buf = bytearray(b"x" * 1_000_000)
            transport.write(proto.buf)
            assert proto.pauses == 1
            if ASYNCIO_COPIES_WRITES:
                assert proto.error is None, repr(proto.error)
                assert proto.buf == b""
            else:
                assert isinstance(proto.error, BufferError), repr(proto.error)
                assert proto.buf == b"x" * 1_000_000
            data = await recv_exactly(loop, peer, 1_000_000)
            assert len(data) == 1_000_000
            assert data == b"x" * 1_000_000
            assert not transport.is_closing()
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())
    assert handled == []


@pytest.mark.uvloop_xfail("uvloop's writelines() copies what it cannot send at once")
def test_writelines_behind_buffered_data_sends_a_bytearray_as_it_is_when_sent(loop):
    """writelines() behind data already buffered: an asyncio that keeps the caller's objects
    (3.12 on) sends a bytearray as it is when its turn comes; one that joins the items (3.11)
    sends them as they were at the call."""

    async def main():
        transport, proto, peer = await accepted_transport(loop, sndbuf=4096)
        try:
            transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing
            transport.write(b"x" * 500_000)
            assert transport.get_write_buffer_size() > 0
            changing = bytearray(b"before")
            transport.writelines([b"<", changing, b">"])
            changing[:] = b"AFTER!"
            data = await recv_exactly(loop, peer, 500_008)
            assert data[:500_000] == b"x" * 500_000
            assert data[500_000:] == (b"<before>" if ASYNCIO_COPIES_WRITES else b"<AFTER!>")
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


def test_writelines_refuses_an_item_that_is_not_bytes_like_before_sending_any(loop, loop_name):
    """A str among the items is a TypeError (memoryview()'s from 3.12, bytes.join()'s on 3.11), and
    none of the items is sent by that call."""

    async def main():
        transport, proto, peer = await accepted_transport(loop)
        try:
            with pytest.raises(TypeError) as caught:
                transport.writelines([b"ok", "text"])
            if loop_name != "uvloop":
                expected = "sequence item 1: expected a bytes-like object, str found"
                if "writelines" in vars(asyncio.selector_events._SelectorSocketTransport):
                    expected = "memoryview: a bytes-like object is required, not 'str'"
                assert str(caught.value) == expected
            await asyncio.sleep(0.01)
            with pytest.raises(BlockingIOError):
                peer.recv(100)
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


def test_writelines_of_more_items_than_one_sendmsg_takes(loop):
    """Thousands of small items (more than IOV_MAX, the most one sendmsg() takes), some empty,
    written while the socket is full: all arrive, in order."""
    items = [str(i).encode() + b"," if i % 7 else b"" for i in range(5000)]

    async def main():
        transport, proto, peer = await accepted_transport(loop, sndbuf=4096)
        try:
            transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing
            transport.writelines(items)
            transport.writelines(items)
            expected = b"".join(items) * 2
            assert await recv_exactly(loop, peer, len(expected)) == expected
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.uvloop_xfail("uvloop keeps a written bytearray exported until it is sent: clearing it is a BufferError")
def test_a_bytearray_emptied_before_its_turn_sends_nothing_and_the_buffer_drains(loop):
    """A bytearray written behind buffered data and emptied before it is sent: nothing of it goes
    out, what follows it does, and the transport is left with nothing to send."""

    async def main():
        transport, proto, peer = await accepted_transport(loop, sndbuf=4096)
        try:
            transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing
            transport.write(b"x" * 200_000)
            emptied = bytearray(b"gone")
            transport.write(emptied)
            transport.write(b"END")
            emptied.clear()
            expected = b"x" * 200_000 + (b"goneEND" if ASYNCIO_COPIES_WRITES else b"END")
            assert await recv_exactly(loop, peer, len(expected)) == expected
            transport.close()  # with nothing left to send, the connection is lost at once
            assert await asyncio.wait_for(asyncio.shield(proto.lost), 5) is None
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


# Writes a callback makes, and what it sees of the transport right after them. turboloop holds a
# callback's small writes back until it ends, so that they go out in one system call; nothing the
# callback (or the loop's caller) can look at may show it.


def test_state_right_after_small_writes_in_a_callback_is_as_if_they_were_sent(loop):
    """After write()s of bytes, bytearray, memoryview and writelines() in one callback, the
    buffer size is 0 (the socket took them) and the peer gets them all, in order."""

    async def main():
        transport, proto, peer = await served_transport(loop)
        try:
            sizes = []

            def callback():
                transport.write(b"head|")
                sizes.append(transport.get_write_buffer_size())
                transport.write(b"body|")
                transport.write(bytearray(b"array|"))
                transport.write(b"more|")
                transport.writelines([b"lines|", memoryview(b"view|")])
                transport.write(b"end")
                sizes.append(transport.get_write_buffer_size())
                transport.write(b"!")

            loop.call_soon(callback)
            expected = b"head|body|array|more|lines|view|end!"
            assert await recv_exactly(loop, peer, len(expected)) == expected
            assert sizes == [0, 0]
            assert transport.get_write_buffer_size() == 0
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.parametrize("ending", ["close", "abort", "write_eof"])
def test_small_writes_then_close_abort_or_write_eof_in_the_same_callback(loop, ending):
    """Writes, then close(), abort() or write_eof() in the same callback: the peer gets the data,
    then EOF, as with writes sent at once."""

    async def main():
        transport, proto, peer = await served_transport(loop)
        try:
            def callback():
                transport.write(b"one,")
                transport.write(b"two")
                getattr(transport, ending)()

            loop.call_soon(callback)
            assert await recv_exactly(loop, peer, 100) == b"one,two"  # up to EOF
            if ending != "write_eof":
                assert await asyncio.wait_for(asyncio.shield(proto.lost), 5) is None
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.parametrize("ending", ["stop", "KeyboardInterrupt"])
def test_small_writes_in_the_last_callback_reach_the_peer_when_run_forever_ends(loop, ending):
    """Writes in the callback that stops the loop, or that raises KeyboardInterrupt out of it,
    are sent by the time run_forever() returns or raises, as they were at once on asyncio."""
    transport, proto, peer = loop.run_until_complete(served_transport(loop))
    try:
        def callback():
            transport.write(b"last ")
            transport.write(b"words")
            if ending == "stop":
                loop.stop()
            else:
                raise KeyboardInterrupt

        loop.call_soon(callback)
        if ending == "stop":
            loop.run_forever()
        else:
            with pytest.raises(KeyboardInterrupt):
                loop.run_forever()
        peer.setblocking(True)
        peer.settimeout(5)
        assert peer.recv(100) == b"last words"
    finally:
        loop.run_until_complete(close_transport(transport, proto, peer))


@pytest.mark.parametrize("then_close", [False, True])
def test_resume_writing_that_writes_while_the_buffer_drains(loop, loop_name, then_close):
    """A protocol whose resume_writing() writes a little (as SSLProtocol writes close_notify):
    the buffer drains, the writer goes, and a close() made before it ends the connection once all
    is sent -- the peer gets every byte, then EOF."""

    class Answering(Recorder):
        def resume_writing(self):
            super().resume_writing()
            self.transport.write(b"tail")

    async def main():
        transport, proto, peer = await served_transport(loop, lambda: Answering(loop), sndbuf=4096)
        try:
            transport.set_write_buffer_limits(high=8192, low=0)  # resumed once all is sent
            transport.write(b"x" * 300_000)
            assert proto.pauses == 1
            if then_close:
                transport.close()
            data = await recv_exactly(loop, peer, 300_004 if not then_close else 1_000_000)
            assert data == b"x" * 300_000 + b"tail"
            if then_close:
                assert await asyncio.wait_for(asyncio.shield(proto.lost), 5) is None
            else:
                await asyncio.sleep(0.05)
                assert transport.get_write_buffer_size() == 0
                assert not proto.lost.done()
                if loop_name == "turboloop":
                    assert loop._native_stats()["writers"] == 0  # no writer left spinning
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


@pytest.mark.parametrize("ending", ["close", "write_eof"])
def test_small_write_to_a_reset_peer_then_close_or_write_eof_loses_the_connection_once(loop, ending):
    """A server's write() to a client that reset the connection, then close() or write_eof() in
    the same callback: one connection_lost(), with the send's error, as on asyncio, whose write()
    met the reset at once."""

    class Counting(Recorder):
        losses = 0

        def connection_lost(self, exc):
            self.losses += 1
            if not self.lost.done():
                super().connection_lost(exc)

    handled = []
    loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

    async def main():
        transport, proto, peer = await served_transport(loop, lambda: Counting(loop))
        try:
            transport.pause_reading()  # only the write can find the reset
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()  # an RST to the server's side
            await asyncio.sleep(0.05)

            def callback():
                transport.write(b"lost")
                getattr(transport, ending)()

            loop.call_soon(callback)
            assert isinstance(await asyncio.wait_for(asyncio.shield(proto.lost), 5), OSError)
            await asyncio.sleep(0.05)
            assert proto.losses == 1
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())
    assert handled == []  # the send's OSError is not reported; nothing else went wrong


def test_a_client_connection_sends_at_once_for_a_peer_the_callback_reads(loop):
    """A connection the program made (not a server's) sends a small write at once: the same
    callback can read it from the peer synchronously, as on asyncio."""

    async def main():
        transport, proto, peer = await accepted_transport(loop)
        try:
            transport.write(b"now")
            peer.setblocking(True)
            peer.settimeout(5)
            assert peer.recv(10) == b"now"
            peer.setblocking(False)
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


def test_small_write_to_a_reset_peer_closes_the_transport_before_drain_returns(loop):
    """A server's write() and drain() to a client that reset the connection: drain() raises, as
    on asyncio, whose write() met the reset at once."""

    async def main():
        server_side = loop.create_future()

        async def handle(reader, writer):
            server_side.set_result(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        peer = socket.create_connection(server.sockets[0].getsockname()[:2])
        try:
            writer = await asyncio.wait_for(server_side, 5)
            writer.transport.pause_reading()  # only the write can find the reset
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()  # an RST to the server's side
            await asyncio.sleep(0.05)
            writer.write(b"ping")
            with pytest.raises(ConnectionError):
                await writer.drain()
            writer.close()
        finally:
            peer.close()
            server.close()

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# Reads
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop's transports have no settable max_size")
def test_reads_are_at_most_max_size(loop):
    """Each recv() asks for at most ``transport.max_size`` bytes, so 10 bytes arrive as 4+4+2."""

    async def main():
        transport, proto, peer = await accepted_transport(loop)
        try:
            transport.max_size = 4
            peer.send(b"0123456789")

            async def all_read():
                while sum(map(len, proto.chunks)) < 10:
                    await asyncio.sleep(0.001)

            await asyncio.wait_for(all_read(), 5)
            assert proto.chunks == [b"0123", b"4567", b"89"]
        finally:
            await close_transport(transport, proto, peer)

    run(loop, main())


# ----------------------------------------------------------------------------------------------
# Descriptor watchers
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
@pytest.mark.parametrize("fd", [2**31, 2**40, 2**70])
def test_descriptor_numbers_beyond_a_c_int(loop, fd):
    """A number too large for a C int: add_reader raises OverflowError and registers nothing."""
    with pytest.raises(OverflowError):
        loop.add_reader(fd, lambda: None)
    with pytest.raises(OverflowError):
        loop.add_writer(fd, lambda: None)
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False


@pytest.mark.uvloop_xfail("uvloop's add_writer() on it raises nothing; its remove_reader returns None")
def test_adding_a_writer_to_a_closed_but_registered_descriptor(loop):
    """add_writer() on a descriptor closed while its reader is registered raises EBADF (from
    epoll_ctl) and drops the whole registration: remove_reader() then finds nothing."""
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        calls = []
        loop.add_reader(fd, calls.append, "reader")
        a.close()
        with pytest.raises(OSError) as info:
            loop.add_writer(fd, calls.append, "writer")
        assert type(info.value) is OSError, repr(info.value)
        assert info.value.errno == 9  # EBADF
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
        # The loop still runs, and neither callback does.
        loop.run_until_complete(asyncio.sleep(0.01))
        assert calls == []


@pytest.mark.uvloop_xfail("uvloop refuses the closed socket object")
def test_adding_callbacks_to_a_closed_but_registered_socket_object(loop):
    """A socket object closed while registered is still found by identity (a selector's
    get_key() does so): add_reader() replaces its reader -- the events are unchanged, so there is
    no system call and no error -- while add_writer() needs epoll_ctl, which fails with EBADF
    and drops the registration.  (Found by the fuzzer: turboloop raised ValueError.)"""
    calls = []
    a, b = socket.socketpair()
    with a, b:
        loop.add_reader(a, calls.append, "first")
        a.close()
        loop.add_reader(a, calls.append, "second")
        assert loop.remove_reader(a) is True
    a, b = socket.socketpair()
    with a, b:
        loop.add_reader(a, calls.append, "reader")
        a.close()
        with pytest.raises(OSError) as info:
            loop.add_writer(a, calls.append, "writer")
        assert type(info.value) is OSError, repr(info.value)
        assert info.value.errno == 9  # EBADF
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(a)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []


@pytest.mark.uvloop_xfail("uvloop refuses the closed socket object")
def test_a_cancelled_sock_recv_leaves_no_registration_to_find_by_identity(loop):
    """sock_recv() replaces the socket's reader and, cancelled, removes it: the socket is no
    longer registered, so once closed it is an invalid descriptor (ValueError), not a registered
    one whose epoll_ctl fails (OSError).  A later registration under the number makes the number
    the key's file object; a reader added for the closed number asks epoll, which fails; and a
    writer added to the socket before it was closed stays registered.  (Found by the fuzzer:
    turboloop's sock_recv leaves its reader parked for a moment, and the parked slot was still
    found by the socket's identity, and dropping it later dropped the writer.)"""

    def cancel_a_waiting_sock_recv(sock):
        async def main():
            waiting = asyncio.ensure_future(loop.sock_recv(sock, 10))
            await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.sleep(0)

        loop.run_until_complete(main())

    calls = []
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        loop.add_reader(a, calls.append, "reader")
        cancel_a_waiting_sock_recv(a)
        a.close()
        for add in (loop.add_writer, loop.add_reader):
            with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
                add(a, calls.append, "after close")
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(a)
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        fd = a.fileno()
        loop.add_reader(a, calls.append, "reader")
        cancel_a_waiting_sock_recv(a)
        loop.add_writer(fd, calls.append, "writer")
        a.close()
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.add_reader(a, calls.append, "after close")
        assert loop.remove_writer(fd) is True
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        fd = a.fileno()
        cancel_a_waiting_sock_recv(a)
        a.close()
        # Not registered: the selector asks epoll to add the closed number, which fails.
        with pytest.raises(OSError) as info:
            loop.add_reader(fd, calls.append, "after close")
        assert type(info.value) is OSError, repr(info.value)
        assert info.value.errno == errno.EBADF
        assert loop.remove_reader(fd) is False
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        cancel_a_waiting_sock_recv(a)
        loop.add_writer(a, calls.append, "writer")
        a.close()
        # The loop drops what sock_recv left; the writer of the closed socket stays registered.
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.add_writer(a, calls.append, "writer again")
        assert loop.remove_writer(a) is True
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []


@pytest.mark.uvloop_xfail("uvloop's remove_writer() raises nothing")
def test_removing_one_of_two_callbacks_of_a_closed_descriptor(loop):
    """remove_writer() of a descriptor closed while its reader and writer are registered keeps
    the reader, which needs epoll_ctl: that fails with EBADF and the whole registration is
    dropped, as by the selector's failed modify().  (Found by the fuzzer: turboloop returned
    True.)"""
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        loop.add_reader(fd, lambda: None)
        loop.add_writer(fd, lambda: None)
        a.close()
        with pytest.raises(OSError) as info:
            loop.remove_writer(fd)
        assert type(info.value) is OSError, repr(info.value)
        assert info.value.errno == 9  # EBADF
        assert loop.remove_reader(fd) is False


@pytest.mark.uvloop_xfail("uvloop refuses the closed socket object")
def test_running_opens_no_descriptor_in_place_of_a_closed_registered_one(loop):
    """The loop opens its descriptors when it is made (asyncio's makes its self-pipe then), not
    on its first run: that would take the lowest free number, here that of a socket closed while
    registered, and add_writer() would then watch the loop's own descriptor in its place.  (Found
    by the fuzzer: turboloop made its signal pipe on the first run.)"""
    a, b = socket.socketpair()
    with a, b:
        loop.add_reader(a, lambda: None)
        a.close()
        loop.run_until_complete(asyncio.sleep(0))
        with pytest.raises(OSError) as info:
            loop.add_writer(a, lambda: None)
        assert type(info.value) is OSError, repr(info.value)
        assert info.value.errno == 9  # EBADF


@pytest.mark.uvloop_xfail("uvloop's remove_reader returns None")
def test_re_adding_the_reader_of_a_closed_descriptor_number(loop):
    """By number too: the reader of a descriptor closed since is replaced without an error, as a
    selector's modify() with unchanged events makes no system call."""
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        loop.add_reader(fd, lambda: None)
        a.close()
        loop.add_reader(fd, lambda: None)
        assert loop.remove_reader(fd) is True
        assert loop.remove_reader(fd) is False


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_registration_keeps_the_first_file_object(loop):
    """A registration keeps the file object it was made with: adding the writer by number does
    not replace the reader's socket, so the closed socket is still found by identity."""
    a, b = socket.socketpair()
    with a, b:
        loop.add_reader(a, lambda: None)
        loop.add_writer(a.fileno(), lambda: None)
        assert loop.remove_writer(a.fileno()) is True
        a.close()
        assert loop.remove_reader(a) is True
        # Registered no more: the closed socket is now just an invalid file object.
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(a)


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_adding_a_writer_keeps_the_reader_and_its_file_object(loop):
    """add_writer() with a second file object for a descriptor that has a reader neither drops the
    first file object (whose __del__ would remove both callbacks) nor the reader; removing both
    releases the callbacks and the first file object."""
    deleted = []

    class FileObj:
        def __init__(self, fd, name, hostile):
            self.fd, self.name, self.hostile = fd, name, hostile

        def fileno(self):
            return self.fd

        def __del__(self):
            deleted.append(self.name)
            if self.hostile and not loop.is_closed():
                loop.remove_writer(self.fd)
                loop.remove_reader(self.fd)

    class Callback:
        def __init__(self, calls, name):
            self.calls, self.name = calls, name

        def __call__(self):
            self.calls.append(self.name)

    a, b = socket.socketpair()
    with a, b:
        calls = []
        loop.add_reader(FileObj(a.fileno(), "first", hostile=True), Callback(calls, "reader"))
        writer = Callback(calls, "writer")
        writer_ref = weakref.ref(writer)
        loop.add_writer(FileObj(a.fileno(), "second", hostile=False), writer)
        del writer
        gc.collect()
        assert "first" not in deleted
        assert writer_ref() is not None

        # Churn other registrations, so a stale reference would meet reused memory.
        others = [socket.socketpair() for _ in range(20)]
        try:
            for s, _ in others:
                loop.add_reader(s.fileno(), lambda: None)
            for s, _ in others:
                assert loop.remove_reader(s.fileno()) is True
        finally:
            for pair in others:
                for sock in pair:
                    sock.close()

        # Both callbacks are still registered: the writer runs (the socket is writable), and
        # the reader runs once data arrives.
        run_until(loop, lambda: "writer" in calls)
        assert loop.remove_writer(a.fileno()) is True
        assert "reader" not in calls
        b.send(b"!")
        run_until(loop, lambda: "reader" in calls)
        assert loop.remove_reader(a.fileno()) is True
        gc.collect()
        assert writer_ref() is None
        assert "first" in deleted
        assert loop.remove_reader(a.fileno()) is False


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_file_object_del_reentering_while_its_reader_is_removed(loop):
    """The file object's __del__, run as remove_reader() drops the registration, adds and removes
    many other readers; every registration ends consistent and the loop keeps working."""
    pairs = [socket.socketpair() for _ in range(50)]
    deleted = []
    try:

        class FileObj:
            def __init__(self, sock):
                self.sock = sock

            def fileno(self):
                return self.sock.fileno()

            def __del__(self):
                deleted.append(1)
                for a, _ in pairs:  # inserts (and may grow the table) during the erase
                    loop.add_reader(a.fileno(), lambda: None)
                for a, _ in pairs:
                    loop.remove_reader(a.fileno())

        x, y = pairs[0]
        loop.add_reader(FileObj(x), lambda: None)
        assert loop.remove_reader(x.fileno()) is True
        gc.collect()
        assert len(deleted) == 1
        for a, _ in pairs:
            assert loop.remove_reader(a.fileno()) is False
        # The loop still watches descriptors.
        calls = []
        loop.add_reader(x, calls.append, "ready")
        y.send(b"!")
        run_until(loop, lambda: calls)
        assert loop.remove_reader(x) is True
    finally:
        deleted.clear()
        for pair in pairs:
            for sock in pair:
                sock.close()


@pytest.mark.uvloop_xfail("uvloop has no _add_reader() returning the reader's Handle")
def test_cancelled_reader_on_a_ready_descriptor_whose_file_object_reenters(loop):
    """A reader whose Handle was cancelled is dropped when its descriptor is reported ready,
    without running; its file object's __del__ may then add and remove other readers."""
    pairs = [socket.socketpair() for _ in range(50)]
    deleted = []
    try:

        class FileObj:
            def __init__(self, sock):
                self.sock = sock

            def fileno(self):
                return self.sock.fileno()

            def __del__(self):
                deleted.append(1)
                for a, _ in pairs[1:]:
                    loop.add_reader(a.fileno(), lambda: None)
                for a, _ in pairs[1:]:
                    loop.remove_reader(a.fileno())

        x, y = pairs[0]
        calls = []
        y.send(b"!")
        handle = loop._add_reader(FileObj(x), calls.append, "cancelled reader")
        handle.cancel()
        loop.run_until_complete(asyncio.sleep(0.02))
        gc.collect()
        assert calls == []
        assert deleted == [1]
        assert loop.remove_reader(x.fileno()) is False
        for a, _ in pairs[1:]:
            assert loop.remove_reader(a.fileno()) is False
        # The loop still watches descriptors.
        loop.add_reader(x, calls.append, "ready")
        run_until(loop, lambda: calls)
        assert calls[0] == "ready"
        assert loop.remove_reader(x) is True
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


@pytest.mark.uvloop_xfail("uvloop runs the ready reader before the earlier call_soon_threadsafe() callback")
def test_threadsafe_callback_runs_before_a_reader_ready_after_it(loop):
    """call_soon_threadsafe() from another thread, then the descriptor becomes ready (all while the
    loop is busy): the callback runs first, the reader after it."""

    async def main():
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            order = []

            def reader():
                order.append("reader")
                a.recv(10)

            loop.add_reader(a, reader)
            try:

                def other_thread():
                    loop.call_soon_threadsafe(order.append, "threadsafe")
                    b.send(b"x")

                thread = threading.Thread(target=other_thread)
                thread.start()
                thread.join(5)  # blocks the loop meanwhile
                assert not thread.is_alive()

                async def both():
                    while len(order) < 2:
                        await asyncio.sleep(0.001)

                await asyncio.wait_for(both(), 5)
                await asyncio.sleep(0.01)
                assert order == ["threadsafe", "reader"]
            finally:
                loop.remove_reader(a)

    run(loop, main())
