"""Fuzz target 1: random sequences of loop API calls, with odd arguments, on two loops.

The input decodes to a program (a list of calls with their arguments: odd types and sizes, closed
and foreign objects, calls from other threads, callbacks that stop, close, raise or re-enter the
loop).  The program runs on stock asyncio and on turboloop; the oracle is that turboloop neither
crashes nor hangs, and that every call has the same outcome on both loops (success, or the same
exception type) and the callbacks run in the same order.

Run it under atheris: ``python tests_py/fuzz/fuzz_loop_api.py [libFuzzer options] [corpus]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import decimal
import fractions
import gc
import logging
import math
import os
import resource
import socket
import ssl
import sys
import threading
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import turboloop  # noqa: E402
from fuzz_input import Source, fuzz_main  # noqa: E402

MAX_CALLS = 40
THREAD_JOIN_TIMEOUT = 30.0  # seconds; only a hang ever waits this long
# A run_until_complete target not done after this many loop iterations is cancelled, so that no
# program waits forever on a future nothing will complete.
WATCHDOG_ITERATIONS = 8
# Loop iterations after a thread completed a call's future: more than anything a program queues
# takes to finish (a task of a few steps, a callback's nested callback).
SETTLE_ITERATIONS = WATCHDOG_ITERATIONS + 4
# Timers due between now and this many seconds from now may or may not fire during a run: they
# run, but they only record, and are left out of the comparison.
TIMING_HORIZON = 1e6


class Opaque:
    """An arbitrary object."""


class FileNo:
    """A file object whose fileno() returns ``value`` (or raises it, if an exception)."""

    def __init__(self, value):
        self.value = value

    def fileno(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def _free_fd() -> int:
    """A descriptor number that is not open (and that nothing in a run opens)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    for fd in range(min(soft, 4096) - 1, 2, -1):
        try:
            os.fstat(fd)
        except OSError:
            return fd
    raise RuntimeError("no free descriptor number")


FREE_FD = _free_fd()


# Argument values drawn for every kind of parameter.
VALUES = (
    None,
    True,
    0,
    1,
    -1,
    7,
    2**31 - 1,
    2**31,
    2**63,
    -(2**63),
    2**100,
    0.0,
    -0.0,
    0.5,
    1e300,
    -1e300,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "1",
    "\x00",
    "\udcff",
    b"",
    b"1",
    bytearray(b"12"),
    Opaque(),
    [],
    (1,),
    {},
    decimal.Decimal("1"),
    fractions.Fraction(1, 3),
    1j,
    FileNo(-1),
    FileNo(str(FREE_FD)),
    FileNo(2**40),
    FileNo(OSError("fileno failed")),
)

# call_later delays: not a complex one, whose deadline (time() + delay) is of another type too.
DELAYS = tuple(value for value in VALUES if not isinstance(value, complex))

# call_at deadlines.  Not VALUES: asyncio stores a deadline of another type as given and only
# fails (TypeError) when it next compares it, in call_at or in a later iteration, while turboloop
# refuses it at once (test_bad_input.py fixes that contract); either way a program diverges.
# Not an int beyond a float's range either (10**400), for the same reason: asyncio fails
# (OverflowError) in the first iteration that would wait for it, turboloop in call_at; nor a
# Decimal, which asyncio compares as such (InvalidOperation against a NaN deadline).
WHENS = (None, True, 0, 1, -1, 2**31, 2**63, 2**100, 0.0, 0.5, 1e300, -1e300, math.nan, math.inf,
         -math.inf, fractions.Fraction(1, 3))

# Descriptor arguments beyond VALUES: the run's own descriptors, by name.
FD_KINDS = (
    "sock_a",
    "sock_a_fd",
    "sock_b",
    "pipe_r",
    "pipe_w",
    "devnull_fd",
    "closed_sock",
    "free_fd",
    "fileno_of_sock_a",
    "beyond_rlimit",
    "value",
)

SOCK_KINDS = ("sock_a", "sock_b", "closed_sock", "timeout_sock", "udp_sock", "listener", "ssl_sock", "value")

