"""turboloop.ThreadPoolExecutor: concurrent.futures' thread pool on native workers.

A drop-in for concurrent.futures.ThreadPoolExecutor (it is a subclass, so isinstance checks and
asyncio's set_default_executor accept it): the same constructor, futures, errors, thread names and
interpreter-exit behaviour. Workers wait for jobs in native code without the GIL. Beyond the
stdlib, ``min_workers`` and ``idle_timeout`` make the pool elastic: idle workers above
``min_workers`` exit after ``idle_timeout`` seconds and are started again under load.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures import thread as _stdlib_thread
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

from turboloop._turboloop import FutureMethods, PoolCore

_T = TypeVar("_T")
# Executor.map(buffersize=) exists from 3.14 on.
_MAP_TAKES_BUFFERSIZE = "buffersize" in inspect.signature(_base.Executor.map).parameters

# The most worker threads a pool starts, whatever max_workers says.
_MOST_THREADS = 2**31

# Live executors, stopped and joined when the interpreter exits (before it joins non-daemon
# threads), as the stdlib does for its own.
_live_executors: weakref.WeakSet[ThreadPoolExecutor] = weakref.WeakSet()
# Pools inherited through fork(): their worker threads do not exist in the child and their
# locks may be held, so they are never touched again (and never freed).
_abandoned_after_fork: list[Any] = []


def _stop_all_at_exit() -> None:
    PoolCore.interpreter_exiting = True
    executors = list(_live_executors)
    for executor in executors:
        executor._pool.stop()
    for executor in executors:
        executor._pool.wait_for_workers()
        for thread in list(executor._threads):
            thread.join()


def _forget_pools_in_child() -> None:
    for executor in list(_live_executors):
        _abandoned_after_fork.append(executor._pool)
        executor._forked = True
    _live_executors.clear()


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_pools_in_child)


def _launcher(executor_ref: weakref.ref[ThreadPoolExecutor], prefix: str) -> Callable[[Any], None]:
    counter = itertools.count()

    def launch(body: Callable[[], None]) -> None:
        thread = threading.Thread(name=f"{prefix}_{next(counter)}", target=body)
        thread.start()
        executor = executor_ref()
        if executor is not None:
            # Workers of an elastic pool exit when idle: keep only the live ones.
            executor._threads = {t for t in executor._threads if t.is_alive()}
            executor._threads.add(thread)

    return launch


def _starter(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> Callable[[int], bool]:
    def start(worker_number: int) -> bool:
        if initializer is None:
            return True
        try:
            initializer(*initargs)
        except BaseException:
            _base.LOGGER.critical("Exception in initializer:", exc_info=True)
            return False
        return True

    return start


def _failure_reporter(executor_ref: weakref.ref[ThreadPoolExecutor]) -> Callable[[], None]:
    def failed() -> None:
        executor = executor_ref()
        if executor is not None:
            executor._initializer_failed()

    return failed


class Future(FutureMethods, _base.Future[_T]):
    """What ThreadPoolExecutor.submit() returns: a concurrent.futures.Future (a subclass, so
    isinstance checks, wait(), as_completed() and asyncio.wrap_future() take it) whose state, lock
    and methods are native. Its ``_condition`` is a turboloop.FutureCondition over that lock."""


class ThreadPoolExecutor(_stdlib_thread.ThreadPoolExecutor):
    """An Executor that runs calls on a pool of native worker threads.

    Args:
        max_workers: the most threads the pool runs; default ``min(32, os.cpu_count() + 4)``.
        thread_name_prefix: names the threads ``{prefix}_{n}``.
        initializer, initargs: ``initializer(*initargs)`` runs first on every worker; if it
            raises, the pool is broken (BrokenThreadPool), as in the stdlib.
        min_workers: (turboloop) idle workers never retire below this count. Default 0.
        idle_timeout: (turboloop) seconds after which an idle worker above ``min_workers``
            exits; None (the default) keeps workers until shutdown, as the stdlib does.
    """

    _counter = itertools.count().__next__

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        min_workers: int = 0,
        idle_timeout: float | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not 0 <= min_workers <= max_workers:
            raise ValueError("min_workers must be between 0 and max_workers")
        if idle_timeout is not None and not idle_timeout >= 0:
            raise ValueError("idle_timeout must be None or a number of seconds >= 0")

        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        # typeshed types the stdlib's attribute by version; any callable or None is right here.
        setattr(self, "_initializer", initializer)
        self._initargs = initargs
        self._threads: set[threading.Thread] = set()
        self._shutdown_lock = threading.Lock()
        self._forked = False
        me = weakref.ref(self)
        self._pool = PoolCore(
            # The stdlib accepts any number (2.5 allows 3 threads); the native pool counts threads.
            min(math.ceil(max_workers), _MOST_THREADS),
            min_workers,
            -1.0 if idle_timeout is None else float(idle_timeout),
            _launcher(me, self._thread_name_prefix),
            _starter(initializer, initargs),
            _failure_reporter(me),
        )
        _live_executors.add(self)

    # The stdlib's code writes these two; here they are the native pool's state, and _broken is
    # the stdlib's failure message or False (typeshed has bool).
    @property
    def _broken(self) -> str | bool:  # type: ignore[override]
        return self._pool.broken or False

    @property
    def _shutdown(self) -> bool:  # type: ignore[override]
        return self._pool.shut_down

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _base.Future[_T]:
        return self._pool.submit(fn, args, kwargs)

    submit.__doc__ = _base.Executor.submit.__doc__

    def _submit_to_loop(
        self, loop: Any, complete: Callable[..., None], future: Any, fn: Any, args: tuple[Any, ...]
    ) -> None:
        """run_in_executor's path: the outcome goes to `future` through loop.call_soon_threadsafe."""
        self._pool.submit_to_loop(loop, complete, future, fn, args)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """Executor.map on native result slots: no concurrent Future per item."""
        if buffersize is not None:
            if not _MAP_TAKES_BUFFERSIZE:
                raise TypeError("Executor.map() got an unexpected keyword argument 'buffersize'")
            # The stdlib's bounded map (3.14+), which submits as results are taken.
            bounded: dict[str, Any] = {"buffersize": buffersize}
            return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **bounded)
        if type(self).submit is not ThreadPoolExecutor.submit:
            # A subclass that customises submit() expects map() to go through it.
            return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize)
        if timeout is not None:
            end_time = timeout + time.monotonic()
        results = self._pool.map(fn, zip(*iterables))

        def result_iterator() -> Iterator[_T]:
            try:
                for index in range(len(results)):
                    if timeout is None:
                        yield results.result(index)
                    else:
                        yield results.result(index, end_time - time.monotonic())
            finally:
                results.cancel_pending()

        return result_iterator()

    map.__doc__ = _base.Executor.map.__doc__

    def _initializer_failed(self) -> None:
        with self._shutdown_lock:
            self._pool.broken = "A thread initializer failed, the thread pool is not usable anymore"
            self._pool.drop_pending(lambda: BrokenThreadPool(self._pool.broken))

    def _adjust_thread_count(self) -> None:
        """The native pool sizes itself; kept so stdlib code that calls it still works."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            self._pool.shut_down = True
            if cancel_futures:
                self._pool.drop_pending(None)
            if not self._forked:
                self._pool.stop()
        if wait:
            # Every worker the pool started, including one a concurrent submit() is starting,
            # has left its loop once this returns; then the threads themselves are joined.
            if not self._forked:
                self._pool.wait_for_workers()
            for thread in list(self._threads):
                thread.join()

    shutdown.__doc__ = _base.Executor.shutdown.__doc__

    def stats(self) -> dict[str, int | float]:
        """(turboloop) The pool's state: workers alive, idle, jobs queued, workers ever started,
        tasks started, and the total and longest time tasks waited in the queue (seconds)."""
        return self._pool.stats()
