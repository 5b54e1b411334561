"""Behaviour of the event loop, checked against stock asyncio (Python 3.11).

Every test runs on each loop of ``conftest.LOOP_NAMES``.  The expected values are literals that
stock asyncio produces (the ``asyncio`` case proves them); turboloop must produce the same.  Where
uvloop is known to differ, the uvloop case alone is a non-strict xfail.

The iteration model under test is ``BaseEventLoop._run_once``: one iteration moves the due timers
to the ready queue, then runs exactly the callbacks that were ready when the batch started;
whatever those callbacks schedule waits for the next iteration, and ``stop()`` takes effect at the
end of the current batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import inspect
import logging
import os
import signal
import sys
import threading
import time
from asyncio import format_helpers

import pytest

VAR = contextvars.ContextVar("VAR", default="unset")


def run_once(loop):
    """Run exactly one iteration of ``loop`` (asyncio's idiom)."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def run_until(loop, predicate, timeout=5.0):
    """Run ``loop`` until ``predicate()`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    def check():
        if predicate() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.001, check)

    loop.call_soon(check)
    loop.run_forever()
    assert predicate(), "timed out"


def module_level_callback(*args):
    """A callback with a stable qualname and source line, for the message/repr tests."""


def slow_callback():
    time.sleep(0.12)


# ----------------------------------------------------------------------------------------------
# Basic identity
# ----------------------------------------------------------------------------------------------


def test_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert not loop.is_running()
    assert not loop.is_closed()
    assert loop.get_debug() is False


def attribute_dicts(obj):
    """The dicts holding an event loop's instance attributes that the garbage collector sees."""
    return [ref for ref in gc.get_referents(obj) if type(ref) is dict and "_default_executor" in ref]


def test_loop_attributes_are_stored_as_on_a_plain_asyncio_loop(loop):
    """CPython keeps a plain asyncio loop's attributes inline, with no dict until one is asked
    for; the loop's are kept the same way, before and after it ran (method lookups on it from C,
    a Future's get_debug() for one, then skip a dict lookup)."""
    if sys.version_info >= (3, 13) and type(loop).__basicsize__ != object.__basicsize__:
        pytest.skip("from 3.13, CPython keeps attributes inline only for classes with object's own layout")
    reference = asyncio.SelectorEventLoop()
    try:
        reference.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert attribute_dicts(reference) == []
        assert attribute_dicts(loop) == []
        assert "_default_executor" in vars(reference)
        assert attribute_dicts(reference) == [vars(reference)]  # asked for: now there is one
        loop.custom = 1
        assert loop.custom == 1
    finally:
        reference.close()


@pytest.mark.uvloop_xfail("uvloop's repr is '<uvloop.Loop ... at 0x...>'")
def test_repr(loop):
    name = type(loop).__name__
    assert repr(loop) == f"<{name} running=False closed=False debug=False>"
    loop.set_debug(True)
    assert repr(loop) == f"<{name} running=False closed=False debug=True>"
    loop.set_debug(False)
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    run_once(loop)
    assert seen == [f"<{name} running=True closed=False debug=False>"]
    loop.close()
    assert repr(loop) == f"<{name} running=False closed=True debug=False>"


def test_running_loop_inside_callbacks(loop):
    seen = []

    def cb():
        seen.append((loop.is_running(), asyncio.get_running_loop() is loop, asyncio.get_event_loop() is loop))

    loop.call_soon(cb)
    run_once(loop)
    assert seen == [(True, True, True)]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None


# ----------------------------------------------------------------------------------------------
# Ready queue: order within and across iterations
# ----------------------------------------------------------------------------------------------


def test_call_soon_fifo_with_args(loop):
    out = []
    for i in range(10):
        loop.call_soon(out.append, i)
    loop.call_soon(lambda *a: out.append(a), 1, "two", None)
    run_once(loop)
    assert out == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, (1, "two", None)]


def test_scheduled_during_batch_runs_after_batch(loop):
    out = []

    def a():
        out.append("A")
        loop.call_soon(c)

    def b():
        out.append("B")

    def c():
        out.append("C")
        loop.stop()

    loop.call_soon(a)
    loop.call_soon(b)
    loop.run_forever()
    assert out == ["A", "B", "C"]


