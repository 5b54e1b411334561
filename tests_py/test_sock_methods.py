"""loop.sock_recv(): turboloop's native path (plain non-blocking sockets) and asyncio's own path
(everything else) must both behave as stock asyncio. Each test runs on every loop."""

from __future__ import annotations

import asyncio
import socket

import pytest


def test_data_waiting_is_returned_at_once_and_later_data_wakes_the_reader(loop, socket_pair):
    a, b = socket_pair

    async def main():
        b.send(b"first")
        assert await loop.sock_recv(a, 100) == b"first"
        task = asyncio.ensure_future(loop.sock_recv(a, 3))
        await asyncio.sleep(0.01)
        assert not task.done()
        b.send(b"second")
        assert await asyncio.wait_for(task, 5) == b"sec"
        assert await loop.sock_recv(a, 100) == b"ond"

    loop.run_until_complete(main())


def test_sizes(loop, socket_pair):
    a, b = socket_pair

    async def main():
        b.send(b"x")
        assert await loop.sock_recv(a, 0) == b""
        assert await loop.sock_recv(a, 10) == b"x"
        # More than the native scratch buffer holds, sent while the reader waits.
        big = bytes(range(256)) * 1024
        reader = asyncio.ensure_future(loop.sock_recv(a, 2**20))
        await asyncio.sleep(0.01)
        b.send(big[:100_000])
        got = await asyncio.wait_for(reader, 5)
        assert 0 < len(got) <= 100_000
        assert got == big[: len(got)]

    loop.run_until_complete(main())


@pytest.mark.uvloop_xfail("uvloop waits for data before a zero-byte read")
def test_zero_bytes_are_returned_at_once_when_nothing_waits(loop, socket_pair):
    # sock_recv(sock, 0) is socket.recv(0): empty at once, with or without data waiting (found
    # by the fuzzer: the native path waited for data).
    a, b = socket_pair
    assert loop.run_until_complete(asyncio.wait_for(loop.sock_recv(a, 0), 5)) == b""
    b.send(b"x")
    assert loop.run_until_complete(asyncio.wait_for(loop.sock_recv(a, 10), 5)) == b"x"


@pytest.mark.uvloop_xfail("uvloop waits forever on a negative or non-int size")
def test_bad_sizes(loop, socket_pair):
    a, b = socket_pair

    async def main():
        with pytest.raises(ValueError, match="negative buffersize"):
            await asyncio.wait_for(loop.sock_recv(a, -1), 2)
        with pytest.raises(TypeError):
            await asyncio.wait_for(loop.sock_recv(a, "10"), 2)

    loop.run_until_complete(main())


@pytest.mark.uvloop_xfail("uvloop's remove_reader returns None")
def test_cancelled_recv_stops_reading(loop, socket_pair):
    a, b = socket_pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert loop.remove_reader(a) is False
        b.send(b"kept")
        assert await loop.sock_recv(a, 10) == b"kept"

    loop.run_until_complete(main())


def test_completed_recv_stops_reading(loop, socket_pair):
    a, b = socket_pair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        b.send(b"x")
        assert await task == b"x"
        await asyncio.sleep(0)
        assert not loop.remove_reader(a)

    loop.run_until_complete(main())


def test_socket_subclass_keeps_its_own_recv(loop, socket_pair):
    a, b = socket_pair

    class Counting(socket.socket):
        calls = 0

        def recv(self, n, *args):
            Counting.calls += 1
            return super().recv(n, *args)

    wrapped = Counting(fileno=socket.dup(a.fileno()))
    wrapped.setblocking(False)

    async def main():
        b.send(b"hi")
        assert await loop.sock_recv(wrapped, 10) == b"hi"

    with wrapped:
        loop.run_until_complete(main())
    assert Counting.calls >= 1


def test_recv_on_a_socket_owned_by_a_transport_is_refused(loop):
    async def main():
        a, b = socket.socketpair()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(a, 10)
        finally:
            transport.close()
            b.close()
            await asyncio.sleep(0)

    loop.run_until_complete(main())


def test_recv_on_a_closed_loop(loop, socket_pair):
    a, b = socket_pair
    coro = loop.sock_recv(a, 10)
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)
