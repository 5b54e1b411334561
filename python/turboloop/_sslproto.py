"""asyncio's SSLProtocol with one change on its hottest path, for the TLS transports the loop makes.

asyncio's ``_do_read__copied`` reads decrypted data until ``SSLObject.read`` raises
SSLWantReadError, so every batch of records ends in a raised and caught exception, whose message
the ssl module formats each time: about 3 us, some 5 % of a 1 KiB TLS echo's server time
(measured with perf and py-spy; see bench/README_echo.md). Here the loop stops as soon as neither
the incoming BIO nor the SSL object holds anything more, when that read could only have raised.
Without read-ahead (which the ssl module never turns on) OpenSSL takes a record's bytes out of the
BIO only when it decrypts that record, so empty on both counts means nothing is left to decrypt.
Everything else is asyncio's code, unchanged.
"""

from __future__ import annotations

from asyncio import sslproto
from typing import Any


class SSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSLProtocol, minus one SSLWantReadError per read."""

    _sslobj: Any
    _incoming: Any
    _app_protocol: Any

    def _do_read__copied(self) -> None:
        sslobj = self._sslobj
        incoming = self._incoming
        max_size = self.max_size
        chunk = b"1"
        chunks = []
        try:
            while True:
                chunk = sslobj.read(max_size)
                if not chunk:
                    break  # close_notify
                chunks.append(chunk)
                if not incoming.pending and not sslobj.pending():
                    break  # nothing left to decrypt: another read would raise SSLWantReadError
        except sslproto.SSLAgainErrors:
            pass
        if len(chunks) == 1:
            self._app_protocol.data_received(chunks[0])
        elif chunks:
            self._app_protocol.data_received(b"".join(chunks))
        if not chunk:
            # close_notify
            self._call_eof_received()  # type: ignore[attr-defined]
            self._start_shutdown()
