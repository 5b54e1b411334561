"""A small Starlette app for test_framework_asgi.py, importable by uvicorn's command line too.

Each route touches a different part of the loop: ``/loop`` names the loop class the app runs on
and what its lifespan start-up saw, ``/sync`` is a plain ``def`` endpoint (Starlette runs it in
anyio's worker threads), ``/upload`` reads a streamed request body, ``/stream`` sends a streamed
response, ``/ws`` is a websocket echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

STREAM_CHUNK = 32 * 1024
STREAM_CHUNKS = 64


def loop_class() -> str:
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}"


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.started_on = loop_class()
    yield


async def which_loop(request: Request) -> JSONResponse:
    return JSONResponse({"loop": loop_class(), "lifespan": request.app.state.started_on})


def sync_endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"n": int(request.query_params["n"]), "main_thread": threading.current_thread() is threading.main_thread()})


async def upload(request: Request) -> PlainTextResponse:
    digest = hashlib.sha256()
    async for chunk in request.stream():
        digest.update(chunk)
    return PlainTextResponse(digest.hexdigest())


def stream_chunk(i: int) -> bytes:
    return bytes([i % 251]) * STREAM_CHUNK


async def stream(request: Request) -> StreamingResponse:
    async def chunks():
        for i in range(STREAM_CHUNKS):
            yield stream_chunk(i)
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def websocket_echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        text = await ws.receive_text()
        if text == "bye":
            await ws.close(code=4002)
            return
        await ws.send_text(text[::-1])


app = Starlette(
    routes=[
        Route("/loop", which_loop),
        Route("/sync", sync_endpoint),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", websocket_echo),
    ],
    lifespan=lifespan,
)