SIZES = (0, 1, 7, 100, 65536, 2**20, -1, 2**63, 2**100, None, "1", 1.5, True, Opaque())

DATA_KINDS = ("bytes", "bytearray", "memoryview", "strided", "str", "value")

CALLBACK_KINDS = (
    "record",
    "record",
    "stop",
    "raise",
    "close",
    "run_forever",
    "run_until_complete",
    "call_soon",
    "thread_call_soon",
    "thread_call_soon_threadsafe",
    "set_debug",
    "cancel_handles",
    "value",
    "coroutine_function",
)

CORO_KINDS = ("sleep0", "return", "raise", "sleep0x3", "sleep_long", "await_future", "cancel_self", "value",
              "generator", "future", "foreign_future", "done_future", "task")

EXECUTOR_KINDS = ("default", "stdlib", "turboloop", "shut_down", "value")
FUNC_KINDS = ("return", "raise", "value", "coroutine_function", "call_soon", "call_soon_threadsafe", "sleep")

HOSTS = (None, "localhost", "127.0.0.1", "::1", "", b"127.0.0.1", 1, "a" * 300, "\x00", "256.1.1.1", Opaque())
PORTS = (None, 0, 80, "80", "http", b"80", -1, 65536, 2**70, 1.5, Opaque())
GAI_INTS = (0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.SOCK_STREAM, socket.AI_NUMERICHOST,
            socket.AI_CANONNAME, -1, 2**70, "x", None)

# What a callback of the "raise" kind raises: asyncio reports any BaseException but SystemExit
# and KeyboardInterrupt to the exception handler.
RAISED = (ValueError, asyncio.CancelledError, GeneratorExit)

FINALISER_MESSAGES = (
    "Task was destroyed but it is pending!",
    "Task exception was never retrieved",
    "Future exception was never retrieved",
    "an error occurred during closing of asynchronous generator",
)

THREAD_CALLS = ("call_soon", "call_later", "call_soon_threadsafe", "stop", "close", "run_once", "create_future",
                "create_task", "add_reader", "remove_reader", "set_debug", "run_until_complete")


# ----------------------------------------------------------------------------------------------
# Decoding: bytes -> program (a list of tuples of plain values, independent of any loop)
# ----------------------------------------------------------------------------------------------


def _callback(src: Source) -> tuple:
    kind = src.pick(CALLBACK_KINDS)
    return (kind, src.below(len(VALUES)), src.below(3))


def _draw_call(src: Source, top_level: bool) -> tuple:
    name = src.pick(CALL_NAMES if top_level else THREAD_CALLS)
    if name in ("call_soon", "call_soon_threadsafe"):
        return (name, _callback(src), src.below(4), src.below(len(VALUES)), src.below(5))
    if name == "call_later":
        return (name, src.below(len(DELAYS)), _callback(src), src.below(4), src.flag())
    if name == "call_at":
        return (name, src.below(len(WHENS)), _callback(src), src.below(4), src.flag())
    if name in ("add_reader", "add_writer"):
        return (name, src.pick(FD_KINDS), src.below(len(VALUES)), _callback(src))
    if name in ("remove_reader", "remove_writer"):
        return (name, src.pick(FD_KINDS), src.below(len(VALUES)))
    if name in ("cancel_handle", "query_handle", "set_result", "cancel_future", "set_exception"):
        return (name, src.byte(), src.below(len(VALUES)))
    if name in ("create_task", "run_until_complete"):
        return (name, src.pick(CORO_KINDS), src.byte(), src.below(len(VALUES)))
    if name in ("set_debug", "set_exception_handler", "set_task_factory", "call_exception_handler"):
        return (name, src.below(len(VALUES)))
    if name == "sock_recv":
        return (name, src.pick(SOCK_KINDS), src.below(len(VALUES)), src.below(len(SIZES)))
    if name == "sock_sendall":
        return (name, src.pick(SOCK_KINDS), src.below(len(VALUES)), src.pick(DATA_KINDS), src.blob(300_000))
    if name == "peer_send":
        return (name, src.flag(), src.blob(300_000))
    if name == "peer_recv":
        return (name, src.flag())
    if name == "close_socket":
        return (name, src.pick(("sock_a", "sock_b", "pipe_r", "pipe_w")), src.flag())
    if name == "run_in_executor":
        return (name, src.pick(EXECUTOR_KINDS), src.below(len(VALUES)), src.pick(FUNC_KINDS))
    if name == "getaddrinfo":
        return (name, src.below(len(HOSTS)), src.below(len(PORTS)),
                *(src.below(len(GAI_INTS)) for _ in range(4)), src.below(2))
    if name == "in_thread":
        return (name, _draw_call(src, top_level=False))
    return (name,)


