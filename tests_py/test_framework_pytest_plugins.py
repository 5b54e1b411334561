"""pytest-asyncio and anyio's pytest plugin running a project's async tests on turboloop.

Each case runs an inner pytest session (a subprocess, so no policy leaks into this one) over a
small async test module, in the ways a project sets these plugins up:

``pytest-asyncio-policy``
    the project's conftest calls ``turboloop.install()``; pytest-asyncio takes its loops from the
    installed policy.
``pytest-asyncio-hook``
    the conftest implements pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (>= 1.3, the
    replacement for overriding the deprecated ``event_loop_policy`` fixture).
``pytest-asyncio-stock``
    no set-up: the reference, on stock asyncio.
``anyio-plugin``
    anyio's ``anyio_backend`` fixture parametrised over ``("asyncio", {"loop_factory":
    turboloop.new_event_loop})`` and plain ``"asyncio"``.

Each inner test checks the loop it runs on, and each module holds one test that must fail, so
the outer test proves the inner session reports failures too.  Outcomes are read from the inner
session's JUnit XML and compared in full.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

INI = """\
[pytest]
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""

ASYNCIO_TESTS = '''
import asyncio
import os
import sys
import threading

import pytest
import pytest_asyncio

EXPECTED = os.environ["EXPECTED_LOOP"]
MODULE_LOOP = []


def package(loop):
    return type(loop).__module__.partition(".")[0]


@pytest_asyncio.fixture
async def echo_server():
    async def echo(reader, writer):
        writer.write(await reader.read())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_runs_on_expected_loop():
    assert package(asyncio.get_running_loop()) == EXPECTED


@pytest.mark.asyncio
async def test_async_fixture_on_the_same_loop(echo_server):
    assert echo_server.get_loop() is asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(*echo_server.sockets[0].getsockname()[:2])
    payload = os.urandom(200_000)
    writer.write(payload)
    writer.write_eof()
    assert await reader.read() == payload
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio
async def test_subprocess():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(b"turboloop")
    assert (out, proc.returncode) == (b"poolobrut\\n", 0)


@pytest.mark.asyncio
async def test_threads():
    worker = await asyncio.to_thread(threading.current_thread)
    assert worker is not threading.main_thread()
    assert await asyncio.get_running_loop().run_in_executor(None, pow, 2, 10) == 1024


@pytest.mark.asyncio
async def test_timeout():
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_first():
    MODULE_LOOP.append(asyncio.get_running_loop())
    assert package(MODULE_LOOP[0]) == EXPECTED


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_second():
    assert MODULE_LOOP == [asyncio.get_running_loop()]


@pytest.mark.asyncio
async def test_must_fail():
    await asyncio.sleep(0)
    assert package(asyncio.get_running_loop()) == "no such loop"
'''

ASYNCIO_PASSING = [
    "test_runs_on_expected_loop",
    "test_async_fixture_on_the_same_loop",
    "test_subprocess",
    "test_threads",
    "test_timeout",
    "test_module_scoped_loop_first",
    "test_module_scoped_loop_second",
]

CONFTEST_POLICY = """
import warnings

import turboloop

with warnings.catch_warnings():
    # From 3.14 asyncio deprecates its policies, and install() warns as set_event_loop_policy() does.
    warnings.simplefilter("ignore", DeprecationWarning)
    turboloop.install()
"""

CONFTEST_HOOK = """
import turboloop


def pytest_asyncio_loop_factories(config, item):
    return {"turboloop": turboloop.new_event_loop}
"""

ANYIO_TESTS = '''
import asyncio
import sys
import threading

import anyio
import pytest
import turboloop
from anyio.abc import SocketAttribute

pytestmark = pytest.mark.anyio

@pytest.fixture(params=[
    pytest.param(("asyncio", {"loop_factory": turboloop.new_event_loop}), id="turboloop"),
    pytest.param(("asyncio", {}), id="asyncio"),
])
def anyio_backend(request):
    return request.param


@pytest.fixture
def expected(anyio_backend):
    return "turboloop" if anyio_backend[1] else "asyncio"


@pytest.fixture
async def listener():
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        yield listener


def package():
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


async def test_runs_on_expected_loop(expected):
    assert package() == expected


async def test_async_fixture_and_streams(listener, expected):
    assert package() == expected

    async def shout(stream):
        async with stream:
            await stream.send((await stream.receive()).upper())

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, shout)
        async with await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port)) as stream:
            await stream.send(b"hello")
            assert await stream.receive() == b"HELLO"
        tg.cancel_scope.cancel()


async def test_subprocess_and_threads():
    done = await anyio.run_process([sys.executable, "-c", "print(6 * 7)"])
    assert done.stdout == b"42\\n"
    assert await anyio.to_thread.run_sync(threading.current_thread) is not threading.main_thread()


async def test_must_fail(expected):
    await anyio.sleep(0)
    assert package() != expected
'''

ANYIO_PASSING = ["test_runs_on_expected_loop", "test_async_fixture_and_streams", "test_subprocess_and_threads"]


def expected_outcomes(passing: list[str], ids: list[str]) -> dict[str, str]:
    suffixes = [f"[{i}]" for i in ids] or [""]
    outcomes = {name + s: "passed" for name in passing for s in suffixes}
    outcomes.update({"test_must_fail" + s: "failed" for s in suffixes})
    return outcomes


def start_session(root: Path, files: dict[str, str], expected_loop: str) -> subprocess.Popen:
    root.mkdir()
    for name, text in {"pytest.ini": INI, **files}.items():
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    env = {**os.environ, "EXPECTED_LOOP": expected_loop}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={root / 'report.xml'}", "."],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )


def outcomes(root: Path) -> dict[str, str]:
    found = {}
    for case in ET.parse(root / "report.xml").iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        found[case.get("name")] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
            kinds.pop() if kinds else "", "passed"
        )
    return found


SESSIONS = {
    "pytest-asyncio-policy": ("pytest_asyncio", {"conftest.py": CONFTEST_POLICY, "test_inner.py": ASYNCIO_TESTS},
                              "turboloop", ASYNCIO_PASSING, []),
    "pytest-asyncio-hook": ("pytest_asyncio", {"conftest.py": CONFTEST_HOOK, "test_inner.py": ASYNCIO_TESTS},
                            "turboloop", ASYNCIO_PASSING, []),
    "pytest-asyncio-stock": ("pytest_asyncio", {"test_inner.py": ASYNCIO_TESTS}, "asyncio", ASYNCIO_PASSING, []),
    "anyio-plugin": ("anyio", {"test_inner.py": ANYIO_TESTS}, "", ANYIO_PASSING, ["turboloop", "asyncio"]),
}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Starts every inner session at once (each takes a second or two); yields a getter."""
    root = tmp_path_factory.mktemp("plugin_sessions")
    started = {}
    for name, (plugin, files, expected_loop, _, _) in SESSIONS.items():
        try:
            __import__(plugin)
        except ImportError:
            continue
        started[name] = start_session(root / name, files, expected_loop)

    def get(name: str) -> tuple[Path, str]:
        if name not in started:
            pytest.skip(f"{SESSIONS[name][0]} is not installed")
        proc = started[name]
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"inner pytest session {name} did not finish:\n{output}")
        return root / name, output

    yield get
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("name", list(SESSIONS))
def test_plugin_session(sessions, name):
    _, _, _, passing, ids = SESSIONS[name]
    root, output = sessions(name)
    assert outcomes(root) == expected_outcomes(passing, ids), output
