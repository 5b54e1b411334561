"""turboloop.Loop: the native LoopCore joined to asyncio.BaseEventLoop.

The native half runs the loop and the hot scheduling methods; asyncio's BaseEventLoop supplies the
rest unchanged (tasks, futures, run_until_complete, exception handling, async generators, the
default executor), so behaviour matches stock asyncio by construction.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import errno
import io
import selectors
import signal
import socket
import sys
import threading
import warnings
import weakref
from asyncio import base_events, coroutines, events, exceptions, selector_events, unix_events
from asyncio.base_events import _format_handle  # type: ignore[attr-defined]
from asyncio.log import logger
from typing import TYPE_CHECKING, Any, Callable, TypeVar, TypeVarTuple, Unpack

from turboloop import _child_exits, _datagram, _support, _watchdog
from turboloop._executor import ThreadPoolExecutor
from turboloop._sslproto import SSLProtocol
from turboloop._transport import SocketTransport
from turboloop._turboloop import LoopCore, SockCall

# sock_recv, sock_recv_into and sock_sendall return SockCall objects: coroutines for asyncio.iscoroutine(), and so
# for create_task() and run_until_complete().
collections.abc.Coroutine.register(SockCall)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

# From 3.13, the selector loop refuses to make a transport over a socket another transport uses.
_SELECTOR_LOOP: Any = selector_events.BaseSelectorEventLoop
_CHECKS_SOCKET_OWNER = "_ensure_fd_no_transport" in _SELECTOR_LOOP._make_socket_transport.__code__.co_names


def _noop_signal_handler(signum: int, frame: Any) -> None:
    """Python-level handler for signals the loop handles: the wakeup fd carries the number."""


def _complete_from_executor(future: asyncio.Future[Any], succeeded: bool, value: Any) -> None:
    """Give a run_in_executor future its outcome, on the loop, as asyncio's wrap_future would."""
    if future.cancelled():
        return
    if succeeded:
        future.set_result(value)
        return
    stdlib_to_asyncio = {
        concurrent.futures.CancelledError: asyncio.CancelledError,
        concurrent.futures.InvalidStateError: asyncio.InvalidStateError,
    }
    asyncio_type = stdlib_to_asyncio.get(type(value))
    future.set_exception(value if asyncio_type is None else asyncio_type(*value.args))


