"""Subprocesses under load and faults, on every loop, against stock asyncio's outcomes: 100 MB
through a child's pipes both ways, 500 children at once (all reaped), a child killed while the
parent writes to it, a reader that closed its end, and bad programs and descriptors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import signal
import sys

import pytest

CHUNK = 1024 * 1024
TOTAL = 100 * CHUNK


def run(loop_factory, coro):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def test_100_mb_through_a_child_both_ways(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        sent = hashlib.sha256()
        received = hashlib.sha256()

        async def write():
            block = os.urandom(CHUNK)
            for i in range(TOTAL // CHUNK):
                data = block[i:] + block[:i]  # a different chunk each time
                sent.update(data)
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

        async def read():
            count = 0
            while chunk := await proc.stdout.read(256 * 1024):
                received.update(chunk)
                count += len(chunk)
            return count

        _, count = await asyncio.wait_for(asyncio.gather(write(), read()), 120)
        assert await proc.wait() == 0
        return count, sent.digest() == received.digest()

    assert run(loop_factory, main()) == (TOTAL, True)


@pytest.fixture
def descriptors_for_500_children():
    """turboloop holds a pidfd per running child: room for 500 of them besides the rest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_500_children_at_once_are_all_reaped(loop_factory, descriptors_for_500_children):
    async def main():
        procs = await asyncio.gather(
            *(
                asyncio.create_subprocess_exec(
                    "true", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
                )
                for _ in range(500)
            )
        )
        codes = await asyncio.wait_for(asyncio.gather(*(proc.wait() for proc in procs)), 120)
        return [proc.pid for proc in procs], codes

    pids, codes = run(loop_factory, main())
    assert codes == [0] * 500
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def test_child_killed_while_the_parent_writes(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)", stdin=asyncio.subprocess.PIPE
        )
        proc.stdin.write(b"x" * CHUNK)  # more than the pipe holds: the rest waits in the transport
        proc.kill()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                await proc.stdin.drain()
                proc.stdin.write(b"x" * CHUNK)
        return await proc.wait()

    assert run(loop_factory, main()) == -signal.SIGKILL


def test_writing_to_a_child_that_closed_its_stdin(loop_factory, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop's kill() raises ProcessLookupError for the live child after the broken pipe")

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import os, sys, time; os.close(0); sys.stdout.write('closed'); sys.stdout.flush(); time.sleep(60)",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert await proc.stdout.readexactly(6) == b"closed"
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                proc.stdin.write(b"y" * 65536)
                await proc.stdin.drain()
        proc.kill()
        return await proc.wait()

    assert run(loop_factory, main()) == -signal.SIGKILL


def outcome(loop_factory, coro_function):
    async def main():
        try:
            proc = await coro_function()
        except Exception as exc:  # noqa: BLE001
            return type(exc), getattr(exc, "errno", None)
        return "started", await proc.wait()

    return run(loop_factory, main())


@pytest.mark.parametrize(
    "case",
    [
        lambda: asyncio.create_subprocess_exec("/nonexistent/program"),
        lambda: asyncio.create_subprocess_exec("/"),
        lambda: asyncio.create_subprocess_exec("true", stdin=987654),
        lambda: asyncio.create_subprocess_exec("true", cwd="/nonexistent/directory"),
        lambda: asyncio.create_subprocess_shell("exit 9"),
    ],
    ids=["missing program", "a directory", "bad stdin descriptor", "missing cwd", "shell exit status"],
)
def test_bad_programs_and_descriptors_fail_as_asyncio(loop_factory, case):
    assert outcome(loop_factory, case) == outcome(asyncio.new_event_loop, case)