CALL_NAMES = (
    "call_soon", "call_soon", "call_later", "call_at", "call_soon_threadsafe", "cancel_handle", "query_handle",
    "run_once", "run_once", "run_until_complete", "run_until_complete", "stop", "close", "create_future",
    "set_result", "set_exception", "cancel_future", "create_task", "add_reader", "add_writer",
    "remove_reader", "remove_writer", "sock_recv", "sock_sendall", "peer_send", "peer_recv", "close_socket",
    "set_debug", "get_debug", "run_in_executor", "getaddrinfo", "in_thread", "set_exception_handler",
    "set_task_factory", "call_exception_handler", "shutdown_asyncgens", "shutdown_default_executor",
)


def decode(data: bytes) -> list[tuple]:
    src = Source(data)
    program = []
    while not src.exhausted() and len(program) < MAX_CALLS:
        program.append(_draw_call(src, top_level=True))
    return program


# ----------------------------------------------------------------------------------------------
# Execution: one program on one loop, recording every outcome
# ----------------------------------------------------------------------------------------------


def _outcome(func, *args, **kwargs):
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the outcome is the exception's type
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise
        return type(exc).__name__, None
    return "ok", result


def _is_timed(offset) -> bool:
    """Whether a timer ``offset`` seconds from now may fire (or not) during a run."""
    try:
        seconds = float(offset)
    except (TypeError, ValueError, OverflowError):
        return False
    return 0 < seconds < TIMING_HORIZON


