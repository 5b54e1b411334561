"""turboloop.ThreadPoolExecutor: a drop-in for concurrent.futures.ThreadPoolExecutor.

Every behaviour that must match the stdlib runs against both pools (``executor_cls`` is
parametrised ``stdlib``/``turboloop``); turboloop-only features (elastic sizing, the native
run_in_executor path, the runner) and the stress tests run on turboloop's pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
import weakref
from collections import Counter
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, as_completed, wait
from concurrent.futures.thread import BrokenThreadPool

import pytest

import turboloop
from turboloop._executor import Future as TLFuture

TL = turboloop.ThreadPoolExecutor
# The stdlib class itself, even if some test in this process routed concurrent.futures'
# name to turboloop's (as `python -m turboloop` does).
STDLIB = next(c for c in TL.__mro__[1:] if c.__name__ == "ThreadPoolExecutor")
assert STDLIB.__module__ == "concurrent.futures.thread"

TIMEOUT = 10.0  # seconds: an upper bound on anything that should be immediate
DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


@pytest.fixture(params=["stdlib", "turboloop"])
def executor_cls(request):
    return STDLIB if request.param == "stdlib" else TL


@pytest.fixture
def make(executor_cls):
    """make(*args, **kwargs) -> a new executor of the class under test, shut down at teardown."""
    made = []

    def factory(*args, **kwargs):
        executor = executor_cls(*args, **kwargs)
        made.append(executor)
        return executor

    factory.cls = executor_cls  # type: ignore[attr-defined]
    yield factory
    for executor in made:
        executor.shutdown(wait=True)


@pytest.fixture
def make_tl():
    made = []

    def factory(*args, **kwargs):
        executor = TL(*args, **kwargs)
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        executor.shutdown(wait=True)


def wait_until(predicate, timeout=TIMEOUT, interval=0.005):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def run_python(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(executor) -> list[threading.Thread]:
    return [t for t in executor._threads if t.is_alive()]


# ----------------------------------------------------------------------------------------------
# Construction, defaults, bad input
# ----------------------------------------------------------------------------------------------


def test_is_a_concurrent_futures_executor():
    assert issubclass(TL, STDLIB)
    assert issubclass(TL, concurrent.futures.Executor)
    assert TL.__name__ == "ThreadPoolExecutor"


def test_default_max_workers(make):
    assert make()._max_workers == DEFAULT_MAX_WORKERS
    assert make(3)._max_workers == 3
    assert make(max_workers=None)._max_workers == DEFAULT_MAX_WORKERS


@pytest.mark.parametrize("number", [0, -1])
def test_max_workers_not_positive(executor_cls, number):
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        executor_cls(max_workers=number)


def test_max_workers_str_is_a_type_error(executor_cls):
    with pytest.raises(TypeError):
        executor_cls(max_workers="3")


@pytest.mark.parametrize(
    "executor_cls",
    [STDLIB, TL],
    ids=["stdlib", "turboloop"],
)
def test_max_workers_float_accepted(executor_cls):
    executor = executor_cls(max_workers=2.5)
    try:
        assert executor.submit(abs, -2).result(timeout=TIMEOUT) == 2
    finally:
        executor.shutdown()


@pytest.mark.parametrize(
    "executor_cls",
    [STDLIB, TL],
    ids=["stdlib", "turboloop"],
)
def test_max_workers_huge_accepted(executor_cls):
    executor = executor_cls(max_workers=10**20)
    try:
        assert executor.submit(abs, -2).result(timeout=TIMEOUT) == 2
    finally:
        executor.shutdown()


def test_initializer_not_callable(executor_cls):
    with pytest.raises(TypeError, match=r"^initializer must be a callable$"):
        executor_cls(initializer=42)


def test_submit_non_callable_fails_in_the_future(make):
    executor = make(2)
    future = executor.submit(42)
    assert isinstance(future, Future)
    error = future.exception(timeout=TIMEOUT)
    assert type(error) is TypeError
    assert str(error) == "'int' object is not callable"


def test_submit_without_fn(make):
    executor = make(2)
    with pytest.raises(TypeError):
        executor.submit()
    with pytest.raises(TypeError):
        executor.submit(fn=abs)


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------


def test_thread_names_and_visibility(make):
    executor = make(3, thread_name_prefix="pool")
    barrier = threading.Barrier(4)
    seen = []

    def task():
        seen.append(threading.current_thread())
        return barrier.wait(TIMEOUT)

    futures = [executor.submit(task) for _ in range(3)]
    barrier.wait(TIMEOUT)
    wait(futures, timeout=TIMEOUT)
    threads = set(executor._threads)
    assert sorted(t.name for t in threads) == ["pool_0", "pool_1", "pool_2"]
    assert set(seen) == threads  # the task ran on the very Thread objects the executor lists
    enumerated = set(threading.enumerate())
    for thread in threads:
        assert type(thread) is threading.Thread
        assert thread in enumerated
        assert not thread.daemon
        assert thread.is_alive()
        assert thread.ident is not None and thread.native_id is not None
    executor.shutdown(wait=True)
    enumerated = set(threading.enumerate())
    for thread in threads:
        assert not thread.is_alive()
        assert thread not in enumerated


def test_default_thread_name_prefix(make):
    first, second = make(2), make(2)
    name1 = first.submit(lambda: threading.current_thread().name).result(timeout=TIMEOUT)
    name2 = second.submit(lambda: threading.current_thread().name).result(timeout=TIMEOUT)
    assert re.fullmatch(r"ThreadPoolExecutor-\d+_0", name1), name1
    assert re.fullmatch(r"ThreadPoolExecutor-\d+_0", name2), name2
    assert name1 != name2


def test_threads_start_on_demand_up_to_max_workers(make):
    executor = make(4)
    assert len(executor._threads) == 0
    release = threading.Event()
    futures = [executor.submit(release.wait, TIMEOUT) for _ in range(40)]
    assert wait_until(lambda: len(executor._threads) == 4)
    time.sleep(0.05)
    assert len(executor._threads) == 4
    release.set()
    assert all(f.result(timeout=TIMEOUT) is True for f in futures)
    assert len(executor._threads) == 4


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_idle_thread_reuse(impl):
    cls = STDLIB if impl == "stdlib" else TL
    grown = 0
    for _ in range(200):
        executor = cls()
        try:
            for i in range(20):
                assert executor.submit(abs, -i).result(timeout=TIMEOUT) == i
            grown += len(executor._threads) != 1
        finally:
            executor.shutdown()
    assert grown == 0, f"{grown} of 200 pools started a 2nd worker for sequential submit/result"


# ----------------------------------------------------------------------------------------------
# submit, map, as_completed, wait
# ----------------------------------------------------------------------------------------------


def test_submit_result_args_kwargs(make):
    executor = make(4)
    assert executor.submit(pow, 2, 10).result(timeout=TIMEOUT) == 1024
    assert executor.submit(int, "ff", base=16).result(timeout=TIMEOUT) == 255
    assert executor.submit(dict, a=1, b=2).result(timeout=TIMEOUT) == {"a": 1, "b": 2}
    sentinel = object()
    assert executor.submit(lambda: sentinel).result(timeout=TIMEOUT) is sentinel
    assert executor.submit(lambda: None).result(timeout=TIMEOUT) is None


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tuple_result(impl):
    executor = (STDLIB if impl == "stdlib" else TL)(2)
    try:
        assert executor.submit(divmod, 7, 2).result(timeout=2) == (3, 1)
        assert executor.submit(tuple).result(timeout=2) == ()
        assert executor.submit(lambda: (1,)).result(timeout=2) == (1,)
        assert list(executor.map(divmod, [7, 9], [2, 4], timeout=2)) == [(3, 1), (2, 1)]
    finally:
        executor.shutdown()


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_submit_kwargs_named_self_and_fn(impl):
    executor = (STDLIB if impl == "stdlib" else TL)(2)

    def capture(*args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    try:
        result = executor.submit(capture, 1, self=2, fn=3).result(timeout=TIMEOUT)
        assert result == {"args": [1], "kwargs": {"self": 2, "fn": 3}}
    finally:
        executor.shutdown()


def test_map(make):
    executor = make(4)
    assert list(executor.map(abs, range(-50, 50))) == [abs(i) for i in range(-50, 50)]
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == [i**i for i in range(10)]
    assert list(executor.map(abs, [])) == []
    assert list(executor.map(lambda x, y: x + y, "abc", "xyz", timeout=TIMEOUT)) == ["ax", "by", "cz"]


def test_map_exception_and_order(make):
    executor = make(4)

    def f(x):
        time.sleep(0.001 * (10 - x))
        if x == 5:
            raise KeyError(x)
        return x * 2

    results = executor.map(f, range(10))
    assert [next(results) for _ in range(5)] == [0, 2, 4, 6, 8]
    with pytest.raises(KeyError):
        next(results)


def test_map_timeout(make):
    executor = make(2)
    release = threading.Event()
    results = executor.map(release.wait, [0, TIMEOUT], timeout=0.2)
    assert next(results) is False
    with pytest.raises(TimeoutError):
        next(results)
    release.set()


def test_map_tuple_results_and_zip(make):
    executor = make(2)
    assert list(executor.map(divmod, [7, 9, 11], [2, 4])) == [(3, 1), (2, 1)]
    assert list(executor.map(lambda: 1)) == []


def test_map_runs_without_iteration(make):
    executor = make(2)
    ran = []
    results = executor.map(ran.append, range(20))
    del results
    executor.shutdown(wait=True)
    assert sorted(ran) == list(range(20))


def test_map_closed_early_cancels_the_rest(make):
    executor = make(1)
    release, ran = threading.Event(), []

    def record(x):
        if x == 0:
            release.wait(TIMEOUT)
        ran.append(x)
        return x

    results = executor.map(record, range(5), timeout=0.1)
    with pytest.raises(TimeoutError):
        next(results)  # the generator is finished: what had not started is cancelled
    release.set()
    executor.shutdown(wait=True)
    assert ran == [0]
    executor_two = make(1)
    release.clear()
    results = executor_two.map(record, range(5))
    time.sleep(0.05)
    results.close()  # never started: nothing is cancelled, everything runs
    release.set()
    executor_two.shutdown(wait=True)
    assert sorted(ran) == [0, 0, 1, 2, 3, 4]


def test_map_with_cancel_futures(make):
    executor = make(1)
    release = threading.Event()
    results = executor.map(release.wait, [TIMEOUT] * 4)
    assert wait_until(lambda: len(executor._threads) == 1)
    time.sleep(0.05)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert next(results) is True
    with pytest.raises(concurrent.futures.CancelledError):
        next(results)


def test_map_on_a_broken_pool(make, caplog):
    def init_fail():
        time.sleep(0.1)
        raise ValueError("no")

    executor = make(1, initializer=init_fail)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        results = executor.map(abs, [1, 2, 3])
        with pytest.raises(BrokenThreadPool):
            next(results)
        assert wait_until(lambda: executor._broken)
        with pytest.raises(BrokenThreadPool):
            executor.map(abs, [1])


def test_map_exception_keeps_traceback(make):
    executor = make(2)

    def boom(x):
        raise KeyError(x)

    with pytest.raises(KeyError) as info:
        list(executor.map(boom, [1]))
    assert "boom" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_map_iterable_raising_part_way(impl):
    executor = (STDLIB if impl == "stdlib" else TL)(2)
    ran = []

    def items():
        yield 1
        yield 2
        raise ValueError("iterable broke")

    try:
        with pytest.raises(ValueError, match="iterable broke"):
            executor.map(ran.append, items())
    finally:
        executor.shutdown(wait=True)
    assert sorted(ran) == [1, 2]


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_map_wait_is_interruptible(impl):
    proc = run_python(
        f"""
        import signal, threading, time
        {IMPORTS[impl]}
        pool = ThreadPoolExecutor(1)
        release = threading.Event()
        def on_alarm(*args):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.monotonic()
        try:
            list(pool.map(release.wait, [5]))
        except KeyboardInterrupt:
            print(round(time.monotonic() - start, 1))
        release.set()
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 2.0, f"KeyboardInterrupt after {proc.stdout.strip()} s"


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_subclass_submit_override_is_used(impl):
    calls = []

    class Recording(STDLIB if impl == "stdlib" else TL):
        def submit(self, fn, /, *args, **kwargs):
            calls.append(fn)
            return super().submit(fn, *args, **kwargs)

    executor = Recording(2)
    try:
        assert executor.submit(abs, -1).result(timeout=TIMEOUT) == 1
        assert list(executor.map(abs, [-2, -3])) == [2, 3]
    finally:
        executor.shutdown()
    assert calls == [abs, abs, abs]


