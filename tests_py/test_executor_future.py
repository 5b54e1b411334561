"""turboloop's executor future (native lock, state and methods) against concurrent.futures.Future.

Every behaviour test runs on both classes and expects the same outcome; CPython's own FutureTests
also run on turboloop's class (test_executor_conformance.py).
"""

from __future__ import annotations

import gc
import logging
import pickle
import signal
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, InvalidStateError, as_completed, wait

import pytest

import turboloop
from turboloop._executor import Future as TLFuture
from turboloop._turboloop import FutureCondition


@pytest.fixture(params=["stdlib", "turboloop"])
def make(request):
    return Future if request.param == "stdlib" else TLFuture


def outcome(call):
    """(kind, value): what calling `call` gives, comparable across the two classes."""
    try:
        return ("returned", call())
    except BaseException as exc:  # noqa: BLE001 - the comparison is the point
        return ("raised", type(exc), str(exc))


def test_is_a_concurrent_futures_future_and_generic():
    future = TLFuture()
    assert isinstance(future, Future)
    assert TLFuture[int] is not None
    assert isinstance(future._condition, FutureCondition)
    assert turboloop.ThreadPoolExecutor(1).submit(int).result() == 0


def test_states_and_reprs_match_the_stdlib():
    def story(cls):
        f = cls()
        seen = [f._state, f.running(), f.done(), f.cancelled(), repr(f).split(" at ")[1].split(" ", 1)[1]]
        seen.append(f.set_running_or_notify_cancel())
        seen += [f._state, f.running(), f.cancel()]
        f.set_result((1, 2))
        seen += [f._state, f.done(), f.result(), f.exception(), repr(f).split(" ", 3)[3]]
        seen.append(outcome(lambda: f.set_result(3))[:2])
        seen.append(outcome(lambda: f.set_exception(ValueError()))[:2])
        g = cls()
        seen += [g.cancel(), g._state, g.cancel(), g.set_running_or_notify_cancel(), g._state]
        seen += [outcome(g.result), outcome(g.exception), repr(g).split(" ", 3)[3]]
        h = cls()
        h.set_exception(KeyError("k"))
        seen += [outcome(h.result), repr(h.exception()), repr(h).split(" ", 3)[3]]
        return seen

    assert story(TLFuture) == story(Future)


def test_invalid_state_error_message():
    for cls in (Future, TLFuture):
        f = cls()
        f.set_result(1)
        with pytest.raises(InvalidStateError) as info:
            f.set_result(2)
        assert str(info.value) == f"FINISHED: {f!r}"


def test_result_timeouts_match_the_stdlib(make):
    def outcomes(cls):
        seen = []
        for timeout in (0, -1, 0.01, float("nan"), "x", 1e300):
            f = cls()
            seen.append(outcome(lambda: f.result(timeout))[:2])
            seen.append(outcome(lambda: f.exception(timeout=timeout))[:2])
        return seen

    assert outcomes(make) == outcomes(Future)
    # A finished future never looks at the timeout, even a bad one.
    f = make()
    f.set_result(5)
    assert f.result("not a number") == 5


def test_bad_arguments(make):
    with pytest.raises(TypeError):
        make(1)
    with pytest.raises(TypeError):
        make(x=1)
    f = make()
    with pytest.raises(TypeError):
        f.result(1, 2)
    with pytest.raises(TypeError):
        f.result(timeot=1)
    with pytest.raises(TypeError):
        f.add_done_callback()


def test_odd_exceptions_raise_as_the_stdlib_does():
    def raised(cls, value):
        f = cls()
        f.set_exception(value)
        return outcome(f.result)[:2]

    for value in (ValueError, "not an exception", 0):
        assert raised(TLFuture, value) == raised(Future, value)


def test_done_callbacks_order_errors_and_late_additions(make, caplog):
    calls = []
    f = make()

    def first(fut):
        calls.append("first")
        fut.add_done_callback(lambda _: calls.append("added while done"))

    def failing(fut):
        calls.append("failing")
        raise RuntimeError("callback failed")

    f.add_done_callback(first)
    f.add_done_callback(failing)
    f.add_done_callback(lambda fut: calls.append(("last", fut.result())))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(7)
    assert calls == ["first", "added while done", "failing", ("last", 7)]
    [record] = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert record.getMessage() == f"exception calling callback for {f!r}"
    assert record.exc_info[0] is RuntimeError and str(record.exc_info[1]) == "callback failed"


def test_base_exceptions_from_callbacks_propagate(make):
    f = make()
    f.set_result(1)

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f.add_done_callback(interrupt)
    g = make()
    g.add_done_callback(interrupt)
    with pytest.raises(KeyboardInterrupt):
        g.cancel()
    assert g.cancelled()


def test_private_attributes_read_and_write(make):
    f = make()
    f._state = "RUNNING"
    f._result = "r"
    assert (f.running(), f._result, f._exception, f._waiters, f._done_callbacks) == (True, "r", None, [], [])
    f._state = "FINISHED"
    assert f.result() == "r"