@pytest.mark.uvloop_xfail("uvloop's stop() lets callbacks scheduled during the batch run")
def test_stop_in_callback_finishes_batch_but_not_next(loop):
    out = []

    def a():
        out.append("A")
        loop.call_soon(c)
        loop.stop()

    def c():
        out.append("C")
        loop.stop()

    loop.call_soon(a)
    loop.call_soon(out.append, "B")
    loop.run_forever()
    assert out == ["A", "B"]
    loop.run_forever()  # C was left in the ready queue; it runs (and stops) on the next run
    assert out == ["A", "B", "C"]


@pytest.mark.uvloop_xfail("uvloop's stop() lets callbacks scheduled during the batch run")
def test_new_callbacks_are_appended_after_the_batch(loop):
    out = []

    def make(name):
        def cb():
            out.append(name)
            loop.call_soon(out.append, name + "2")

        return cb

    loop.call_soon(make("A"))
    loop.call_soon(make("B"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["A", "B"]
    run_once(loop)
    assert out == ["A", "B", "A2", "B2"]


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []

    def a():
        out.append("A")
        loop.call_soon(out.append, "B")

    loop.call_soon(a)
    loop.stop()
    loop.run_forever()
    assert out == ["A"]
    run_once(loop)
    assert out == ["A", "B"]


def test_stop_twice_and_run_again(loop):
    loop.stop()
    loop.stop()
    loop.run_forever()  # one iteration, returns
    out = []
    loop.call_soon(out.append, 1)
    run_once(loop)
    assert out == [1]


def test_cancel_handle_later_in_same_batch(loop):
    out = []
    handles = {}

    def a():
        out.append("A")
        handles["b"].cancel()

    loop.call_soon(a)
    handles["b"] = loop.call_soon(out.append, "B")
    loop.call_soon(out.append, "C")
    run_once(loop)
    assert out == ["A", "C"]
    assert handles["b"].cancelled()


def test_handle_api(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    h2 = loop.call_soon(out.append, 2)
    run_once(loop)
    assert out == [2]
    h2.cancel()  # cancelling after it ran is harmless
    assert h2.cancelled()


@pytest.mark.uvloop_xfail("uvloop's Handle has no _run()")
def test_handle_run_method(loop):
    # Handle._run() runs the callback in the handle's context; the handle stays scheduled.
    out = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "handle-ctx")
    h = loop.call_soon(lambda x: out.append((x, VAR.get())), 1, context=ctx)
    h._run()
    assert out == [(1, "handle-ctx")]
    run_once(loop)
    assert out == [(1, "handle-ctx"), (1, "handle-ctx")]


@pytest.mark.uvloop_xfail("uvloop's Handle repr has no arguments nor source")
def test_handle_repr(loop):
    h = loop.call_soon(module_level_callback, 1, "x")
    src = format_helpers._format_callback_source(module_level_callback, (1, "x"))
    assert src.startswith("module_level_callback(")  # its arguments too, before 3.13
    assert repr(h) == f"<Handle {src}>"
    h.cancel()
    assert repr(h) == "<Handle cancelled>"
    t = loop.call_at(1e9, module_level_callback)
    src = format_helpers._format_callback_source(module_level_callback, ())
    assert repr(t) == f"<TimerHandle when=1000000000.0 {src}>"
    t.cancel()


# ----------------------------------------------------------------------------------------------
# Timers
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop clamps negative delays to 0 and keeps scheduling order")
def test_timers_fire_in_when_order(loop):
    out = []
    t = loop.time()
    loop.call_later(0.03, out.append, "c")
    loop.call_later(0.01, out.append, "a")
    loop.call_at(t + 0.02, out.append, "b")
    loop.call_later(0.0, out.append, "zero")
    loop.call_later(-1, out.append, "negative")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["negative", "zero", "a", "b", "c"]


@pytest.mark.uvloop_xfail("uvloop makes a delay under half a millisecond a call_soon, run after due timers")
def test_timers_due_in_same_iteration_run_in_when_order(loop):
    out = []
    t = loop.time()
    for d in (0.004, 0.001, 0.003, 0.002, 0.005):
        loop.call_at(t + d, out.append, d)
    time.sleep(0.02)  # all five are due before the loop looks at them
    run_once(loop)
    assert out == [0.001, 0.002, 0.003, 0.004, 0.005]


def test_timer_ties_broken_by_scheduling_order(loop):
    # asyncio's heapq does not promise FIFO among equal deadlines in general (twenty ties, or
    # ties sharing the heap with other timers, come out in heap order: see the next test). With
    # three ties alone in the heap it is FIFO, the order a (when, sequence) heap always gives.
    out = []
    when = loop.time() + 0.005
    for name in ("first", "second", "third"):
        loop.call_at(when, out.append, name)
    time.sleep(0.02)
    run_once(loop)
    assert out == ["first", "second", "third"]


@pytest.mark.uvloop_xfail("uvloop runs call_soon callbacks made by a timer in the same iteration")
def test_timers_due_together_share_one_batch(loop):
    out = []
    when = loop.time() + 0.01

    def first_and_schedule():
        out.append(-1)
        loop.call_soon(out.append, "soon")

    loop.call_at(when - 0.005, first_and_schedule)
    for i in range(20):
        loop.call_at(when, out.append, i)
    time.sleep(0.03)
    run_once(loop)
    # everything was due in the same iteration: the call_soon made by the first timer waits
    assert out[0] == -1
    assert sorted(out[1:]) == list(range(20))
    run_once(loop)
    assert out[-1] == "soon" and len(out) == 22


@pytest.mark.uvloop_xfail("uvloop runs a due call_later(0) before a pending call_soon")
def test_call_later_zero_runs_after_pending_call_soon(loop):
    out = []
    loop.call_later(0, out.append, "T")
    loop.call_soon(out.append, "S")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["S", "T"]


@pytest.mark.uvloop_xfail("uvloop runs due timers before the ready queue")
def test_due_timer_runs_after_pending_call_soon(loop):
    out = []
    loop.call_later(0.001, out.append, "T")
    loop.call_soon(out.append, "S")
    time.sleep(0.01)  # the timer is due before the loop starts
    run_once(loop)
    assert out == ["S", "T"]


def test_timer_cancellation(loop):
    out = []
    h1 = loop.call_later(0.01, out.append, "cancelled")
    h2 = loop.call_later(0.02, out.append, "kept")
    h1.cancel()
    assert h1.cancelled() and not h2.cancelled()
    h1.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert out == ["kept"]


@pytest.mark.uvloop_xfail(
    "uvloop converts call_at deadlines to milliseconds from its cached clock, so timers a millisecond apart can fire out of order"
)
def test_timer_cancelled_by_earlier_timer_of_same_batch(loop):
    out = []
    handles = {}
    t = loop.time()

    def first():
        out.append("first")
        handles["second"].cancel()

    loop.call_at(t + 0.001, first)
    handles["second"] = loop.call_at(t + 0.002, out.append, "second")
    loop.call_at(t + 0.003, out.append, "third")
    time.sleep(0.02)
    run_once(loop)
    assert out == ["first", "third"]


def test_many_cancelled_timers(loop):
    out = []
    handles = [loop.call_later(0.001 * (i % 10), out.append, i) for i in range(2000)]
    for i, h in enumerate(handles):
        if i % 2 == 0:
            h.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(1, 2000, 2))


def test_timer_when(loop):
    t0 = loop.time()
    h = loop.call_later(10, module_level_callback)
    t1 = loop.time()
    assert isinstance(h, asyncio.TimerHandle) or hasattr(h, "when")
    assert t0 + 10 - 1e-6 <= h.when() <= t1 + 10 + 1e-6
    h.cancel()


@pytest.mark.uvloop_xfail("uvloop rounds call_at deadlines to milliseconds")
def test_call_at_keeps_the_exact_deadline(loop):
    when = loop.time() + 123.456789
    h = loop.call_at(when, module_level_callback)
    assert h.when() == when
    h.cancel()


def test_timer_never_fires_early(loop):
    fired = []
    start = time.monotonic()
    h = loop.call_later(0.1, lambda: fired.append((time.monotonic(), loop.time())))
    loop.call_later(0.2, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    mono, lt = fired[0]
    assert mono >= start + 0.1 - 0.002
    assert lt >= h.when() - 0.002


def test_time_is_monotonic_and_matches_time_monotonic(loop):
    assert abs(loop.time() - time.monotonic()) < 0.05
    prev = loop.time()
    for _ in range(10000):
        now = loop.time()
        assert now >= prev
        prev = now
    t0 = loop.time()
    time.sleep(0.05)
    assert loop.time() - t0 >= 0.045
    seen = []
    loop.call_soon(lambda: seen.append(loop.time() - time.monotonic()))
    run_once(loop)
    assert abs(seen[0]) < 0.05


# ----------------------------------------------------------------------------------------------
# Exceptions in callbacks and the exception handler
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop's message shows the function repr")
def test_exception_in_callback_reaches_handler(loop):
    contexts = []
    out = []
    exc = ValueError("boom")

    def bad(arg):
        raise exc

    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    h = loop.call_soon(bad, 42)
    loop.call_soon(out.append, "after")
    run_once(loop)
    assert out == ["after"]  # the loop went on with the batch
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["exception"] is exc
    assert ctx["handle"] is h
    assert ctx["message"] == "Exception in callback " + format_helpers._format_callback_source(bad, (42,))


@pytest.mark.uvloop_xfail("uvloop's message shows the function repr")
def test_exception_in_timer_reaches_handler(loop):
    contexts = []

    def bad():
        raise KeyError("k")

    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    h = loop.call_later(0.001, bad)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    ctx = contexts[0]
    assert set(ctx) == {"message", "exception", "handle"}
    assert ctx["handle"] is h
    assert isinstance(ctx["exception"], KeyError)
    assert ctx["message"] == "Exception in callback " + format_helpers._format_callback_source(bad, ())


@pytest.mark.uvloop_xfail("uvloop's message shows the function repr")
def test_default_exception_handler_logs(loop, caplog):
    exc = RuntimeError("logged")

    def bad():
        raise exc

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        h = loop.call_soon(bad)
        run_once(loop)
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    lines = rec.getMessage().split("\n")
    assert lines[0] == "Exception in callback " + format_helpers._format_callback_source(bad, ())
    assert lines[1:] == [f"handle: {h!r}"]
    assert rec.exc_info[1] is exc


def test_set_get_exception_handler(loop):
    assert loop.get_exception_handler() is None
    calls = []

    def handler(lp, ctx):
        calls.append((lp, ctx))

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    ctx = {"message": "custom", "extra": 1}
    loop.call_exception_handler(ctx)
    assert calls == [(loop, ctx)]
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_exception_handler_that_raises_is_logged(loop, caplog):
    handler_exc = ZeroDivisionError("in handler")
    out = []

    def handler(lp, ctx):
        raise handler_exc

    def bad():
        raise ValueError("in callback")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        loop.call_soon(out.append, "after")
        run_once(loop)
    assert out == ["after"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().split("\n")[0] == "Unhandled error in exception handler"
    assert records[0].exc_info[1] is handler_exc


def test_task_exception_never_retrieved(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fails():
        raise ValueError("never retrieved")

    task = loop.create_task(fails())
    run_until(loop, task.done)
    del task
    gc.collect()
    assert len(contexts) == 1
    ctx = contexts[0]
    assert set(ctx) == {"message", "exception", "future"}
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], ValueError)


# ----------------------------------------------------------------------------------------------
# stop / close / re-entrance
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop says 'this event loop is already running.'")
def test_run_forever_inside_run_forever(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except RuntimeError as e:
            errors.append(str(e))
        coro = asyncio.sleep(0)
        try:
            loop.run_until_complete(coro)
        except RuntimeError as e:
            errors.append(str(e))
        finally:
            coro.close()

    loop.call_soon(nested)
    run_once(loop)
    assert errors == ["This event loop is already running"] * 2


def test_close_running_loop(loop):
    errors = []

    def closer():
        try:
            loop.close()
        except RuntimeError as e:
            errors.append(str(e))

    loop.call_soon(closer)
    run_once(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_run_while_another_loop_runs(loop_factory):
    outer = loop_factory()
    inner = loop_factory()
    errors = []

    def nested():
        try:
            inner.run_forever()
        except RuntimeError as e:
            errors.append(str(e))

    outer.call_soon(nested)
    run_once(outer)
    assert errors == ["Cannot run the event loop while another loop is running"]
    run_once(inner)  # still usable on its own


@pytest.mark.uvloop_xfail("uvloop's stop() on a closed loop raises")
def test_close_is_idempotent_and_closed_loop_refuses_work(loop):
    loop.close()
    loop.close()
    assert loop.is_closed()
    loop.stop()  # no error: asyncio's stop() only sets a flag
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.call_soon(module_level_callback)
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.run_forever()


def test_run_until_complete_result_and_exception(loop):
    async def ok():
        await asyncio.sleep(0)
        return 42

    async def fails():
        await asyncio.sleep(0)
        raise LookupError("nope")

    assert loop.run_until_complete(ok()) == 42
    with pytest.raises(LookupError, match="nope"):
        loop.run_until_complete(fails())
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "fut")
    assert loop.run_until_complete(fut) == "fut"

    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaitable"

    assert loop.run_until_complete(Awaitable()) == "awaitable"


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError) as info:
        loop.run_until_complete(fut)
    assert str(info.value) == "Event loop stopped before Future completed."
    fut.cancel()


def test_run_until_complete_future_of_other_loop(loop_factory):
    loop = loop_factory()
    other = loop_factory()
    fut = other.create_future()
    with pytest.raises(ValueError) as info:
        loop.run_until_complete(fut)
    assert str(info.value) == "The future belongs to a different loop than the one specified as the loop argument"


# ----------------------------------------------------------------------------------------------
# call_soon_threadsafe
# ----------------------------------------------------------------------------------------------


def test_call_soon_threadsafe_from_8_threads(loop):
    n_threads, per_thread = 8, 2000
    total = n_threads * per_thread
    received = []
    barrier = threading.Barrier(n_threads)

    def on_loop(tid, i):
        received.append((tid, i))
        if len(received) == total:
            loop.stop()

    def producer(tid):
        barrier.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(on_loop, tid, i)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    guard = loop.call_later(20, loop.stop)
    for t in threads:
        t.start()
    loop.run_forever()
    for t in threads:
        t.join()
    guard.cancel()
    assert len(received) == total
    assert sorted(received) == [(t, i) for t in range(n_threads) for i in range(per_thread)]
    for tid in range(n_threads):  # each producer's callbacks keep their order
        assert [i for (t, i) in received if t == tid] == list(range(per_thread))


def test_call_soon_threadsafe_wakes_a_blocked_loop(loop):
    guard = loop.call_later(10, loop.stop)
    timer = threading.Timer(0.1, loop.call_soon_threadsafe, args=(loop.stop,))
    start = time.monotonic()
    timer.start()
    loop.run_forever()
    elapsed = time.monotonic() - start
    timer.join()
    guard.cancel()
    assert elapsed < 2.0


# ----------------------------------------------------------------------------------------------
# contextvars
# ----------------------------------------------------------------------------------------------


@pytest.mark.uvloop_xfail("uvloop runs due timers before the ready queue (order flips under load)")
def test_callbacks_run_in_a_copy_of_the_scheduling_context(loop):
    seen = []
    token = VAR.set("at-schedule")
    try:
        loop.call_soon(lambda: seen.append(("soon", VAR.get())))
        loop.call_later(0.001, lambda: seen.append(("later", VAR.get())))
        loop.call_at(loop.time() + 0.006, lambda: seen.append(("at", VAR.get())))
        VAR.set("changed-after")
    finally:
        VAR.reset(token)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert seen == [("soon", "at-schedule"), ("later", "at-schedule"), ("at", "at-schedule")]


@pytest.mark.uvloop_xfail("uvloop runs due timers before the ready queue (order flips under load)")
def test_explicit_context_is_used_and_mutated(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in-ctx")
    seen = []

    def cb(tag):
        seen.append((tag, VAR.get()))
        VAR.set(tag)

    h1 = loop.call_soon(cb, "soon", context=ctx)
    h2 = loop.call_later(0.001, cb, "later", context=ctx)
    h3 = loop.call_at(loop.time() + 0.006, cb, "at", context=ctx)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert seen == [("soon", "in-ctx"), ("later", "soon"), ("at", "later")]
    assert ctx[VAR] == "at"
    assert VAR.get() == "unset"


def test_call_soon_threadsafe_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "ts")
    seen = []
    loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
    run_once(loop)
    assert seen == ["ts"]


def test_create_task_with_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task-ctx")

    async def main():
        await asyncio.sleep(0)
        before = VAR.get()
        VAR.set("set-in-task")
        return before

    task = loop.create_task(main(), context=ctx)
    assert loop.run_until_complete(task) == "task-ctx"
    assert ctx[VAR] == "set-in-task"
    assert VAR.get() == "unset"


# ----------------------------------------------------------------------------------------------
# Tasks: names, factories
# ----------------------------------------------------------------------------------------------


def test_create_task_name(loop):
    async def coro():
        return asyncio.current_task().get_name()

    t1 = loop.create_task(coro(), name="worker-1")
    assert t1.get_name() == "worker-1"
    assert t1.get_loop() is loop
    t2 = loop.create_task(coro())
    assert t2.get_name().startswith("Task-")
    t3 = loop.create_task(coro(), name=123)
    assert t3.get_name() == "123"
    assert loop.run_until_complete(asyncio.gather(t1, t2, t3)) == ["worker-1", t2.get_name(), "123"]


@pytest.mark.uvloop_xfail("uvloop always passes context= to the task factory")
def test_task_factory(loop):
    assert loop.get_task_factory() is None
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, sorted(kwargs)))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return VAR.get()

    t = loop.create_task(coro(), name="named")
    assert t.get_name() == "named"
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "factory-ctx")
    t2 = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(t) == "unset"
    assert loop.run_until_complete(t2) == "factory-ctx"
    # From 3.14, create_task() hands the factory every keyword it is given, name= included.
    named = [] if "name" in inspect.signature(asyncio.BaseEventLoop.create_task).parameters else ["name"]
    assert calls == [(loop, named), (loop, ["context"])]
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    t3 = loop.create_task(coro())
    loop.run_until_complete(t3)
    assert len(calls) == 2


