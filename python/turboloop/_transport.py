"""The loop's socket transport: asyncio's _SelectorSocketTransport behaviour, with the hot paths
(reading into the protocol, writing through the buffer) in the native TransportCore.

Everything here runs on the loop's thread. The transport keeps asyncio's attribute names where
asyncio's own code reads them (_sock, _protocol, _protocol_paused, _make_empty_waiter, ...).
"""

from __future__ import annotations

import inspect
import selectors
import socket
import warnings
from asyncio import base_events, constants, futures, protocols, selector_events, transports, trsock
from asyncio.log import logger
from typing import Any, cast

from turboloop._turboloop import TransportCore

# asyncio's Server counts its connections from 3.13 on by the transports themselves
# (_attach(transport)/_detach(transport), which close_clients() and abort_clients() use); before,
# by number (_attach()/_detach()).
_SERVER: Any = base_events.Server
_SERVER_KNOWS_TRANSPORTS = len(inspect.signature(_SERVER._attach).parameters) > 1

# From 3.12 asyncio's socket transport has a writelines() of its own (one sendmsg() of the items,
# with its own errors); before, the base class's joins them into one write().
_HAS_OWN_WRITELINES = "writelines" in vars(selector_events._SelectorSocketTransport)  # type: ignore[attr-defined]


def _attach(server: Any, transport: SocketTransport) -> None:
    if _SERVER_KNOWS_TRANSPORTS:
        server._attach(transport)
    else:
        server._attach()


def _detach(server: Any, transport: SocketTransport) -> None:
    if _SERVER_KNOWS_TRANSPORTS:
        server._detach(transport)
    else:
        server._detach()