class _SelectorView:
    """The part of a selector that asyncio's transports read (get_key, for their reprs), answered
    from the loop's native descriptor watchers."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._loop._fd_key(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events, reader, writer = key
        fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))


class Loop(LoopCore, asyncio.SelectorEventLoop):  # type: ignore[misc]
    """An asyncio event loop whose core is native C++ on libuv.

    Descriptor readiness (add_reader and add_writer, which asyncio's sockets, transports, pipes
    and servers are built on) is native; the selector event loop's code above it is asyncio's own.
    """

    if TYPE_CHECKING:
        # asyncio.BaseEventLoop's private attributes this class uses, which typeshed leaves out.
        _default_executor: concurrent.futures.Executor | None
        _executor_shutdown_called: bool
        _current_handle: Any
        _ready: Any
        _scheduled: Any
        _timer_cancelled_count: int

        def _check_closed(self) -> None: ...
        def _check_running(self) -> None: ...
        def _check_callback(self, callback: Any, method: str) -> None: ...
        def _check_default_executor(self) -> None: ...
        def _set_coroutine_origin_tracking(self, enabled: bool) -> None: ...
        def _asyncgen_firstiter_hook(self, agen: Any) -> None: ...
        def _asyncgen_finalizer_hook(self, agen: Any) -> None: ...
        def _child_watcher_callback(self, pid: int, returncode: int, transp: Any) -> None: ...
        def _ensure_fd_no_transport(self, fd: Any) -> None: ...

    def __init__(self) -> None:
        LoopCore.__init__(self)
        # Not the selector loop's __init__: the native core replaces its selector and self-pipe.
        asyncio.BaseEventLoop.__init__(self)
        # BaseEventLoop's Python queues and counters: the native scheduler replaces them.
        del self._ready, self._scheduled, self._timer_cancelled_count
        self._selector: _SelectorView | None = _SelectorView(self)
        self._transports: weakref.WeakValueDictionary[int, asyncio.BaseTransport] = (
            weakref.WeakValueDictionary()
        )
        self._signal_handlers: dict[int, events.Handle] = {}
        self._saved_wakeup_fd: int | None = None
        self._watchdog_callback: Callable[[_watchdog.Stall], object] | None = None
        self._datagram_view: memoryview | None = None
        self._child_exits = _child_exits.ChildExits(self)
        if not _child_exits.HAS_CHILD_WATCHERS:
            self._watcher = _child_exits.new_loop_watcher(self)
        # What the Unix selector loop's own __init__ sets, which asyncio reads from 3.13 on
        # (create_unix_server() and closing its server).
        self._unix_server_sockets: dict[socket.socket, int] = {}
        if _watchdog.default is not None:
            self.set_watchdog(*_watchdog.default)

    # -- running ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Run the event loop until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
            )
            events._set_running_loop(self)
            self._watch_signals()
            self._run_until_stopped()
        finally:
            events._set_running_loop(None)
            self._unwatch_signals()
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        """Close the loop: drop pending callbacks and shut the default executor down (no wait)."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
        self._child_exits.close()
        self._shutdown_core()
        # As the selector loop's close(): transports left open then report themselves as such.
        self._selector = None
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def _run_handle_debug(self, handle: Any) -> None:
        """Debug mode: run one handle, warning when it blocks the loop too long (as asyncio)."""
        start = self.time()
        self._current_handle = handle
        try:
            handle._run()
        finally:
            self._current_handle = None
        duration = self.time() - start
        if duration >= self.slow_callback_duration:
            logger.warning("Executing %s took %.3f seconds", _format_handle(handle), duration)
        handle = None  # as asyncio: no cycle through this frame when the callback failed

    # -- watchdog and metrics (turboloop's own) ------------------------------------------------

    def set_watchdog(
        self, threshold: float | None, callback: Callable[[_watchdog.Stall], object] | None = None
    ) -> None:
        """(turboloop) Report each stall of this loop: a stretch longer than `threshold` seconds
        (None: off) in which it does not come back to poll. The report, with the loop thread's
        Python stack captured while it was blocked, goes to the ``asyncio`` logger as a warning
        and to ``callback(stall)`` (a turboloop.Stall) on the loop's thread."""
        seconds = 0.0 if threshold is None else _watchdog.check_threshold(threshold)
        callback = _watchdog.check_callback(callback)
        if self.is_running() and self._thread_id != threading.get_ident():
            raise RuntimeError("set_watchdog() must be called from the loop's thread while the loop runs")
        self._watchdog_callback = callback if seconds else None
        self._set_watchdog(seconds)

    def get_watchdog(self) -> float | None:
        """(turboloop) The watchdog's threshold in seconds, or None when it is off."""
        return self._watchdog_threshold or None

    def _report_stall(
        self, duration: float, threshold: float, handle: events.Handle | None, stack: Any
    ) -> None:
        stall = _watchdog.Stall(duration, threshold, handle, stack)
        logger.warning("%s", stall.format())
        callback = self._watchdog_callback
        if callback is None:
            return
        try:
            callback(stall)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.call_exception_handler(
                {"message": "Exception in the watchdog's callback", "exception": exc, "stall": stall}
            )

    def stats(self) -> dict[str, int | float]:
        """(turboloop) The loop's metrics, always counted: a plain dict of numbers (seconds for
        times). See the README's "Loop metrics" for what each one means."""
        if self.is_running() and self._thread_id != threading.get_ident():
            raise RuntimeError(
                "stats() must be called from the loop's thread while the loop runs; from another "
                "thread, use loop.call_soon_threadsafe() or asyncio.run_coroutine_threadsafe()"
            )
        stats: dict[str, int | float] = self._native_stats()
        stats["handles_open"] = stats["readers"] + stats["writers"]
        stats["transports_open"] = sum(
            1 for transport in list(self._transports.values()) if not transport.is_closing()
        )
        executor = self._default_executor
        pool: dict[str, int | float] = executor.stats() if isinstance(executor, ThreadPoolExecutor) else {}
        started = pool.get("tasks_started", 0)
        stats["executor_workers"] = pool.get("workers", 0)
        stats["executor_workers_busy"] = pool.get("workers", 0) - pool.get("idle", 0)
        stats["executor_queue_depth"] = pool.get("queued", 0)
        stats["executor_tasks_started"] = started
        stats["executor_task_latency"] = pool["total_wait"] / started if started else 0.0
        stats["executor_task_latency_max"] = pool.get("longest_wait", 0.0)
        return stats

    # -- executor ------------------------------------------------------------------------------

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: Unpack[_Ts],
    ) -> asyncio.Future[_T]:
        """Run func(*args) in `executor` (default: turboloop's native thread pool)."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            self._check_default_executor()
            if executor is None:
                executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        if isinstance(executor, ThreadPoolExecutor) and type(executor).submit is ThreadPoolExecutor.submit:
            # turboloop's pool hands the outcome straight to the loop: no concurrent Future.
            future = self.create_future()
            executor._submit_to_loop(self, _complete_from_executor, future, func, args)
            return future
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    # -- sockets ---------------------------------------------------------------------------------

    async def _sock_sendfile_native(self, sock: socket.socket, file: Any, offset: int, count: int | None) -> int:
        """sock_sendfile's zero-copy path (and so loop.sendfile's on our transports): asyncio's
        checks, then sendfile(2) driven natively until the count, the end of the file or an error."""
        # asyncio's checks, on the `os` its unix_events module sees (which tests may replace).
        unix_os: Any = unix_events.os  # type: ignore[attr-defined]
        try:
            unix_os.sendfile
        except AttributeError:
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available") from None
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation) as err:
            raise exceptions.SendfileNotAvailableError("not a regular file") from err
        try:
            fsize = unix_os.fstat(fileno).st_size
        except OSError as err:
            raise exceptions.SendfileNotAvailableError("not a regular file") from err
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # empty file
        result: int = await self._sock_sendfile_start(sock, fileno, offset, count or 0, blocksize)
        return result

    # -- subprocesses --------------------------------------------------------------------------

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        extra: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not _child_exits.HAS_CHILD_WATCHERS or not _child_exits.loop_may_watch():
            # From 3.14, asyncio's own code, which waits through self._watcher (a ChildExits).
            return await super()._make_subprocess_transport(  # type: ignore[misc]
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs
            )
        # asyncio's, with the loop watching the child's exit instead of a child watcher.
        waiter = self.create_future()
        transport = unix_events._UnixSubprocessTransport(  # type: ignore[attr-defined]
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter=waiter, extra=extra, **kwargs
        )
        pid = transport.get_pid()
        try:
            self._child_exits.add_child_handler(pid, self._child_watcher_callback, transport)
        except OSError:
            _child_exits.policy_watcher().add_child_handler(pid, self._child_watcher_callback, transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    # -- transports ----------------------------------------------------------------------------

    def _make_socket_transport(
        self,
        sock: Any,
        protocol: Any,
        waiter: Any = None,
        *,
        extra: Any = None,
        server: Any = None,
        context: Any = None,
    ) -> SocketTransport:
        if _CHECKS_SOCKET_OWNER:
            self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server, context)

    def _make_datagram_transport(
        self, sock: Any, protocol: Any, address: Any = None, waiter: Any = None, extra: Any = None
    ) -> _datagram.DatagramTransport:
        if _CHECKS_SOCKET_OWNER:
            self._ensure_fd_no_transport(sock)
        return _datagram.DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _datagram_buffer(self) -> memoryview:
        """The buffer this loop's datagram transports read into (made on first use; only the
        loop's thread reads, one datagram at a time, and each is copied out)."""
        if self._datagram_view is None:
            self._datagram_view = _datagram.new_buffer()
        return self._datagram_view

    def _make_ssl_transport(
        self,
        rawsock: Any,
        protocol: Any,
        sslcontext: Any,
        waiter: Any = None,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: Any = None,
        server: Any = None,
        context: Any = None,
        **timeouts: Any,
    ) -> Any:
        # As the selector loop's, on turboloop's socket transport, with turboloop's SSLProtocol
        # (asyncio's with a cheaper read loop).
        if _CHECKS_SOCKET_OWNER:
            self._ensure_fd_no_transport(rawsock)
        ssl_protocol = SSLProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname, **timeouts)
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server, context=context)
        return ssl_protocol._app_transport

    # -- signals ---------------------------------------------------------------------------
    # Python's own C signal handler writes each signal's number to the wakeup fd, which is the
    # native loop's signal pipe: the poll wakes, the loop schedules the registered handlers and
    # runs Python-level handlers (so Ctrl-C raises KeyboardInterrupt as on asyncio's loop).

    def _watch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        fd = self._signal_wakeup_fd()
        old = signal.set_wakeup_fd(fd)
        if old != fd:
            self._saved_wakeup_fd = old

    def _unwatch_signals(self) -> None:
        if self._saved_wakeup_fd is None or self._signal_handlers:
            return
        signal.set_wakeup_fd(self._saved_wakeup_fd)
        self._saved_wakeup_fd = None

    def _process_signals(self, numbers: list[int]) -> None:
        for number in numbers:
            handle = self._signal_handlers.get(number)
            if handle is not None and not handle._cancelled:
                self.call_soon(handle._run)

    def _check_signal(self, sig: int) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]) -> None:
        """Call callback(*args) on the loop whenever signal `sig` arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or _support.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError outside the main thread: fail before touching any state.
            old = signal.set_wakeup_fd(self._signal_wakeup_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        if self._saved_wakeup_fd is None and old != self._signal_wakeup_fd():
            self._saved_wakeup_fd = old
        self._signal_handlers[sig] = events.Handle(callback, args, self, None)
        try:
            signal.signal(sig, _noop_signal_handler)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers and not self.is_running():
                self._restore_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler of signal `sig`; return whether there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers and not self.is_running():
            self._restore_wakeup_fd()
        return True

    def _restore_wakeup_fd(self) -> None:
        try:
            signal.set_wakeup_fd(-1 if self._saved_wakeup_fd is None else self._saved_wakeup_fd)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)
        self._saved_wakeup_fd = None
