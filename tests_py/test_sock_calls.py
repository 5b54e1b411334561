"""loop.sock_recv() and loop.sock_sendall() as coroutine objects: what a caller sees of the
coroutine (create_task, send, throw, close, reuse), sock_sendall's immediate and waiting paths,
and the cases turboloop leaves to asyncio's code (debug mode, blocking sockets, other data
types). Each test runs on every loop. The last tests are turboloop's own: a finished sock_recv
leaves its reader parked for the next one on the same socket, which must never miss data or keep
a socket alive."""

from __future__ import annotations

import array
import asyncio
import gc
import hashlib
import os
import socket
import warnings
import weakref

import pytest

import turboloop


def fill(sock: socket.socket) -> int:
    """Fill the socket's send buffer; returns how much it took."""
    total = 0
    while True:
        try:
            total += sock.send(b"\0" * 65536)
        except BlockingIOError:
            return total


def test_calls_are_coroutines_for_asyncio(loop, socket_pair):
    a, b = socket_pair

    async def main():
        recv = loop.sock_recv(a, 10)
        send = loop.sock_sendall(b, b"data")
        assert asyncio.iscoroutine(recv) and asyncio.iscoroutine(send)
        received = loop.create_task(recv)
        await loop.create_task(send)
        assert await received == b"data"
        assert "sock_recv" in repr(loop.create_task(loop.sock_recv(a, 1)))

    loop.run_until_complete(main())
    b.send(b"z")
    assert loop.run_until_complete(loop.sock_recv(a, 10)) == b"z"


@pytest.mark.parametrize("sizes", [
    [1, 70_000, 5, 40_000, 40_000, 3, 65_536, 200_000, 10],   # small and large reads mixed
    [30_000, 1, 30_000, 2, 30_000],                            # a large read then a small one, and back
])
def test_recv_returns_exactly_what_came_whatever_the_last_read(loop, socket_pair, sizes):
    # Reads after a large one go straight into a bytes object of the full size, then shrink; reads
    # after small ones are copied out of a scratch buffer. Every read must still return exactly
    # the bytes sent, in order, and no more than asked.
    a, b = socket_pair
    payload = hashlib.shake_256(repr(sizes).encode()).digest(sum(sizes))

    async def main():
        received = bytearray()
        offset = 0
        for size in sizes:
            # Sent by a task, so that a message larger than the socket's buffer cannot block it.
            sending = asyncio.ensure_future(loop.sock_sendall(b, payload[offset:offset + size]))
            offset += size
            while len(received) < offset:
                chunk = await loop.sock_recv(a, min(65_536, offset - len(received)))
                assert chunk and type(chunk) is bytes
                received += chunk
            await sending
        return bytes(received)

    assert loop.run_until_complete(main()) == payload


@pytest.mark.uvloop_xfail("uvloop's sock_recv waits for the loop even when data is waiting")
def test_coroutine_protocol_errors(loop, socket_pair):
    a, b = socket_pair
    fresh = loop.sock_recv(a, 10)
    with pytest.raises(TypeError, match="can't send non-None value to a just-started coroutine"):
        fresh.send(1)
    fresh.close()
    b.send(b"x")
    done = loop.sock_recv(a, 10)
    with pytest.raises(StopIteration) as stop:
        done.send(None)
    assert stop.value.value == b"x"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        done.send(None)
    unstarted = loop.sock_sendall(b, b"y")
    with pytest.raises(ValueError, match="thrown"):
        unstarted.throw(ValueError("thrown"))
    # Thrown in, it ends: nothing was sent.
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        unstarted.send(None)
    with pytest.raises(BlockingIOError):
        a.recv(10)


