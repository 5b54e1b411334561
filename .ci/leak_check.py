"""Native leak check: make and destroy turboloop's objects many times, then look for leaks.

Run by .ci/test-asan-python on the ASAN build, with PYTHONMALLOC=malloc (every Python object a
malloc block whose pointers LeakSanitizer can follow) and ASAN_OPTIONS detect_leaks=1 and
leak_check_at_exit=0.  Two checks, and any finding exits 1:

* LeakSanitizer, asked while the interpreter is alive: what Python holds is reachable from its
  globals, so only blocks nothing points to are reported -- a native object, a libuv handle, a
  buffer or a bytes object our code lost.  (At exit the interpreter frees too little for a
  whole-process check to mean anything.)
* A census of the objects the garbage collector tracks, by type, after a warm-up round and again
  after ROUNDS more: a reference our code never releases keeps such an object alive, yet linked
  in the collector's lists, where LeakSanitizer counts it as reachable.

Covers loops, handles and timers (run, cancelled, threadsafe, failing), descriptor callbacks,
TCP and Unix transports (echo pairs, buffered protocols, writes that queue, aborts), servers,
sock_recv, sock_recv_into, signals, subprocesses, and the thread pool (submit, map, run_in_executor, elastic).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time

import turboloop

ROUNDS = int(os.environ.get("LEAK_CHECK_ROUNDS", "10"))


# The pool whose initializer fails below logs it, as the stdlib's does.
logging.getLogger("concurrent.futures").setLevel(logging.CRITICAL + 1)


def _raise(error):
    raise error


def loops_and_handles():
    for _ in range(10):
        loop = turboloop.new_event_loop()
        loop.close()
    loop = turboloop.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context["exception"]))
    results = []
    for i in range(50):
        loop.call_soon(results.append, i)
        loop.call_later(0.001 * (i % 5), results.append, i)
        loop.call_at(loop.time() + 3600, results.append, i).cancel()
        loop.call_soon(results.append, i).cancel()
    loop.call_soon(_raise, ValueError("deliberate"))
    loop.call_later(0, _raise, KeyError("deliberate"))
    sent = loop.create_future()

    def send():
        for _ in range(50):
            loop.call_soon_threadsafe(results.append, -1)
        loop.call_soon_threadsafe(sent.set_result, None)

    thread = threading.Thread(target=send)
    thread.start()
    # Outlasts the timers above; the thread's calls arrive in order, the last one sets `sent`.
    loop.run_until_complete(asyncio.gather(sent, asyncio.sleep(0.01)))
    thread.join()
    # Timers still pending when the loop closes.
    for i in range(20):
        loop.call_later(3600, results.append, i)
    loop.close()
    assert len(results) == 150, len(results)
    assert sorted(type(e).__name__ for e in errors) == ["KeyError", "ValueError"], errors


def descriptor_callbacks():
    loop = turboloop.new_event_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = loop.create_future()

    def on_readable():
        got.set_result(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    loop.add_writer(b, lambda: (b.send(b"x"), loop.remove_writer(b)))
    assert loop.run_until_complete(got) == b"x"
    # Watched descriptors replaced, then closed while still watched.
    loop.add_reader(a, print)
    loop.add_reader(a, print)
    loop.add_writer(b, print)
    a.close()
    b.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()


class BufferedCollector(asyncio.BufferedProtocol):
    def __init__(self, done):
        self.buffer = bytearray(4096)
        self.received = bytearray()
        self.done = done

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.received += self.buffer[:nbytes]

    def connection_lost(self, exc):
        self.done.set_result(bytes(self.received))


async def tcp_echo_pair():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for size in (1, 1000, 300_000):
        payload = os.urandom(size)
        writer.write(payload)
        assert await reader.readexactly(size) == payload
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()

    # A buffered protocol reading a server's output; a write too big to send at once queues.
    big = os.urandom(2_000_000)

    async def send_big(r, w):
        w.write(big)
        await w.drain()
        w.close()

    sender = await asyncio.start_server(send_big, "127.0.0.1", 0)
    done = loop.create_future()
    await loop.create_connection(lambda: BufferedCollector(done), "127.0.0.1", sender.sockets[0].getsockname()[1])
    assert await done == big

    # Aborted with unsent data queued.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.pause_reading()
    writer.write(big)
    writer.transport.abort()
    await asyncio.sleep(0)

    for s in (server, sender):
        s.close()
        await s.wait_closed()


async def unix_echo_pair(path):
    server = await asyncio.start_unix_server(_echo_stream, path)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    os.unlink(path)


async def _echo_stream(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()


async def servers_opened_and_closed():
    for _ in range(5):
        server = await asyncio.start_server(_echo_stream, "127.0.0.1", 0)
        server.close()
        await server.wait_closed()


async def sock_methods():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        pending = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        await loop.sock_sendall(b, b"hello")
        assert await pending == b"hello"
        b.send(b"now")
        assert await loop.sock_recv(a, 100) == b"now"
        cancelled = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        # A sock_sendall that waits for the socket, then one cancelled while it waits.
        payload = b"x" * 1_000_000
        sending = loop.create_task(loop.sock_sendall(b, payload))
        received = 0
        while received < len(payload):
            received += len(await loop.sock_recv(a, 65536))
        await sending
        stuck = loop.create_task(loop.sock_sendall(b, payload))
        await asyncio.sleep(0)
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
    # sock_recv_into: at once, after waiting, and cancelled while it waits.
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        buffer = bytearray(100)
        b.send(b"into")
        assert await loop.sock_recv_into(a, buffer) == 4
        waiting = loop.create_task(loop.sock_recv_into(a, memoryview(buffer)[10:]))
        await asyncio.sleep(0)
        b.send(b"later")
        assert await waiting == 5
        cancelled_into = loop.create_task(loop.sock_recv_into(a, buffer))
        await asyncio.sleep(0)
        cancelled_into.cancel()
        await asyncio.gather(cancelled_into, return_exceptions=True)


async def signals():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
    os.kill(os.getpid(), signal.SIGUSR1)
    assert await got == "usr1"
    assert loop.remove_signal_handler(signal.SIGUSR1)


async def subprocesses():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(b"echo")
    assert out == b"echo" and proc.returncode == 0


async def run_in_executor():
    loop = asyncio.get_running_loop()
    assert await asyncio.gather(*(loop.run_in_executor(None, abs, -i) for i in range(200))) == list(range(200))
    with turboloop.ThreadPoolExecutor(2) as pool:
        assert await loop.run_in_executor(pool, sum, (1, 2)) == 3
        failed = loop.run_in_executor(pool, _raise, ValueError("deliberate"))
        assert isinstance((await asyncio.gather(failed, return_exceptions=True))[0], ValueError)


def io_on_a_loop(unix_path):
    async def main():
        await tcp_echo_pair()
        await unix_echo_pair(unix_path)
        await servers_opened_and_closed()
        await sock_methods()
        await signals()
        await subprocesses()
        await run_in_executor()

    turboloop.run(main())


def thread_pool():
    with turboloop.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(pow, 2, i) for i in range(200)]
        assert [f.result() for f in futures] == [2**i for i in range(200)]
        assert list(pool.map(abs, range(-100, 0))) == list(range(100, 0, -1))
        assert isinstance(pool.submit(_raise, KeyError("deliberate")).exception(), KeyError)
    # Shut down with work still queued, cancelling it.
    pool = turboloop.ThreadPoolExecutor(1)
    blocker = threading.Event()
    pool.submit(blocker.wait)
    queued = [pool.submit(abs, -1) for _ in range(50)]
    iterator = pool.map(abs, range(50))
    pool.shutdown(wait=False, cancel_futures=True)
    blocker.set()
    pool.shutdown(wait=True)
    assert all(f.cancelled() for f in queued)
    del iterator
    # An elastic pool whose idle workers retire; a pool whose initializer fails.
    elastic = turboloop.ThreadPoolExecutor(4, min_workers=0, idle_timeout=0.01)
    list(elastic.map(abs, range(20)))
    time.sleep(0.05)
    elastic.shutdown(wait=True)
    broken = turboloop.ThreadPoolExecutor(1, initializer=_raise, initargs=(ValueError("deliberate"),))
    assert broken.submit(abs, 1).exception() is not None
    broken.shutdown(wait=True)


def exercise(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        unix_path = os.path.join(tmp, "echo.sock")
        for _ in range(rounds):
            loops_and_handles()
            descriptor_callbacks()
            io_on_a_loop(unix_path)
            thread_pool()


def census(ignore: object = None) -> collections.Counter[str]:
    """How many objects of each type the garbage collector tracks (ignore: the caller's own)."""
    gc.collect()
    return collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects() if o is not ignore
    )


# LeakSanitizer does not scan the memory the interpreter keeps running frames in, so the check
# runs from module level, once exercise() has returned and no other frame is alive; the module
# frame's own frame object (made when a frame below it outlived its call) is held from here.
_leak_check = ctypes.CDLL(None).__lsan_do_recoverable_leak_check
_module_frame = sys._getframe()

if __name__ == "__main__":
    # A first round makes the singletons (the policy, the child watcher) and fills the caches;
    # so does a first census.
    exercise(1)
    census()
    before = census()
    exercise(ROUNDS)
    grown = census(before) - before
    gc.collect()
    leaked = _leak_check()
    if grown:
        print(f"leak_check: more objects alive after {ROUNDS} more rounds:", file=sys.stderr)
        for name, count in sorted(grown.items()):
            print(f"    +{count} {name}", file=sys.stderr)
    if leaked:
        print("leak_check: LeakSanitizer found leaks (its report is in its log)", file=sys.stderr)
    if grown or leaked:
        sys.exit(1)
    print(f"leak_check: no leaks after {ROUNDS} rounds")
