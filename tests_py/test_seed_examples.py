"""The seed examples (../shared/seed-examples) behave, run unchanged, exactly as on stock asyncio.

Each program of that folder's README is run in a fresh working directory, in four ways:

``stock``
    ``python PROGRAM.py`` (or, for "driven" cases, the README's driver under plain ``python``):
    the reference.  Its result must match the README's literal expectations.
``runner``
    ``python -m turboloop PROBE runner ACTION PROGRAM.py``
``install``
    ``python PROBE install ACTION PROGRAM.py`` where the probe calls ``turboloop.install()``
    before anything of the program runs.
``runner-direct``
    ``python -m turboloop PROGRAM.py`` (or ``python -m turboloop -c DRIVER PROGRAM.py``): the
    exact command users type, for the programs that take a second or two.

Every turboloop run must give the same stdout, exit status and final exception line (the loop's
class name aside) as the stock run, and as the README says.

How the runs prove they were on turboloop's loop (and pool), without changing the program: the
probe (written to a temporary folder; see ``PROBE``) runs *as the main program* -- under the runner
in ``runner`` mode, so it sees exactly what the runner set up -- and then runs the seed program with
``runpy.run_path(..., run_name="__main__")`` after restoring ``sys.argv`` and ``sys.path[0]`` as
``python PROGRAM.py`` would set them.  Before that it appends JSON lines to the file named by
``TURBOLOOP_SEED_RECORD``: the installed policy's type, the type of
``concurrent.futures.ThreadPoolExecutor`` as the program will see it, and -- by wrapping
``asyncio.BaseEventLoop.__init__``, which every asyncio loop runs however it is made (policy,
asyncio.run, asyncio.Runner, new_event_loop(), get_event_loop(), asgiref) -- the type of every loop
the program creates, written the moment it is created (so a server killed later still leaves its
record).  The probe's extra traceback frames are why only the last stderr line is compared.

The subprocesses are started all at once (the slow ones first) by a module-scoped fixture, for the
tests that were selected, so the module takes about as long as its slowest program (b01, 10-15 s)
plus start-up.  a02 (Flask on 127.0.0.1:5000) runs its three modes one after another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http.server
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed-examples"

if not SEED_DIR.is_dir():
    pytest.skip(f"seed examples not found at {SEED_DIR} (../shared is absent)", allow_module_level=True)

RECORD_ENV = "TURBOLOOP_SEED_RECORD"

DRIVER = "import asyncio, runpy, sys; ns = runpy.run_path(sys.argv[1], run_name='seed'); asyncio.run(ns['main']())"

PROBE = r'''
"""Run a seed program unchanged; record the policy, pool and loops it gets (see test_seed_examples)."""
import json
import os
import runpy
import sys


def record(**entry):
    with open(os.environ["TURBOLOOP_SEED_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def main():
    mode, action, program, *args = sys.argv[1:]
    import asyncio
    import concurrent.futures
    import asyncio.base_events
    import warnings

    import turboloop

    if mode == "install":
        with warnings.catch_warnings():  # from 3.14 install() warns, as asyncio's policies are deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            turboloop.install()
    # asyncio's own getter, which does not warn from 3.14 on as the public one does.
    policy = getattr(asyncio.events, "_get_event_loop_policy", asyncio.get_event_loop_policy)()
    record(kind="policy", type=qualname(type(policy)), turboloop=isinstance(policy, turboloop.EventLoopPolicy))
    pool = concurrent.futures.ThreadPoolExecutor
    record(kind="pool", type=qualname(pool))
    init_loop = asyncio.base_events.BaseEventLoop.__init__

    def record_loop(loop):
        # Every asyncio loop, however the program makes it (policy, asyncio.run, new_event_loop).
        init_loop(loop)
        record(kind="loop", type=qualname(type(loop)), name=type(loop).__name__,
               turboloop=isinstance(loop, turboloop.Loop))

    asyncio.base_events.BaseEventLoop.__init__ = record_loop
    # What `python PROGRAM.py` would have set.
    sys.argv = [program, *args]
    sys.path[0] = os.path.dirname(os.path.realpath(program))
    if action == "main":
        runpy.run_path(program, run_name="__main__")
    else:
        ns = runpy.run_path(program, run_name="seed")
        asyncio.run(ns["main"]())


main()
'''

MODES = ("stock", "runner", "install", "runner-direct")


def _exception_line(call) -> str:
    """The last line of the traceback of what call() raises in this interpreter."""
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"{call} raised nothing")


async def _await(awaitable):
    await awaitable


# The words of this Python for what a02 and e02 do wrong (they changed in 3.14 and 3.15).
AWAIT_A_DICT_ERROR = _exception_line(lambda: _await({}).send(None))
ASYNCIO_RUN_NONE_ERROR = _exception_line(lambda: asyncio.run(None))
# As the interpreter shows it (with its "Did you mean"); '{loop}' stands for the loop's class name.
MISSPELT_METHOD_ERROR = (
    subprocess.run(
        [sys.executable, "-c", "class Loop:\n    def set_task_factory(self): pass\nLoop().set_task_executor"],
        capture_output=True,
        text=True,
    )
    .stderr.splitlines()[-1]
    .replace("'Loop'", "'{loop}'")
)

# b02 calls asyncio.get_event_loop() with no loop set: asyncio makes one up to 3.13 (3.12 and 3.13
# warn), and raises RuntimeError from 3.14 on. Stock asyncio of this Python says which it does.
GET_EVENT_LOOP_MAKES_A_LOOP = (
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import asyncio; asyncio.get_event_loop().close()"],
        capture_output=True,
    ).returncode
    == 0
)
TURBO_MODES = MODES[1:]

# ----------------------------------------------------------------------------------------------
# The scenarios, with the README's expectations
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    id: str
    program: str
    rc: int
    stdout: str | None = ""  # None: checked by a scenario-specific function
    error: str | None = None  # the last line of stderr; '{loop}' stands for the loop class name
    action: str = "main"  # or "drive" (the README's "Driven")
    setup: str = "empty"  # "empty", "files-ab" or "data"
    needs: str | None = None
    uses_loop: bool = True
    min_seconds: float = 0.0
    max_seconds: float = 45.0
    modes: tuple[str, ...] = MODES
    slow: bool = False

    def __str__(self):
        return self.id


SCENARIOS = [
    Scenario("a01-empty-folder", "a01_upload_files.py", 0),
    Scenario("a01-files-a-b", "a01_upload_files.py", 1, error="{first_missing}", setup="files-ab"),
    Scenario("a03", "a03_filter_data.py", 0, max_seconds=5),
    Scenario("a04", "a04_server_new_loop.py", 0, "Data updated to 1\n", min_seconds=1, max_seconds=6),
    Scenario(
        "b01",
        "b01_thread_pool_as_completed.py",
        0,
        "".join(f"任务{n}完成，结果为{n}\n" for n in range(10)),
        uses_loop=False,
        min_seconds=9,
        max_seconds=20,
        modes=("stock", "runner", "install"),
        slow=True,
    ),
    Scenario(
        "b02",
        "b02_get_event_loop_gather.py",
        0,
        min_seconds=9,
        max_seconds=15,
        modes=("stock", "runner", "install"),
        slow=True,
    )
    if GET_EVENT_LOOP_MAKES_A_LOOP
    else Scenario(
        "b02",
        "b02_get_event_loop_gather.py",
        1,
        error="RuntimeError: There is no current event loop in thread 'MainThread'.",
        uses_loop=False,
        modes=("stock", "runner", "install"),
    ),
    Scenario("c01", "c01_tasks_and_threads.py", 0, None, min_seconds=2, max_seconds=8),
    Scenario(
        "d01", "d01_async_with_at_top_level.py", 1, error="SyntaxError: 'async with' outside async function",
        uses_loop=False,
    ),
    Scenario("e01-script", "e01_aiofiles_run_forever.py", 0, needs="aiofiles", uses_loop=False),
    Scenario(
        "e01-driven", "e01_aiofiles_run_forever.py", 1, error="RuntimeError: This event loop is already running",
        action="drive", setup="data", needs="aiofiles",
    ),
    Scenario("e02-script", "e02_set_task_executor.py", 0, uses_loop=False),
    Scenario(
        "e02-driven",
        "e02_set_task_executor.py",
        1,
        error=MISSPELT_METHOD_ERROR,
        action="drive",
        setup="data",
    ),
    Scenario("e03", "e03_asyncio_coroutine_import.py", 1, error="SyntaxError: invalid syntax", uses_loop=False),
    Scenario("e04-local-server", "e04_aiohttp_fetch_pages.py", 0, None, needs="aiohttp", max_seconds=20)
    if GET_EVENT_LOOP_MAKES_A_LOOP
    else Scenario(
        "e04-local-server",
        "e04_aiohttp_fetch_pages.py",
        1,
        "",
        error="RuntimeError: There is no current event loop in thread 'MainThread'.",
        needs="aiohttp",
        uses_loop=False,
    ),
]

E04_PAGES = {
    "http://example.com": "<html>page of example.com</html>",
    "http://example.org": "<html>page of example.org</html>",
    "http://example.net": "<html>page of example.net</html>",
}
A02_MODES = ("stock", "runner", "install")
COVERED = {s.program for s in SCENARIOS} | {"a02_flask_login.py"}


def _params():
    for sc in SCENARIOS:
        for mode in sc.modes:
            yield pytest.param(sc, mode, id=f"{sc.id}-{mode}")


# ----------------------------------------------------------------------------------------------
# Running the programs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    records: list[dict]
    cwd: Path
    timed_out: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def loops(self):
        return [r for r in self.records if r["kind"] == "loop"]

    def one(self, kind):
        found = [r for r in self.records if r["kind"] == kind]
        assert len(found) == 1, f"expected one {kind!r} record, got {self.records}"
        return found[0]

    def describe(self) -> str:
        return (
            f"rc={self.rc} seconds={self.seconds:.1f} timed_out={self.timed_out}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-3000:]}\n--- records\n{self.records}"
        )


def _env(record: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS")}
    env["PYTHONIOENCODING"] = "utf-8"
    env[RECORD_ENV] = str(record)
    return env


def _command(mode: str, action: str, program: Path, probe: Path) -> list[str]:
    py = sys.executable
    if mode == "stock":
        return [py, str(program)] if action == "main" else [py, "-c", DRIVER, str(program)]
    if mode == "runner-direct":
        if action == "main":
            return [py, "-m", "turboloop", str(program)]
        return [py, "-m", "turboloop", "-c", DRIVER, str(program)]
    if mode == "runner":
        return [py, "-m", "turboloop", str(probe), "runner", action, str(program)]
    assert mode == "install"
    return [py, str(probe), "install", action, str(program)]


def _prepare_cwd(cwd: Path, setup: str) -> None:
    cwd.mkdir(parents=True)
    if setup == "files-ab":
        (cwd / "a").write_text("a")
        (cwd / "b").write_text("b")
    elif setup == "data":
        (cwd / "data.txt").write_text("some data\n")
    else:
        assert setup == "empty"


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _run(cmd, cwd: Path, record: Path, timeout: float) -> Result:
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(record), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate()
    seconds = time.monotonic() - start
    return Result(
        proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), seconds,
        _read_records(record), cwd, timed_out,
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


_PORT_5000 = threading.Lock()


def _run_a02(cmd, cwd: Path, record: Path) -> Result:
    """Serve the Flask app, POST /login, then Ctrl-C it; the HTTP status goes in ``extra``."""
    with _PORT_5000:
        if not _port_free(5000):
            return Result(None, "", "", 0.0, [], cwd, extra={"skip": "port 5000 is busy"})
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=_env(record), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        extra = {}
        try:
            if _wait_for_port(5000, proc, 20):
                body = json.dumps({"username": "user", "password": "secret"}).encode()
                req = urllib.request.Request(
                    "http://127.0.0.1:5000/login",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(req, timeout=20) as resp:
                        extra["status"] = resp.status
                except urllib.error.HTTPError as e:
                    extra["status"] = e.code
                    e.close()
                extra["still_serving"] = proc.poll() is None
            else:
                extra["status"] = None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            out, err = proc.communicate()
        return Result(
            proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
            time.monotonic() - start, _read_records(record), cwd, extra=extra,
        )


class _PageHandler(http.server.BaseHTTPRequestHandler):
    pages: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep the test output clean
        pass


class Runs:
    """Starts the selected runs concurrently and hands out their results."""

    def __init__(self, root: Path, wanted: set[tuple[str, str]], e04_base: str | None):
        self.root = root
        self.probe = root / "probe" / "seed_probe.py"
        self.probe.parent.mkdir()
        self.probe.write_text(PROBE, encoding="utf-8")
        self.e04_program = self._e04_copy(e04_base) if e04_base else None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=10, thread_name_prefix="seed-run")
        self.futures: dict[tuple[str, str], concurrent.futures.Future] = {}
        by_id = {sc.id: sc for sc in SCENARIOS}
        # the slow ones first, so that they overlap everything else
        order = sorted(wanted, key=lambda k: (k[0] != "a02", not by_id.get(k[0], SCENARIOS[0]).slow, k))
        for key in order:
            self.futures[key] = self.pool.submit(self._job, key, by_id.get(key[0]))

    def _e04_copy(self, base: str) -> Path:
        source = (SEED_DIR / "e04_aiohttp_fetch_pages.py").read_text(encoding="utf-8")
        for i, url in enumerate(E04_PAGES):
            assert source.count(f"'{url}'") == 1, url
            source = source.replace(f"'{url}'", f"'{base}/page{i}'")
        path = self.root / "e04-local" / "e04_aiohttp_fetch_pages.py"
        path.parent.mkdir()
        path.write_text(source, encoding="utf-8")
        return path

    def _job(self, key, sc: Scenario | None) -> Result:
        scenario_id, mode = key
        cwd = self.root / "cwd" / f"{scenario_id}-{mode}"
        record = self.root / "records" / f"{scenario_id}-{mode}.jsonl"
        record.parent.mkdir(exist_ok=True)
        if scenario_id == "a02":
            _prepare_cwd(cwd, "empty")
            return _run_a02(_command(mode, "main", SEED_DIR / "a02_flask_login.py", self.probe), cwd, record)
        program = self.e04_program if sc.id.startswith("e04") else SEED_DIR / sc.program
        _prepare_cwd(cwd, sc.setup)
        return _run(_command(mode, sc.action, program, self.probe), cwd, record, timeout=60)

    def get(self, scenario_id: str, mode: str) -> Result:
        return self.futures[(scenario_id, mode)].result()

    def close(self):
        self.pool.shutdown(wait=True)


def _available(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    wanted: set[tuple[str, str]] = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is not request.module or callspec is None:
            continue
        params = callspec.params
        if "scenario" in params:
            sc = params["scenario"]
            if _available(sc.needs):
                wanted |= {(sc.id, params["mode"]), (sc.id, "stock")}
        elif "a02_mode" in params and _available("flask"):
            wanted |= {("a02", params["a02_mode"]), ("a02", "stock")}
    server = None
    base = None
    if any(sid.startswith("e04") for sid, _ in wanted):
        handler = type("Pages", (_PageHandler,), {})
        handler.pages = {f"/page{i}": body.encode() for i, body in enumerate(E04_PAGES.values())}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, name="e04-pages", daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
    r = Runs(tmp_path_factory.mktemp("seed"), wanted, base)
    yield r
    r.close()
    if server is not None:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def _expected_stdout(sc: Scenario) -> str | None:
    if sc.id.startswith("e04") and sc.rc == 0:
        return repr(list(E04_PAGES.values())) + "\n"
    return sc.stdout


def _check_c01(stdout: str) -> None:
    phrases = ["任务1 任务开始", "任务2 任务开始", "任务1 任务结束", "任务2 任务结束"]
    lines = stdout.split("\n")
    assert lines[:4] == phrases, stdout  # the asyncio half is deterministic
    rest = "\n".join(lines[4:])
    # the threads' half: the same four, in any interleaving, both starts before both ends
    found = re.findall(r"任务[12] 任务(?:开始|结束)", rest)
    assert sorted(found) == sorted(phrases), stdout
    assert re.sub(r"任务[12] 任务(?:开始|结束)", "", rest).strip("\n") == "", stdout
    assert rest.count("\n") == 4, stdout
    assert max(rest.index(p) for p in phrases[:2]) < min(rest.index(p) for p in phrases[2:]), stdout


def _expected_error(sc: Scenario, result: Result, loop_name: str) -> str | None:
    if sc.error == "{first_missing}":
        # gather() fails with the exception of the first task, i.e. the first name listed
        first = os.listdir(result.cwd)[0]
        return f"FileNotFoundError: [Errno 2] No such file or directory: '{first}.txt'"
    if sc.error is None:
        return None
    return sc.error.replace("{loop}", loop_name)


def _check_against_readme(sc: Scenario, result: Result, loop_name: str) -> None:
    info = result.describe()
    assert not result.timed_out, info
    assert result.rc == sc.rc, info
    expected_stdout = _expected_stdout(sc)
    if sc.id == "c01":
        _check_c01(result.stdout)
    else:
        assert result.stdout == expected_stdout, info
    expected_error = _expected_error(sc, result, loop_name)
    if expected_error is None:
        assert "Traceback" not in result.stderr and "Error" not in result.last_line, info
    else:
        assert result.last_line == expected_error, info
    assert sc.min_seconds <= result.seconds <= sc.max_seconds, info


def _check_turboloop_records(sc: Scenario, result: Result, mode: str) -> str:
    """Assert the run was on turboloop's loop; return the loop class name seen."""
    info = result.describe()
    policy = result.one("policy")
    assert policy["turboloop"], f"the policy was {policy['type']}, not turboloop's\n{info}"
    loops = result.loops()
    if sc.uses_loop:
        assert loops, f"the program created no loop\n{info}"
    else:
        assert loops == [], info
    for loop in loops:
        assert loop["turboloop"], f"the program ran on {loop['type']}, not turboloop.Loop\n{info}"
    if mode == "runner" and sc.id == "b01":
        pool = result.one("pool")
        assert pool["type"].startswith("turboloop"), (
            f"under the runner, concurrent.futures.ThreadPoolExecutor is {pool['type']}, not turboloop's pool"
        )
    names = {loop["name"] for loop in loops}
    return names.pop() if len(names) == 1 else "Loop"