@pytest.mark.uvloop_xfail("uvloop's remove_writer returns None")
def test_sendall_at_once_and_after_waiting(loop, socket_pair):
    a, b = socket_pair
    payload = os.urandom(3 * 1024 * 1024)

    async def main():
        await loop.sock_sendall(b, b"")
        await loop.sock_sendall(b, b"now")
        assert await loop.sock_recv(a, 10) == b"now"

        async def read_all() -> bytes:
            got = bytearray()
            while len(got) < len(payload):
                got += await loop.sock_recv(a, 65536)
            return bytes(got)

        reader = asyncio.ensure_future(read_all())
        await loop.sock_sendall(b, payload)
        got = await asyncio.wait_for(reader, 10)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        await asyncio.sleep(0)
        assert loop.remove_writer(b) is False

    loop.run_until_complete(main())


# Not buffers of wider items (an array of ints): asyncio's sock_sendall counts them in items and
# sends forever.
@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_sendall_of_other_buffers(loop, socket_pair, kind):
    a, b = socket_pair
    data = {"bytearray": bytearray(b"abcdefgh"), "memoryview": memoryview(b"xxabcdefghxx")[2:10]}[kind]

    async def main():
        await loop.sock_sendall(b, data)
        return await loop.sock_recv(a, 100)

    assert loop.run_until_complete(main()) == bytes(data)


def test_sendall_of_str_fails_as_asyncio(loop, socket_pair):
    a, b = socket_pair
    with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
        loop.run_until_complete(loop.sock_sendall(b, "text"))


@pytest.mark.uvloop_xfail("uvloop's remove_writer returns None")
def test_cancelled_sendall_stops_writing(loop, socket_pair):
    a, b = socket_pair

    async def main():
        fill(b)
        task = asyncio.ensure_future(loop.sock_sendall(b, b"more" * 100_000))
        await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_writer(b) is False

    loop.run_until_complete(main())


@pytest.mark.parametrize("call", ["sock_recv", "sock_recv_into", "sock_sendall"])
def test_a_waiting_call_fails_when_the_peer_resets(loop, call):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        with listener, client:
            await loop.sock_connect(client, listener.getsockname())
            server_side, _ = await loop.sock_accept(listener)
            if call == "sock_recv":
                task = asyncio.ensure_future(loop.sock_recv(client, 10))
            elif call == "sock_recv_into":
                task = asyncio.ensure_future(loop.sock_recv_into(client, bytearray(10)))
            else:
                fill(client)
                task = asyncio.ensure_future(loop.sock_sendall(client, b"z" * 1_000_000))
            await asyncio.sleep(0.01)
            assert not task.done()
            server_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            server_side.close()
            with pytest.raises((ConnectionResetError, BrokenPipeError) if call == "sock_sendall" else ConnectionResetError):
                await asyncio.wait_for(task, 5)

    loop.run_until_complete(main())


def test_recv_into_at_once_and_after_waiting(loop, socket_pair):
    a, b = socket_pair

    async def main():
        buffer = bytearray(5)
        b.send(b"hello world")
        into = loop.sock_recv_into(a, buffer)
        assert asyncio.iscoroutine(into)
        assert await into == 5 and buffer == b"hello"
        assert await loop.sock_recv_into(a, memoryview(buffer)[1:3]) == 2 and buffer == b"h wlo"
        assert await loop.sock_recv_into(a, buffer) == 4 and buffer == b"orldo"
        waiting = asyncio.ensure_future(loop.sock_recv_into(a, buffer))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        buffer.extend(b"!!")  # the buffer is not held while the call waits, as asyncio's
        b.send(b"XYZ")
        assert await waiting == 3 and buffer == b"XYZdo!!"
        b.close()
        assert await loop.sock_recv_into(a, buffer) == 0  # end of stream

    loop.run_until_complete(main())