def test_ensure_future_and_gather_on_loop(loop):
    async def double(x):
        await asyncio.sleep(0.001)
        return 2 * x

    async def main():
        return await asyncio.gather(*(double(i) for i in range(5)))

    assert loop.run_until_complete(main()) == [0, 2, 4, 6, 8]


# ----------------------------------------------------------------------------------------------
# Async generators
# ----------------------------------------------------------------------------------------------


def test_shutdown_asyncgens(loop):
    log = []
    keep = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finalised")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        keep.append(g)

    hooks_before = sys.get_asyncgen_hooks()
    loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == hooks_before
    assert log == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["finalised"]


def test_asyncgen_finalizer_hook_on_gc(loop):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finalised")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert log == ["finalised"]


# ----------------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------------


def test_run_in_executor_default(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    def fails():
        raise OSError(5, "io")

    async def main():
        fut = loop.run_in_executor(None, work, 2, 3)
        assert isinstance(fut, asyncio.Future)
        result, tid = await fut
        with pytest.raises(OSError) as info:
            await loop.run_in_executor(None, fails)
        return result, tid, info.value.errno

    result, tid, errno = loop.run_until_complete(main())
    assert result == 5 and errno == 5
    assert tid != main_thread
    loop.run_until_complete(loop.shutdown_default_executor())


def test_set_default_executor_is_used(loop):
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="custom-pool")
    try:
        loop.set_default_executor(executor)
        name = loop.run_until_complete(loop.run_in_executor(None, lambda: threading.current_thread().name))
        assert name.startswith("custom-pool")
        explicit = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="explicit")
        try:
            name = loop.run_until_complete(
                loop.run_in_executor(explicit, lambda: threading.current_thread().name)
            )
            assert name.startswith("explicit")
        finally:
            explicit.shutdown(wait=True)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        executor.shutdown(wait=True)