class Execution:
    """Runs a program on a new loop from ``factory`` and records what every call did."""

    def __init__(self, factory) -> None:
        self.loop = factory()
        self.foreign_loop = factory()
        self.outcomes: list = []  # compared between loops
        self.trace: list = []  # what callbacks did, in order: compared between loops
        self.uncompared_trace: list = []  # what callbacks did when that is a race
        self.compared_trace: list = []  # the trace when the program ended
        self.ordered_timers = True
        self.handles: list = []
        self.futures: list = []
        self.executors: list = []
        self.threads_ok = True
        self.loop.set_exception_handler(self._exception_handler)
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.pipe_r, self.pipe_w = os.pipe()
        self.pipe_r_open = self.pipe_w_open = True
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.closed_sock = socket.socket()
        self.closed_sock.close()
        self.timeout_sock, self.timeout_peer = socket.socketpair()
        self.timeout_sock.settimeout(0.001)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setblocking(False)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.setblocking(False)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        self.ssl_sock = context.wrap_socket(socket.socket(), do_handshake_on_connect=False)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _exception_handler(self, loop, context) -> None:
        exc = context.get("exception") if isinstance(context, dict) else context
        # What a finaliser reports (a task destroyed while pending, an exception never
        # retrieved) comes whenever the garbage collector gets to it: not compared.
        from_finaliser = isinstance(context, dict) and context.get("message") in FINALISER_MESSAGES
        trace = self.uncompared_trace if from_finaliser else self.trace
        trace.append(("exception_handler", type(exc).__name__))

    def record(self, name, outcome) -> None:
        self.outcomes.append((name, outcome))

    def close(self) -> None:
        loop = self.loop
        if not loop.is_closed():
            # To the end: a shutdown_default_executor() task left pending joins its thread
            # from its finally block whenever the garbage collector closes it, in whatever
            # thread that happens -- and may deadlock there (threading's own locks).
            with contextlib.suppress(Exception):
                self.run_until_done(loop.shutdown_default_executor())
            loop.close()
        self.foreign_loop.close()
        for executor in self.executors:
            executor.shutdown(wait=True)
        for sock in (self.a, self.b, self.timeout_sock, self.timeout_peer, self.udp, self.listener, self.ssl_sock):
            sock.close()
        os.close(self.devnull)
        for fd, is_open in ((self.pipe_r, self.pipe_r_open), (self.pipe_w, self.pipe_w_open)):
            if is_open:
                os.close(fd)

    # -- argument materialisation --------------------------------------------------------------

    def make_callback(self, spec: tuple, ident, compared: bool = True):
        """The callback ``spec`` describes; one whose running is a race only records that it
        ran, where the comparison does not look."""
        kind, value_index, raised_index = spec
        trace = self.trace if compared else self.uncompared_trace
        loop = self.loop
        if not compared:
            kind = "record"
        if kind == "value":
            return VALUES[value_index]
        if kind == "coroutine_function":
            async def coroutine_function(*args):
                trace.append(("coroutine_function", ident))
            return coroutine_function

        def callback(*args):
            trace.append(("callback", ident))
            if kind == "stop":
                loop.stop()
            elif kind == "raise":
                raise RAISED[raised_index](ident)
            elif kind == "close":
                trace.append(("close", _outcome(loop.close)[0]))
            elif kind == "run_forever":
                trace.append(("run_forever", _outcome(loop.run_forever)[0]))
            elif kind == "run_until_complete":
                trace.append(("run_until_complete", _outcome(loop.run_until_complete, asyncio.sleep(0))[0]))
            elif kind == "call_soon":
                nested = self.make_callback(("record", 0, 0), (ident, 1))
                trace.append(("call_soon", _outcome(loop.call_soon, nested)[0]))
            elif kind in ("thread_call_soon", "thread_call_soon_threadsafe"):
                method = getattr(loop, kind[len("thread_"):])
                nested = self.make_callback(("record", 0, 0), (ident, 2))
                trace.append((kind, self.in_thread(lambda: _outcome(method, nested)[0])))
            elif kind == "set_debug":
                trace.append(("set_debug", _outcome(loop.set_debug, not loop.get_debug())[0]))
            elif kind == "cancel_handles":
                for handle in self.handles:
                    handle.cancel()

        return callback

    def once(self, method: str, fd, callback):
        """A descriptor callback that removes itself before it runs ``callback``: a ready
        descriptor's callback would run in every iteration, and how many iterations a wait for
        an executor takes is up to the threads."""
        remove = getattr(self.loop, method.replace("add_", "remove_"))

        def fd_callback(*args):
            remove(fd)
            return callback(*args)

        return fd_callback

    def fd_arg(self, kind: str, value_index: int):
        return {
            "sock_a": lambda: self.a,
            "sock_a_fd": lambda: self.a.fileno(),
            "sock_b": lambda: self.b,
            "devnull_fd": lambda: self.devnull,
            "closed_sock": lambda: self.closed_sock,
            "free_fd": lambda: FREE_FD,
            "fileno_of_sock_a": lambda: FileNo(self.a.fileno()),
            "beyond_rlimit": lambda: 10**7,
            "value": lambda: _not_a_loop_fd(VALUES[value_index]),
            "pipe_r": lambda: self.pipe_r if self.pipe_r_open else FREE_FD,
            "pipe_w": lambda: self.pipe_w if self.pipe_w_open else FREE_FD,
        }[kind]()

    def sock_arg(self, kind: str, value_index: int):
        if kind == "value":
            return VALUES[value_index]
        return {
            "sock_a": self.a,
            "sock_b": self.b,
            "closed_sock": self.closed_sock,
            "timeout_sock": self.timeout_sock,
            "udp_sock": self.udp,
            "listener": self.listener,
            "ssl_sock": self.ssl_sock,
        }[kind]

    def awaitable(self, kind: str, index: int, value_index: int):
        """The run_until_complete/create_task argument of that kind."""
        if kind == "sleep0":
            return asyncio.sleep(0)
        if kind == "return":
            return _return(value_index)
        if kind == "raise":
            return _raise()
        if kind == "sleep0x3":
            return _sleep0x3()
        if kind == "sleep_long":
            return asyncio.sleep(3600)
        if kind == "await_future" and self.futures:
            return _await(self.futures[index % len(self.futures)])
        if kind == "cancel_self":
            return _cancel_self()
        if kind == "generator":
            return (i for i in range(1))
        if kind in ("future", "task") and self.futures:
            return self.futures[index % len(self.futures)]
        if kind == "foreign_future":
            return self.foreign_loop.create_future()
        if kind == "done_future":
            future = asyncio.Future(loop=self.loop)
            future.set_result(None)
            return future
        return VALUES[value_index]

    def watch(self, future, remaining: int, active: list[bool]) -> None:
        """Cancel ``future`` if still pending after ``remaining`` more iterations of this run."""
        if future.done() or not active[0]:
            return
        if remaining == 0:
            future.cancel()
            return
        self.loop.call_soon(self.watch, future, remaining - 1, active)

    def run_watched(self, awaitable):
        """run_until_complete(awaitable), with the watchdog on what it waits for."""
        loop = self.loop
        if asyncio.iscoroutine(awaitable):
            awaitable = loop.create_task(awaitable)
        if not (isinstance(awaitable, asyncio.Future) and awaitable.get_loop() is loop):
            return loop.run_until_complete(awaitable)
        # The watchdog ends with the run: a run that a stop() ended early must not leave it
        # cancelling in later runs, whose iterations may be as many as a thread takes.
        active = [True]
        loop.call_soon(self.watch, awaitable, WATCHDOG_ITERATIONS, active)
        try:
            return loop.run_until_complete(awaitable)
        finally:
            active[0] = False

    def run_until_done(self, awaitable):
        """Run single iterations until what a thread completes is done, then SETTLE_ITERATIONS
        more, and give its result.

        Not run_until_complete(): how many iterations the thread takes is a race (on any loop),
        and a stop() made before would end that run with or without the result, leaving its
        done callback (a stop) to end a later run early.  The extra iterations let whatever the
        program queued finish, so that the state afterwards does not depend on that race."""
        loop = self.loop
        future = asyncio.ensure_future(awaitable, loop=loop)
        while not future.done():
            self.run_once()
        for _ in range(SETTLE_ITERATIONS):
            self.run_once()
        return future.result()

    def run_once(self) -> None:
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()

    def executor(self, kind: str, value_index: int):
        if kind == "default":
            return None
        if kind == "value":
            return VALUES[value_index]
        pool = {"stdlib": concurrent.futures.ThreadPoolExecutor,
                "turboloop": turboloop.ThreadPoolExecutor,
                "shut_down": concurrent.futures.ThreadPoolExecutor}[kind](max_workers=2)
        self.executors.append(pool)
        if kind == "shut_down":
            pool.shutdown()
        return pool

    def executor_func(self, kind: str, value_index: int):
        loop = self.loop
        if kind == "return":
            return lambda: value_index
        if kind == "raise":
            return _raise_now
        if kind == "value":
            return VALUES[value_index]
        if kind == "coroutine_function":
            return _return
        if kind == "sleep":
            return lambda: threading.Event().wait(0.001)
        # When a worker's callback runs, relative to the loop's own, is a race (on any loop), so
        # it is not compared; nor is the outcome of a non-thread-safe call_soon from a worker
        # (debug mode refuses it while the loop runs, and whether the loop runs yet is a race).
        callback = self.make_callback(("record", 0, 0), ("executor", value_index), compared=False)
        if kind == "call_soon_threadsafe":
            return lambda: loop.call_soon_threadsafe(callback)

        def call_soon_from_worker():
            _outcome(loop.call_soon, callback)

        return call_soon_from_worker

    def data_arg(self, kind: str, blob: bytes, value_index: int):
        if kind == "bytes":
            return blob
        if kind == "bytearray":
            return bytearray(blob)
        if kind == "memoryview":
            return memoryview(blob)
        if kind == "strided":
            return memoryview(blob)[::2]
        if kind == "str":
            return blob.decode("latin-1")
        return VALUES[value_index]

    def in_thread(self, func):
        """func() in a new thread; its result, or "hang" if it never finished."""
        box = []
        thread = threading.Thread(target=lambda: box.append(func()))
        thread.start()
        thread.join(THREAD_JOIN_TIMEOUT)
        if thread.is_alive():
            self.threads_ok = False
            return "hang"
        return box[0] if box else "thread died"

    # -- the calls -----------------------------------------------------------------------------

    def execute(self, program: list[tuple]) -> None:
        self.ordered_timers = _timer_order_is_defined(program)
        for index, call in enumerate(program):
            self.record(call[0], self.perform(call, index))

    def perform(self, call: tuple, ident) -> object:
        loop = self.loop
        name = call[0]
        if name in ("call_soon", "call_soon_threadsafe"):
            _, spec, nargs, value_index, context_kind = call
            args = (VALUES[value_index],) * nargs
            kwargs = {}
            if context_kind == 1:
                kwargs["context"] = None
            elif context_kind == 2:
                kwargs["context"] = contextvars.copy_context()
            elif context_kind >= 3:
                kwargs["context"] = VALUES[value_index]
            status, handle = _outcome(getattr(loop, name), self.make_callback(spec, ident), *args, **kwargs)
            if handle is not None:
                self.handles.append(handle)
            return status
        if name in ("call_later", "call_at"):
            _, value_index, spec, nargs, relative = call
            value = (DELAYS if name == "call_later" else WHENS)[value_index]
            if name == "call_at" and relative and isinstance(value, float):
                value = loop.time() + value
            offset = value if name == "call_later" else _outcome(lambda: value - loop.time())[1]
            compared = self.ordered_timers and not _is_timed(offset)
            callback = self.make_callback(spec, ident, compared=compared)
            status, handle = _outcome(getattr(loop, name), value, callback, *(value,) * nargs)
            if handle is not None:
                self.handles.append(handle)
            return status
        if name == "cancel_handle":
            if not self.handles:
                return "no handle"
            return _outcome(self.handles[call[1] % len(self.handles)].cancel)[0]
        if name == "query_handle":
            if not self.handles:
                return "no handle"
            handle = self.handles[call[1] % len(self.handles)]
            repr(handle)
            # Not get_context(): asyncio's 3.11 handles lack it, turboloop's have it (as 3.12's).
            return _outcome(handle.cancelled), _outcome(lambda: _is_number(handle.when()))[0]
        if name == "run_once":
            status, _ = _outcome(loop.call_soon, loop.stop)
            if status != "ok":
                return status
            return _outcome(loop.run_forever)[0]
        if name == "run_until_complete":
            _, kind, index, value_index = call
            return _outcome(lambda: self.run_watched(self.awaitable(kind, index, value_index)))[0]
        if name == "create_task":
            _, kind, index, value_index = call
            status, task = _outcome(loop.create_task, self.awaitable(kind, index, value_index))
            if task is not None:
                self.futures.append(task)
            return status
        if name == "stop":
            return _outcome(loop.stop)[0]
        if name == "close":
            return _outcome(loop.close)[0]
        if name == "create_future":
            status, future = _outcome(loop.create_future)
            if future is not None:
                self.futures.append(future)
            return status
        if name in ("set_result", "set_exception", "cancel_future"):
            if not self.futures:
                return "no future"
            future = self.futures[call[1] % len(self.futures)]
            value = VALUES[call[2]]
            if name == "set_result":
                return _outcome(future.set_result, value)[0]
            if name == "set_exception":
                exc = (ValueError, ValueError("x"), StopIteration(), value)[call[2] % 4]
                return _outcome(future.set_exception, exc)[0]
            # Only the outcome: whether the future was still pending may depend on how many
            # iterations an earlier wait for an executor took.
            return _outcome(future.cancel)[0]
        if name in ("add_reader", "add_writer"):
            _, fd_kind, value_index, spec = call
            fd = self.fd_arg(fd_kind, value_index)
            return _outcome(getattr(loop, name), fd, self.once(name, fd, self.make_callback(spec, ident)))[0]
        if name in ("remove_reader", "remove_writer"):
            _, fd_kind, value_index = call
            return _outcome(getattr(loop, name), self.fd_arg(fd_kind, value_index))
        if name == "sock_recv":
            _, kind, value_index, size_index = call
            sock = self.sock_arg(kind, value_index)
            status, data = _outcome(lambda: self.run_watched(loop.sock_recv(sock, SIZES[size_index])))
            return status, None if data is None else len(data)
        if name == "sock_sendall":
            _, kind, value_index, data_kind, blob = call
            sock = self.sock_arg(kind, value_index)
            data = self.data_arg(data_kind, blob, value_index)
            return _outcome(lambda: self.run_watched(loop.sock_sendall(sock, data)))[0]
        if name == "peer_send":
            sock = self.b if call[1] else self.a
            return _outcome(sock.send, call[2])
        if name == "peer_recv":
            sock = self.b if call[1] else self.a
            status, data = _outcome(sock.recv, 1 << 20)
            return status, None if data is None else len(data)
        if name == "close_socket":
            _, which, shutdown_first = call
            if which in ("pipe_r", "pipe_w"):
                # Closed once only: a second os.close() could close whatever reused the number.
                if not getattr(self, f"{which}_open"):
                    return "already closed"
                setattr(self, f"{which}_open", False)
                return _outcome(os.close, getattr(self, which))[0]
            sock = self.a if which == "sock_a" else self.b
            if shutdown_first:
                _outcome(sock.shutdown, socket.SHUT_RDWR)
            return _outcome(sock.close)[0]
        if name == "set_debug":
            return _outcome(loop.set_debug, VALUES[call[1]])[0], _outcome(loop.get_debug)[0]
        if name == "get_debug":
            return _outcome(lambda: bool(loop.get_debug()))
        if name == "run_in_executor":
            _, executor_kind, value_index, func_kind = call
            executor = self.executor(executor_kind, value_index)
            func = self.executor_func(func_kind, value_index)
            # Not watched: an executor's future completes when its thread is done, however long.
            status, future = _outcome(loop.run_in_executor, executor, func)
            if status != "ok":
                return status
            status, result = _outcome(self.run_until_done, future)
            return status, _public_type_name(result)
        if name == "getaddrinfo":
            _, host, port, family, type_, proto, flags, by_keyword = call
            ints = [GAI_INTS[i] for i in (family, type_, proto, flags)]
            if by_keyword:
                coro = lambda: loop.getaddrinfo(HOSTS[host], PORTS[port], family=ints[0], type=ints[1],  # noqa: E731
                                                proto=ints[2], flags=ints[3])
            else:
                coro = lambda: loop.getaddrinfo(HOSTS[host], PORTS[port], *ints)  # noqa: E731
            status, result = _outcome(lambda: self.run_until_done(coro()))
            return status, None if result is None else len(result)
        if name == "in_thread":
            return self.in_thread(lambda: self.perform(call[1], (ident, "thread")))
        if name == "set_exception_handler":
            status = _outcome(loop.set_exception_handler, VALUES[call[1]])[0]
            loop.set_exception_handler(self._exception_handler)
            return status
        if name == "set_task_factory":
            status = _outcome(loop.set_task_factory, VALUES[call[1]])[0]
            with contextlib.suppress(BaseException):
                loop.set_task_factory(None)
            return status
        if name == "call_exception_handler":
            return _outcome(loop.call_exception_handler, VALUES[call[1]])[0]
        if name == "shutdown_asyncgens":
            return _outcome(lambda: loop.run_until_complete(loop.shutdown_asyncgens()))[0]
        if name == "shutdown_default_executor":
            return _outcome(lambda: self.run_until_done(loop.shutdown_default_executor()))[0]
        raise AssertionError(f"unknown call {name}")


