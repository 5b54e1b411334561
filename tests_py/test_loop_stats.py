"""loop.stats(): the loop's metrics match the work it was given, exactly where they count.

Metrics are turboloop's own (stock asyncio and uvloop have none), so these run on turboloop only.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import turboloop

KEYS = {
    "iterations",
    "callbacks_run",
    "time_in_callbacks",
    "time_polling",
    "longest_callback",
    "ready_queue_depth",
    "timers_pending",
    "readers",
    "writers",
    "handles_open",
    "transports_open",
    "executor_workers",
    "executor_workers_busy",
    "executor_queue_depth",
    "executor_tasks_started",
    "executor_task_latency",
    "executor_task_latency_max",
}


@pytest.fixture
def loop():
    loop = turboloop.new_event_loop()
    yield loop
    loop.close()


def test_a_new_loop_has_every_metric_at_zero(loop):
    stats = loop.stats()
    assert set(stats) == KEYS
    assert all(value == 0 for value in stats.values()), stats
    assert all(type(value) in (int, float) for value in stats.values())


def test_iterations_and_callbacks_are_counted_exactly(loop):
    def step(remaining):
        if remaining:
            loop.call_soon(step, remaining - 1)
        else:
            loop.stop()

    # One iteration runs the three callbacks and the first step; each further step is one more.
    for _ in range(3):
        loop.call_soon(lambda: None)
    loop.call_soon(step, 5)
    loop.run_forever()
    stats = loop.stats()
    assert stats["iterations"] == 6
    assert stats["callbacks_run"] == 3 + 6


def test_cancelled_callbacks_do_not_count_and_counts_add_up_across_runs(loop):
    for _ in range(4):
        loop.call_soon(lambda: None).cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert (loop.stats()["iterations"], loop.stats()["callbacks_run"]) == (1, 1)
    loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert (loop.stats()["iterations"], loop.stats()["callbacks_run"]) == (2, 3)


def test_timers_count_as_callbacks_when_they_run(loop):
    fired = []
    for delay in (0.001, 0.002, 0.003):
        loop.call_later(delay, fired.append, delay)
    loop.call_later(0.004, loop.stop)
    loop.run_forever()
    assert len(fired) == 3
    assert loop.stats()["callbacks_run"] == 4
    assert loop.stats()["timers_pending"] == 0


def test_time_polling_and_in_callbacks_and_the_longest_callback(loop):
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(time.sleep, 0.01)
    loop.run_until_complete(asyncio.sleep(0.1))
    stats = loop.stats()
    assert stats["longest_callback"] >= 0.05
    assert stats["time_in_callbacks"] >= 0.06
    assert stats["longest_callback"] <= stats["time_in_callbacks"]
    # The loop waited in its poll for the rest of the 0.1 s sleep.
    assert stats["time_polling"] >= 0.1 - 0.06 - 0.01


def test_ready_queue_depth_and_timers_pending_seen_from_a_callback(loop):
    seen = {}

    def look():
        for _ in range(3):
            loop.call_soon(lambda: None)
        handles = [loop.call_later(60, lambda: None) for _ in range(5)]
        handles[0].cancel()
        handles[1].cancel()
        seen.update(loop.stats())
        for handle in handles:
            handle.cancel()
        loop.stop()

    loop.call_soon(look)
    loop.run_forever()
    assert seen["ready_queue_depth"] == 3
    assert seen["timers_pending"] == 3
    assert loop.stats()["timers_pending"] == 0


def test_readers_writers_and_handles_open(loop):
    left, right = socket.socketpair()
    try:
        loop.add_reader(left, lambda: None)
        loop.add_reader(right, lambda: None)
        loop.add_writer(right, lambda: None)
        stats = loop.stats()
        assert (stats["readers"], stats["writers"], stats["handles_open"]) == (2, 1, 3)
        loop.remove_reader(left)
        loop.remove_writer(right)
        stats = loop.stats()
        assert (stats["readers"], stats["writers"], stats["handles_open"]) == (1, 0, 1)
        loop.remove_reader(right)
        assert loop.stats()["handles_open"] == 0
    finally:
        left.close()
        right.close()


def test_transports_open(loop):
    server_writers = []

    async def main():
        server = await asyncio.start_server(lambda r, w: server_writers.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not server_writers:
            await asyncio.sleep(0.001)
        during = loop.stats()["transports_open"]
        for each in (writer, server_writers[0]):
            each.close()
            await each.wait_closed()
        server.close()
        await server.wait_closed()
        return during

    assert loop.run_until_complete(main()) == 2  # the client's and the server's
    assert loop.stats()["transports_open"] == 0


def test_executor_metrics(loop):
    release = threading.Event()
    loop.set_default_executor(turboloop.ThreadPoolExecutor(max_workers=1))

    async def main():
        futures = [loop.run_in_executor(None, release.wait, 10) for _ in range(4)]
        deadline = time.monotonic() + 10
        while loop.stats()["executor_tasks_started"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        during = loop.stats()
        release.set()
        await asyncio.gather(*futures)
        return during

    during = loop.run_until_complete(main())
    assert during["executor_workers"] == 1
    assert during["executor_workers_busy"] == 1
    assert during["executor_queue_depth"] == 3
    assert during["executor_tasks_started"] == 1
    after = loop.stats()
    assert after["executor_queue_depth"] == 0
    assert after["executor_tasks_started"] == 4
    # Each of the three queued tasks waited at least the 0.05 s before the release.
    assert after["executor_task_latency_max"] >= 0.05
    assert after["executor_task_latency"] >= 3 * 0.05 / 4


def test_a_foreign_default_executor_reports_no_pool_metrics(loop):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        loop.set_default_executor(executor)
        assert loop.run_until_complete(loop.run_in_executor(None, sum, [1, 2])) == 3
        assert loop.stats()["executor_tasks_started"] == 0


def test_stats_of_a_closed_loop_still_answer(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_later(60, lambda: None)
    loop.close()
    stats = loop.stats()
    assert stats["iterations"] == 1
    assert stats["timers_pending"] == 0
    assert stats["handles_open"] == 0


def test_prometheus_example_exports_every_metric():
    import pathlib
    import runpy

    example = pathlib.Path(__file__).resolve().parents[1] / "examples" / "prometheus_stats.py"
    namespace = runpy.run_path(str(example))
    loop = turboloop.new_event_loop()
    try:
        loop.call_soon(loop.stop)
        loop.run_forever()
        text = namespace["prometheus_text"](loop)
    finally:
        loop.close()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(KEYS)
    assert "turboloop_iterations_total 1" in lines
    assert "turboloop_callbacks_run_total 1" in lines
    assert all(len(line.split()) == 2 for line in lines)
    assert all(float(line.split()[1]) >= 0 for line in lines)


def test_prometheus_example_serves_the_running_loops_metrics():
    import pathlib
    import runpy

    example = pathlib.Path(__file__).resolve().parents[1] / "examples" / "prometheus_stats.py"
    namespace = runpy.run_path(str(example))

    async def scrape():
        server = await namespace["serve_metrics"]("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await reader.read()
            writer.close()
            await writer.wait_closed()
        return response.decode()

    response = turboloop.run(scrape())
    head, _, body = response.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK")
    assert "# TYPE turboloop_iterations_total counter" in body
    assert "turboloop_transports_open 2" in body  # this scrape's own connection, both ends


def test_stats_from_another_thread_while_running_raises(loop):
    errors = []

    def from_thread():
        try:
            loop.stats()
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=from_thread).start)
    loop.run_forever()
    assert len(errors) == 1 and "call_soon_threadsafe" in str(errors[0])
    assert loop.stats()["iterations"] >= 1  # not running: any thread may ask