def test_shutdown_default_executor(loop):
    assert loop.run_until_complete(loop.run_in_executor(None, lambda: 7)) == 7
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError) as info:
        loop.run_in_executor(None, lambda: 8)
    assert str(info.value) == "Executor shutdown has been called"
    # An explicit executor still works.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, lambda: 9)) == 9


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())  # nothing to shut down: fine


# ----------------------------------------------------------------------------------------------
# KeyboardInterrupt / SystemExit from callbacks
# ----------------------------------------------------------------------------------------------


def _raise(exc_type):
    raise exc_type()


@pytest.mark.uvloop_xfail("uvloop finishes the batch before propagating")
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_propagates(loop, exc_type):
    out = []
    loop.call_soon(out.append, "A")
    loop.call_soon(_raise, exc_type)
    loop.call_soon(out.append, "B")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert out == ["A"]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    run_once(loop)  # the rest of the interrupted batch is still queued
    assert out == ["A", "B"]

    async def main():
        await asyncio.sleep(0)
        return "usable"

    assert loop.run_until_complete(main()) == "usable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_timer_propagates(loop, exc_type):
    loop.call_later(0.001, _raise, exc_type)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "usable")) == "usable"


def test_keyboard_interrupt_in_task_propagates_out_of_run_until_complete(loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    assert loop.run_until_complete(asyncio.sleep(0.001, "again")) == "again"


# ----------------------------------------------------------------------------------------------
# Ctrl-C while the loop is blocked waiting
# ----------------------------------------------------------------------------------------------


KILL_FROM_THREAD = "os.kill from a thread"
RAISE_FROM_TIMER = "raise_signal from a loop timer"


def _kill_from_thread(delay=0.2):
    timer = threading.Timer(delay, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("how", [KILL_FROM_THREAD, RAISE_FROM_TIMER])
def test_ctrl_c_interrupts_runner_blocked_in_sleep(loop_factory, default_sigint, how):
    async def main():
        if how == RAISE_FROM_TIMER:
            asyncio.get_running_loop().call_later(0.2, signal.raise_signal, signal.SIGINT)
        await asyncio.sleep(10)

    timer = _kill_from_thread() if how == KILL_FROM_THREAD else None
    start = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(main())
    elapsed = time.monotonic() - start
    if timer:
        timer.join()
    assert elapsed < 3.0, f"KeyboardInterrupt came after {elapsed:.1f}s"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("how", [KILL_FROM_THREAD, RAISE_FROM_TIMER])
def test_ctrl_c_interrupts_run_forever(loop, default_sigint, how):
    guard = loop.call_later(10, loop.stop)
    if how == KILL_FROM_THREAD:
        timer = _kill_from_thread()
    else:
        timer = None
        loop.call_later(0.2, signal.raise_signal, signal.SIGINT)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    elapsed = time.monotonic() - start
    if timer:
        timer.join()
    guard.cancel()
    assert elapsed < 3.0, f"KeyboardInterrupt came after {elapsed:.1f}s"
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "usable")) == "usable"