def test_as_completed_and_wait(make):
    executor = make(4)
    slow_release = threading.Event()
    fast = executor.submit(abs, -1)
    slow = executor.submit(slow_release.wait, TIMEOUT)
    done, not_done = wait([fast, slow], timeout=TIMEOUT, return_when=FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    done, not_done = wait([fast, slow], timeout=0.05)
    assert done == {fast} and not_done == {slow}
    slow_release.set()
    done, not_done = wait([fast, slow], timeout=TIMEOUT, return_when=ALL_COMPLETED)
    assert done == {fast, slow} and not not_done

    futures = [executor.submit(time.sleep, 0.001 * (i % 5)) for i in range(100)]
    seen = list(as_completed(futures, timeout=TIMEOUT))
    assert len(seen) == 100 and set(seen) == set(futures)


def test_exception_keeps_traceback(make):
    executor = make(2)

    def inner():
        raise ValueError("boom")

    def outer():
        try:
            inner()
        except ValueError as error:
            raise RuntimeError("wrapped") from error

    future = executor.submit(outer)
    error = future.exception(timeout=TIMEOUT)
    assert type(error) is RuntimeError and error.args == ("wrapped",)
    names = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "outer" in names
    cause = error.__cause__
    assert type(cause) is ValueError
    assert "inner" in [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    with pytest.raises(RuntimeError, match="wrapped") as info:
        future.result()
    assert "outer" in [entry.name for entry in info.traceback]


def test_base_exceptions_go_to_the_future(make):
    executor = make(2)

    def raise_(error):
        raise error

    for error in (KeyboardInterrupt(), SystemExit(3), GeneratorExit()):
        future = executor.submit(raise_, error)
        assert future.exception(timeout=TIMEOUT) is error
    # The pool still works.
    assert executor.submit(abs, -3).result(timeout=TIMEOUT) == 3


def test_cancel_before_start(make):
    executor = make(1)
    release = threading.Event()
    started = threading.Event()
    ran = []

    def block():
        started.set()
        release.wait(TIMEOUT)

    first = executor.submit(block)
    assert started.wait(TIMEOUT)
    second = executor.submit(ran.append, "second")
    third = executor.submit(ran.append, "third")
    callbacks = []
    second.add_done_callback(callbacks.append)
    assert first.running() and not first.cancel()
    assert second.cancel() and second.cancelled()
    assert callbacks == [second]
    release.set()
    assert third.result(timeout=TIMEOUT) is None
    assert first.result(timeout=TIMEOUT) is None
    executor.shutdown(wait=True)
    assert ran == ["third"]
    with pytest.raises(concurrent.futures.CancelledError):
        second.result()


def test_future_running_state(make):
    executor = make(1)
    release = threading.Event()
    started = threading.Event()

    def block():
        started.set()
        release.wait(TIMEOUT)
        return "ok"

    future = executor.submit(block)
    assert started.wait(TIMEOUT)
    assert future.running() and not future.done()
    assert "state=running" in repr(future)
    release.set()
    assert future.result(timeout=TIMEOUT) == "ok"
    assert "state=finished returned str" in repr(future)


class Thing:
    pass


def test_no_reference_kept_to_arguments_and_results(make):
    executor = make(2)
    arg = Thing()
    arg_ref = weakref.ref(arg)
    future = executor.submit(lambda thing: thing, arg)
    assert future.result(timeout=TIMEOUT) is arg
    del arg, future
    assert wait_until(lambda: arg_ref() is None)
    made = executor.submit(Thing)
    made_ref = weakref.ref(made.result(timeout=TIMEOUT))
    del made
    assert wait_until(lambda: made_ref() is None)


# ----------------------------------------------------------------------------------------------
# shutdown, context manager, broken pool
# ----------------------------------------------------------------------------------------------


def test_submit_after_shutdown(make):
    executor = make(2)
    executor.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.submit(abs, 1)
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.map(abs, [1])
    executor.shutdown()  # twice is fine


def test_shutdown_wait_false_returns_at_once(make):
    executor = make(2)
    release = threading.Event()
    futures = [executor.submit(release.wait, TIMEOUT) for _ in range(2)]
    queued = [executor.submit(abs, -i) for i in range(10)]
    start = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - start < 1.0
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)
    release.set()
    # Already-queued work still runs.
    assert [f.result(timeout=TIMEOUT) for f in queued] == list(range(10))
    assert all(f.result(timeout=TIMEOUT) is True for f in futures)
    for thread in list(executor._threads):
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_shutdown_wait_true_finishes_the_queue(make):
    executor = make(2)
    futures = [executor.submit(time.sleep, 0.01) for _ in range(20)]
    executor.shutdown(wait=True)
    assert all(f.done() and f.exception() is None for f in futures)
    assert not alive(executor)


@pytest.mark.parametrize("impl", ["stdlib", "turboloop"])
def test_shutdown_racing_a_starting_worker(impl):
    import random

    cls = STDLIB if impl == "stdlib" else TL
    problems = Counter()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(1500):
            executor = cls(4)
            accepted = []
            go = threading.Barrier(2)

            def submitter():
                go.wait()
                try:
                    accepted.append(executor.submit(abs, -1))
                except RuntimeError:
                    pass

            thread = threading.Thread(target=submitter)
            thread.start()
            go.wait()
            time.sleep(random.random() * 0.0003)
            try:
                executor.shutdown(wait=True)
            except RuntimeError as error:
                problems[str(error)] += 1
                thread.join()
                time.sleep(0.01)
                executor.shutdown(wait=True)
                continue
            thread.join()
            if accepted and not accepted[0].done():
                problems["accepted future not done after shutdown(wait=True)"] += 1
                accepted[0].result(timeout=TIMEOUT)
    finally:
        sys.setswitchinterval(interval)
    assert not problems, dict(problems)


def test_shutdown_cancel_futures(make):
    executor = make(1)
    release = threading.Event()
    started = threading.Event()

    def block():
        started.set()
        return release.wait(TIMEOUT)

    running = executor.submit(block)
    assert started.wait(TIMEOUT)
    pending = [executor.submit(abs, -i) for i in range(50)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    assert not running.cancelled()
    release.set()
    assert running.result(timeout=TIMEOUT) is True
    executor.shutdown(wait=True)
    assert not alive(executor)


def test_context_manager(make):
    with make(3) as executor:
        assert list(executor.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
        futures = [executor.submit(time.sleep, 0.01) for _ in range(6)]
    assert all(f.done() for f in futures)
    assert executor._threads and not alive(executor)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(abs, 1)


def test_broken_pool_from_failing_initializer(make, caplog):
    def init_fail():
        time.sleep(0.1)  # let some futures be queued
        raise ValueError("error in initializer")

    executor = make(2, initializer=init_fail)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        futures = [executor.submit(abs, -i) for i in range(5)]
        for future in futures:
            error = future.exception(timeout=TIMEOUT)
            assert type(error) is BrokenThreadPool
            assert str(error) == "A thread initializer failed, the thread pool is not usable anymore"
        assert wait_until(lambda: executor._broken)
        with pytest.raises(BrokenThreadPool, match="A thread initializer failed"):
            executor.submit(abs, 1)
    assert any("Exception in initializer" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)
    assert issubclass(BrokenThreadPool, concurrent.futures.BrokenExecutor)


def test_initializer_runs_on_every_worker(make):
    names = []
    lock = threading.Lock()

    def init(tag):
        with lock:
            names.append((tag, threading.current_thread().name))

    executor = make(3, thread_name_prefix="ini", initializer=init, initargs=("t",))
    barrier = threading.Barrier(4)
    futures = [executor.submit(barrier.wait, TIMEOUT) for _ in range(3)]
    barrier.wait(TIMEOUT)
    wait(futures, timeout=TIMEOUT)
    assert sorted(names) == [("t", "ini_0"), ("t", "ini_1"), ("t", "ini_2")]


# ----------------------------------------------------------------------------------------------
# asyncio
# ----------------------------------------------------------------------------------------------

LOOP_FACTORIES = {
    "asyncio": lambda: asyncio.SelectorEventLoop(),
    "turboloop": turboloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def loop_factory(request):
    return LOOP_FACTORIES[request.param]


def test_wrap_future(make, loop_factory):
    executor = make(2)

    async def main():
        assert await asyncio.wrap_future(executor.submit(pow, 3, 4)) == 81
        with pytest.raises(ZeroDivisionError):
            await asyncio.wrap_future(executor.submit(divmod, 1, 0))
        results = await asyncio.gather(*(asyncio.wrap_future(executor.submit(abs, -i)) for i in range(200)))
        assert results == list(range(200))
        release = threading.Event()
        blocked = asyncio.wrap_future(executor.submit(release.wait, TIMEOUT))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), 0.05)
        release.set()
        assert await blocked is True
        return "done"

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == "done"


def test_run_in_executor_explicit_executor(make, loop_factory):
    executor = make(2, thread_name_prefix="explicit")

    async def main():
        loop = asyncio.get_running_loop()
        name = await loop.run_in_executor(executor, lambda: threading.current_thread().name)
        assert name.startswith("explicit_")
        results = await asyncio.gather(*(loop.run_in_executor(executor, abs, -i) for i in range(300)))
        assert results == list(range(300))

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def test_turboloop_default_executor_is_turboloops(monkeypatch):
    created = Counter()

    def counting(original_init):
        def counting_init(self, *args, **kwargs):
            created["futures"] += 1
            original_init(self, *args, **kwargs)

        return counting_init

    async def main():
        loop = asyncio.get_running_loop()
        names = await asyncio.gather(
            *(loop.run_in_executor(None, lambda: threading.current_thread().name) for _ in range(100))
        )
        assert all(name.startswith("asyncio_") for name in names), set(names)
        assert type(loop._default_executor) is TL
        assert all(t.name.startswith("asyncio_") for t in loop._default_executor._threads)
        assert await loop.run_in_executor(None, pow, 2, 5) == 32

    with asyncio.Runner(loop_factory=turboloop.new_event_loop) as runner:
        for cls in (Future, TLFuture):
            monkeypatch.setattr(cls, "__init__", counting(cls.__init__))
        runner.run(main())
        monkeypatch.undo()
    # The outcome went straight to the asyncio future: no concurrent.futures.Future at all.
    assert created["futures"] == 0
    # (The counting does count turboloop's futures.)
    monkeypatch.setattr(TLFuture, "__init__", counting(TLFuture.__init__))
    with TL(max_workers=1) as executor:
        executor.submit(int).result()
    assert created["futures"] == 1


def test_run_in_executor_cancelled_before_start(loop_factory):
    ran = []

    async def main():
        loop = asyncio.get_running_loop()
        executor = TL(max_workers=1, thread_name_prefix="single")
        loop.set_default_executor(executor)
        release, started = threading.Event(), threading.Event()

        def block():
            started.set()
            return release.wait(TIMEOUT)

        blocker = loop.run_in_executor(None, block)
        for _ in range(1000):
            if started.is_set():
                break
            await asyncio.sleep(0.005)
        assert started.is_set()
        victim = loop.run_in_executor(None, ran.append, "default")
        explicit = TL(max_workers=1)
        explicit_blocker = loop.run_in_executor(explicit, release.wait, TIMEOUT)
        explicit_victim = loop.run_in_executor(explicit, ran.append, "explicit")
        await asyncio.sleep(0.01)
        assert victim.cancel() and explicit_victim.cancel()
        # asyncio hands the cancellation to a concurrent Future in a done callback, one loop
        # iteration later: let it run before the worker is free.
        await asyncio.sleep(0.01)
        release.set()
        assert await blocker is True and await explicit_blocker is True
        assert await loop.run_in_executor(None, abs, -1) == 1
        assert await loop.run_in_executor(explicit, abs, -2) == 2
        with pytest.raises(asyncio.CancelledError):
            await victim
        explicit.shutdown(wait=True)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert ran == []


class CustomError(Exception):
    pass


def _raiser(error):
    def raise_in_thread():
        raise error

    return raise_in_thread


EXCEPTIONS = [
    ValueError("v"),
    CustomError("c"),
    OSError(2, "missing"),
    concurrent.futures.CancelledError(),
    concurrent.futures.InvalidStateError("s"),
    TimeoutError("t"),
    KeyboardInterrupt(),
    SystemExit(2),
]


def _outcome_of_run_in_executor(factory, error, executor_kind):
    async def main():
        loop = asyncio.get_running_loop()
        executor = None if executor_kind == "default" else TL(2)
        try:
            await loop.run_in_executor(executor, _raiser(error))
        except BaseException as caught:
            frames = [frame.name for frame in traceback.extract_tb(caught.__traceback__)]
            return type(caught), caught.args, "raise_in_thread" in frames
        finally:
            if executor is not None:
                executor.shutdown()
        return None

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@pytest.mark.parametrize("executor_kind", ["default", "explicit"])
@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_run_in_executor_exceptions_as_on_asyncio(error, executor_kind):
    expected = _outcome_of_run_in_executor(LOOP_FACTORIES["asyncio"], error, executor_kind)
    got = _outcome_of_run_in_executor(LOOP_FACTORIES["turboloop"], error, executor_kind)
    assert got[:2] == expected[:2]
    translated = {
        concurrent.futures.CancelledError: asyncio.CancelledError,
        concurrent.futures.InvalidStateError: asyncio.InvalidStateError,
    }
    assert got[0] is translated.get(type(error), type(error))
    if type(error) not in (concurrent.futures.CancelledError, concurrent.futures.InvalidStateError, TimeoutError):
        # asyncio re-creates the three exceptions it translates; every other one keeps its
        # traceback through the thread.
        assert got[2] and expected[2]


def test_set_default_executor_no_warning(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        executor = TL(2, thread_name_prefix="mine")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loop.set_default_executor(executor)
        assert loop._default_executor is executor
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        assert name.startswith("mine_")
        assert await asyncio.to_thread(pow, 2, 3) == 8  # to_thread uses the default executor
        return executor

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        executor = runner.run(main())
    # The runner's shutdown_default_executor() shut it down and joined its workers.
    assert executor._shutdown and not alive(executor)


def test_shutdown_default_executor(loop_factory):
    loop = loop_factory()
    try:
        async def use():
            return await loop.run_in_executor(None, lambda: threading.current_thread())

        thread = loop.run_until_complete(use())
        executor = loop._default_executor
        assert isinstance(executor, STDLIB)
        loop.run_until_complete(loop.shutdown_default_executor())
        assert not thread.is_alive() and not alive(executor)
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_in_executor(None, abs, 1)
    finally:
        loop.close()


def test_loop_close_shuts_the_default_executor_down():
    loop = turboloop.new_event_loop()
    thread = loop.run_until_complete(loop.run_in_executor(None, threading.current_thread))
    executor = loop._default_executor
    loop.close()
    assert executor._shutdown
    thread.join(TIMEOUT)
    assert not thread.is_alive()


# ----------------------------------------------------------------------------------------------
# Elastic pool (turboloop only)
# ----------------------------------------------------------------------------------------------


def test_elastic_pool_retires_and_grows_back(make_tl):
    executor = make_tl(max_workers=4, min_workers=1, idle_timeout=0.2, thread_name_prefix="el")

    def saturate():
        barrier = threading.Barrier(5)
        futures = [executor.submit(barrier.wait, TIMEOUT) for _ in range(4)]
        barrier.wait(TIMEOUT)
        assert executor.stats()["workers"] == 4
        assert len(alive(executor)) == 4
        wait(futures, timeout=TIMEOUT)
        assert all(f.exception() is None for f in futures)

    saturate()
    assert executor.stats()["started"] == 4
    # Idle workers retire down to min_workers after idle_timeout.
    assert wait_until(lambda: executor.stats()["workers"] == 1)
    assert wait_until(lambda: len(alive(executor)) == 1)
    time.sleep(0.6)  # 3 x idle_timeout: never below min_workers
    stats = executor.stats()
    assert stats["workers"] == 1 and stats["idle"] == 1 and stats["queued"] == 0
    survivor = alive(executor)
    # Under load it grows back to max_workers with new threads.
    saturate()
    assert executor.stats()["started"] == 7
    names = sorted(t.name for t in alive(executor))
    assert survivor[0].name in names
    assert set(names) - {survivor[0].name} == {"el_4", "el_5", "el_6"}
    assert len(executor._threads) == 4  # retired workers are dropped from _threads as new ones start
    executor.shutdown(wait=True)
    assert executor.stats()["workers"] == 0 and not alive(executor)


def test_elastic_pool_min_workers_zero(make_tl):
    executor = make_tl(max_workers=3, idle_timeout=0.05)
    assert list(executor.map(abs, range(-20, 0))) == list(range(20, 0, -1))
    assert wait_until(lambda: executor.stats()["workers"] == 0 and not alive(executor))
    assert executor.submit(abs, -5).result(timeout=TIMEOUT) == 5  # starts a worker again


def test_fixed_pool_never_retires(make_tl):
    executor = make_tl(max_workers=3)
    barrier = threading.Barrier(4)
    futures = [executor.submit(barrier.wait, TIMEOUT) for _ in range(3)]
    barrier.wait(TIMEOUT)
    wait(futures, timeout=TIMEOUT)
    time.sleep(0.3)
    assert executor.stats()["workers"] == 3 and len(alive(executor)) == 3


def test_stats_shape(make_tl):
    executor = make_tl(2)
    assert executor.stats() == {
        "workers": 0,
        "idle": 0,
        "queued": 0,
        "started": 0,
        "tasks_started": 0,
        "total_wait": 0.0,
        "longest_wait": 0.0,
    }
    release = threading.Event()
    futures = [executor.submit(release.wait, TIMEOUT) for _ in range(5)]
    assert wait_until(lambda: executor.stats()["workers"] == 2 and executor.stats()["queued"] == 3)
    assert executor.stats()["tasks_started"] == 2
    time.sleep(0.05)
    release.set()
    wait(futures, timeout=TIMEOUT)
    assert wait_until(lambda: executor.stats()["idle"] == 2)
    stats = executor.stats()
    assert stats["tasks_started"] == 5
    # The three queued tasks waited for the first two, at least the 0.05 s before the release.
    assert stats["longest_wait"] >= 0.05
    assert stats["total_wait"] >= 3 * 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_workers=4, min_workers=-1),
        dict(max_workers=4, min_workers=5),
        dict(min_workers=DEFAULT_MAX_WORKERS + 1),
        dict(max_workers=4, idle_timeout=-1),
        dict(max_workers=4, idle_timeout=-0.001),
        dict(max_workers=4, idle_timeout=float("nan")),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_elastic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TL(**kwargs)


def test_elastic_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        TL(4, "", None, (), 1)  # min_workers positionally


# ----------------------------------------------------------------------------------------------
# Subprocesses: interpreter exit, fork, the runner
# ----------------------------------------------------------------------------------------------

IMPORTS = {
    "stdlib": "from concurrent.futures.thread import ThreadPoolExecutor",
    "turboloop": "from turboloop import ThreadPoolExecutor",
}


@pytest.mark.parametrize("impl", sorted(IMPORTS))
def test_interpreter_exit_with_a_busy_pool(impl):
    proc = run_python(
        f"""
        import time
        {IMPORTS[impl]}
        pool = ThreadPoolExecutor(2)
        import os
        def work(i):
            time.sleep(0.3)
            os.write(1, f"done {{i}}\\n".encode())
        for i in range(6):
            pool.submit(work, i)
        print("main exits", flush=True)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "main exits"
    assert sorted(lines[1:]) == [f"done {i}" for i in range(6)]


@pytest.mark.parametrize("used", [False, True], ids=["idle-pool", "used-pool"])
@pytest.mark.parametrize("impl", sorted(IMPORTS))
def test_submit_at_interpreter_exit(impl, used):
    proc = run_python(
        f"""
        import atexit
        {IMPORTS[impl]}
        @atexit.register
        def late():
            try:
                pool.submit(abs, 1)
            except RuntimeError as error:
                print(error)
        pool = ThreadPoolExecutor(2)
        if {used}:
            pool.submit(abs, 1).result()
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    if used:
        # The stdlib's workers mark their executor shut down as they exit, so it says "after
        # shutdown" once the pool has had workers; turboloop says "after interpreter shutdown".
        assert proc.stdout.strip() in (
            "cannot schedule new futures after interpreter shutdown",
            "cannot schedule new futures after shutdown",
        )
    else:
        assert proc.stdout.strip() == "cannot schedule new futures after interpreter shutdown"


@pytest.mark.parametrize("impl", sorted(IMPORTS))
def test_pool_then_fork_then_new_pool_in_child(impl):
    proc = run_python(
        f"""
        import os, sys, threading
        {IMPORTS[impl]}
        pool = ThreadPoolExecutor(2)
        assert pool.submit(pow, 2, 5).result() == 32
        release = threading.Event()
        busy = pool.submit(release.wait, 10)   # a worker is busy while we fork
        pid = os.fork()
        if pid == 0:
            child_pool = ThreadPoolExecutor(2)
            ok = child_pool.submit(pow, 3, 3).result(timeout=10) == 27
            ok = ok and list(child_pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
            # Leave child_pool running: the child's interpreter exit must join it, and must
            # not wait for the parent's pool, whose threads do not exist here.
            sys.exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        release.set()
        assert busy.result(timeout=10) is True
        pool.shutdown()
        print("child exit", os.waitstatus_to_exitcode(status))
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "child exit 0", proc.stderr


def test_runner_routes_concurrent_futures_to_turboloop():
    proc = run_python(
        """
        import concurrent.futures as c, concurrent.futures.thread as t, turboloop
        print(c.ThreadPoolExecutor.__module__)
        print(c.ThreadPoolExecutor is turboloop.ThreadPoolExecutor, t.ThreadPoolExecutor is turboloop.ThreadPoolExecutor)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as pool:
            print(pool.submit(pow, 2, 4).result())
        """,
        "-m",
        "turboloop",
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    module, identity, result = proc.stdout.split("\n")[:3]
    assert module.startswith("turboloop"), module
    assert identity == "True True"
    assert result == "16"


def test_plain_python_keeps_the_stdlib_pool():
    proc = run_python("import turboloop, concurrent.futures as c; print(c.ThreadPoolExecutor.__module__)")
    assert proc.stdout.strip() == "concurrent.futures.thread", proc.stderr


# ----------------------------------------------------------------------------------------------
# Stress (turboloop's pool)
# ----------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_stress_one_million_tasks(make_tl):
    executor = make_tl(4)
    n = 1_000_000
    start = time.perf_counter()
    futures = [executor.submit(abs, i) for i in range(n)]
    done, not_done = wait(futures, timeout=120)
    elapsed = time.perf_counter() - start
    assert not not_done
    assert all(f.result() == i for i, f in enumerate(futures))
    del futures, done
    print(f"1,000,000 submit+wait: {elapsed:.1f} s, {n / elapsed:,.0f} tasks/s")
    assert elapsed < 100, f"{n / elapsed:,.0f} tasks/s"


def test_stress_submit_from_eight_threads(make_tl):
    executor = make_tl(4)
    per_thread, n_threads = 20_000, 8
    runs = Counter()
    callbacks = Counter()
    lock = threading.Lock()
    futures: list[list[Future]] = [[] for _ in range(n_threads)]
    start = threading.Barrier(n_threads)

    def task(key):
        with lock:
            runs[key] += 1
        return key

    def on_done(future):
        with lock:
            callbacks[future] += 1

    def submitter(t):
        start.wait(TIMEOUT)
        mine = futures[t]
        for i in range(per_thread):
            future = executor.submit(task, t * per_thread + i)
            future.add_done_callback(on_done)
            mine.append(future)

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [f for mine in futures for f in mine]
    assert len(everything) == per_thread * n_threads
    _, not_done = wait(everything, timeout=60)
    assert not not_done
    for t in range(n_threads):
        assert [f.result() for f in futures[t]] == list(range(t * per_thread, (t + 1) * per_thread))
    assert len(runs) == per_thread * n_threads and set(runs.values()) == {1}
    assert wait_until(lambda: len(callbacks) == per_thread * n_threads)
    assert set(callbacks.values()) == {1}


def test_stress_shutdown_while_busy(make_tl):
    executor = make_tl(4)
    futures = [executor.submit(time.sleep, 0.0005) for _ in range(4000)]
    executor.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    assert not alive(executor) and executor.stats()["workers"] == 0


def test_stress_shutdown_racing_submitters(make_tl):
    executor = make_tl(4)
    accepted: list[list[Future]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def submitter(mine):
        try:
            while True:
                mine.append(executor.submit(sum, (1, 2)))
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=submitter, args=(mine,)) for mine in accepted]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    executor.shutdown(wait=True)
    for thread in threads:
        thread.join(TIMEOUT)
    assert [str(e) for e in errors] == ["cannot schedule new futures after shutdown"] * 4
    everything = [f for mine in accepted for f in mine]
    assert len(everything) > 100
    # Every future that submit() returned was queued before shutdown: shutdown(wait=True)
    # returned only once they had all run.
    assert all(f.done() for f in everything), sum(not f.done() for f in everything)
    assert all(f.result() == 3 for f in everything)
    assert not alive(executor)


def test_stress_cancel_futures_with_a_big_queue(make_tl):
    executor = make_tl(2)
    release = threading.Event()
    started = threading.Barrier(3)

    def block():
        started.wait(TIMEOUT)
        return release.wait(TIMEOUT)

    running = [executor.submit(block) for _ in range(2)]
    started.wait(TIMEOUT)
    queued = [executor.submit(abs, -i) for i in range(100_000)]
    cancelled_callbacks = Counter()
    for future in queued[::1000]:
        future.add_done_callback(lambda f: cancelled_callbacks.update([f]))
    assert executor.stats()["queued"] == 100_000
    begin = time.perf_counter()
    executor.shutdown(wait=False, cancel_futures=True)
    elapsed = time.perf_counter() - begin
    assert all(f.cancelled() for f in queued)
    assert elapsed < 10, elapsed
    assert executor.stats()["queued"] == 0
    assert len(cancelled_callbacks) == 100 and set(cancelled_callbacks.values()) == {1}
    release.set()
    assert [f.result(timeout=TIMEOUT) for f in running] == [True, True]
    executor.shutdown(wait=True)
    assert not alive(executor)


def test_stress_memory_flat(make_tl):
    executor = make_tl(4)
    batch = 10_000

    def run(tasks):
        for start in range(0, tasks, batch):
            futures = [executor.submit(abs, -i) for i in range(start, start + batch)]
            wait(futures, timeout=60)
            assert futures[-1].result() == start + batch - 1
        gc.collect()

    run(50_000)  # warm-up: allocator arenas, worker threads
    before = _rss_mb()
    run(200_000)
    after = _rss_mb()
    assert after - before < 25, f"RSS grew {after - before:.1f} MB over 200,000 tasks ({before:.0f} -> {after:.0f})"


def test_stress_memory_flat_run_in_executor():
    async def run(loop, tasks):
        for _ in range(tasks // 1000):
            results = await asyncio.gather(*(loop.run_in_executor(None, abs, -i) for i in range(1000)))
            assert results[-1] == 999

    with asyncio.Runner(loop_factory=turboloop.new_event_loop) as runner:
        loop = runner.get_loop()
        runner.run(run(loop, 20_000))
        gc.collect()
        before = _rss_mb()
        runner.run(run(loop, 100_000))
        gc.collect()
        after = _rss_mb()
    assert after - before < 25, f"RSS grew {after - before:.1f} MB over 100,000 run_in_executor calls"