def _public_type_name(value) -> str:
    """The name of the nearest class of ``value`` that asyncio or turboloop exports (else of its
    own type): from 3.14, stock call_soon_threadsafe() returns an events._ThreadSafeHandle, a
    private Handle subclass, where turboloop returns its own Handle."""
    for cls in type(value).__mro__:
        if getattr(asyncio, cls.__name__, None) is cls or getattr(turboloop, cls.__name__, None) is cls:
            return cls.__name__
    return type(value).__name__


def _not_a_loop_fd(value):
    """A descriptor number drawn from VALUES, unless it may be one of the loop's own (each loop
    opens different ones, so the outcomes would differ): then a number that is not open."""
    if type(value) is int and 3 <= value < 1024:
        return FREE_FD
    return value


def _timer_order_is_defined(program: list[tuple]) -> bool:
    """Whether the program's timers run in an order asyncio defines: not when two may share a
    deadline ("undefined which will be called first", asyncio's docs; its heap does not keep the
    order they were scheduled in, turboloop's does), nor with a NaN deadline, which no order
    holds.  Absolute deadlines and infinite delays may repeat; others come from the clock."""
    seen = set()
    for call in program:
        call = call[1] if call[0] == "in_thread" else call
        if call[0] not in ("call_at", "call_later"):
            continue
        value = (WHENS if call[0] == "call_at" else DELAYS)[call[1]]
        infinite = isinstance(value, float) and not math.isfinite(value)
        absolute = call[0] == "call_at" and not (call[4] and isinstance(value, float))
        if not (absolute or infinite):
            continue
        key = repr(value)
        if key in seen or key == "nan":
            return False
        seen.add(key)
    return True


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