# ----------------------------------------------------------------------------------------------
# Unix signals
# ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset_user_signals():
    """A loop that fails to clean up must not leak its signal handlers into the next test."""
    yield
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(sig) != signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)


@pytest.mark.uvloop_xfail("uvloop's remove_signal_handler returns False once the loop stopped")
def test_add_signal_handler_delivers_on_loop_thread(loop):
    got = []

    def handler(*args):
        got.append((args, threading.get_ident()))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 1)
    guard = loop.call_later(5, loop.stop)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    guard.cancel()
    assert got == [(("a", 1), threading.get_ident())]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.uvloop_xfail("uvloop's remove_signal_handler returns False once the loop stopped")
def test_signal_from_another_thread_wakes_blocked_loop(loop):
    got = []

    def handler():
        got.append(time.monotonic())
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR2, handler)
    guard = loop.call_later(10, loop.stop)
    timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGUSR2))
    start = time.monotonic()
    timer.start()
    loop.run_forever()
    timer.join()
    guard.cancel()
    assert len(got) == 1 and got[0] - start < 2.0
    assert loop.remove_signal_handler(signal.SIGUSR2) is True


@pytest.mark.uvloop_xfail("uvloop's remove_signal_handler returns False once the loop stopped")
def test_add_signal_handler_replaces_previous(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "new")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    run_until(loop, lambda: got)
    assert got == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