class SocketTransport(transports._FlowControlMixin, transports.Transport):
    """A stream transport over a connected, non-blocking socket."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    # Read by __del__, which runs even when __init__ failed early.
    _sock: socket.socket | None = None
    _server: Any = None
    # Set by asyncio's transport base classes, which typeshed leaves undeclared. The loop is
    # turboloop.Loop and the protocol any protocol; both become None once the connection is lost.
    _extra: dict[str, Any]
    _high_water: int
    _loop: Any
    _protocol: Any

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: protocols.BaseProtocol,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        context: Any = None,
    ) -> None:
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        # The contextvars.Context the protocol's callbacks run in (asyncio passes the server's or
        # the connection's from 3.15 on); None: the context current when each is scheduled.
        self._context = context
        self._core = TransportCore(self, sock)
        self._core.high_water = self._high_water
        self._core.holds_writes = server is not None
        # The native methods, bound once: the loop runs them when the socket is ready, and
        # protocols and streams call write() and is_closing() straight into the core.
        self._read_ready = self._core.read_ready
        self._write_ready = self._core.write_ready
        self.write = self._core.write  # type: ignore[method-assign]
        if _HAS_OWN_WRITELINES:
            self.writelines = self._core.writelines  # type: ignore[method-assign]
        self.is_closing = self._core.is_closing  # type: ignore[method-assign]
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._paused = False
        if server is not None:
            _attach(server, self)
        loop._transports[self._sock_fd] = self
        # Disable Nagle's algorithm, as asyncio does: small writes go out without waiting.
        base_events._set_nodelay(sock)  # type: ignore[attr-defined]
        self._call_soon(self._protocol.connection_made, self)
        # Only start reading once connection_made() has run.
        self._call_soon(self._add_reader, self._sock_fd, self._read_ready)
        if waiter is not None:
            self._call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    @property
    def max_size(self) -> int:
        """The most one read takes from the socket (asyncio's max_size)."""
        return self._core.max_read

    @max_size.setter
    def max_size(self, size: int) -> None:
        self._core.max_read = size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write data: sent at once when the socket takes it, else buffered."""
        self._core.write(data)

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            key = self._loop._fd_key(self._sock_fd)
            events = 0 if key is None else key[0]
            info.append("read=polling" if events & selectors.EVENT_READ else "read=idle")
            state = "polling" if events & selectors.EVENT_WRITE else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()
            if self._server is not None and _SERVER_KNOWS_TRANSPORTS:
                self._server._detach(self)

    # -- protocol ------------------------------------------------------------------------------

    def set_protocol(self, protocol: protocols.BaseProtocol) -> None:
        self._protocol = protocol
        self._core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))
        self._protocol_connected = True

    def get_protocol(self) -> protocols.BaseProtocol:
        return cast(protocols.BaseProtocol, self._protocol)

    # -- reading -------------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._core.closing and not self._paused

    def pause_reading(self) -> None:
        if not self.is_reading():
            return
        self._paused = True
        self._loop._remove_reader(self._sock_fd)
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        if self._core.closing or not self._paused:
            return
        self._paused = False
        self._add_reader(self._sock_fd, self._read_ready)
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _add_reader(self, fd: int, callback: Any, *args: Any) -> None:
        # Also when connection_made() paused reading before the first read was armed.
        if not self.is_reading():
            return
        self._loop._add_reader(fd, callback, *args, context=self._context)

    def _add_writer(self, fd: int, callback: Any, *args: Any) -> None:
        # The native write() calls this when the socket does not take all it is given.
        self._loop._add_writer(fd, callback, *args, context=self._context)

    def _call_soon(self, callback: Any, *args: Any) -> None:
        self._loop.call_soon(callback, *args, context=self._context)

    def _read_ready__on_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # The protocol may still write, but nothing more can be read.
            self._loop._remove_reader(self._sock_fd)
        else:
            self.close()

    # -- writing -------------------------------------------------------------------------------

    # A server connection's small writes wait in the core until the running callback ends, so that
    # they go out in one system call; whatever looks at the transport's state sends them first.

    def _set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        cast(Any, super())._set_write_buffer_limits(high, low)
        core = self.__dict__.get("_core")  # None while __init__ has not made it
        if core is not None:
            core.high_water = self._high_water

    def get_write_buffer_size(self) -> int:
        self._core.send_held()
        return self._core.buffer_size  # asyncio's count, which a bytearray changed since may belie

    if _HAS_OWN_WRITELINES:

        def writelines(self, list_of_data: Any) -> None:
            """Write each bytes-like item: sent at once when the socket takes them, else buffered."""
            self._core.writelines(list_of_data)

    def write_eof(self) -> None:
        if self._core.closing or self._core.eof:
            return
        self._core.send_held()
        if self._core.closing:  # sending them failed, which closed the transport
            return
        self._core.eof = True
        if not self._core.buffered:
            self._sock.shutdown(socket.SHUT_WR)  # type: ignore[union-attr]

    def can_write_eof(self) -> bool:
        return True

    def _make_empty_waiter(self) -> Any:
        if self._core.empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._core.send_held()
        waiter = self._loop.create_future()
        self._core.empty_waiter = waiter
        if not self._core.buffered:
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self) -> None:
        self._core.empty_waiter = None

    # -- closing -------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._core.closing

    def close(self) -> None:
        if self._core.closing:
            return
        self._core.send_held()
        if self._core.closing:  # sending them failed, which closed the transport
            return
        self._core.closing = True
        self._loop._remove_reader(self._sock_fd)
        if not self._core.buffered:
            self._core.conn_lost += 1
            self._loop._remove_writer(self._sock_fd)
            self._call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        # Called from exception handlers only.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._core.conn_lost:
            return
        self._core.send_held()
        if self._core.conn_lost:  # sending them failed, which closed the transport
            return
        if self._core.buffered:
            self._core.clear_buffer()
            self._loop._remove_writer(self._sock_fd)
        if not self._core.closing:
            self._core.closing = True
            self._loop._remove_reader(self._sock_fd)
        self._core.conn_lost += 1
        self._call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._sock.close()  # type: ignore[union-attr]
            self._sock = None
            self._core.detach()
            self._protocol = None
            self._core.set_protocol(None, False)
            self._loop = None
            server = self._server
            if server is not None:
                _detach(server, self)
                self._server = None
        waiter = self._core.empty_waiter
        if waiter is not None:
            waiter.set_exception(ConnectionError("Connection is closed by peer"))
