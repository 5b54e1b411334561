"""The client side of test_tcp_stress.py's many-connections test, run as a subprocess so that the
server's process needs only one descriptor per connection.

    python stress_client.py LOOP_NAME PORT CONNECTIONS SEED RESETS

Opens CONNECTIONS connections to 127.0.0.1:PORT on a loop of LOOP_NAME, all at once, and waits on
each for the server's go byte (sent once the server holds them all).  Then each connection sends
its message (``message(seed, i)``); the RESETS connections ``resets(...)`` picks instead reset
(SO_LINGER 0, then abort) at a random stage: before sending, half-way, or after sending it all.
The others half-close and check that the echo matches what they sent.  Prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import resource
import socket
import struct
import sys

GO = b"G"
STAGES = ("before", "partial", "after")


def message(seed: int, i: int) -> bytes:
    """Connection i's message: its number on a line, then 1 to 4096 seeded random bytes."""
    rng = random.Random(seed * 1_000_003 + i)
    return b"%d\n" % i + rng.randbytes(rng.randint(1, 4096))


def resets(seed: int, connections: int, count: int) -> dict[int, str]:
    """The connections that reset, each with the stage at which it does."""
    rng = random.Random(seed)
    return {i: rng.choice(STAGES) for i in sorted(rng.sample(range(connections), count))}


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "turboloop":
        import turboloop

        return turboloop.new_event_loop()
    import uvloop

    return uvloop.new_event_loop()


def reset(writer: asyncio.StreamWriter) -> None:
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def main(port: int, connections: int, seed: int, reset_count: int) -> dict:
    to_reset = resets(seed, connections, reset_count)
    gate = asyncio.Semaphore(min(connections, 1000))  # stay within the listen backlog

    async def connect():
        async with gate:
            return await asyncio.open_connection("127.0.0.1", port)

    streams = await asyncio.gather(*(connect() for _ in range(connections)), return_exceptions=True)
    failures = [repr(s) for s in streams if isinstance(s, BaseException)]
    if failures:
        return {"connect_failures": len(failures), "example": failures[0]}

    async def exchange(i, reader, writer):
        if await reader.readexactly(1) != GO:
            return "no go byte"
        data = message(seed, i)
        stage = to_reset.get(i)
        if stage is not None:
            if stage != "before":
                writer.write(data if stage == "after" else data[: len(data) // 2])
                await writer.drain()
            reset(writer)
            return "reset"
        writer.write(data)
        writer.write_eof()
        echo = await reader.read()
        writer.close()
        return "echoed" if hashlib.sha256(echo).digest() == hashlib.sha256(data).digest() else f"bad echo {i}"

    outcomes = await asyncio.gather(*(exchange(i, r, w) for i, (r, w) in enumerate(streams)), return_exceptions=True)
    bad = [repr(o) if isinstance(o, BaseException) else o for o in outcomes if o not in ("echoed", "reset")]
    for _, writer in streams:
        writer.close()
    await asyncio.sleep(0)
    return {
        "echoed": outcomes.count("echoed"),
        "reset": outcomes.count("reset"),
        "bad": len(bad),
        "example": bad[:3],
    }


if __name__ == "__main__":
    loop_name, port, connections, seed, reset_count = sys.argv[1], *map(int, sys.argv[2:6])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = new_loop(loop_name)
    try:
        print(json.dumps(loop.run_until_complete(main(port, connections, seed, reset_count))))
    finally:
        loop.close()