@pytest.mark.uvloop_xfail("uvloop's close() leaves its signal handler installed")
def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, module_level_callback)
    assert signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_signal_handler_never_added(loop):
    assert loop.remove_signal_handler(signal.SIGUSR2) is False
    assert loop.remove_signal_handler(signal.SIGKILL) is False


def test_signal_handler_bad_signals(loop):
    with pytest.raises(TypeError) as info:
        loop.add_signal_handler("SIGUSR1", module_level_callback)
    assert str(info.value) == "sig must be an int, not 'SIGUSR1'"
    with pytest.raises(TypeError) as info:
        loop.remove_signal_handler(1.5)
    assert str(info.value) == "sig must be an int, not 1.5"
    for sig in (signal.SIGKILL, signal.SIGSTOP):
        with pytest.raises(RuntimeError) as info:
            loop.add_signal_handler(sig, module_level_callback)
        assert str(info.value) == f"sig {int(sig)} cannot be caught"

    async def coro_fn():
        pass

    with pytest.raises(TypeError) as info:
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    assert str(info.value) == "coroutines cannot be used with add_signal_handler()"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.uvloop_xfail("uvloop says 'sig N out of range(1, 65)'")
@pytest.mark.parametrize("sig", [0, -1, 200])
def test_signal_handler_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError) as info:
        loop.add_signal_handler(sig, module_level_callback)
    assert str(info.value) == f"invalid signal number {sig}"
    with pytest.raises(ValueError) as info:
        loop.remove_signal_handler(sig)
    assert str(info.value) == f"invalid signal number {sig}"


