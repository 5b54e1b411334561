"""Reference counts of the objects that cross the native binding: after many calls, and once what
was scheduled has run or been dropped, every argument, callback, context, payload and result is
referenced exactly as often as before -- no leaked reference (memory grows), no missing one
(a crash later). Run on the stock loop too, as the reference.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import subprocess
import sys

import pytest

import turboloop

ROUNDS = 1000


class Marker:
    """A fresh object whose reference count nothing else touches."""


def refcounts(*objects: object) -> list[int]:
    gc.collect()
    return [sys.getrefcount(obj) for obj in objects]


@pytest.fixture(params=["asyncio", "turboloop"])
def make_loop(request):
    loops = []

    def make():
        loop = asyncio.new_event_loop() if request.param == "asyncio" else turboloop.new_event_loop()
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


def callback(*args: object) -> None:
    pass


def test_call_soon_callback_args_and_context(make_loop):
    loop = make_loop()
    arg, context = Marker(), contextvars.copy_context()
    before = refcounts(callback, arg, context)
    for _ in range(ROUNDS):
        loop.call_soon(callback, arg, context=context)
    handles = [loop.call_soon(callback, arg, context=context) for _ in range(ROUNDS)]
    for handle in handles[::2]:
        handle.cancel()
    del handles, handle
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert refcounts(callback, arg, context) == before


def test_timers_run_cancelled_and_dropped_at_close(make_loop):
    loop = make_loop()
    arg = Marker()
    before = refcounts(callback, arg)
    for i in range(ROUNDS):
        loop.call_later(0, callback, arg)
        loop.call_at(loop.time() + 3600, callback, arg)  # never runs: dropped by close()
        loop.call_later(3600, callback, arg).cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    assert refcounts(callback, arg) == before


def test_call_soon_threadsafe(make_loop):
    loop = make_loop()
    arg = Marker()
    before = refcounts(callback, arg)
    for _ in range(ROUNDS):
        loop.call_soon_threadsafe(callback, arg)
    loop.call_soon_threadsafe(loop.stop)
    loop.run_forever()
    assert refcounts(callback, arg) == before


def test_handle_methods(make_loop):
    loop = make_loop()
    arg, context = Marker(), contextvars.copy_context()
    handle = loop.call_later(3600, callback, arg, context=context)
    before = refcounts(handle, arg, context)
    for _ in range(ROUNDS):
        handle.when()
        handle.cancelled()
        repr(handle)
    assert refcounts(handle, arg, context) == before
    handle.cancel()


def test_futures_and_their_results(make_loop):
    loop = make_loop()
    result = Marker()
    before = refcounts(result)

    async def main():
        for _ in range(ROUNDS):
            future = loop.create_future()
            loop.call_soon(future.set_result, result)
            assert await future is result

    loop.run_until_complete(main())
    assert refcounts(result) == before


def test_readers_and_writers(make_loop):
    loop = make_loop()
    left, right = socket.socketpair()
    arg = Marker()
    try:
        before = refcounts(left, callback, arg)
        for _ in range(ROUNDS):
            loop.add_reader(left, callback, arg)
            loop.add_writer(left, callback, arg)
        loop.run_until_complete(asyncio.sleep(0.01))  # the writer callback runs
        loop.remove_reader(left)
        loop.remove_writer(left)
        assert refcounts(left, callback, arg) == before
    finally:
        left.close()
        right.close()


def test_transport_payloads_and_received_data(make_loop):
    loop = make_loop()
    payload = b"x" * 100_000  # large enough to be buffered natively before it is sent
    before = refcounts(payload)

    async def main():
        received = 0
        sinks = []

        class Sink(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sinks.append(transport)

            def data_received(self, data: bytes) -> None:
                nonlocal received
                received += len(data)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", server.sockets[0].getsockname()[1])
        for _ in range(100):
            transport.write(payload)
            transport.writelines([payload, memoryview(payload)])
        while received < 300 * len(payload):
            await asyncio.sleep(0.01)
        transport.close()
        sinks[0].close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # connection_lost runs

    loop.run_until_complete(main())
    assert refcounts(payload) == before


def test_sock_recv_results(make_loop):
    loop = make_loop()
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    try:
        before = refcounts(left)

        async def main():
            for _ in range(ROUNDS):
                right.send(b"ping")
                assert await loop.sock_recv(left, 4) == b"ping"

        loop.run_until_complete(main())
        assert refcounts(left) == before
    finally:
        left.close()
        right.close()


def test_sock_sendfile_socket_and_loop(make_loop, tmp_path):
    """sock_sendfile holds the socket and the loop while it waits (a native writer): done,
    failed or cancelled, it lets go of both."""
    loop = make_loop()
    path = tmp_path / "payload"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: more than a socketpair holds
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    try:
        with open(path, "rb") as fh:
            before = refcounts(left, loop, fh)

            async def drain(size):
                got = 0
                while got < size:
                    got += len(await loop.sock_recv(right, 1 << 20))

            async def main():
                for _ in range(ROUNDS // 10):
                    assert await loop.sock_sendfile(left, fh, 0, 100) == 100  # at once
                    await drain(100)
                    reading = asyncio.ensure_future(drain(1 << 20))
                    assert await loop.sock_sendfile(left, fh) == 1 << 20  # waits for the writer
                    await reading
                for _ in range(ROUNDS // 10):
                    sending = asyncio.ensure_future(loop.sock_sendfile(left, fh))
                    await asyncio.sleep(0)
                    sending.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await sending
                    await asyncio.sleep(0)  # the done callback removes the writer

            loop.run_until_complete(main())
            assert refcounts(left, loop, fh) == before
    finally:
        left.close()
        right.close()


def test_run_in_executor_function_args_and_result(make_loop):
    loop = make_loop()
    arg, result = Marker(), Marker()

    def work(value: object) -> object:
        return result

    before = refcounts(work, arg, result)

    async def main():
        for _ in range(200):
            assert await loop.run_in_executor(None, work, arg) is result

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_default_executor())
    assert refcounts(work, arg, result) == before


def test_executor_submit_and_map():
    arg, result = Marker(), Marker()

    def work(value: object) -> object:
        return result

    before = refcounts(work, arg, result)
    with turboloop.ThreadPoolExecutor(max_workers=2) as executor:
        for future in [executor.submit(work, arg) for _ in range(ROUNDS)]:
            assert future.result() is result
        assert all(value is result for value in executor.map(work, [arg] * ROUNDS))
        del future
    assert refcounts(work, arg, result) == before


def test_stats_and_watchdog_settings(make_loop):
    loop = make_loop()
    if not isinstance(loop, turboloop.Loop):
        pytest.skip("stats() and the watchdog are turboloop's own")
    report = Marker()
    before = refcounts(loop, report)

    def on_stall(stall: object) -> None:
        pass

    for _ in range(ROUNDS):
        loop.stats()
        loop.set_watchdog(1.0, on_stall)
        loop.set_watchdog(None)
    assert refcounts(loop, report) == before


def test_a_collection_while_a_loop_subclass_makes_its_first_loop():
    """pybind11 makes a weak reference to a Python subclass when it first makes one of its
    instances, before the instance's layout exists: a collection then must not traverse it (it
    crashed, the interpreter with it). In a child interpreter, collecting at every allocation."""
    code = (
        "import gc, turboloop\n"
        "class Mine(turboloop.Loop):\n"
        "    pass\n"
        "gc.set_threshold(1)\n"
        "loop = Mine()\n"
        "loop.close()\n"
        "print('made and closed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "made and closed\n"), proc.stderr
