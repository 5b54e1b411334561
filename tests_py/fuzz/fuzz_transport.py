"""Fuzz target 2: a socket transport driven by random byte streams, calls and peer disconnects.

The input decodes to a connection set-up (TCP client or server side, or a Unix socket pair; a plain
or buffered protocol, echoing or not) and a list of steps: the transport's own calls (write,
writelines, write_eof, pause/resume_reading, abort, close, get_extra_info, write buffer limits),
the raw peer's sends, reads, half-closes, closes and resets (SO_LINGER 0), and loop iterations.

The oracle holds on every loop (the pytest replay checks it on stock asyncio too):
* the peer receives a prefix of what was written, in order -- all of what was written before
  the transport began closing, unless the connection was aborted or reset;
* the protocol receives a prefix of what the peer sent, all of it once it saw EOF;
* connection_made comes first and once, connection_lost once (after close or any disconnect),
  and nothing after it; pause_writing and resume_writing alternate;
* nothing crashes or hangs.

Run it under atheris: ``python tests_py/fuzz/fuzz_transport.py [libFuzzer options] [corpus]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import socket
import struct
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import turboloop  # noqa: E402
from fuzz_input import Source, fuzz_main  # noqa: E402

MAX_STEPS = 30
TIMEOUT = 10.0  # seconds: only a hung connection ever waits this long
LINGER_0 = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

SETUPS = ("tcp_client", "tcp_server", "unix_pair")
PROTOCOLS = ("plain", "echo", "buffered", "buffered_echo", "pausing")
BUFFER_SIZES = (1, 7, 100, 65536, 0)
EXTRA_NAMES = ("peername", "sockname", "socket", "nonexistent", None, 1)
LIMITS = ((None, None), (0, 0), (1, 0), (100, 10), (65536, None), (-1, None), (10, 20), ("1", None))
STEPS = (
    "write", "write", "writelines", "write_eof", "pause_reading", "resume_reading", "abort", "close",
    "get_extra_info", "set_write_buffer_limits", "peer_send", "peer_send", "peer_recv", "peer_shutdown_wr",
    "peer_shutdown_rd", "peer_close", "peer_reset", "iterate", "iterate", "iterate",
)


def decode(data: bytes) -> tuple:
    src = Source(data)
    setup = (src.pick(SETUPS), src.pick(PROTOCOLS), src.pick(BUFFER_SIZES), src.flag())
    steps = []
    while not src.exhausted() and len(steps) < MAX_STEPS:
        name = src.pick(STEPS)
        if name in ("write", "peer_send"):
            steps.append((name, src.blob(300_000), src.below(3)))
        elif name == "writelines":
            steps.append((name, tuple(src.blob(70_000) for _ in range(src.below(4)))))
        elif name == "get_extra_info":
            steps.append((name, src.pick(EXTRA_NAMES)))
        elif name == "set_write_buffer_limits":
            steps.append((name, src.pick(LIMITS)))
        elif name == "iterate":
            steps.append((name, 1 + src.below(4)))
        else:
            steps.append((name,))
    return setup, steps


class _Recording:
    """Records every protocol callback; as configured, echoes what it receives (through
    ``echo``), pauses reading after each chunk, and keeps the connection open after EOF."""

    def __init__(self, kind: str, buffer_size: int, keep_open: bool, echo) -> None:
        self.kind = kind
        self.buffer = bytearray(buffer_size)
        self.keep_open = keep_open
        self.echo = echo
        self.events: list[str] = []
        self.received = bytearray()
        self.transport = None
        self.lost = None

    def connection_made(self, transport) -> None:
        self.events.append("made")
        self.transport = transport

    def _received(self, data: bytes) -> None:
        self.events.append("data")
        self.received += data
        if self.kind.endswith("echo"):
            self.echo(data)
        elif self.kind == "pausing":
            self.transport.pause_reading()

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


class PlainRecorder(_Recording, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self._received(bytes(data))


class BufferedRecorder(_Recording, asyncio.BufferedProtocol):
    """Reads into a buffer of the configured size (0: an empty buffer, which is a fatal error)."""

    def get_buffer(self, sizehint: int):
        self.events.append("get_buffer")
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received(bytes(self.buffer[:nbytes]))


class Connection:
    """One connection: the loop's transport and a raw non-blocking peer socket."""

    def __init__(self, factory, setup: tuple) -> None:
        self.setup_kind, protocol_kind, buffer_size, keep_open = setup
        self.loop = factory()
        self.is_stock = type(self.loop).__module__.startswith("asyncio.")
        self.handler_calls: list = []
        self.loop.set_exception_handler(lambda loop, context: self.handler_calls.append(context))
        self.written = bytearray()  # what write()/writelines() took
        self.written_before_closing = 0
        self.peer_sent = bytearray()
        self.peer_received = bytearray()
        self.peer = None
        self.peer_open = True
        self.peer_can_read = True
        self.broken = False  # aborted, or reset by either side: delivery may stop short
        self.zero_buffer = protocol_kind.startswith("buffered") and buffer_size == 0
        cls = BufferedRecorder if protocol_kind.startswith("buffered") else PlainRecorder
        self.protocol = cls(protocol_kind, buffer_size, keep_open, lambda data: self.write(data, 0))
        self.protocol.lost = self.loop.create_future()
        self.transport = self.run(self._connect())

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    async def _connect(self):
        loop = self.loop
        if self.setup_kind == "unix_pair":
            mine, self.peer = socket.socketpair()
            transport, _ = await loop.connect_accepted_socket(lambda: self.protocol, mine)
        elif self.setup_kind == "tcp_client":
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                listener.setblocking(False)
                transport, _ = await loop.create_connection(lambda: self.protocol, *listener.getsockname())
                self.peer, _ = await loop.sock_accept(listener)
        else:
            server = await loop.create_server(lambda: self.protocol, "127.0.0.1", 0)
            self.peer = socket.socket()
            self.peer.setblocking(False)
            await loop.sock_connect(self.peer, server.sockets[0].getsockname())
            server.close()
            while self.protocol.transport is None:
                await asyncio.sleep(0)
            transport = self.protocol.transport
            # No wait_closed(): from 3.12 it waits for the connection too (on 3.11 it returns at once).
        self.peer.setblocking(False)
        await asyncio.sleep(0)
        return transport

    # -- steps ---------------------------------------------------------------------------------

    def step(self, step: tuple) -> None:
        name = step[0]
        transport = self.transport
        if name == "write":
            self.write(step[1], step[2])
        elif name == "writelines":
            chunks = list(step[1])
            if self.is_stock and _stock_writelines_keeps_empty_chunks():
                chunks = [chunk for chunk in chunks if chunk]
            try:
                transport.writelines(chunks)
            except RuntimeError:  # after write_eof(), on every loop
                return
            except AttributeError:
                self._check_lost()
                return
            self._wrote(b"".join(step[1]))
        elif name == "write_eof":
            # shutdown() fails (OSError) once the peer reset the connection, on every loop.
            with contextlib.suppress(OSError):
                transport.write_eof()
        elif name == "pause_reading":
            transport.pause_reading()
        elif name == "resume_reading":
            transport.resume_reading()
        elif name == "abort":
            self._count_written_while_open()
            self.broken = True
            try:
                transport.abort()
            except AttributeError:
                self._check_lost()
        elif name == "close":
            self._count_written_while_open()
            transport.close()
        elif name == "get_extra_info":
            transport.get_extra_info(step[1])
            transport.get_extra_info(step[1], "default")
        elif name == "set_write_buffer_limits":
            high, low = step[1]
            with contextlib.suppress(ValueError, TypeError):
                transport.set_write_buffer_limits(high, low)
            transport.get_write_buffer_limits()
        elif name == "peer_send":
            if self.peer_open:
                try:
                    sent = self.peer.send(step[1])
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    sent = 0
                self.peer_sent += step[1][:sent]
        elif name == "peer_recv":
            self._peer_drain()
        elif name == "peer_shutdown_wr":
            if self.peer_open:
                with contextlib.suppress(OSError):
                    self.peer.shutdown(socket.SHUT_WR)
        elif name == "peer_shutdown_rd":
            if self.peer_open:
                self._peer_drain()
                with contextlib.suppress(OSError):
                    self.peer.shutdown(socket.SHUT_RD)
                self.peer_can_read = False
                self.broken = True
        elif name in ("peer_close", "peer_reset"):
            if self.peer_open:
                self._peer_drain()
                if name == "peer_reset":
                    self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
                self.peer.close()
                self.peer_open = False
                self.broken = True
        elif name == "iterate":
            for _ in range(step[1]):
                self.loop.run_until_complete(asyncio.sleep(0))
                self._peer_drain()

    def write(self, data: bytes, how: int) -> None:
        """transport.write(data), passing it as bytes, bytearray or memoryview."""
        try:
            self.transport.write((data, bytearray(data), memoryview(data))[how])
        except RuntimeError:  # after write_eof(), on every loop
            return
        except AttributeError:
            self._check_lost()
            return
        self._wrote(data)

    def _check_lost(self) -> None:
        """asyncio before gh-156512 (3.14): once a close() drained the buffer and connection_lost
        ran, the transport has neither socket nor loop left, and write() and abort() fail with
        AttributeError (its connection was never counted lost); turboloop's transport does the
        same there. (Later, the connection counts as lost, and they do nothing.)"""
        if not self.protocol.lost.done():
            raise AssertionError("AttributeError from a transport whose connection is not lost")

    def _wrote(self, data: bytes) -> None:
        self.written += data
        self._count_written_while_open()

    def _count_written_while_open(self) -> None:
        """Everything written so far must reach the peer, if the transport is not closing yet
        (and nothing breaks the connection)."""
        if not self.transport.is_closing():
            self.written_before_closing = len(self.written)

    def _peer_drain(self) -> None:
        while self.peer_open and self.peer_can_read:
            try:
                data = self.peer.recv(1 << 20)
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.broken = True
                return
            if not data:
                return
            self.peer_received += data

    # -- the end -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        """Let everything written reach the peer, then close the transport and wait for
        connection_lost."""
        protocol = self.protocol
        while not protocol.lost.done():
            self._peer_drain()
            if not (self.peer_open and self.peer_can_read):
                # Nothing will read what is still buffered.
                self._count_written_while_open()
                self.transport.abort()
            elif not self.transport.is_closing() and not self.transport.get_write_buffer_size():
                self._count_written_while_open()
                self.transport.close()
            await asyncio.sleep(0.001 if self.transport.get_write_buffer_size() else 0)
        for _ in range(3):
            await asyncio.sleep(0)
        self._peer_drain()

    def finish_and_check(self) -> None:
        self.transport.resume_reading()
        self.run(self._finish())
        self.check()

    def check(self) -> None:
        protocol = self.protocol
        events = protocol.events
        assert events[0] == "made" and events.count("made") == 1, events
        assert events.count("lost") == 1 and events[-1] == "lost", events
        writing = [e for e in events if e in ("pause_writing", "resume_writing")]
        assert all(a != b for a, b in zip(writing, writing[1:])), writing
        if writing:
            assert writing[0] == "pause_writing", writing
        exc = protocol.lost.result()
        # A fatal error needs a cause: an abort, a peer that went away, or an empty get_buffer().
        assert exc is None or self.broken or self.zero_buffer, repr(exc)
        assert not self.handler_calls or self.zero_buffer, self.handler_calls
        broken = self.broken or exc is not None
        written = bytes(self.written)
        received = bytes(self.peer_received)
        assert written.startswith(received), (
            f"the peer got bytes never written: {len(received)} received, {len(written)} written, "
            f"first difference at {_first_difference(written, received)}")
        if not broken and self.peer_can_read:
            assert len(received) >= self.written_before_closing, (
                f"the peer got {len(received)} of the {self.written_before_closing} bytes written before "
                "close()")
        sent = bytes(self.peer_sent)
        got = bytes(protocol.received)
        assert sent.startswith(got), (
            f"the protocol got bytes never sent: {len(got)} received, {len(sent)} sent, "
            f"first difference at {_first_difference(sent, got)}")
        if "eof" in events:
            assert got == sent, f"EOF after {len(got)} of the {len(sent)} bytes sent"

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        if not self.transport.is_closing():
            self.transport.abort()
        with contextlib.suppress(BaseException):
            self.run(self._settle())
        self.loop.close()

    async def _settle(self) -> None:
        await asyncio.wait([self.protocol.lost], timeout=TIMEOUT)


@functools.cache
def _stock_writelines_keeps_empty_chunks() -> bool:
    """Whether stock asyncio's writelines() buffers an empty chunk, which no send ever drains, so
    that close() never completes (gh-155888, fixed in 3.14): the harness leaves them out there."""
    loop = asyncio.SelectorEventLoop()
    mine, peer = socket.socketpair()
    try:
        lost = loop.create_future()

        class Protocol(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(Protocol, mine))
        transport.writelines([b"x", b""])
        transport.close()
        loop.run_until_complete(asyncio.wait([lost], timeout=0.1))
        if lost.done():
            return False
        transport.abort()
        loop.run_until_complete(lost)
        return True
    finally:
        peer.close()
        loop.close()


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def run_connection(factory, data: bytes) -> Connection:
    setup, steps = decode(data)
    asyncio_logger = logging.getLogger("asyncio")
    was_disabled = asyncio_logger.disabled
    asyncio_logger.disabled = True  # writes after a disconnect are logged, on every loop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            connection = Connection(factory, setup)
            try:
                for step in steps:
                    connection.step(step)
                connection.finish_and_check()
            finally:
                connection.close()
            gc.collect()
    finally:
        asyncio_logger.disabled = was_disabled
    return connection


def run_one(data: bytes) -> None:
    """The fuzz target: the transport of turboloop keeps the oracle for the input ``data``."""
    run_connection(turboloop.new_event_loop, data)


if __name__ == "__main__":
    fuzz_main(run_one)
