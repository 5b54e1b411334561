"""Faults from the operating system, on every loop of ``conftest.LOOP_NAMES`` (``asyncio`` is the
reference), each in a subprocess of its own so that the test process is not disturbed:
``os.fork()`` with a live loop and a live ``turboloop.ThreadPoolExecutor`` (the child builds its own
and works, the parent's go on working), and running out of file descriptors (EMFILE) while a
server accepts (the server reports it, pauses accepting, and serves again once descriptors free).
"""

from __future__ import annotations

import asyncio.constants
import contextlib
import functools
import json
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, RLIMIT_NOFILE semantics")

NEW_LOOP = {
    "asyncio": "import asyncio\nnew_loop = asyncio.SelectorEventLoop",
    "turboloop": "import turboloop\nnew_loop = turboloop.new_event_loop",
    "uvloop": "import uvloop\nnew_loop = uvloop.new_event_loop",
}


def script(loop_name: str, body: str) -> list[str]:
    return [sys.executable, "-c", NEW_LOOP[loop_name] + "\n" + textwrap.dedent(body)]


# ----------------------------------------------------------------------------------------------
# fork() with a live loop and a live pool
# ----------------------------------------------------------------------------------------------

FORK = """
import asyncio, os, signal, socket, sys, threading
import turboloop

where = sys.argv[1]


async def child_main():
    # Everything here is the child's own: loop, default executor, pool, sockets, threads.
    loop = asyncio.get_running_loop()
    pool = turboloop.ThreadPoolExecutor(2)
    results = [await asyncio.sleep(0.001, "slept")]
    results.append(await loop.run_in_executor(None, pow, 2, 10))
    results.append(await loop.run_in_executor(pool, pow, 3, 3))
    results.append(await asyncio.wrap_future(pool.submit(sum, [1, 2, 3])))
    results.append(list(pool.map(abs, [-1, -2])))

    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"child echo")
    results.append(await reader.read())
    writer.close()
    server.close()
    await server.wait_closed()
    woken = loop.create_future()
    threading.Thread(target=loop.call_soon_threadsafe, args=(woken.set_result, "woken")).start()
    results.append(await woken)
    pool.shutdown()
    return results


CHILD_EXPECTED = ["slept", 1024, 27, 6, [1, 2], b"child echo", "woken"]


def fork_and_check():
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            child_loop = new_loop()
            try:
                status = 0 if child_loop.run_until_complete(child_main()) == CHILD_EXPECTED else 2
            finally:
                child_loop.close()
        finally:
            # Never return into the parent's stack, nor finalise the loop inherited from it: its
            # epoll set is shared with the parent's (as asyncio's selector loop's is).
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


loop = new_loop()
asyncio.set_event_loop(loop)
pool = turboloop.ThreadPoolExecutor(2)
assert loop.run_until_complete(loop.run_in_executor(None, abs, -1)) == 1  # default executor live
release = threading.Event()
busy = pool.submit(release.wait, 30)  # a worker busy across the fork
r, w = socket.socketpair()
received = []
loop.add_reader(r, lambda: received.append(r.recv(100)))
timer_fired = []
loop.call_later(0.05, timer_fired.append, True)
loop.add_signal_handler(signal.SIGUSR1, lambda: None)

if where == "idle":
    exit_code = fork_and_check()
else:
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(fork_and_check()))
    exit_code = loop.run_until_complete(done)

# The parent's loop and pool go on working.
w.send(b"parent")
woken = loop.create_future()
threading.Thread(target=loop.call_soon_threadsafe, args=(woken.set_result, "woken")).start()
assert loop.run_until_complete(woken) == "woken"
loop.run_until_complete(asyncio.sleep(0.1))
release.set()
assert busy.result(timeout=10) is True
assert loop.run_until_complete(loop.run_in_executor(pool, pow, 2, 5)) == 32
loop.remove_reader(r)
loop.close()
pool.shutdown()
print(exit_code, received, timer_fired)
"""


