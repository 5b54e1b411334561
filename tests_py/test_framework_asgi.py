"""An ASGI server (uvicorn) serving a Starlette app (framework_asgi_app.py) on turboloop, hit by
httpx and a websockets client; stock asyncio is the reference.

Three ways users put uvicorn on a loop, each checked by asking the app which loop it runs on:
``Server.serve()`` awaited inside a program's own loop (``Config(loop="none")``), uvicorn's own
runner given turboloop's factory as an import string (``Config(loop="turboloop:new_event_loop")``,
uvicorn >= 0.36), and the command line, both with ``--loop turboloop:new_event_loop`` and under
``python -m turboloop`` with ``--loop none`` (uvicorn's default ``--loop auto`` picks uvloop when
installed, whatever the policy).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from framework_support import run_on, tls_contexts

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
pytest.importorskip("starlette", reason="starlette is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

import framework_asgi_app  # noqa: E402 (needs starlette)

HERE = Path(__file__).resolve().parent
CONCURRENT = 200
# uvicorn's websocket protocol on the websockets package's sans-I/O API (its legacy one is
# deprecated); without websockets, uvicorn serves HTTP only and the websocket checks skip.
WS = "websockets-sansio" if importlib.util.find_spec("websockets") else "none"


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def server_config(**kwargs) -> uvicorn.Config:
    # log_config=None: leave the process' logging set-up alone.
    return uvicorn.Config(
        framework_asgi_app.app, lifespan="on", log_config=None, log_level="warning", access_log=False,
        ws=WS, **kwargs,
    )


async def wait_started(server: uvicorn.Server, task: asyncio.Task | None = None) -> None:
    while not server.started:
        if task is not None and task.done():
            task.result()
            raise AssertionError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)


async def exercise_http(client: httpx.AsyncClient, loop_package: str) -> None:
    resp = await client.get("/loop")
    assert resp.status_code == 200
    assert resp.json()["loop"].partition(".")[0] == loop_package
    assert resp.json()["lifespan"] == resp.json()["loop"]

    async def sync_call(n: int) -> dict:
        resp = await client.get("/sync", params={"n": n})
        assert resp.status_code == 200
        return resp.json()

    answers = await asyncio.gather(*(sync_call(n) for n in range(CONCURRENT)))
    assert answers == [{"n": n, "main_thread": False} for n in range(CONCURRENT)]

    sent = hashlib.sha256()

    async def body():
        for i in range(64):
            chunk = os.urandom(16 * 1024 + i)
            sent.update(chunk)
            yield chunk

    resp = await client.post("/upload", content=body())
    assert resp.text == sent.hexdigest()

    got = hashlib.sha256()
    async with client.stream("GET", "/stream") as resp:
        assert resp.headers["transfer-encoding"] == "chunked"
        async for chunk in resp.aiter_bytes():
            got.update(chunk)
    app = framework_asgi_app
    assert got.digest() == hashlib.sha256(b"".join(app.stream_chunk(i) for i in range(app.STREAM_CHUNKS))).digest()


async def exercise_websocket(url: str, ssl_context) -> None:
    ws_client = pytest.importorskip("websockets.asyncio.client", reason="websockets is not installed")
    from websockets.exceptions import ConnectionClosed

    async with ws_client.connect(url, ssl=ssl_context) as ws:
        words = [f"message {i}" for i in range(100)]
        for word in words:
            await ws.send(word)
        assert [await ws.recv() for _ in words] == [w[::-1] for w in words]
        await ws.send("bye")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd.code == 4002


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_serve_inside_the_programs_loop(loop_factory, secure, tmp_path):
    pem = tmp_path / "server.pem"
    _, client_ctx = tls_contexts(pem_path=pem) if secure else (None, None)
    tls = {"ssl_certfile": str(pem), "ssl_keyfile": str(pem)} if secure else {}

    async def main():
        sock = bound_socket()
        server = uvicorn.Server(server_config(loop="none", **tls))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await wait_started(server, serving)
            port = sock.getsockname()[1]
            scheme = "https" if secure else "http"
            async with httpx.AsyncClient(base_url=f"{scheme}://127.0.0.1:{port}", verify=client_ctx or False) as client:
                await exercise_http(client, loop_factory.loop_name)
            await exercise_websocket(f"{'wss' if secure else 'ws'}://127.0.0.1:{port}/ws", client_ctx)
        finally:
            server.should_exit = True
            await serving
            sock.close()

    run_on(loop_factory, main)


@pytest.mark.parametrize(
    ("loop_setting", "loop_package"), [("asyncio", "asyncio"), ("turboloop:new_event_loop", "turboloop")]
)
def test_uvicorn_runs_its_own_loop(loop_setting, loop_package):
    """``Server.run()`` makes the loop from the ``loop`` setting; a client in another thread
    drives it, then asks it to exit."""
    sock = bound_socket()
    server = uvicorn.Server(server_config(loop=loop_setting))
    outcome: dict[str, object] = {}

    def client() -> None:
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.01)
            with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as http:
                outcome["loop"] = http.get("/loop").json()["loop"]
                outcome["sync"] = [http.get("/sync", params={"n": n}).json()["n"] for n in range(20)]
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            server.should_exit = True

    thread = threading.Thread(target=client)
    thread.start()
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert "error" not in outcome, outcome["error"]
    assert str(outcome["loop"]).partition(".")[0] == loop_package
    assert outcome["sync"] == list(range(20))


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "uvicorn", "--loop", "turboloop:new_event_loop"],
        ["-m", "turboloop", "-m", "uvicorn", "--loop", "none"],
    ],
    ids=["uvicorn-loop-option", "turboloop-runner"],
)
def test_uvicorn_command_line(command):
    """The command users type: serve on a free port, answer over HTTP, stop cleanly on Ctrl-C."""
    argv = [sys.executable, *command, "framework_asgi_app:app", "--app-dir", str(HERE), "--port", "0",
            "--ws", WS, "--no-access-log"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    killer = threading.Timer(30, proc.kill)  # a server that never starts fails rather than hangs
    killer.start()
    try:
        port = None
        for line in proc.stderr:
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, f"uvicorn did not start (exit status {proc.wait()})"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            answer = http.get("/loop").json()
            assert [http.get("/sync", params={"n": n}).json()["n"] for n in range(10)] == list(range(10))
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait() == 0, rest
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert answer == {"loop": "turboloop.Loop", "lifespan": "turboloop.Loop"}
    assert "Finished server process" in rest