def test_turboloop_rejects_unknown_states_and_other_conditions():
    f = TLFuture()
    with pytest.raises(ValueError):
        f._state = "SLEEPING"
    with pytest.raises(AttributeError):
        f._condition = threading.Condition()
    assert f._condition is f._condition  # one view while it lives
    assert not f.done()


def test_a_condition_outliving_its_future_still_works():
    f = TLFuture()
    condition = f._condition
    ref = weakref.ref(f)
    del f
    assert ref() is not None  # the condition holds its future
    with condition:
        condition.notify_all()
    del condition
    gc.collect()
    assert ref() is None


def test_unexpected_state_is_logged_and_raises(make, caplog):
    f = make()
    f.set_running_or_notify_cancel()
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        with pytest.raises(RuntimeError, match="Future in unexpected state"):
            f.set_running_or_notify_cancel()
    assert [r.getMessage() for r in caplog.records] == [f"Future {id(f)} in unexpected state: RUNNING"]


def test_condition_errors_match_threading():
    def errors(condition):
        return [
            outcome(condition.release)[:3],
            outcome(condition.wait)[:3],
            outcome(condition.notify)[:3],
            outcome(condition.notify_all)[:3],
            outcome(lambda: condition.acquire(False, 1))[:3],
            outcome(lambda: condition.acquire(timeout=-2))[:3],
            outcome(lambda: condition.acquire(timeout=float("nan")))[:3],
        ]

    assert errors(TLFuture()._condition) == errors(threading.Condition())


def test_condition_is_reentrant_and_exclusive():
    condition = TLFuture()._condition
    with condition:
        with condition:
            assert condition.acquire(False)
            condition.release()
        other = []
        thread = threading.Thread(target=lambda: other.append(condition.acquire(timeout=0.05)))
        thread.start()
        thread.join()
        assert other == [False]
    thread = threading.Thread(target=lambda: other.append(condition.acquire(False)))
    thread.start()
    thread.join()
    assert other == [False, True]
    assert condition.acquire(timeout=0.05) is False  # the other thread still holds it


def test_set_result_waits_for_a_holder_of_the_lock():
    f = TLFuture()
    order = []
    with f._condition:
        setter = threading.Thread(target=lambda: (f.set_result(1), order.append("set")))
        setter.start()
        setter.join(0.1)
        assert setter.is_alive() and not f.done()
        order.append("released")
    setter.join()
    assert order == ["released", "set"] and f.result() == 1


def test_condition_wait_and_notify_between_threads():
    condition = TLFuture()._condition
    woken = []

    def waiter(name):
        with condition:
            woken.append((name, condition.wait(5)))

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while "3 waiting" not in repr(condition) and time.monotonic() < deadline:
        time.sleep(0.001)
    with condition:
        condition.notify()
    threads[0].join(0.05)
    with condition:
        assert condition.wait(0.01) is False
        condition.notify(5)
    for thread in threads:
        thread.join()
    assert sorted(n for n, _ in woken) == [0, 1, 2] and all(got for _, got in woken)


def test_many_threads_waiting_on_one_result():
    f = TLFuture()
    results = []
    threads = [threading.Thread(target=lambda: results.append(f.result(10))) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    f.set_result("done")
    for thread in threads:
        thread.join()
    assert results == ["done"] * 8


def test_wait_and_as_completed_mix_both_classes():
    futures = [Future(), TLFuture(), TLFuture(), Future()]

    def finish_later():
        time.sleep(0.05)
        futures[2].set_result(2)
        time.sleep(0.05)
        for i in (0, 1, 3):
            futures[i].set_result(i)

    thread = threading.Thread(target=finish_later)
    thread.start()
    done, not_done = wait(futures, timeout=5, return_when=FIRST_COMPLETED)
    assert done == {futures[2]} and len(not_done) == 3
    assert sorted(f.result() for f in as_completed(futures, timeout=5)) == [0, 1, 2, 3]
    thread.join()
    assert all(f._waiters == [] for f in futures)


def test_wait_sees_a_cancellation_by_the_worker():
    with turboloop.ThreadPoolExecutor(max_workers=1) as executor:
        gate = threading.Event()
        executor.submit(gate.wait)
        queued = executor.submit(int)
        assert queued.cancel()
        gate.set()
        done, _ = wait([queued], timeout=5)
        assert done == {queued} and queued._state == "CANCELLED_AND_NOTIFIED"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_signal_handler_interrupts_result_and_leaves_the_lock_free():
    f = TLFuture()

    def raise_interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            f.result()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert f._condition.acquire(False)
    f._condition.release()
    assert "0 waiting" in repr(f._condition)
    f.set_result(1)
    assert f.result() == 1


def test_a_future_in_a_cycle_is_collected():
    f = TLFuture()
    f.set_result(f)
    f.add_done_callback(lambda _: f)
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None


def test_pickling_fails_as_for_the_stdlib(make):
    with pytest.raises(TypeError):
        pickle.dumps(make())


def test_exceptions_keep_the_workers_traceback():
    def fails():
        raise ValueError("from the worker")

    with turboloop.ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(fails)
        with pytest.raises(ValueError) as info:
            future.result()
    assert any(entry.name == "fails" for entry in info.traceback)
