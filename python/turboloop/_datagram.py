"""The datagram transport of turboloop's loop: asyncio's own, with its hot paths native.

asyncio's ``_SelectorDatagramTransport`` reads each datagram with ``sock.recvfrom(max_size)``,
which allocates a fresh 256 KiB bytes object per datagram and shrinks it: most of the cost of a
small datagram. Here, on IPv4 and IPv6 sockets, the native DatagramCore reads each datagram into
a scratch buffer and copies it out at its own size, and sends a datagram that can go out at once;
on other sockets the datagram is read into one buffer of the loop's. Everything else (one
datagram per readiness event, the order of callbacks, errors, flow control, buffering) is
asyncio's code.
"""

from __future__ import annotations

import socket
from asyncio import selector_events
from typing import Any

from turboloop._turboloop import DatagramCore


class DatagramTransport(selector_events._SelectorDatagramTransport):  # type: ignore[name-defined,misc]
    def __init__(self, loop: Any, sock: socket.socket, *args: Any) -> None:
        self._core: DatagramCore | None = None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Before asyncio's __init__, which arms the reader with self._read_ready.
            self._core = DatagramCore(self, sock.fileno(), sock.family, False)
            self._read_ready = self._core.read_ready  # type: ignore[method-assign]
        super().__init__(loop, sock, *args)
        if self._core is not None:
            self._core.connected = bool(self._extra["peername"])
            self.sendto = self._core.sendto
        else:
            self._view = loop._datagram_buffer()

    def _read_ready(self) -> None:
        view = self._view
        if self.max_size != len(view):  # max_size changed on this transport: asyncio's way
            super()._read_ready()
            return
        if self._conn_lost:
            return
        try:
            nbytes, addr = self._sock.recvfrom_into(view)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            self._protocol.datagram_received(bytes(view[:nbytes]), addr)


def new_buffer() -> Any:
    """A loop's datagram buffer: as large as asyncio's max_size, as a memoryview."""
    return memoryview(bytearray(selector_events._SelectorDatagramTransport.max_size))  # type: ignore[attr-defined]