async def _return(value=None):
    return value


async def _raise():
    raise ValueError("raised")


def _raise_now():
    raise ValueError("raised")


async def _sleep0x3():
    for _ in range(3):
        await asyncio.sleep(0)


async def _await(future):
    return await future


async def _cancel_self():
    asyncio.current_task().cancel()
    await asyncio.sleep(0)


def _stock_loop():
    return asyncio.DefaultEventLoopPolicy().new_event_loop()


def run_program(factory, program: list[tuple]) -> Execution:
    execution = Execution(factory)
    try:
        execution.execute(program)
        # Not what runs while closing: that waits for a thread, as long as it takes.
        execution.compared_trace = list(execution.trace)
    finally:
        execution.close()
    return execution


def run_one(data: bytes) -> None:
    """The fuzz target: the program ``data`` decodes to must do the same on both loops."""
    program = decode(data)
    asyncio_logger = logging.getLogger("asyncio")
    was_disabled = asyncio_logger.disabled
    asyncio_logger.disabled = True  # debug mode's slow-callback warnings, handlers' own errors
    try:
        with warnings.catch_warnings():
            # Un-awaited coroutines and unclosed objects are the program's doing, on both loops.
            warnings.simplefilter("ignore")
            expected = run_program(_stock_loop, program)
            actual = run_program(turboloop.new_event_loop, program)
            gc.collect()
    finally:
        asyncio_logger.disabled = was_disabled
    assert actual.threads_ok, f"a thread hung on turboloop: {_short(program)}"
    compare(program, expected, actual)


def _short(program) -> str:
    """The program's repr, with long byte strings abbreviated."""
    def short(value):
        if isinstance(value, tuple):
            return tuple(short(v) for v in value)
        if isinstance(value, bytes) and len(value) > 16:
            return f"<{len(value)} bytes {value[:8]!r}...>"
        return value
    return repr([short(call) for call in program])


def compare(program, expected: Execution, actual: Execution) -> None:
    for index, (want, got) in enumerate(zip(expected.outcomes, actual.outcomes)):
        if want != got:
            raise AssertionError(f"call {index} {_short([program[index]])}: asyncio {want!r}, turboloop {got!r}\n"
                                 f"program: {_short(program)}")
    assert expected.compared_trace == actual.compared_trace, (
        f"callbacks differ\nasyncio:   {expected.compared_trace!r}\nturboloop: {actual.compared_trace!r}\n"
        f"program: {_short(program)}")


if __name__ == "__main__":
    fuzz_main(run_one)
