"""The blocking-call watchdog: a stall is reported once, with the stack of the code that blocks,
captured while it blocks; an idle loop is never reported; switching it on and off; bad input.

The watchdog is turboloop's own (stock asyncio and uvloop have none), so these tests run on
turboloop only.  The thresholds are short and the stalls several times longer, so that no test
depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import turboloop

THRESHOLD = 0.1
STALL = 0.35


@pytest.fixture
def loop():
    loop = turboloop.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(autouse=True)
def no_default_watchdog():
    turboloop.disable_watchdog()
    yield
    turboloop.disable_watchdog()


def run_briefly(loop, seconds=0.05):
    loop.run_until_complete(asyncio.sleep(seconds))


def line_of(function, text):
    """The line number of the first line of `function` containing `text`."""
    import inspect

    lines, first = inspect.getsourcelines(function)
    for offset, line in enumerate(lines):
        if text in line:
            return first + offset
    raise AssertionError(f"{text!r} not in {function.__name__}")


def sleeping_callback():
    time.sleep(STALL)


def test_a_sleeping_callback_is_reported_once_with_the_blocking_line(loop, caplog):
    stalls = []
    loop.set_watchdog(THRESHOLD, stalls.append)
    handle = loop.call_soon(sleeping_callback)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    assert len(stalls) == 1
    stall = stalls[0]
    assert stall.duration >= STALL
    assert stall.threshold == THRESHOLD
    assert stall.handle is handle
    innermost = stall.stack[-1]
    assert (innermost.filename, innermost.name) == (__file__, "sleeping_callback")
    assert innermost.lineno == line_of(sleeping_callback, "time.sleep")
    assert innermost.line == "time.sleep(STALL)"
    records = [r for r in caplog.records if "Event loop blocked" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert f"blocked for {stall.duration:.3f} seconds (watchdog threshold 0.100)" in message
    assert "sleeping_callback" in message and "time.sleep(STALL)" in message
    assert records[0].levelno == logging.WARNING


def test_a_coroutine_that_blocks_is_reported_with_its_own_frame(loop):
    stalls = []

    async def handler():
        await asyncio.sleep(0)
        time.sleep(STALL)
        return "done"

    loop.set_watchdog(THRESHOLD, stalls.append)
    assert loop.run_until_complete(handler()) == "done"
    assert len(stalls) == 1
    assert stalls[0].stack[-1].name == "handler"
    assert stalls[0].stack[-1].line == "time.sleep(STALL)"


def test_a_stall_in_a_blocking_socket_recv_is_reported_while_it_blocks(loop):
    stalls = []
    left, right = socket.socketpair()
    sender = threading.Timer(STALL, right.send, (b"x",))

    def blocking_recv():
        sender.start()
        assert left.recv(1) == b"x"

    loop.set_watchdog(THRESHOLD, stalls.append)
    loop.call_soon(blocking_recv)
    try:
        run_briefly(loop)
    finally:
        sender.join()
        left.close()
        right.close()
    assert len(stalls) == 1
    assert stalls[0].stack[-1].name == "blocking_recv"
    assert stalls[0].stack[-1].line == 'assert left.recv(1) == b"x"'


def test_a_stall_in_c_code_holding_the_gil_is_reported(loop):
    # sum() over a range runs in C without letting go of the GIL: the watchdog thread cannot
    # capture the stack until it returns, but the stall is reported all the same.
    stalls = []
    timings = []

    def cpu_bound():
        start = time.monotonic()
        while time.monotonic() - start < STALL:
            sum(range(2_000_000))
        timings.append(time.monotonic() - start)

    loop.set_watchdog(THRESHOLD, stalls.append)
    loop.call_soon(cpu_bound)
    run_briefly(loop)
    assert len(stalls) == 1
    assert stalls[0].duration >= timings[0]
    assert stalls[0].stack is None or stalls[0].stack[-1].name == "cpu_bound"


def test_a_loop_idle_in_its_poll_is_never_reported(loop, caplog):
    stalls = []
    loop.set_watchdog(THRESHOLD, stalls.append)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop, 5 * THRESHOLD)
    assert stalls == []
    assert not [r for r in caplog.records if "Event loop blocked" in r.getMessage()]


def test_many_short_callbacks_that_come_back_to_poll_are_not_reported(loop):
    stalls = []

    async def ticking():
        for _ in range(40):
            time.sleep(THRESHOLD / 10)
            await asyncio.sleep(0)

    loop.set_watchdog(THRESHOLD, stalls.append)
    loop.run_until_complete(ticking())
    assert stalls == []


def test_one_batch_of_short_callbacks_that_never_polls_is_one_stall(loop):
    stalls = []
    for _ in range(8):
        loop.call_soon(time.sleep, STALL / 8)
    loop.set_watchdog(THRESHOLD, stalls.append)
    run_briefly(loop)
    assert len(stalls) == 1
    assert stalls[0].duration >= STALL


def test_each_stall_is_reported_on_its_own(loop):
    stalls = []

    async def two_stalls():
        time.sleep(STALL)
        await asyncio.sleep(0.01)
        time.sleep(STALL)

    loop.set_watchdog(THRESHOLD, stalls.append)
    loop.run_until_complete(two_stalls())
    assert len(stalls) == 2


def test_a_stall_in_the_last_iteration_is_reported(loop):
    stalls = []

    def block_then_stop():
        time.sleep(STALL)
        loop.stop()

    loop.set_watchdog(THRESHOLD, stalls.append)
    loop.call_soon(block_then_stop)
    loop.run_forever()
    assert len(stalls) == 1
    assert stalls[0].stack[-1].name == "block_then_stop"


def test_off_by_default_and_set_watchdog_none_turns_it_off(loop, caplog):
    assert loop.get_watchdog() is None
    stalls = []
    loop.set_watchdog(THRESHOLD, stalls.append)
    assert loop.get_watchdog() == THRESHOLD
    loop.set_watchdog(None)
    assert loop.get_watchdog() is None
    loop.call_soon(time.sleep, STALL)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    assert stalls == []
    assert not [r for r in caplog.records if "Event loop blocked" in r.getMessage()]


def test_switched_on_and_off_from_inside_the_running_loop(loop):
    stalls = []

    async def main():
        time.sleep(STALL)  # off: not reported
        loop.set_watchdog(THRESHOLD, stalls.append)
        await asyncio.sleep(0)
        time.sleep(STALL)  # on: reported
        await asyncio.sleep(0)
        loop.set_watchdog(None)
        await asyncio.sleep(0)
        time.sleep(STALL)  # off again

    loop.run_until_complete(main())
    assert len(stalls) == 1
    assert stalls[0].stack[-1].lineno == line_of(main, "# on: reported")


def test_enable_watchdog_covers_new_loops_and_the_running_one():
    stalls = []
    turboloop.enable_watchdog(THRESHOLD, stalls.append)
    loop = turboloop.new_event_loop()
    try:
        assert loop.get_watchdog() == THRESHOLD
        loop.call_soon(time.sleep, STALL)
        run_briefly(loop)
        assert len(stalls) == 1
        turboloop.disable_watchdog()
        assert loop.get_watchdog() == THRESHOLD  # a loop that is not running keeps its own
    finally:
        loop.close()
    other = turboloop.new_event_loop()
    try:
        assert other.get_watchdog() is None

        async def enable_inside():
            turboloop.enable_watchdog(THRESHOLD, stalls.append)
            await asyncio.sleep(0)
            time.sleep(STALL)

        other.run_until_complete(enable_inside())
        assert len(stalls) == 2
    finally:
        other.close()


def test_a_failing_callback_goes_to_the_exception_handler(loop):
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))

    def broken(stall):
        raise ZeroDivisionError("from the callback")

    loop.set_watchdog(THRESHOLD, broken)
    loop.call_soon(time.sleep, STALL)
    run_briefly(loop)
    assert len(errors) == 1
    assert errors[0]["message"] == "Exception in the watchdog's callback"
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    assert errors[0]["stall"].duration >= STALL
    run_briefly(loop)  # the loop goes on


@pytest.mark.parametrize("threshold", [0, -1, 0.0, float("nan"), float("inf"), -float("inf")])
def test_bad_thresholds_raise_value_error(loop, threshold):
    with pytest.raises(ValueError, match="positive, finite number of seconds"):
        loop.set_watchdog(threshold)
    with pytest.raises(ValueError, match="positive, finite number of seconds"):
        turboloop.enable_watchdog(threshold)
    assert loop.get_watchdog() is None


@pytest.mark.parametrize("threshold", ["0.1", b"1", [], True, object()])
def test_threshold_of_the_wrong_type_raises_type_error(loop, threshold):
    with pytest.raises(TypeError, match="must be a number of seconds"):
        loop.set_watchdog(threshold)


def test_callback_must_be_callable(loop):
    with pytest.raises(TypeError, match="must be callable or None"):
        loop.set_watchdog(THRESHOLD, "not callable")
    with pytest.raises(TypeError, match="must be callable or None"):
        turboloop.enable_watchdog(THRESHOLD, 42)
    assert loop.get_watchdog() is None


def test_set_watchdog_from_another_thread_while_running_raises(loop):
    errors = []

    def from_thread():
        try:
            loop.set_watchdog(THRESHOLD)
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=from_thread).start)
    loop.run_forever()
    assert len(errors) == 1 and "loop's thread" in str(errors[0])
    assert loop.get_watchdog() is None


def test_starting_and_stopping_many_times_never_hangs(loop):
    stalls = []
    loop.set_watchdog(0.001, stalls.append)
    for _ in range(200):
        loop.run_until_complete(asyncio.sleep(0))
    # Short stalls may or may not be reported at this threshold; each report is a real stall.
    assert all(stall.duration >= 0.001 for stall in stalls)


def test_stopping_while_the_watchdog_waits_for_the_gil(loop):
    # The loop stops in the middle of a stall the watchdog is capturing: the watchdog thread
    # needs the GIL that the stopping loop thread holds; stopping must let it go, not deadlock.
    stalls = []

    def stall_and_stop():
        deadline = time.monotonic() + 3 * THRESHOLD
        while time.monotonic() < deadline:
            sum(range(100_000))
        loop.stop()

    loop.set_watchdog(THRESHOLD, stalls.append)
    for _ in range(5):
        loop.call_soon(stall_and_stop)
        loop.run_forever()
    assert len(stalls) == 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_from_a_watched_loop_child_runs_its_own_loop():
    code = textwrap.dedent(
        """
        import asyncio, os, sys, time, turboloop

        stalls = []

        async def main():
            loop = asyncio.get_running_loop()
            loop.set_watchdog(0.1, stalls.append)
            await asyncio.sleep(0.15)  # the watchdog thread is waiting on its timer
            pid = os.fork()
            if pid == 0:
                # The child's loop stops without the parent's watchdog thread, then runs anew.
                return "child"
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        result = turboloop.run(main())
        if result == "child":
            loop = turboloop.new_event_loop()
            loop.set_watchdog(0.1, stalls.append)
            loop.call_soon(time.sleep, 0.3)
            loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()
            os._exit(0 if len(stalls) == 1 else 3)
        print("child exit status", result)
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child exit status 0"