@pytest.mark.parametrize("make", [
    lambda: bytearray(),                        # nothing to read into
    lambda: array.array("i", [0, 0]),           # a writable buffer of ints
    lambda: memoryview(bytearray(16))[::2],     # not contiguous
], ids=["empty", "array", "strided"])
def test_recv_into_other_buffers_as_asyncio(loop, socket_pair, make):
    a, b = socket_pair
    b.send(b"abcdefgh")
    expected_loop = asyncio.new_event_loop()
    try:
        expected_buffer, buffer = make(), make()
        try:
            expected = expected_loop.run_until_complete(expected_loop.sock_recv_into(a, expected_buffer))
        except Exception as error:  # noqa: BLE001 - the outcome to compare
            expected = type(error), str(error)
        # Put back what asyncio's call took, so that both calls find the same bytes waiting.
        b.send(b"abcdefgh"[:expected] if isinstance(expected, int) else b"")
        try:
            got = loop.run_until_complete(loop.sock_recv_into(a, buffer))
        except Exception as error:  # noqa: BLE001
            got = type(error), str(error)
    finally:
        expected_loop.close()
    assert got == expected
    assert bytes(buffer) == bytes(expected_buffer)


def released_view() -> memoryview:
    view = memoryview(bytearray(4))
    view.release()
    return view


@pytest.mark.parametrize("make", [lambda: b"bytes", lambda: memoryview(b"read-only"), released_view],
                         ids=["bytes", "readonly-view", "released-view"])
def test_recv_into_a_buffer_it_cannot_write_fails_as_asyncio(loop, socket_pair, make):
    a, b = socket_pair
    b.send(b"x")
    with pytest.raises(TypeError, match=r"recv_into\(\) argument 1 must be read-write bytes-like object, not "):
        loop.run_until_complete(loop.sock_recv_into(a, make()))


def test_recv_into_a_view_released_while_waiting_fails_as_asyncio(loop, socket_pair):
    a, b = socket_pair

    async def main():
        view = memoryview(bytearray(4))
        waiting = asyncio.ensure_future(loop.sock_recv_into(a, view))
        await asyncio.sleep(0.01)
        view.release()
        b.send(b"x")
        with pytest.raises(TypeError, match="must be read-write bytes-like object, not memoryview"):
            await asyncio.wait_for(waiting, 5)

    loop.run_until_complete(main())


def test_cancelled_recv_into_leaves_the_data(loop, socket_pair):
    a, b = socket_pair

    async def main():
        buffer = bytearray(10)
        waiting = asyncio.ensure_future(loop.sock_recv_into(a, buffer))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        b.send(b"kept")
        await asyncio.sleep(0.01)
        assert buffer == bytearray(10)
        assert await loop.sock_recv(a, 10) == b"kept"

    loop.run_until_complete(main())


def test_sendall_on_a_closed_socket(loop, socket_pair):
    a, b = socket_pair
    b.close()
    with pytest.raises(OSError) as error:
        loop.run_until_complete(loop.sock_sendall(b, b"x"))
    assert error.value.errno == 9


def test_sendall_waiting_on_a_closed_loop(loop, socket_pair):
    a, b = socket_pair
    fill(b)
    coro = loop.sock_sendall(b, b"x")
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)


def test_blocking_socket_in_debug_mode_is_refused(loop, socket_pair):
    a, b = socket_pair
    a.setblocking(True)
    loop.set_debug(True)
    for coro in (loop.sock_recv(a, 1), loop.sock_sendall(a, b"x")):
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            loop.run_until_complete(coro)


def test_blocking_socket_is_read_as_asyncio_does(loop, socket_pair):
    a, b = socket_pair
    a.setblocking(True)
    b.send(b"ready")
    assert loop.run_until_complete(loop.sock_recv(a, 10)) == b"ready"


def test_keyword_arguments(loop, socket_pair):
    a, b = socket_pair
    loop.run_until_complete(loop.sock_sendall(sock=b, data=b"kw"))
    assert loop.run_until_complete(loop.sock_recv(sock=a, n=10)) == b"kw"
    with pytest.raises(TypeError):
        loop.sock_recv(a)


