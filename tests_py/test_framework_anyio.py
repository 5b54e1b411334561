"""anyio's public behaviours that touch the loop, on its asyncio backend with each loop as the
``loop_factory`` backend option (stock asyncio is the reference).

TCP (plain and TLS) and Unix streams, descriptor passing, UDP, subprocesses (output, exit status,
streamed stdin/stdout, a cancelled process), worker threads (``to_thread``, calls back through
``from_thread``, a capacity limit, an abandoned thread), a blocking portal running the loop in
another thread, signal receivers, descriptor readiness and timeouts.  Every answer carries the
data it was asked about, so crossed or lost bytes fail the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from framework_support import TIMEOUT, assert_on, tls_contexts

anyio = pytest.importorskip("anyio", reason="anyio is not installed")
from anyio import from_thread, to_thread  # noqa: E402 (only once anyio is known to be there)
from anyio.abc import SocketAttribute  # noqa: E402
from anyio.streams.buffered import BufferedByteReceiveStream  # noqa: E402
from anyio.streams.tls import TLSAttribute, TLSListener  # noqa: E402


def run_anyio(loop_factory, fn):
    """``anyio.run`` on the asyncio backend with ``loop_factory``, checking the loop it got."""

    async def main():
        assert_on(loop_factory.loop_name)
        with anyio.fail_after(TIMEOUT):
            return await fn()

    return anyio.run(main, backend="asyncio", backend_options={"loop_factory": loop_factory})


async def digest_lines(stream) -> None:
    """Answer each newline-terminated line with its SHA-256, until the peer closes."""
    async with stream:
        buffered = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await buffered.receive_until(b"\n", 1 << 20)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return
            await stream.send(hashlib.sha256(line).hexdigest().encode() + b"\n")


async def ask_digests(stream, lines: int) -> None:
    buffered = BufferedByteReceiveStream(stream)
    for i in range(lines):
        line = os.urandom(1 + i * 9973).replace(b"\n", b"-")
        await stream.send(line + b"\n")
        assert await buffered.receive_until(b"\n", 100) == hashlib.sha256(line).hexdigest().encode()


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
def test_tcp_streams(loop_factory, secure):
    server_ctx, client_ctx = tls_contexts() if secure else (None, None)

    async def main():
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(SocketAttribute.local_port)
        if secure:
            listener = TLSListener(listener, server_ctx)

        async def client() -> None:
            stream = await anyio.connect_tcp("127.0.0.1", port, tls=secure, ssl_context=client_ctx)
            async with stream:
                if secure:
                    assert stream.extra(TLSAttribute.tls_version) == "TLSv1.3"
                await ask_digests(stream, 20)

        async with listener:
            async with anyio.create_task_group() as serving:
                serving.start_soon(listener.serve, digest_lines)
                async with anyio.create_task_group() as clients:
                    for _ in range(20):
                        clients.start_soon(client)
                serving.cancel_scope.cancel()

    run_anyio(loop_factory, main)


def test_unix_stream_passes_descriptors(loop_factory):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "anyio.sock")
            listener = await anyio.create_unix_listener(path)

            async def serve_one(stream) -> None:
                async with stream:
                    message, fds = await stream.receive_fds(16, 4)
                    with open(fds[0], "rb") as passed:
                        await stream.send(message + b":" + passed.read())

            read_end, write_end = os.pipe()
            try:
                os.write(write_end, b"through the pipe")
                os.close(write_end)
                async with listener, anyio.create_task_group() as serving:
                    serving.start_soon(listener.serve, serve_one)
                    async with await anyio.connect_unix(path) as stream:
                        await stream.send_fds(b"fd", [read_end])
                        assert await stream.receive() == b"fd:through the pipe"
                    serving.cancel_scope.cancel()
            finally:
                os.close(read_end)

    run_anyio(loop_factory, main)


def test_udp(loop_factory):
    async def main():
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as server:
            server_port = server.extra(SocketAttribute.local_port)

            async def echo() -> None:
                async for data, address in server:
                    await server.sendto(data[::-1], *address)

            async with anyio.create_task_group() as serving:
                serving.start_soon(echo)
                async with await anyio.create_connected_udp_socket("127.0.0.1", server_port) as client:
                    for i in range(100):
                        await client.send(b"datagram %d" % i)
                        assert await client.receive() == (b"datagram %d" % i)[::-1]
                serving.cancel_scope.cancel()

    run_anyio(loop_factory, main)


def test_subprocesses(loop_factory):
    async def main():
        done = await anyio.run_process(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")

        with pytest.raises(subprocess.CalledProcessError) as info:
            await anyio.run_process(["sh", "-c", "exit 7"])
        assert info.value.returncode == 7

        data = os.urandom(300_000)
        done = await anyio.run_process(["sha256sum"], input=data)
        assert done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

        # Streamed both ways at once: more than a pipe holds, so each side waits on the other.
        async with await anyio.open_process(["cat"]) as process:
            chunks = [os.urandom(64 * 1024) for _ in range(16)]
            received = bytearray()

            async def feed() -> None:
                for chunk in chunks:
                    await process.stdin.send(chunk)
                await process.stdin.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                async for chunk in process.stdout:
                    received += chunk
            assert bytes(received) == b"".join(chunks)
            assert await process.wait() == 0

        # A cancelled run_process kills its child and returns promptly.
        start = time.monotonic()
        with anyio.move_on_after(0.2) as scope:
            await anyio.run_process(["sleep", "30"])
        assert scope.cancelled_caught
        assert time.monotonic() - start < 5

    run_anyio(loop_factory, main)


def test_worker_threads(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()

        async def back_on_the_loop(x: int) -> tuple[int, bool]:
            await anyio.sleep(0)
            return x * 2, asyncio.get_running_loop() is loop

        def in_worker(x: int) -> tuple[int, bool, bool]:
            doubled, on_loop = from_thread.run(back_on_the_loop, x)
            return doubled, on_loop, threading.current_thread() is threading.main_thread()

        assert await to_thread.run_sync(in_worker, 21) == (42, True, False)

        limiter = anyio.CapacityLimiter(2)
        running = 0
        most = 0
        lock = threading.Lock()

        def busy() -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(lambda: to_thread.run_sync(busy, limiter=limiter))
        assert most == 2

        # A thread waiting on something that never comes can be abandoned by cancellation.
        release = threading.Event()
        with anyio.move_on_after(0.1) as scope:
            await to_thread.run_sync(release.wait, abandon_on_cancel=True)
        assert scope.cancelled_caught
        release.set()

    run_anyio(loop_factory, main)


def test_blocking_portal_runs_the_loop_in_another_thread(loop_factory):
    async def describe(x: int) -> tuple[int, str, bool]:
        await anyio.sleep(0.01)
        package = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        return x + 1, package, threading.current_thread() is threading.main_thread()

    with from_thread.start_blocking_portal("asyncio", {"loop_factory": loop_factory}) as portal:
        assert portal.call(describe, 1) == (2, loop_factory.loop_name, False)
        futures = [portal.start_task_soon(describe, n) for n in range(20)]
        assert [f.result(TIMEOUT)[0] for f in futures] == list(range(1, 21))


def test_signal_receiver(loop_factory):
    async def main():
        with anyio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR1)
            received = [await signals.__anext__(), await signals.__anext__()]
        assert sorted(received) == [signal.SIGUSR1, signal.SIGUSR2]

    # asyncio puts SIG_DFL back when a handler is removed, whatever was there before: start from
    # it, as an earlier test's loop (uvloop's) may have left its own handler installed.
    previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        run_anyio(loop_factory, main)
        for sig in previous:
            assert signal.getsignal(sig) == signal.SIG_DFL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.uvloop_xfail("uvloop's timers may fire up to a millisecond early (it rounds deadlines to milliseconds)")
def test_readiness_resolution_and_timeouts(loop_factory):
    async def main():
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            with anyio.move_on_after(0.05) as scope:
                await anyio.wait_readable(a)
            assert scope.cancelled_caught
            await anyio.wait_writable(a)
            b.send(b"ping")
            await anyio.wait_readable(a)
            assert a.recv(4) == b"ping"

        infos = await anyio.getaddrinfo("localhost", 80, family=socket.AF_INET, type=socket.SOCK_STREAM)
        assert ("127.0.0.1", 80) in [info[4] for info in infos]

        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await anyio.sleep(5)
        assert 0.05 <= anyio.current_time() - start < 2

    run_anyio(loop_factory, main)


def test_tls_refuses_an_untrusted_certificate(loop_factory):
    server_ctx, _ = tls_contexts()

    async def main():
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(SocketAttribute.local_port)
        async with TLSListener(listener, server_ctx) as tls_listener, anyio.create_task_group() as serving:
            serving.start_soon(tls_listener.serve, digest_lines)
            with pytest.raises(ssl.SSLCertVerificationError):
                await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=ssl.create_default_context())
            serving.cancel_scope.cancel()

    run_anyio(loop_factory, main)