STOCK_LOOP_NAME = "_UnixSelectorEventLoop"


@pytest.mark.parametrize("scenario, mode", list(_params()))
def test_seed_program(runs, scenario: Scenario, mode: str):
    if not _available(scenario.needs):
        pytest.skip(f"{scenario.program} needs {scenario.needs}, which is not installed")
    stock = runs.get(scenario.id, "stock")
    if mode == "stock":
        _check_against_readme(scenario, stock, STOCK_LOOP_NAME)
        return
    result = runs.get(scenario.id, mode)
    loop_name = "Loop"
    if mode in ("runner", "install"):
        loop_name = _check_turboloop_records(scenario, result, mode)
    else:
        # runner-direct: no probe; the class name in an error is whatever the runner's loop has
        m = re.match(r"^\w+: '(\w+)' object has no attribute", result.last_line)
        loop_name = m.group(1) if m else loop_name
    _check_against_readme(scenario, result, loop_name)
    # and identical to this machine's stock run (the loop's class name aside)
    info = result.describe()
    assert result.rc == stock.rc, info
    if scenario.id != "c01":  # the threads' half of c01 may interleave differently
        assert result.stdout == stock.stdout, info
    assert result.last_line.replace(f"'{loop_name}' object", "'{loop}' object") == stock.last_line.replace(
        f"'{STOCK_LOOP_NAME}' object", "'{loop}' object"
    ), info


