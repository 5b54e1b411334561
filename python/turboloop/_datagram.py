"""The datagram transport of turboloop's loop: asyncio's own, reading into a reusable buffer.

asyncio's ``_SelectorDatagramTransport`` reads each datagram with ``sock.recvfrom(max_size)``,
which allocates a fresh 256 KiB bytes object per datagram and shrinks it: most of the cost of a
small datagram. Here each datagram is read into one buffer of the loop's and copied out at its
own size. Everything else (one datagram per readiness event, the order of callbacks, errors,
flow control) is asyncio's code.
"""

from __future__ import annotations

from asyncio import selector_events
from typing import Any


class DatagramTransport(selector_events._SelectorDatagramTransport):  # type: ignore[name-defined,misc]
    def __init__(self, loop: Any, *args: Any) -> None:
        super().__init__(loop, *args)
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