def run_program(args, env_extra=None, source=None, tmp_path=None):
    script = tmp_path / "blocking.py"
    script.write_text(
        source
        or textwrap.dedent(
            """
            import asyncio, time

            async def main():
                await asyncio.sleep(0)
                time.sleep(0.35)
                print("finished")

            asyncio.run(main())
            """
        )
    )
    env = dict(os.environ)
    env.pop("TURBOLOOP_WATCHDOG", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "turboloop", *args, str(script)], capture_output=True, text=True, timeout=60, env=env
    )


def test_runner_flag_reports_stalls_of_an_unchanged_program(tmp_path):
    done = run_program(["--watchdog", "0.1"], tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "finished\n"
    assert "Event loop blocked for 0.3" in done.stderr
    assert "time.sleep(0.35)" in done.stderr
    assert done.stderr.count("Event loop blocked") == 1
    equals = run_program(["--watchdog=0.1"], tmp_path=tmp_path)
    assert equals.returncode == 0 and equals.stderr.count("Event loop blocked") == 1


def test_environment_variable_switches_it_on(tmp_path):
    done = run_program([], env_extra={"TURBOLOOP_WATCHDOG": "0.1"}, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Event loop blocked") == 1
    assert "time.sleep(0.35)" in done.stderr
    quiet = run_program([], env_extra={"TURBOLOOP_WATCHDOG": ""}, tmp_path=tmp_path)
    assert quiet.returncode == 0 and "Event loop blocked" not in quiet.stderr


def test_without_watchdog_nothing_is_reported(tmp_path):
    done = run_program([], tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "finished\n"
    assert "Event loop blocked" not in done.stderr


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_bad_runner_flag_exits_with_usage(tmp_path, value):
    done = run_program(["--watchdog", value], tmp_path=tmp_path)
    assert done.returncode == 2
    assert f"--watchdog needs a positive number of seconds (such as 0.1), got {value!r}" in done.stderr
    assert "usage: python -m turboloop" in done.stderr
    assert done.stdout == ""


def test_runner_flag_without_a_value(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "turboloop", "--watchdog"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Argument expected for the --watchdog option" in done.stderr


def test_bad_environment_variable_is_a_clear_error(tmp_path):
    done = run_program([], env_extra={"TURBOLOOP_WATCHDOG": "soon"}, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "TURBOLOOP_WATCHDOG must be a positive number of seconds (such as 0.1), got 'soon'" in done.stderr


def test_stall_format_without_a_stack():
    stall = turboloop.Stall(duration=0.5, threshold=0.1, handle=None, stack=None)
    assert stall.format() == (
        "Event loop blocked for 0.500 seconds (watchdog threshold 0.100)\n"
        "The loop thread's stack could not be captured: it held the GIL throughout."
    )


def test_a_loop_left_by_an_exception_during_a_stall_is_still_collected():
    loop = turboloop.new_event_loop()
    loop.set_watchdog(THRESHOLD)
    loop.call_soon(time.sleep, STALL)  # noted as the stalled callback

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.close()
    collected = weakref.ref(loop)
    del loop
    gc.collect()
    assert collected() is None