# ----------------------------------------------------------------------------------------------
# a02: Flask on 127.0.0.1:5000
# ----------------------------------------------------------------------------------------------


def _exception_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line)]


@pytest.mark.parametrize("a02_mode", A02_MODES)
def test_seed_a02_flask_login(runs, a02_mode):
    if not _available("flask"):
        pytest.skip("a02_flask_login.py needs flask, which is not installed")
    stock = runs.get("a02", "stock")
    if "skip" in stock.extra:
        pytest.skip(stock.extra["skip"])
    result = runs.get("a02", a02_mode)
    if "skip" in result.extra:
        pytest.skip(result.extra["skip"])
    info = result.describe() + f"\n--- extra {result.extra}"
    assert result.extra.get("status") == 500, info
    assert result.extra.get("still_serving") is True, info
    errors = _exception_lines(result.stderr)
    assert errors, info
    if a02_mode == "stock":
        if _available("asgiref"):  # flask[async]: the view awaits the dict that get_json() returns
            assert AWAIT_A_DICT_ERROR in errors, info
        # Ctrl-C ends app.run(), which returns None, and the program goes on to asyncio.run(None)
        assert errors[-1] == ASYNCIO_RUN_NONE_ERROR, info
        return
    assert errors == _exception_lines(stock.stderr), info
    if _available("asgiref"):
        policy = result.one("policy")
        assert policy["turboloop"], info
        loops = result.loops()
        assert loops and all(loop["turboloop"] for loop in loops), f"asgiref's loop was not turboloop's\n{info}"


def test_every_seed_example_is_covered():
    programs = {p.name for p in SEED_DIR.glob("*.py")}
    assert programs == COVERED, f"not covered: {sorted(programs - COVERED)}; missing: {sorted(COVERED - programs)}"


def test_e04_copy_changes_only_the_urls(tmp_path):
    original = (SEED_DIR / "e04_aiohttp_fetch_pages.py").read_text(encoding="utf-8")
    changed = original
    for i, url in enumerate(E04_PAGES):
        changed = changed.replace(f"'{url}'", f"'http://127.0.0.1:1/page{i}'")
    differing = [(a, b) for a, b in zip(original.splitlines(), changed.splitlines()) if a != b]
    assert len(original.splitlines()) == len(changed.splitlines())
    assert len(differing) == 1 and differing[0][0].strip().startswith("urls = [")
