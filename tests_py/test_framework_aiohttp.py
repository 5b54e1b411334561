"""aiohttp's server and client talking to each other, on each loop (stock asyncio is the reference).

Over TCP, a Unix socket and TLS: many concurrent requests on a pooled connector, request and
response bodies streamed in chunks larger than the transports' buffers (so both directions pause
and resume), a client that walks away from an endless response, and websockets (text, binary,
ping/pong, a close code).  Every request carries its own data and every answer is checked against
it, so a loop that crosses, drops or reorders bytes fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tempfile

import pytest

from framework_support import run_on, tls_contexts

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed")
from aiohttp import web  # noqa: E402 (only once aiohttp is known to be there)

CONCURRENT = 400
STREAM_CHUNK = 64 * 1024
STREAM_CHUNKS = 128  # 8 MiB each way


async def echo_json(request: web.Request) -> web.Response:
    body = await request.json()
    tls = request.transport.get_extra_info("ssl_object")
    return web.json_response({"n": body["n"], "square": body["n"] ** 2, "tls": tls and tls.version()})


async def digest_upload(request: web.Request) -> web.StreamResponse:
    """Hash the chunked upload as it arrives, then stream a response of the requested size."""
    digest = hashlib.sha256()
    received = 0
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        digest.update(chunk)
        received += len(chunk)
    response = web.StreamResponse(headers={"X-Upload-Sha256": digest.hexdigest(), "X-Upload-Size": str(received)})
    await response.prepare(request)
    for i in range(STREAM_CHUNKS):
        await response.write(bytes([i % 251]) * STREAM_CHUNK)
    await response.write_eof()
    return response


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "bye":
                await ws.close(code=4001, message=b"server says bye")
            else:
                await ws.send_str(msg.data.upper())
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(hashlib.sha256(msg.data).digest())
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/square", echo_json)
    app.router.add_post("/upload", digest_upload)
    app.router.add_get("/ws", websocket_echo)
    return app


class Served:
    """The app served on a TCP port (optionally TLS) or a Unix socket, for one ``async with``."""

    def __init__(self, app: web.Application, *, ssl_context: ssl.SSLContext | None = None, unix: str | None = None):
        self.runner = web.AppRunner(app, handle_signals=False)
        self.ssl_context = ssl_context
        self.unix = unix

    async def __aenter__(self) -> Served:
        await self.runner.setup()
        if self.unix is not None:
            site: web.BaseSite = web.UnixSite(self.runner, self.unix)
        else:
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        if self.unix is None:
            scheme = "https" if self.ssl_context else "http"
            self.base = f"{scheme}://127.0.0.1:{self.runner.addresses[0][1]}"
        else:
            self.base = "http://localhost"
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.runner.cleanup()


async def many_squares(session: aiohttp.ClientSession, base: str, tls: str | None = None) -> None:
    async def one(n: int) -> dict:
        async with session.post(f"{base}/square", json={"n": n}) as resp:
            assert resp.status == 200
            return await resp.json()

    answers = await asyncio.gather(*(one(n) for n in range(CONCURRENT)))
    assert answers == [{"n": n, "square": n * n, "tls": tls} for n in range(CONCURRENT)]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_many_concurrent_requests(loop_factory, transport):
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            unix = os.path.join(tmp, "aiohttp.sock") if transport == "unix" else None
            async with Served(make_app(), unix=unix) as served:
                connector = aiohttp.UnixConnector(path=unix, limit=50) if unix else aiohttp.TCPConnector(limit=50)
                async with aiohttp.ClientSession(connector=connector) as session:
                    await many_squares(session, served.base)

    run_on(loop_factory, main)


def test_tls_requests_and_verification(loop_factory):
    server_ctx, client_ctx = tls_contexts()

    async def main():
        async with Served(make_app(), ssl_context=server_ctx) as served:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx, limit=20)) as session:
                await many_squares(session, served.base, tls="TLSv1.3")
            # A client that does not trust the CA must refuse the server's certificate.
            async with aiohttp.ClientSession() as untrusting:
                with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
                    await untrusting.post(f"{served.base}/square", json={"n": 1})
                assert isinstance(info.value.certificate_error, ssl.SSLCertVerificationError)

    run_on(loop_factory, main)


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
def test_streamed_bodies_both_ways(loop_factory, secure):
    server_ctx, client_ctx = tls_contexts() if secure else (None, None)
    sent = hashlib.sha256()

    async def upload():
        for i in range(STREAM_CHUNKS):
            chunk = os.urandom(STREAM_CHUNK - i)  # uneven sizes, so chunk edges move
            sent.update(chunk)
            yield chunk
            await asyncio.sleep(0)

    async def main():
        async with Served(make_app(), ssl_context=server_ctx) as served:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx or False)) as session:
                async with session.post(f"{served.base}/upload", data=upload()) as resp:
                    assert resp.status == 200
                    assert resp.headers["Transfer-Encoding"] == "chunked"
                    assert resp.headers["X-Upload-Sha256"] == sent.hexdigest()
                    expected_size = sum(STREAM_CHUNK - i for i in range(STREAM_CHUNKS))
                    assert int(resp.headers["X-Upload-Size"]) == expected_size
                    got = hashlib.sha256()
                    async for chunk in resp.content.iter_any():
                        got.update(chunk)
                    want = hashlib.sha256(b"".join(bytes([i % 251]) * STREAM_CHUNK for i in range(STREAM_CHUNKS)))
                    assert got.hexdigest() == want.hexdigest()

    run_on(loop_factory, main)


def test_client_abandons_endless_response(loop_factory):
    """The server's writes (or its wait for the buffer to drain) fail with a connection error once the client closes mid-stream; the
    server carries on serving other requests."""

    async def main():
        server_saw: asyncio.Future = asyncio.get_running_loop().create_future()

        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                while True:
                    await response.write(b"x" * STREAM_CHUNK)
            except ConnectionError as exc:
                server_saw.set_result(exc)
                raise

        app = make_app()
        app.router.add_get("/endless", endless)
        async with Served(app) as served:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{served.base}/endless") as resp:
                    assert len(await resp.content.readexactly(3 * STREAM_CHUNK)) == 3 * STREAM_CHUNK
                    resp.close()
                exc = await asyncio.wait_for(server_saw, 10)
                assert isinstance(exc, ConnectionError)
                await many_squares(session, served.base)

    run_on(loop_factory, main)


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_websockets(loop_factory, secure):
    server_ctx, client_ctx = tls_contexts() if secure else (None, None)

    async def main():
        async with Served(make_app(), ssl_context=server_ctx) as served:
            url = served.base.replace("http", "ws", 1) + "/ws"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx or False)) as session:
                async with session.ws_connect(url, autoping=False) as ws:
                    words = [f"word {i}" for i in range(200)]
                    for word in words:
                        await ws.send_str(word)
                    assert [await ws.receive_str() for _ in words] == [w.upper() for w in words]

                    big = os.urandom(1024 * 1024 + 7)
                    await ws.send_bytes(big)
                    assert await ws.receive_bytes() == hashlib.sha256(big).digest()

                    await ws.ping(b"are you there")
                    pong = await ws.receive()
                    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"are you there")

                    await ws.send_str("bye")
                    closing = await ws.receive()
                    assert closing.type == aiohttp.WSMsgType.CLOSE
                    assert (closing.data, closing.extra) == (4001, "server says bye")
                    await ws.close()
                    assert ws.closed and ws.close_code == 4001

    run_on(loop_factory, main)