@pytest.mark.parametrize("where", ["idle", "callback"])
def test_fork_with_a_live_loop_and_pool(raw_loop_factory, loop_name, where):
    """The parent forks with a loop that has a reader, a timer, a signal handler and a used
    default executor, and a pool with a busy worker: between runs ("idle") or from inside one of
    the loop's callbacks ("callback").  The child makes its own loop and pool, runs sleeps,
    executor calls, a TCP echo and a threadsafe wake-up, and exits 0; the parent's loop and pool
    are untouched."""
    proc = subprocess.run(script(loop_name, FORK) + [where], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0 [b'parent'] [True]", proc.stderr


# ----------------------------------------------------------------------------------------------
# EMFILE while accepting
# ----------------------------------------------------------------------------------------------

BACKLOG = 5
CLIENTS = 3

EMFILE = """
import asyncio, errno, json, os, resource, sys

backlog, expected_connections = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
loop = new_loop()
reports = []
ballast = []
accepted_at = []
lost = 0


def free_ballast():
    for fd in ballast:
        os.close(fd)
    ballast.clear()


def handler(lp, context):
    exc = context.get("exception")
    reports.append([context["message"], type(exc).__name__, getattr(exc, "errno", None), "socket" in context, lp.time()])
    if len(reports) == 1:
        # Descriptors free up once the server has met EMFILE on every accept of the round.
        lp.call_soon(free_ballast)


loop.set_exception_handler(handler)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        accepted_at.append(loop.time())
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        global lost
        lost += 1
        if lost == expected_connections:
            loop.stop()


server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0, backlog=backlog))
while True:
    try:
        ballast.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE, exc
        break
print(server.sockets[0].getsockname()[1], flush=True)
loop.call_later(60, loop.stop)
loop.run_forever()
serving = server.is_serving()
server.close()
loop.run_until_complete(server.wait_closed())
loop.close()
print(json.dumps({"reports": reports, "accepted_at": accepted_at, "lost": lost, "serving": serving}))
"""


@functools.cache
def emfile_server(loop_name: str) -> tuple[list[bytes], dict]:
    """Runs the EMFILE server on the named loop (once), with CLIENTS clients waiting while it has
    no descriptor left and one more once it has: what each client got back, and the server's
    report."""
    with contextlib.ExitStack() as stack:
        proc = stack.enter_context(
            subprocess.Popen(
                script(loop_name, EMFILE) + [str(BACKLOG), str(CLIENTS + 1)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        stack.callback(lambda: proc.poll() is None and proc.kill())
        port = int(proc.stdout.readline())
        clients = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30)) for _ in range(CLIENTS)]
        for i, client in enumerate(clients):
            client.sendall(b"ping %d" % i)
        echoes = [client.recv(100) for client in clients]
        for client in clients:
            client.close()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as late:
            late.sendall(b"late")
            echoes.append(late.recv(100))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return echoes, json.loads(out)


def accepts_per_round() -> int:
    """How many accepts asyncio's selector loop tries when a listening socket is ready: backlog of
    them, or one more since gh-127529 (3.13)."""
    return len(emfile_server("asyncio")[1]["reports"])


@pytest.mark.uvloop_xfail("libuv accepts and closes the waiting connections on EMFILE")
def test_emfile_while_accepting_pauses_then_serves(raw_loop_factory, loop_name):
    """The server's process has no descriptor left when CLIENTS connect.  As asyncio's selector
    loop: every accept of that round (as many as asyncio's) reaches the exception handler with
    "socket.accept() out of system resource" and OSError(EMFILE), accepting pauses for
    ACCEPT_RETRY_DELAY, and once descriptors are free the waiting clients (still in the kernel's
    queue) and a new one are all served."""
    echoes, result = emfile_server(loop_name)
    assert echoes == [b"ping 0", b"ping 1", b"ping 2", b"late"]
    reports = result["reports"]
    assert 1 <= len(reports) <= BACKLOG + 1
    assert [r[:4] for r in reports] == [["socket.accept() out of system resource", "OSError", 24, True]] * accepts_per_round()
    assert result["lost"] == CLIENTS + 1
    assert result["serving"] is True
    # The first accept after the pause comes no sooner than asyncio's retry delay (a timer never
    # fires early; the loop's clock resolution is the only slack).
    paused = min(result["accepted_at"]) - reports[-1][4]
    assert paused >= asyncio.constants.ACCEPT_RETRY_DELAY - 0.001, paused


# ----------------------------------------------------------------------------------------------
# Out of descriptors when a loop is made
# ----------------------------------------------------------------------------------------------

NEW_LOOP_SHORT_OF_DESCRIPTORS = """
import asyncio, errno, gc, json, os, resource

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
baseline = len(os.listdir("/proc/self/fd"))
outcomes = []
for spare in range(int(__import__("sys").argv[1])):
    ballast = []
    while True:
        try:
            ballast.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            break
    for fd in ballast[:spare]:
        os.close(fd)
    del ballast[:spare]
    try:
        loop = new_loop()
    except OSError as exc:
        outcomes.append(["new", exc.errno])
    else:
        try:
            outcomes.append(["ran", loop.run_until_complete(asyncio.sleep(0, spare))])
        except OSError as exc:
            outcomes.append(["run", exc.errno])
        loop.close()
        del loop
    for fd in ballast:
        os.close(fd)
    gc.collect()
    outcomes[-1].append(len(os.listdir("/proc/self/fd")) - baseline)
print(json.dumps(outcomes))
"""

SPARE_DESCRIPTORS = 16


@pytest.mark.uvloop_xfail("uvloop aborts the process ('deallocating an open event loop')")
def test_new_loop_short_of_descriptors(raw_loop_factory, loop_name):
    """With 0, 1, 2, ... descriptors free, making a loop either fails with OSError(EMFILE), as
    asyncio's does, or gives a loop that runs without needing another descriptor; a failed
    attempt leaves no descriptor open, and the process never crashes."""
    proc = subprocess.run(
        script(loop_name, NEW_LOOP_SHORT_OF_DESCRIPTORS) + [str(SPARE_DESCRIPTORS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)
    assert [leaked for *_, leaked in outcomes] == [0] * SPARE_DESCRIPTORS, outcomes
    kinds = [outcome[:2] for outcome in outcomes]
    made = [spare for spare, kind in enumerate(kinds) if kind[0] != "new"]
    assert made, kinds  # enough descriptors for a loop, in the end
    first = made[0]
    assert first > 0
    assert kinds == [["new", 24]] * first + [["ran", spare] for spare in range(first, SPARE_DESCRIPTORS)]
