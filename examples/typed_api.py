"""Every public name of turboloop in one program, written as a typed application would use it.

tests_py/test_typing.py checks it with ``mypy --strict`` -- the ``assert_type`` calls make mypy
prove that the package's annotations and stubs give precise types, not ``Any`` -- and runs it,
so the types checked are those of code that works.

    python examples/typed_api.py
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import traceback
from typing import assert_type

import turboloop

stalls: list[turboloop.Stall] = []


def square(x: int) -> int:
    return x * x


def on_stall(stall: turboloop.Stall) -> None:
    assert_type(stall.duration, float)
    assert_type(stall.threshold, float)
    assert_type(stall.stack, traceback.StackSummary | None)
    assert_type(stall.format(), str)
    stalls.append(stall)


def block_the_loop() -> None:
    time.sleep(0.2)


async def echo_once(payload: bytes) -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port: int = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
    return reply


async def loop_methods() -> int:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, turboloop.Loop)

    handle = loop.call_soon(print, "call_soon ran", context=contextvars.copy_context())
    assert_type(handle, turboloop.Handle)
    assert_type(handle.cancelled(), bool)
    assert_type(handle.get_context(), contextvars.Context)
    timer = loop.call_later(3600, print, "never")
    assert_type(timer, turboloop.TimerHandle)
    assert_type(timer.when(), float)
    timer.cancel()
    assert_type(loop.call_at(loop.time(), print, "call_at ran"), turboloop.TimerHandle)
    assert_type(loop.call_soon_threadsafe(print, "call_soon_threadsafe ran"), turboloop.Handle)

    assert_type(await loop.run_in_executor(None, square, 7), int)
    assert_type(await echo_once(b"ping"), bytes)

    loop.set_watchdog(0.05, on_stall)
    assert_type(loop.get_watchdog(), float | None)
    loop.call_soon(block_the_loop)
    await asyncio.sleep(0.01)
    loop.set_watchdog(None)
    assert loop.get_watchdog() is None and stalls, "the watchdog saw no stall"

    stats = loop.stats()
    assert_type(stats, dict[str, int | float])
    return int(stats["callbacks_run"])


async def answer() -> int:
    await asyncio.sleep(0)
    return 42


def main() -> None:
    assert_type(turboloop.__version__, str)
    print("turboloop", turboloop.__version__)

    callbacks_run = turboloop.run(loop_methods(), debug=False)
    assert_type(callbacks_run, int)
    print("callbacks run:", callbacks_run)

    loop = turboloop.new_event_loop()
    assert_type(loop, turboloop.Loop)
    try:
        assert_type(loop.run_until_complete(answer()), int)
    finally:
        loop.close()

    policy = turboloop.EventLoopPolicy()
    assert_type(policy.new_event_loop(), turboloop.Loop)
    policy.new_event_loop().close()
    turboloop.install()
    try:
        assert_type(asyncio.run(answer()), int)
    finally:
        asyncio.set_event_loop_policy(None)

    turboloop.enable_watchdog(0.5, callback=on_stall)
    turboloop.enable_watchdog()
    turboloop.disable_watchdog()

    with turboloop.ThreadPoolExecutor(
        max_workers=4, thread_name_prefix="typed", min_workers=1, idle_timeout=5.0
    ) as pool:
        assert_type(pool.submit(square, 3).result(), int)
        squares = list(pool.map(square, range(4)))
        assert_type(squares, list[int])
        assert_type(pool.stats(), dict[str, int | float])
    print("squares:", squares)
    print("ok")


if __name__ == "__main__":
    main()