# -- turboloop's parked readers -------------------------------------------------------------------


@pytest.fixture
def tloop():
    loop = turboloop.new_event_loop()
    yield loop
    loop.close()


def test_parked_reader_is_no_reader(tloop, socket_pair):
    a, b = socket_pair

    async def main():
        b.send(b"x")
        task = asyncio.ensure_future(tloop.sock_recv(a, 10))
        assert await task == b"x"
        # Parked now: not a reader for the selector view, remove_reader or the stats.
        with pytest.raises(KeyError):
            tloop._selector.get_key(a.fileno())
        assert tloop.stats()["readers"] == 0
        waiting = asyncio.ensure_future(tloop.sock_recv(a, 10))
        await asyncio.sleep(0)
        assert tloop.stats()["readers"] == 1
        b.send(b"y")
        assert await waiting == b"y"

    tloop.run_until_complete(main())


def test_data_for_a_parked_reader_does_not_spin_the_loop(tloop, socket_pair):
    a, b = socket_pair

    async def main():
        waiting = asyncio.ensure_future(tloop.sock_recv(a, 1))
        await asyncio.sleep(0)
        b.send(b"xyz")  # more than the reader takes: the socket stays readable
        assert await waiting == b"x"
        before = tloop.stats()["iterations"]
        await asyncio.sleep(0.1)
        assert tloop.stats()["iterations"] - before < 20
        assert await tloop.sock_recv(a, 10) == b"yz"

    tloop.run_until_complete(main())


def test_descriptor_reused_after_a_parked_reader(tloop):
    async def main():
        for _ in range(50):
            a, b = socket.socketpair()
            a.setblocking(False)
            b.send(b"1")
            assert await tloop.sock_recv(a, 10) == b"1"
            fd = a.fileno()
            a.close()
            b.close()
            # The parked registration was for the closed socket: a new one on the same number
            # must be watched for real.
            c, d = socket.socketpair()
            c.setblocking(False)
            with c, d:
                if c.fileno() != fd:
                    c, d = d, c
                assert c.fileno() == fd
                c.setblocking(False)
                waiting = asyncio.ensure_future(tloop.sock_recv(c, 10))
                await asyncio.sleep(0)
                d.send(b"2")
                assert await asyncio.wait_for(waiting, 5) == b"2"

    tloop.run_until_complete(main())


def test_parked_reader_lets_its_socket_go(tloop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.send(b"x")
        assert await tloop.sock_recv(a, 10) == b"x"
        gone = weakref.ref(a)
        del a
        b.close()
        await asyncio.sleep(0.01)  # a poll that waits drops every parked reader
        gc.collect()
        assert gone() is None

    # Not pytest.warns(): the warning it records holds the socket.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        tloop.run_until_complete(main())


# asyncio leaves the reader of a coroutine thrown into or closed while it waits (a suspended one
# that is garbage-collected is closed) until data comes, which it then reads into a future nobody
# awaits; turboloop stops reading at once.


def test_throw_into_a_waiting_recv_stops_its_reader(tloop, socket_pair):
    a, b = socket_pair

    async def main():
        coro = tloop.sock_recv(a, 10)
        future = coro.send(None)  # waits: a future, as a Task would get it
        assert isinstance(future, asyncio.Future) and not future.done()
        with pytest.raises(KeyError, match="gone"):
            coro.throw(KeyError("gone"))
        await asyncio.sleep(0)
        assert tloop.remove_reader(a) is False
        b.send(b"later")
        assert await tloop.sock_recv(a, 10) == b"later"

    tloop.run_until_complete(main())


def test_closing_a_waiting_recv_stops_its_reader(tloop, socket_pair):
    a, b = socket_pair

    async def main():
        coro = tloop.sock_recv(a, 10)
        coro.send(None)
        coro.close()
        await asyncio.sleep(0)
        assert tloop.remove_reader(a) is False

    tloop.run_until_complete(main())
