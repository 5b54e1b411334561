"""A tour of turboloop: an ordinary asyncio program, run on turboloop's native loop.

    python -m turboloop examples/demo.py
"""

import asyncio
import threading
import time


async def worker(name: str, delay: float, results: list[str]) -> None:
    await asyncio.sleep(delay)
    results.append(name)


async def ping_pong(rounds: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for i in range(rounds):
        future = loop.create_future()
        loop.call_soon(future.set_result, i)
        await future
    return rounds / (time.perf_counter() - start)


async def main() -> None:
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__qualname__}")

    results: list[str] = []
    await asyncio.gather(*(worker(f"task{i}", 0.01 * (5 - i), results) for i in range(5)))
    print("timers fired in deadline order:", results)

    done = asyncio.Event()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(done.set)).start()
    await asyncio.wait_for(done.wait(), timeout=5)
    print("woken from another thread: ok")

    print(f"future round-trips: {await ping_pong(200_000):,.0f} per second")


if __name__ == "__main__":
    asyncio.run(main())