# ----------------------------------------------------------------------------------------------
# Debug mode
# ----------------------------------------------------------------------------------------------


def test_set_debug(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.uvloop_xfail("uvloop's Handle repr has no arguments nor source")
def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        h = loop.call_soon(slow_callback)
        run_once(loop)
    records = [r for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(records) == 1
    msg = records[0].getMessage()
    prefix = f"Executing {h!r} took "
    assert msg.startswith(prefix), msg
    assert repr(h).startswith("<Handle slow_callback() at ")
    seconds = msg[len(prefix):]
    assert seconds.endswith(" seconds")
    value = seconds[: -len(" seconds")]
    assert len(value.split(".")[1]) == 3  # '%.3f'
    assert float(value) >= 0.1


def test_slow_task_step_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def slow():
        time.sleep(0.12)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(loop.create_task(slow(), name="slowtask"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(msgs) == 1
    assert msgs[0].startswith("Executing <Task ") and "name='slowtask'" in msgs[0]
    assert msgs[0].endswith(" seconds")


def test_fast_callbacks_are_not_reported(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(module_level_callback)
        run_once(loop)
    assert [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_wrong_thread_raises(loop, method):
    loop.set_debug(True)
    errors = []

    def from_thread():
        try:
            if method == "call_soon":
                h = loop.call_soon(module_level_callback)
            elif method == "call_later":
                h = loop.call_later(1, module_level_callback)
            else:
                h = loop.call_at(loop.time() + 1, module_level_callback)
            h.cancel()
            errors.append(None)
        except RuntimeError as e:
            errors.append(str(e))

    def on_loop():
        t = threading.Thread(target=from_thread)
        t.start()
        t.join()

    loop.call_soon(on_loop)
    run_once(loop)
    assert errors == ["Non-thread-safe operation invoked on an event loop other than the current one"]


def test_debug_threadsafe_from_other_thread_is_fine(loop):
    loop.set_debug(True)
    got = []
    t = threading.Thread(target=loop.call_soon_threadsafe, args=(got.append, "ok"))
    t.start()
    t.join()
    run_once(loop)
    assert got == ["ok"]


def test_no_debug_wrong_thread_does_not_raise(loop):
    errors = []

    def from_thread():
        try:
            loop.call_soon(module_level_callback).cancel()
            errors.append(None)
        except RuntimeError as e:  # pragma: no cover - the failure case
            errors.append(str(e))

    def on_loop():
        t = threading.Thread(target=from_thread)
        t.start()
        t.join()

    loop.call_soon(on_loop)
    run_once(loop)
    assert errors == [None]
